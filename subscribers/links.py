"""The links in every message and mail that act for one subscriber, and the addresses
mail comes back to. Each link carries a token from ``mailer.core.signing``: the
token, not a cookie or a login, is what authorises the action on the page it opens."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses


def unsubscribe_url(base_url: str, token: str) -> str:
    return f"{base_url}/u/{token}"


def preferences_url(base_url: str, token: str) -> str:
    return f"{base_url}/p/{token}"


def confirm_url(base_url: str, token: str) -> str:
    return f"{base_url}/confirm/{token}"


def unsubscribe_mailto(token: str, domain: str) -> str:
    return f"mailto:unsubscribe+{token}@{domain}"


UNSUBSCRIBE_PREFIX = "unsubscribe+"
# Where an MTA pipe puts the envelope recipient (Postfix local(8) and pipe(8), Exim).
RECIPIENT_ENV = ("ORIGINAL_RECIPIENT", "RECIPIENT", "LOCAL_PART_SUFFIX")
_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "To", "Cc")


def delivered_to(message: Message, environ: Mapping[str, str] | None = None,
                 envelope_to: Iterable[str] = ()) -> list[str]:
    """Every address an inbound message was delivered to, envelope first."""
    env = environ or {}
    found = [*envelope_to, *(env[k] for k in RECIPIENT_ENV if env.get(k))]
    for header in _RECIPIENT_HEADERS:
        found.extend(str(v) for v in message.get_all(header, []))
    return [addr for _, addr in getaddresses(found) if addr]


def unsubscribe_tokens(raw: bytes, environ: Mapping[str, str] | None = None) -> list[str]:
    """The tokens of the ``unsubscribe+TOKEN@domain`` addresses a message went to."""
    message = BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=True)
    found = []
    for addr in delivered_to(message, environ):
        local = addr.rsplit("@", 1)[0]
        if local.lower().startswith(UNSUBSCRIBE_PREFIX):
            found.append(local[len(UNSUBSCRIBE_PREFIX):])
    return found
