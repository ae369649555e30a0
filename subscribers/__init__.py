"""People: subscribers, lists and memberships, suppressions, consent, import/export,
and the links in every message that act for one subscriber. Builds on ``mailer.core``
only; it never sends mail and knows nothing of campaigns, the web or the CLI.

  models.py   subscribers, lists, memberships, suppressions, events; status enums
  service.py  what can happen to a subscriber (add, confirm, unsubscribe, suppress, erase)
  signup.py   public signup with double opt-in and its rate limits; the confirmation mail
  csvio.py    streaming CSV import and export
  links.py    unsubscribe, preferences and confirmation links; where mail comes back to
"""
