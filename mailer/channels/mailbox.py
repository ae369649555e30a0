"""``newsletter inbound poll``: read a bounce mailbox over IMAP or POP3.

For relays that can only deliver bounces to a mailbox (listmonk reads POP mailboxes for
the same reason). The mailbox is a URL, ``NEWSLETTER_BOUNCE_MAILBOX`` or the command's
argument: ``imaps://user:password@host[:port]/FOLDER`` (also ``imap://``,
``imap+starttls://``), ``pop3s://user:password@host[:port]`` (also ``pop3://``,
``pop3+starttls://``); user and password percent-encoded.

IMAP (RFC 9051): the unseen messages of the folder, read with ``BODY.PEEK[]`` (which
does not set \\Seen), each handed to the one handler and marked \\Seen only once it is
recorded (and, with ``delete``, \\Deleted and expunged). A message the handler could not
record stays unseen and is read again by the next poll. POP3 (RFC 1939) has no flags:
a recorded message is deleted (``DELE``, committed by ``QUIT``); one that could not be
recorded is left. The poll stops at the first message that could not be recorded: the
database is probably down, and the next poll starts over.
"""

from __future__ import annotations

import imaplib
import poplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from mailer.core.errors import InvalidInput, NewsletterError
from mailer.reports import Channel

TIMEOUT = 60.0


class MailboxError(NewsletterError):
    """The mailbox could not be read (refused login, unreachable server, a broken folder)."""


@dataclass(frozen=True)
class Mailbox:
    protocol: Channel  # imap or pop3
    host: str
    port: int
    user: str
    password: str
    folder: str
    tls: str  # "ssl" (implicit), "starttls" or "" (none)

    def __str__(self) -> str:  # for messages: never the password
        scheme = f"{self.protocol}{'s' if self.tls == 'ssl' else '+starttls' if self.tls == 'starttls' else ''}"
        where = f"/{self.folder}" if self.protocol == Channel.imap else ""
        return f"{scheme}://{self.user}@{self.host}:{self.port}{where}"


_DEFAULT_PORTS = {("imap", "ssl"): 993, ("imap", ""): 143, ("imap", "starttls"): 143,
                  ("pop3", "ssl"): 995, ("pop3", ""): 110, ("pop3", "starttls"): 110}


def parse_mailbox(url: str) -> Mailbox:
    parts = urlsplit(url or "")
    scheme = parts.scheme.lower()
    base, _, tls = scheme.partition("+")
    if base.endswith("s") and not tls:
        base, tls = base[:-1], "ssl"
    if base not in ("imap", "pop3") or tls not in ("", "ssl", "starttls"):
        raise InvalidInput(f"not a mailbox URL: {parts.scheme or url!r}; use imaps://user:password@host/INBOX "
                           "or pop3s://user:password@host")
    if not parts.hostname or not parts.username:
        raise InvalidInput("a mailbox URL needs a user and a host: imaps://user:password@host/INBOX")
    try:
        port = parts.port or _DEFAULT_PORTS[(base, tls)]
    except ValueError as err:
        raise InvalidInput(f"not a port in the mailbox URL: {err}") from err
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return Mailbox(protocol=Channel(base), host=parts.hostname, port=port, user=unquote(parts.username),
                   password=unquote(parts.password or ""), folder=folder, tls=tls)


@dataclass(frozen=True)
class Polled:
    handled: int  # recorded and marked (or deleted)
    left: int = 0  # in the mailbox, not recorded: read again next time
    error: str = ""  # why the first of those could not be recorded

    @property
    def line(self) -> str:
        return f"{self.handled} handled" + (f", {self.left} left for the next poll ({self.error})" if self.left else "")


Handle = Callable[[bytes, Channel], object]


def poll(mailbox: Mailbox, handle: Handle, *, delete: bool = False,
         ssl_context: ssl.SSLContext | None = None) -> Polled:
    """Hand every new message of ``mailbox`` to ``handle`` (raw bytes, channel); mark or
    delete each one ``handle`` returned for. Raises ``MailboxError`` for the mailbox."""
    try:
        if mailbox.protocol == Channel.imap:
            return _poll_imap(mailbox, handle, delete=delete, context=ssl_context)
        return _poll_pop3(mailbox, handle, context=ssl_context)
    except (imaplib.IMAP4.error, poplib.error_proto, OSError) as err:
        raise MailboxError(f"{mailbox}: {err}") from err


def _poll_imap(mailbox: Mailbox, handle: Handle, *, delete: bool, context) -> Polled:
    context = context or ssl.create_default_context()
    if mailbox.tls == "ssl":
        client = imaplib.IMAP4_SSL(mailbox.host, mailbox.port, ssl_context=context, timeout=TIMEOUT)
    else:
        client = imaplib.IMAP4(mailbox.host, mailbox.port, timeout=TIMEOUT)
        if mailbox.tls == "starttls":
            client.starttls(ssl_context=context)
    handled, left, error = 0, 0, ""
    try:
        client.login(mailbox.user, mailbox.password)
        status, _ = client.select(_quoted(mailbox.folder))
        if status != "OK":
            raise MailboxError(f"{mailbox}: no folder {mailbox.folder!r}")
        status, data = client.uid("SEARCH", None, "UNSEEN")
        uids = data[0].split() if status == "OK" and data and data[0] else []
        for i, uid in enumerate(uids):
            status, parts = client.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((p[1] for p in parts or [] if isinstance(p, tuple) and len(p) == 2), None)
            if status != "OK" or raw is None:
                continue  # expunged by somebody else meanwhile
            try:
                handle(raw, Channel.imap)
            except Exception as err:  # not recorded: leave it unseen for the next poll
                left, error = len(uids) - i, _one_line(err)
                break
            client.uid("STORE", uid, "+FLAGS.SILENT", r"(\Seen \Deleted)" if delete else r"(\Seen)")
            handled += 1
        if delete and handled:
            client.expunge()
        client.close()
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass
    return Polled(handled, left, error)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300] or type(err).__name__


def _quoted(folder: str) -> str:
    """An IMAP mailbox name as a quoted string (RFC 9051 §4.3), for names with spaces."""
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _poll_pop3(mailbox: Mailbox, handle: Handle, *, context) -> Polled:
    context = context or ssl.create_default_context()
    if mailbox.tls == "ssl":
        client = poplib.POP3_SSL(mailbox.host, mailbox.port, context=context, timeout=TIMEOUT)
    else:
        client = poplib.POP3(mailbox.host, mailbox.port, timeout=TIMEOUT)
        if mailbox.tls == "starttls":
            client.stls(context=context)
    handled, left, error = 0, 0, ""
    try:
        client.user(mailbox.user)
        client.pass_(mailbox.password)
        count, _ = client.stat()
        for number in range(1, count + 1):
            _, lines, _ = client.retr(number)
            raw = b"\r\n".join(lines) + b"\r\n"
            try:
                handle(raw, Channel.pop3)
            except Exception as err:  # not recorded: leave it for the next poll
                left, error = count - number + 1, _one_line(err)
                break
            client.dele(number)
            handled += 1
    except BaseException:
        # Without QUIT the server forgets every DELE of this session (RFC 1939 §6): the
        # messages already recorded are read again next time, which changes nothing.
        client.close()
        raise
    client.quit()
    return Polled(handled, left, error)
