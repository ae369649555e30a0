"""DKIM signatures (RFC 6376) with relaxed/relaxed canonicalisation: rsa-sha256, and
ed25519-sha256 (RFC 8463) next to it when configured (receivers that do not know it
ignore it, so an RSA signature always goes along).

dkimpy's ``dkim.sign`` spends 13 ms per message in a pure-Python RSA ``pow``; the same
signature through OpenSSL (``cryptography``) takes about 1 ms (FACTS.md). The body's
canonical form is not worked out per message: ``relaxed_piece`` canonicalises the static
stretches of a compiled message once (``mailer.message``), and ``sign`` takes the body
hash made from them. dkimpy stays the reference: the tests verify our signatures with
``dkim.verify``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

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


def load_private_key(value: str, *, setting: str = _SETTING, ed25519_key: bool = False) -> bytes:
    """The PEM bytes of a private key given inline (as an environment variable may hold
    it, ``\\n`` escapes allowed) or as a path to a PEM file. Raises a one-line
    ``ConfigurationError`` naming the setting when it is neither or not a usable key."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        if "\n" not in text and "\\n" in text:
            text = text.replace("\\n", "\n")
        pem = text.encode("ascii", "replace") + b"\n"
    else:
        try:
            pem = Path(text).expanduser().read_bytes()
        except OSError as err:
            raise ConfigurationError(f"{setting}: cannot read {text!r}: {err.strerror or err}") from err
    key = _load_key(pem, setting)
    if ed25519_key != isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigurationError(f"{setting}: an Ed25519 key is needed" if ed25519_key else
                                 f"{setting}: an RSA key is needed (receivers expect rsa-sha256)")
    return pem


def _load_key(pem: bytes, setting: str = _SETTING) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise ConfigurationError(f"{setting}: not an unencrypted PEM private key") from err
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(f"{setting}: an RSA (or Ed25519) key is needed")
    if key.key_size < 1024:
        raise ConfigurationError(f"{setting}: the key has {key.key_size} bits; Gmail and Yahoo want at least 1024")
    return key


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 §3.4.2: lower-case the name, unfold, collapse whitespace, trim the value."""
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" \t")
    return name.strip(b" \t").lower() + b":" + value


def _relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4: no whitespace at line ends, runs of whitespace made one space,
    no empty lines at the end, and a non-empty body ends with CRLF."""
    return relaxed_piece(body, True)


def relaxed_piece(piece: bytes, last: bool) -> bytes:
    """``_relaxed_body`` of one piece of a body that is whole lines; only the ``last``
    piece loses the empty lines at the end. The pieces' results, joined, are the
    canonical body (whitespace rules never cross a line break)."""
    if last and piece and not piece.endswith(b"\r\n"):
        piece += b"\r\n"
    if b" \r\n" in piece or b"\t\r\n" in piece:
        piece = _WSP_EOL.sub(b"\r\n", piece)
    if b"  " in piece or b"\t" in piece:
        piece = _WSP_RUN.sub(b" ", piece)
    if not last:
        return piece
    piece = piece.rstrip(b"\r\n")
    return piece + b"\r\n" if piece else b""


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
    """Signs messages for one ``selector._domainkey.domain`` key (RSA or Ed25519)."""

    SIGNED_HEADERS = SIGNED_HEADERS

    def __init__(self, selector: str, domain: str, private_key_pem: bytes, *,
                 signed_headers: tuple[str, ...] = SIGNED_HEADERS):
        for what, v in (("selector", selector), ("domain", domain)):
            if not v or not re.fullmatch(r"[A-Za-z0-9._-]+", v):
                raise ConfigurationError(f"NEWSLETTER_DKIM_{what.upper()}: not a DNS name: {v!r}")
        self.selector = selector
        self.domain = domain.lower()
        self._key = _load_key(private_key_pem)
        self.algorithm = "ed25519-sha256" if isinstance(self._key, ed25519.Ed25519PrivateKey) else "rsa-sha256"
        self._signed = tuple(h.lower().encode("ascii") for h in signed_headers)
        if b"dkim-signature" in self._signed:  # the signatures of a message are made independently
            raise ConfigurationError("a DKIM signature cannot sign another one's DKIM-Signature header")

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def dns_record(self) -> str:
        """The TXT record receivers look up to verify this key's signatures (RFC 6376
        §3.6.1; RFC 8463 §4.2 for Ed25519: the raw 32-byte public key)."""
        public = self._key.public_key()
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")

    def sign(self, message: bytes, *, body_hash: bytes | None = None, timestamp: int | None = None) -> bytes:
        """``message`` (CRLF line endings) with a ``DKIM-Signature:`` header prepended.
        ``body_hash``: the SHA-256 of the canonical body, when the caller has it already
        (``MessageTemplate.assemble_for_signing``)."""
        end = message.find(b"\r\n\r\n")
        if end < 0:
            raise InvalidInput("cannot DKIM-sign a message without a header/body separator")
        digest = body_hash if body_hash is not None else hashlib.sha256(_relaxed_body(message[end + 4:])).digest()
        return self.header(message[:end], digest, timestamp=timestamp) + message

    def header(self, head: bytes, body_hash: bytes, *, timestamp: int | None = None) -> bytes:
        """The ``DKIM-Signature:`` header field (CRLF included) for a message whose header
        section is ``head`` (without the blank line) and whose canonical body hashes to
        ``body_hash``: what ``sign`` prepends, for a caller that puts the message together
        itself and so copies its body once however many signatures it carries."""
        body_hash_b64 = base64.b64encode(body_hash).decode("ascii")

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
            f" v=1; a={self.algorithm}; c=relaxed/relaxed; d={self.domain}; s={self.selector};\r\n"
            f" t={stamp}; h={h};\r\n bh={body_hash_b64};\r\n b="
        ).encode("ascii")
        # §3.7: the signature header itself is hashed last, with an empty b= and no CRLF.
        canon.append(_relaxed_header(b"DKIM-Signature", value))
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            # RFC 8463 §3: Ed25519 over the SHA-256 of the canonical header data.
            signature = self._key.sign(hashlib.sha256(b"".join(canon)).digest())
        else:
            signature = self._key.sign(b"".join(canon), padding.PKCS1v15(), hashes.SHA256())
        b64 = _fold(base64.b64encode(signature).decode("ascii"))
        return b"DKIM-Signature:" + value + b64.encode("ascii") + b"\r\n"
