"""Every token and MAC the service hands out, and how each is checked, in one place.

Key rotation is handled here once: the current secret (``NEWSLETTER_SECRET_KEY``) signs,
and every key of ``Settings.signing_keys`` (the current one, then
``NEWSLETTER_OLD_SECRET_KEYS``) verifies, so links and bounces signed before a rotation
keep working. Comparisons are constant-time (``hmac.compare_digest``).

What is signed, and how:

- Subscriber links (unsubscribe, preferences, mailto unsubscribe; the double opt-in
  confirmation): ``tag || (payload XOR mask)``, where ``tag`` is HMAC-SHA256 over the
  purpose and the payload (subscriber id, campaign or list id, ...) cut to 96 bits and
  ``mask`` is HMAC-SHA256, keyed separately, over the tag. A synthetic-IV construction
  (SIV, RFC 5297, with HMAC as the PRF): nobody without the secret can forge a token, and
  nobody can read the ids out of one, so tokens cannot be enumerated. Lower-case base32
  without padding: URL-safe, and safe as the local part of ``unsubscribe+TOKEN@domain``,
  whose case mail systems may change. Unsubscribe tokens never expire (RFC 8058 asks that
  the link keep working); confirmation tokens expire after ``CONFIRM_MAX_AGE``.
- VERP tokens (the envelope sender ``bounces+<id>-<mac>@domain``) and the MAC inside our
  Message-IDs (``<nl.<campaign>.<delivery>.<mac>@domain>``): a bounce or a quoted message
  names its delivery, and a forged one cannot name somebody else's.
- Dashboard session cookies: itsdangerous, which signs with the last key it is given and
  accepts any of them.

Cheap enough for the send path: a link token is two HMACs, a VERP or Message-ID MAC one.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Sequence

from itsdangerous import URLSafeTimedSerializer

from mailer.core.errors import InvalidInput

TAG_BYTES = 12
ID_BYTES = 6  # up to 2**48 subscribers, lists or campaigns
CONFIRM_MAX_AGE = 48 * 3600

UNSUBSCRIBE = b"unsubscribe"
CONFIRM = b"confirm"

_VERP_TOKEN = re.compile(r"^(\d{1,18})-([0-9a-f]{12})$")
# Message-IDs we write (``message_id``): <nl.CAMPAIGN.DELIVERY.MAC@domain>
_OUR_MESSAGE_ID = re.compile(r"<nl\.(\d{1,18})\.(\d{1,18})\.([0-9a-f]{10})@([^>\s]+)>")


class InvalidToken(InvalidInput):
    """A token that was tampered with, truncated, signed with an unknown key or expired."""


def same(given: object, expected: str | bytes) -> bool:
    """Constant-time equality of a value from outside with the one we expect."""
    if isinstance(expected, str):
        return isinstance(given, str) and bool(given) and hmac.compare_digest(given.encode(), expected.encode())
    return isinstance(given, bytes) and bool(given) and hmac.compare_digest(given, expected)


def _mac(secret: str, message: str, hex_chars: int) -> str:
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()[:hex_chars]


# --- sealed tokens (subscriber links) ----------------------------------------------------

@functools.lru_cache(maxsize=64)
def _siv_keys(secret: str, purpose: bytes) -> tuple[bytes, bytes]:
    root = hashlib.sha256(secret.encode("utf-8")).digest()
    tag_key = hmac.digest(root, b"newsletter/tag/" + purpose, "sha256")
    mask_key = hmac.digest(root, b"newsletter/mask/" + purpose, "sha256")
    return tag_key, mask_key


def _xor(data: bytes, mask: bytes) -> bytes:
    """``data`` XOR the start of ``mask`` (as long as ``mask``), as integers: a third of
    the cost of a byte at a time, and a seal is made for every message sent."""
    return (int.from_bytes(data, "big") ^ int.from_bytes(mask[:len(data)], "big")).to_bytes(len(data), "big")


def seal(secret: str, purpose: bytes, payload: bytes) -> str:
    tag_key, mask_key = _siv_keys(secret, purpose)
    tag = hmac.digest(tag_key, payload, "sha256")[:TAG_BYTES]
    mask = hmac.digest(mask_key, tag, "sha256")
    sealed = _xor(payload, mask)
    return base64.b32encode(tag + sealed).decode("ascii").rstrip("=").lower()


def unseal(keys: Sequence[str], purpose: bytes, token: str, size: int) -> bytes:
    """The payload of a token sealed with any of ``keys``; ``InvalidToken`` otherwise."""
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
    for secret in keys:
        if not secret:
            continue
        tag_key, mask_key = _siv_keys(secret, purpose)
        mask = hmac.digest(mask_key, tag, "sha256")
        payload = _xor(sealed, mask)
        if hmac.compare_digest(hmac.digest(tag_key, payload, "sha256")[:TAG_BYTES], tag):
            return payload
    raise InvalidToken("this link is not valid")


def unsubscribe_token(secret: str, subscriber_id: int, campaign_id: int | None) -> str:
    """The token in a message's unsubscribe, preferences and mailto links (39 chars)."""
    payload = subscriber_id.to_bytes(ID_BYTES, "big") + (campaign_id or 0).to_bytes(ID_BYTES, "big")
    return seal(secret, UNSUBSCRIBE, payload)


def read_unsubscribe_token(keys: Sequence[str], token: str) -> tuple[int, int | None]:
    """(subscriber id, campaign id or None); ``InvalidToken`` if it is not ours."""
    payload = unseal(keys, UNSUBSCRIBE, token, 2 * ID_BYTES)
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
    return seal(secret, CONFIRM, payload)


def read_confirm_token(keys: Sequence[str], token: str, *, max_age: int = CONFIRM_MAX_AGE,
                       now: float | None = None) -> tuple[int, int | None, int]:
    """(subscriber id, list id or None, issued at as a Unix time); ``InvalidToken`` if
    it is not ours or has expired."""
    payload = unseal(keys, CONFIRM, token, 2 * ID_BYTES + 5)
    subscriber_id = int.from_bytes(payload[:ID_BYTES], "big")
    list_id = int.from_bytes(payload[ID_BYTES:2 * ID_BYTES], "big")
    issued = int.from_bytes(payload[2 * ID_BYTES:], "big")
    current = time.time() if now is None else now
    if subscriber_id == 0 or issued > current + 300:
        raise InvalidToken("this link is not valid")
    if current - issued > max_age:
        raise InvalidToken("this confirmation link has expired; subscribe again to get a new one")
    return subscriber_id, list_id or None, issued


# --- VERP and Message-ID ------------------------------------------------------------------

def verp_token(secret: str, delivery_id: int) -> str:
    """``<delivery id>-<mac>``: the token of the delivery's envelope sender (VERP)."""
    return f"{delivery_id}-{_mac(secret, f'verp:{delivery_id}', 12)}"


def read_verp_token(keys: Sequence[str], token: str) -> int | None:
    """The delivery id of a VERP token made with one of ``keys``, else None."""
    m = _VERP_TOKEN.match(token.strip().lower())
    if not m:
        return None
    delivery_id = int(m.group(1))
    for secret in keys:
        if secret and hmac.compare_digest(verp_token(secret, delivery_id), m.group(0)):
            return delivery_id
    return None


# A VERP address or one of our Message-IDs anywhere in a text (a bounce that quotes the
# returned message as prose, a provider's event): candidates only, each still verified.
_VERP_IN_TEXT = re.compile(r"bounces\+(\d{1,18}-[0-9a-f]{12})@", re.IGNORECASE)


def verp_tokens_in(text: str) -> list[str]:
    """The VERP tokens of every ``bounces+TOKEN@`` address in ``text`` (unverified)."""
    return list(dict.fromkeys(m.group(1).lower() for m in _VERP_IN_TEXT.finditer(text)))


def message_ids_in(text: str) -> list[str]:
    """Every Message-ID of ours in ``text`` (unverified; ``read_message_id`` checks one)."""
    return list(dict.fromkeys(m.group(0) for m in _OUR_MESSAGE_ID.finditer(text)))


def message_id(secret: str, campaign_id: int, delivery_id: int, domain: str) -> str:
    """Stable per delivery: a repeated send after a crash carries the same Message-ID,
    which lets receiving systems drop the duplicate."""
    return f"<nl.{campaign_id}.{delivery_id}.{_mac(secret, f'mid:{delivery_id}', 10)}@{domain}>"


def read_message_id(keys: Sequence[str], value: str) -> int | None:
    """The delivery id of one of our Message-IDs found in ``value``, else None."""
    m = _OUR_MESSAGE_ID.search(value)
    if not m:
        return None
    campaign_id, delivery_id, domain = int(m.group(1)), int(m.group(2)), m.group(4)
    for secret in keys:
        if secret and hmac.compare_digest(message_id(secret, campaign_id, delivery_id, domain), m.group(0)):
            return delivery_id
    return None


# --- sessions -----------------------------------------------------------------------------

def session_serializer(keys: Sequence[str], salt: str) -> URLSafeTimedSerializer:
    """Signs with the current key, accepts any of ``keys`` (itsdangerous signs with the
    last key of its list)."""
    return URLSafeTimedSerializer([*reversed([k for k in keys if k])], salt=salt)


# --- click and open tracking --------------------------------------------------------------
#
# A click token names a delivery (and its campaign) and a link index. Sealing each of a
# message's links on its own would cost a seal (~13 µs) per link per recipient; instead
# the (campaign, delivery) pair is sealed once per message, as for the unsubscribe link,
# and each link appends its index and a MAC over the sealed part and the index (one HMAC,
# ~1 µs). Nobody can read the ids out of it or forge one, and no index can be changed
# or moved to another message's token.

CLICK = b"click"
OPEN = b"open"
_SEALED_PAIR = 39  # base32 of a 12-byte tag and two 6-byte ids
_LINK_MAC_BYTES = 8


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


@functools.lru_cache(maxsize=16)
def _link_key(secret: str) -> bytes:
    return hmac.digest(hashlib.sha256(secret.encode("utf-8")).digest(), b"newsletter/click-link", "sha256")


def _link_suffix(secret: str, head: str, index: int) -> str:
    at = index.to_bytes(2, "big")
    return _b32(at + hmac.digest(_link_key(secret), head.encode("ascii") + at, "sha256")[:_LINK_MAC_BYTES])


def click_tokens(secret: str, campaign_id: int, delivery_id: int, count: int) -> list[str]:
    """The tokens of one message's ``count`` tracked links (55 characters each)."""
    head = seal(secret, CLICK, campaign_id.to_bytes(ID_BYTES, "big") + delivery_id.to_bytes(ID_BYTES, "big"))
    return [head + _link_suffix(secret, head, i) for i in range(count)]


def read_click_token(keys: Sequence[str], token: str) -> tuple[int, int, int]:
    """(campaign id, delivery id, link index); ``InvalidToken`` for anything else."""
    if not isinstance(token, str) or len(token) != _SEALED_PAIR + 16:
        raise InvalidToken("this link is not valid")
    head, suffix = token[:_SEALED_PAIR].lower(), token[_SEALED_PAIR:].lower()
    for secret in keys:
        if not secret:
            continue
        try:
            payload = unseal([secret], CLICK, head, 2 * ID_BYTES)
        except InvalidToken:
            continue
        try:
            index = int.from_bytes(base64.b32decode(suffix.upper())[:2], "big")
        except (binascii.Error, ValueError) as err:
            raise InvalidToken("this link is not valid") from err
        if not same(suffix, _link_suffix(secret, head, index)):
            break
        return int.from_bytes(payload[:ID_BYTES], "big"), int.from_bytes(payload[ID_BYTES:], "big"), index
    raise InvalidToken("this link is not valid")


def open_token(secret: str, campaign_id: int, delivery_id: int) -> str:
    """The open pixel's token: the (campaign, delivery) pair, sealed."""
    return seal(secret, OPEN, campaign_id.to_bytes(ID_BYTES, "big") + delivery_id.to_bytes(ID_BYTES, "big"))


def read_open_token(keys: Sequence[str], token: str) -> tuple[int, int]:
    payload = unseal(keys, OPEN, token, 2 * ID_BYTES)
    return int.from_bytes(payload[:ID_BYTES], "big"), int.from_bytes(payload[ID_BYTES:], "big")
