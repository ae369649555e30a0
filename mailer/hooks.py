"""Outbound webhooks, the pure part: which events there are, what a payload looks like,
and how it is signed. Plain values in, plain values out (no database, no HTTP, no
settings). The inbound provider webhooks (SES, Mailgun...) are ``mailer.webhooks``.

Signing follows the Standard Webhooks specification (standardwebhooks.com): three
headers, ``webhook-id`` (the same on every attempt of one delivery, so a receiver can
drop a repeat), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one per
secret, space separated. A secret is ``whsec_`` and the base64 of 32 random bytes; the
HMAC key is those bytes. While a rotated-out secret is in its grace period a message
carries both signatures, as the specification allows, so a receiver can switch at its
own pace.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from mailer.core.errors import InvalidInput

SECRET_PREFIX = "whsec_"


class EventType(enum.StrEnum):
    subscribed = "subscriber.subscribed"
    confirmed = "subscriber.confirmed"
    unsubscribed = "subscriber.unsubscribed"
    bounced = "subscriber.bounced"
    complained = "subscriber.complained"
    campaign_started = "campaign.started"
    campaign_finished = "campaign.finished"


# The subscriber events come from the ``event`` rows the subscribers' side records for
# every change (``subscribers.models.EventKind``): the one place each change is written.
FROM_EVENT_KIND = {
    "subscribe": EventType.subscribed,
    "confirm": EventType.confirmed,
    "unsubscribe": EventType.unsubscribed,
    "bounce": EventType.bounced,
    "complaint": EventType.complained,
}

# Short names the CLI and the API accept too: ``--event subscribed``, ``--event campaign.started``.
_SHORT = {t.value.split(".", 1)[1] if t.value.startswith("subscriber.") else t.value: t for t in EventType}
_SHORT.update({"started": EventType.campaign_started, "finished": EventType.campaign_finished})


def parse_event_types(values: Iterable[str]) -> list[EventType]:
    """The event types named (full or short names), in a stable order, each once. None
    named, or an unknown one, is ``InvalidInput`` listing the known ones."""
    chosen: set[EventType] = set()
    for raw in values:
        name = (raw or "").strip().lower()
        if name in ("*", "all"):
            chosen.update(EventType)
            continue
        try:
            chosen.add(EventType(name))
        except ValueError:
            if name not in _SHORT:
                known = ", ".join(t.value for t in EventType)
                raise InvalidInput(f"unknown event type {raw!r}; known: {known} (or 'all')") from None
            chosen.add(_SHORT[name])
    if not chosen:
        raise InvalidInput("name at least one event type (--event), or 'all'")
    return [t for t in EventType if t in chosen]


def check_url(url: str) -> str:
    """An endpoint must be an absolute http(s) URL with a host; anything else is
    ``InvalidInput``. (It is the operator's own endpoint: private addresses are allowed.)"""
    url = (url or "").strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as err:
        raise InvalidInput(f"not a URL: {url!r} ({err})") from err
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"a webhook endpoint is an http:// or https:// URL with a host, not {url!r}")
    if len(url) > 2000:
        raise InvalidInput("a webhook URL is at most 2000 characters")
    return url


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(raw + "=" * (-len(raw) % 4))


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(16)


def payload(event_type: str, data: dict, *, at: datetime) -> bytes:
    """The body of every delivery of one event: ``{"type", "timestamp", "data"}`` as the
    specification suggests, compact UTF-8 JSON. Built once, when the event is recorded:
    every attempt sends (and signs) the very same bytes."""
    body = {"type": str(event_type), "timestamp": at.isoformat().replace("+00:00", "Z"), "data": data}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def signature(secrets_: Sequence[str], *, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,<base64>`` per secret, space separated."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(_key(s), signed, hashlib.sha256).digest()).decode()
                    for s in secrets_)


def headers(secrets_: Sequence[str], *, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secrets_, message_id=message_id, timestamp=timestamp, body=body),
    }


def signing_secrets(current: str, previous: str | None, previous_until: datetime | None, now: datetime) -> list[str]:
    """The secrets a message is signed with now: the current one, and the previous one
    while its grace period lasts."""
    return [current] + ([previous] if previous and previous_until and previous_until > now else [])


def retry_delay(attempt: int, *, base: float, cap: float = 3600.0) -> timedelta:
    """How long after a failed ``attempt`` (1, 2, ...) the next one goes: ``base``
    doubled each time, at most ``cap``."""
    return timedelta(seconds=min(cap, base * 2 ** max(0, attempt - 1)))


def succeeded(status_code: int) -> bool:
    """Only a 2xx answer is a delivery (the specification: anything else is retried;
    a redirect is not followed, as a signed request must not go elsewhere)."""
    return 200 <= status_code < 300
