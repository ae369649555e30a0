"""What anyone may open: the archive of sent issues, signup with double opt-in, and
the pages behind a subscriber's own links (unsubscribe, preferences).

No page here needs a cookie or a login. A subscriber's link carries an opaque signed
token (``mailer.core.signing``), and the token is what authorises the action, so there
is no separate CSRF token. GET never changes anything: mail security scanners fetch
every link in a message, and would otherwise unsubscribe or confirm people on their
own. A link that is not valid gets the same 404 page whether or not its subscriber
exists.
"""
