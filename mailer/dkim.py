"""DKIM signatures (RFC 6376), rsa-sha256 with relaxed/relaxed canonicalisation.

dkimpy's ``dkim.sign`` spends 13 ms per message in a pure-Python RSA ``pow``; the same
signature through OpenSSL (``cryptography``) takes about 1 ms (FACTS.md). Canonicalising
and hashing are a few regular expressions, done here so nothing else is in the way.
dkimpy stays the reference: the tests verify our signatures with ``dkim.verify``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailer.core.errors import ConfigurationError, InvalidInput

# Every header a receiver or a mailbox provider relies on. RFC 8058 §4 requires
# List-Unsubscribe and List-Unsubscribe-Post to be covered by the signature.
SIGNED_HEADERS = (
    "from", "to", "subject", "date", "message-id", "mime-version", "list-unsubscribe",
    "list-unsubscribe-post", "list-id", "feedback-id", "content-type",
)

_WSP_RUN = re.compile(rb"[ \t]+")
_WSP_EOL = re.compile(rb"[ \t]+\r\n")
_SETTING = "NEWSLETTER_DKIM_PRIVATE_KEY"


def load_private_key(value: str) -> bytes:
    """The PEM bytes of an RSA private key given inline (as an environment variable may
    hold it, ``\\n`` escapes allowed) or as a path to a PEM file. Raises a one-line
    ``ConfigurationError`` naming the setting when it is neither or not an RSA key."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        if "\n" not in text and "\\n" in text:
            text = text.replace("\\n", "\n")
        pem = text.encode("ascii", "replace") + b"\n"
    else:
        try:
            pem = Path(text).expanduser().read_bytes()
        except OSError as err:
            raise ConfigurationError(f"{_SETTING}: cannot read {text!r}: {err.strerror or err}") from err
    _load_rsa(pem)
    return pem


def _load_rsa(pem: bytes) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise ConfigurationError(f"{_SETTING}: not an unencrypted PEM private key") from err
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(f"{_SETTING}: an RSA key is needed (receivers expect rsa-sha256)")
    if key.key_size < 1024:
        raise ConfigurationError(f"{_SETTING}: the key has {key.key_size} bits; Gmail and Yahoo want at least 1024")
    return key


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 §3.4.2: lower-case the name, unfold, collapse whitespace, trim the value."""
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" \t")
    return name.strip(b" \t").lower() + b":" + value


def _relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4: no whitespace at line ends, runs of whitespace made one space,
    no empty lines at the end, and a non-empty body ends with CRLF."""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    if b" \r\n" in body or b"\t\r\n" in body:
        body = _WSP_EOL.sub(b"\r\n", body)
    if b"  " in body or b"\t" in body:
        body = _WSP_RUN.sub(b" ", body)
    body = body.rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def _split_headers(head: bytes) -> list[tuple[bytes, bytes]]:
    """(name, raw value) pairs, continuation lines kept in the value."""
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        elif b":" in line:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields


def _fold(b64: str, width: int = 72) -> str:
    return "\r\n ".join(b64[i : i + width] for i in range(0, len(b64), width))


class DkimSigner:
    """Signs messages for one ``selector._domainkey.domain`` key."""

    SIGNED_HEADERS = SIGNED_HEADERS

    def __init__(self, selector: str, domain: str, private_key_pem: bytes, *,
                 signed_headers: tuple[str, ...] = SIGNED_HEADERS):
        for what, v in (("selector", selector), ("domain", domain)):
            if not v or not re.fullmatch(r"[A-Za-z0-9._-]+", v):
                raise ConfigurationError(f"NEWSLETTER_DKIM_{what.upper()}: not a DNS name: {v!r}")
        self.selector = selector
        self.domain = domain.lower()
        self._key = _load_rsa(private_key_pem)
        self._signed = tuple(h.lower().encode("ascii") for h in signed_headers)

    def sign(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """``message`` (CRLF line endings) with a ``DKIM-Signature:`` header prepended."""
        head, sep, body = message.partition(b"\r\n\r\n")
        if not sep:
            raise InvalidInput("cannot DKIM-sign a message without a header/body separator")
        body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest()).decode("ascii")

        # RFC 6376 §5.4.2: with several instances of a header, sign from the bottom up.
        fields = _split_headers(head)
        by_name: dict[bytes, list[tuple[bytes, bytes]]] = {}
        for name, value in fields:
            by_name.setdefault(name.strip().lower(), []).append((name, value))
        signed_names, canon = [], []
        for name in self._signed:
            instances = by_name.get(name)
            if instances:
                field = instances.pop()
                signed_names.append(name.decode("ascii"))
                canon.append(_relaxed_header(*field) + b"\r\n")

        h = ":".join(signed_names)
        if len(h) > 60:  # fold the list after a colon; relaxed canonicalisation keeps a space
            cut = h.rfind(":", 0, 60) + 1
            h = h[:cut] + "\r\n " + h[cut:]
        stamp = int(time.time()) if timestamp is None else timestamp
        value = (
            f" v=1; a=rsa-sha256; c=relaxed/relaxed; d={self.domain}; s={self.selector};\r\n"
            f" t={stamp}; h={h};\r\n bh={body_hash};\r\n b="
        ).encode("ascii")
        # §3.7: the signature header itself is hashed last, with an empty b= and no CRLF.
        canon.append(_relaxed_header(b"DKIM-Signature", value))
        signature = self._key.sign(b"".join(canon), padding.PKCS1v15(), hashes.SHA256())
        b64 = _fold(base64.b64encode(signature).decode("ascii"))
        return b"DKIM-Signature:" + value + b64.encode("ascii") + b"\r\n" + message
