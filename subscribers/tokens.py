"""Opaque signed tokens for the links in every message (unsubscribe, preferences) and for
the double opt-in confirmation link.

A token is ``tag || (payload XOR mask)``: ``tag`` is HMAC-SHA256 over the purpose and the
payload (the subscriber id, the campaign id...), truncated to 96 bits; ``mask`` is
HMAC-SHA256 keyed separately over the tag. That is a synthetic-IV construction (SIV, RFC
5297, with HMAC as the PRF): nobody without the secret can forge a token, and nobody can
read the ids out of one, so tokens cannot be enumerated or tell how many subscribers
there are. Two HMACs per token: a few microseconds, cheap enough for the delivery engine
to call for every recipient.

The encoding is lower-case base32 without padding (URL-safe, no ``=``): the same token is
the local part of the ``mailto:unsubscribe+TOKEN@domain`` address, and mail systems are
allowed to change the case of a local part (RFC 5321 says they should not; some do), so a
case-sensitive base64 token could break there.

Key rotation: the current ``secret_key`` signs, every secret in the list verifies
(``[settings.secret_key, *old_secret_keys]``). Unsubscribe tokens never expire (RFC 8058
asks that the link keep working; people click year-old mails); confirmation tokens expire
after ``CONFIRM_MAX_AGE``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import time
from collections.abc import Sequence

from mailer.errors import InvalidInput

TAG_BYTES = 12
ID_BYTES = 6  # up to 2**48 subscribers or campaigns
CONFIRM_MAX_AGE = 48 * 3600

UNSUBSCRIBE = b"unsubscribe"
CONFIRM = b"confirm"


class InvalidToken(InvalidInput):
    """A token that was tampered with, truncated, signed with an unknown key or expired."""


def secrets_from_settings(settings) -> list[str]:
    """The signing secret first, then the old ones that still verify."""
    old = [s.strip() for s in (settings.old_secret_keys or "").split(",") if s.strip()]
    return [settings.secret_key, *old]


@functools.lru_cache(maxsize=64)
def _keys(secret: str, purpose: bytes) -> tuple[bytes, bytes]:
    root = hashlib.sha256(secret.encode("utf-8")).digest()
    tag_key = hmac.digest(root, b"newsletter/tag/" + purpose, "sha256")
    mask_key = hmac.digest(root, b"newsletter/mask/" + purpose, "sha256")
    return tag_key, mask_key


def _seal(secret: str, purpose: bytes, payload: bytes) -> str:
    tag_key, mask_key = _keys(secret, purpose)
    tag = hmac.digest(tag_key, payload, "sha256")[:TAG_BYTES]
    mask = hmac.digest(mask_key, tag, "sha256")
    sealed = bytes(a ^ b for a, b in zip(payload, mask))
    return base64.b32encode(tag + sealed).decode("ascii").rstrip("=").lower()


def _open(secrets: Sequence[str], purpose: bytes, token: str, size: int) -> bytes:
    if not isinstance(token, str) or not token or len(token) > 200:
        raise InvalidToken("this link is not valid")
    text = token.strip().upper()
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError) as err:
        raise InvalidToken("this link is not valid") from err
    if len(raw) != TAG_BYTES + size:
        raise InvalidToken("this link is not valid")
    tag, sealed = raw[:TAG_BYTES], raw[TAG_BYTES:]
    for secret in secrets:
        if not secret:
            continue
        tag_key, mask_key = _keys(secret, purpose)
        mask = hmac.digest(mask_key, tag, "sha256")
        payload = bytes(a ^ b for a, b in zip(sealed, mask))
        if hmac.compare_digest(hmac.digest(tag_key, payload, "sha256")[:TAG_BYTES], tag):
            return payload
    raise InvalidToken("this link is not valid")


def unsubscribe_token(secret: str, subscriber_id: int, campaign_id: int | None) -> str:
    """The token in a message's unsubscribe, preferences and mailto links (39 chars)."""
    payload = subscriber_id.to_bytes(ID_BYTES, "big") + (campaign_id or 0).to_bytes(ID_BYTES, "big")
    return _seal(secret, UNSUBSCRIBE, payload)


def read_unsubscribe_token(secrets: Sequence[str], token: str) -> tuple[int, int | None]:
    """(subscriber id, campaign id or None); ``InvalidToken`` if it is not ours."""
    payload = _open(secrets, UNSUBSCRIBE, token, 2 * ID_BYTES)
    subscriber_id = int.from_bytes(payload[:ID_BYTES], "big")
    campaign_id = int.from_bytes(payload[ID_BYTES:], "big")
    if subscriber_id == 0:
        raise InvalidToken("this link is not valid")
    return subscriber_id, campaign_id or None


def confirm_token(secret: str, subscriber_id: int, list_id: int | None, *, now: float | None = None) -> str:
    """The double opt-in link's token: subscriber, list to join (or none) and when it
    was issued (it expires after ``CONFIRM_MAX_AGE``)."""
    issued = int(time.time() if now is None else now)
    payload = (subscriber_id.to_bytes(ID_BYTES, "big") + (list_id or 0).to_bytes(ID_BYTES, "big")
               + issued.to_bytes(5, "big"))
    return _seal(secret, CONFIRM, payload)


def read_confirm_token(secrets: Sequence[str], token: str, *, max_age: int = CONFIRM_MAX_AGE,
                       now: float | None = None) -> tuple[int, int | None, int]:
    """(subscriber id, list id or None, issued at as a Unix time); ``InvalidToken`` if
    it is not ours or has expired."""
    payload = _open(secrets, CONFIRM, token, 2 * ID_BYTES + 5)
    subscriber_id = int.from_bytes(payload[:ID_BYTES], "big")
    list_id = int.from_bytes(payload[ID_BYTES:2 * ID_BYTES], "big")
    issued = int.from_bytes(payload[2 * ID_BYTES:], "big")
    current = time.time() if now is None else now
    if subscriber_id == 0 or issued > current + 300:
        raise InvalidToken("this link is not valid")
    if current - issued > max_age:
        raise InvalidToken("this confirmation link has expired; subscribe again to get a new one")
    return subscriber_id, list_id or None, issued


def unsubscribe_url(base_url: str, token: str) -> str:
    return f"{base_url}/u/{token}"


def preferences_url(base_url: str, token: str) -> str:
    return f"{base_url}/p/{token}"


def confirm_url(base_url: str, token: str) -> str:
    return f"{base_url}/confirm/{token}"


def unsubscribe_mailto(token: str, domain: str) -> str:
    return f"mailto:unsubscribe+{token}@{domain}"
