"""One personalised message per recipient, assembled from a template compiled once per issue.

Building a MIME message with ``email.message.EmailMessage`` costs 7–8 ms for a 30 KB issue,
ten times the SMTP send itself (FACTS.md). So an issue is compiled once into encoded byte
chunks, and each recipient's copy is a ``b"".join`` of those chunks and a few short
encoded values:

- Bodies are quoted-printable (RFC 2045 §6.7). Each static stretch between two merge
  markers is encoded on its own and ends with a soft line break, so every per-recipient
  value starts at column 0 of its own encoded line and ends with a soft break too. A value
  can therefore never shift the line lengths of the static chunks, and no marker can be
  split by a soft break. Decoders join soft-broken lines, so the decoded text is exactly
  the body with the markers filled in (``mailer.merge.personalise``).
- Headers that differ per recipient (To, Date, Message-ID, List-Unsubscribe) are written
  by hand, with RFC 2047 encoded-words when needed: ``email.headerregistry`` costs about
  as much per header as the whole assembly.

Nothing a recipient or an editor types can start a new header line: control characters
(CR and LF among them) are dropped from names and URLs, refused in the subject and in
every compile-time header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html as _html
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.headerregistry import Address
from email.quoprimime import body_encode as _qp_body_encode
from email.utils import format_datetime

from mailer.core.errors import InvalidInput
from mailer.merge import MARKERS, NAME_FALLBACK

CRLF = "\r\n"
# RFC 5322 §2.1.1: lines SHOULD be at most 78 characters, MUST be at most 998.
_FOLD_AT = 78
# RFC 2047 §2: an encoded-word is at most 75 characters. 39 bytes of UTF-8 make 52 base64
# characters, 64 with "=?utf-8?b?" and "?=", which leaves room for "Subject: " on line one.
_WORD_BYTES = 39

# Control characters (C0, DEL, C1) and the Unicode line/paragraph separators: any of them
# in a header could end the line or confuse a parser; in a body they have no business.
_CONTROL = dict.fromkeys([*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029])
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# RFC 5322 §3.2.3 atext plus space: a display name made only of these needs no quoting.
_PLAIN_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")
_PLAIN_UNSTRUCTURED = re.compile(r"[\x20-\x7e]*")
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 §3.6.8 ftext
# What may sit inside <...> in a header: printable ASCII without space, "<" or ">".
_ANGLE_TEXT = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+")

_OWN_HEADERS = frozenset(
    h.lower()
    for h in (
        "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "List-Unsubscribe",
        "List-Unsubscribe-Post", "List-Id", "Feedback-ID", "Content-Type",
        "Content-Transfer-Encoding", "Bcc", "Cc", "DKIM-Signature", "Return-Path",
    )
)


def _strip_controls(value: str) -> str:
    # The search first: a value without control characters (nearly every one) is not
    # copied, and ``translate`` with a table costs ~2 µs per URL, several per message.
    return value.translate(_CONTROL) if _CONTROL_RE.search(value) else value


# --- headers ---------------------------------------------------------------------------


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 "B" encoded-words for ``text``, split between characters (§5: each word must
    hold whole characters) so each word stays well under 75 characters."""
    words, chunk, size = [], [], 0
    for ch in text:
        n = len(ch.encode("utf-8"))
        if size + n > _WORD_BYTES and chunk:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(ch)
        size += n
    if chunk:
        words.append("".join(chunk))
    return ["=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?=" for w in words]


def _fold_words(name: str, words: list[str]) -> str:
    """``Name: w1 w2 ...`` folded before a word whenever the line would pass 78 characters.
    The words are joined by a single space, which the unfolded header keeps."""
    line = name + ":"
    out = []
    for word in words:
        if len(line) + 1 + len(word) > _FOLD_AT and line.strip() and not line.endswith(":"):
            out.append(line)
            line = ""
        line += " " + word
    out.append(line)
    return CRLF.join(out) + CRLF


def _needs_encoding(text: str) -> bool:
    # "=?" could be taken for the start of an encoded-word by a lenient decoder (Python's
    # own decodes them even inside quoted strings), so such text is encoded too.
    return not text.isascii() or "=?" in text or not _PLAIN_UNSTRUCTURED.fullmatch(text)


def _unstructured(name: str, value: str) -> str:
    """An unstructured header (Subject, extra headers): plain when ASCII, folded at spaces;
    RFC 2047 encoded-words otherwise or when a single word would make a line over 78."""
    if not _needs_encoding(value):
        # Fold before a run of spaces only: unfolding (removing the CRLF) gives back the
        # exact value, and no folded line is whitespace only.
        tokens = re.findall(r" *[^ ]+| +$", value)
        if all(len(t) < _FOLD_AT - 10 for t in tokens):
            line, out = f"{name}:", []
            for i, tok in enumerate(tokens):
                sep = " " if i == 0 else ""
                if i and len(line) + len(tok) > _FOLD_AT and tok.startswith(" ") and tok.strip():
                    out.append(line)
                    line = ""
                line += sep + tok
            out.append(line)
            return CRLF.join(out) + CRLF
    return _fold_words(name, _encoded_words(value))


def _phrase_words(display_name: str) -> list[str]:
    """A display name as header words: bare atoms, one quoted string, or encoded-words."""
    if not display_name:
        return []
    if _needs_encoding(display_name) or len(display_name) > 60:
        return _encoded_words(display_name)
    if _PLAIN_PHRASE.fullmatch(display_name) and display_name == " ".join(display_name.split()):
        return display_name.split(" ")
    return ['"' + display_name.replace("\\", "\\\\").replace('"', '\\"') + '"']


def _check_addr_spec(addr: str, what: str) -> str:
    if not addr.isascii() or not _ANGLE_TEXT.fullmatch(addr) or addr.count("@") != 1:
        raise InvalidInput(f"{what}: not a plain ASCII address: {addr!r}")
    return addr


def _address_header(name: str, display_name: str, addr: str) -> str:
    return _fold_words(name, [*_phrase_words(display_name), f"<{addr}>"])


def _check_plain(value: str, what: str) -> str:
    if not value.isascii() or _CONTROL_RE.search(value):
        raise InvalidInput(f"{what}: control or non-ASCII characters are not allowed: {value!r}")
    return value


# --- quoted-printable bodies -----------------------------------------------------------


_LEADING_DOT = re.compile(r"(?m)^\.")


def _qp_static(segment: str, *, ends_value_slot: bool) -> bytes:
    """QP-encode one static stretch of a body (once per issue). When a value follows, end
    on a soft line break so the value starts at column 0. Lines are kept short enough
    that a soft break "=" appended to the last one still fits in RFC 2045's 76."""
    if not segment:
        return b""
    encoded = _qp_body_encode(segment.encode("utf-8").decode("latin-1"), maxlinelen=73, eol=CRLF)
    if ends_value_slot and not encoded.endswith(CRLF):
        encoded += "=" + CRLF
    # A line starting with "." would make the SMTP client dot-stuff the whole message
    # (RFC 5321 §4.5.2), a regular-expression pass over 50 KB per recipient; "=2E" is the
    # same character in quoted-printable (RFC 2045 §6.7). Lines were cut at 73 so the two
    # extra characters still fit in 76.
    encoded = _LEADING_DOT.sub("=2E", encoded)
    return encoded.encode("ascii")


def _dot_free(piece: bytes) -> bool:
    """No line of ``piece`` starts with "." (counting its own start as a line's)."""
    return not piece.startswith(b".") and b"\n." not in piece


def _qp_value(value: str) -> bytes:
    """QP-encode a per-recipient value (no control characters) on lines of its own, ending
    with a soft break. ``binascii.b2a_qp`` is C: about 1 µs for a URL."""
    if not value:
        return b""
    out = binascii.b2a_qp(value.encode("utf-8"), quotetabs=False, istext=False, header=False)
    out = out.replace(b"=\n", b"=\r\n")  # b2a_qp uses LF when its input has no CRLF
    # b2a_qp lets the very last line reach 76 characters; our soft break must still fit.
    if len(out) - (out.rfind(b"\n") + 1) >= 76:
        out = out[:-1] + b"=\r\n" + out[-1:]
    return out + b"=\r\n"


def _compile_body(body: str, *, html: bool, extra: tuple[str, ...] = ()) -> list[bytes | tuple[str, bool]]:
    """Split ``body`` on the merge markers (and the ``extra`` ones, each its own field):
    encoded static chunks and (field, html) slots."""
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    by_marker = {**{m: f for f, m in MARKERS.items()}, **{m: m for m in extra}}
    pattern = re.compile("|".join(re.escape(m) for m in by_marker))
    plan: list[bytes | tuple[str, bool]] = []
    pos = 0
    for match in pattern.finditer(body):
        chunk = _qp_static(body[pos : match.start()], ends_value_slot=True)
        if chunk:
            plan.append(chunk)
        plan.append((by_marker[match.group()], html))
        pos = match.end()
    tail = _qp_static(body[pos:], ends_value_slot=False)
    if tail:
        plan.append(tail)
    return plan


# --- the template ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recipient:
    """Everything that differs between two copies of one issue."""

    email: str
    name: str
    message_id: str  # "<...@domain>"
    unsubscribe_url: str  # https one-click URL (RFC 8058)
    unsubscribe_mailto: str = ""  # "mailto:unsubscribe+TOKEN@domain"; empty: none
    preferences_url: str = ""
    date: str | None = None  # RFC 5322 date; None: now, at assembly
    # The values of a template's extra markers (click and open tokens), by marker.
    extra: Mapping[str, str] = field(default_factory=dict)


def _clean_url(url: str, what: str) -> str:
    url = _strip_controls(url).strip()
    if url and not _ANGLE_TEXT.fullmatch(url):
        raise InvalidInput(f"{what}: not a plain ASCII URL: {url!r}")
    return url


_date_cache: tuple[int, str] = (-1, "")


def _date_now() -> str:
    """The current time as an RFC 5322 date in UTC, written ``+0000``: §3.3 reserves
    ``-0000`` (what ``formatdate(localtime=False)`` writes) for "zone unknown", which some
    filters score as a forged date. Formatted once per second, not once per message."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, format_datetime(datetime.fromtimestamp(now, timezone.utc)))
    return _date_cache[1]


BodyCanon = Callable[[bytes, bool], bytes]


class MessageTemplate:
    """An issue compiled for sending; ``assemble`` makes one recipient's copy.

    With a ``body_canon`` (DKIM's body canonicalisation of one whole-line piece of a body;
    ``last`` for the final one), each static body piece is canonicalised once, here, and
    ``assemble_for_signing`` hashes the body from those and the short per-recipient
    values: the 50 KB static body is not canonicalised again for every recipient. That
    holds because every piece of the body is whole lines (each value sits on lines of its
    own, static stretches end on a line break before a value: ``_compile_body``), so the
    canonical body is the pieces' canonical forms joined."""

    __slots__ = ("_plan", "_fields", "_canon", "_body_at", "_body_canon", "_slots", "_static_dot_free")

    def __init__(self, plan: list[bytes | str | tuple[str, bool]], *, body_canon: BodyCanon | None = None):
        # Merge adjacent static chunks so assembly joins as few pieces as possible.
        merged: list[bytes | str | tuple[str, bool]] = []
        for piece in plan:
            if isinstance(piece, bytes) and merged and isinstance(merged[-1], bytes):
                merged[-1] += piece
            else:
                merged.append(piece)
        self._plan = tuple(merged)
        self._fields = frozenset(p for p in merged if isinstance(p, tuple))
        # Where the per-recipient pieces go, and whether the static ones are free of lines
        # starting with "." (``_qp_static`` sees to it): then a copy needs SMTP's
        # transparency pass (RFC 5321 §4.5.2) only when one of its own values has one.
        self._slots = tuple(i for i, p in enumerate(merged) if not isinstance(p, bytes))
        self._static_dot_free = all(_dot_free(p) for p in merged if isinstance(p, bytes))
        self._body_canon = body_canon
        self._canon: tuple[bytes | None, ...] = ()
        self._body_at = 0
        if body_canon is not None:
            self._canon, self._body_at = self._canonical_static(body_canon)

    def _canonical_static(self, canon: BodyCanon) -> tuple[tuple[bytes | None, ...], int]:
        """The canonical form of each static piece from the body on (None for a value or a
        header piece), and the index of the piece where the body starts."""
        start = next(i for i, p in enumerate(self._plan) if isinstance(p, bytes) and b"\r\n\r\n" in p)
        last = len(self._plan) - 1
        if not isinstance(self._plan[last], bytes):
            raise ValueError("a template's body must end with static text")
        out: list[bytes | None] = []
        for i, piece in enumerate(self._plan):
            if not isinstance(piece, bytes) or i < start:
                out.append(None)
                continue
            body = piece.partition(b"\r\n\r\n")[2] if i == start else piece
            out.append(canon(body, i == last))
        return tuple(out), start

    def assemble(self, r: Recipient) -> bytes:
        """The complete RFC 5322 message for ``r``, CRLF line endings, ready for DATA."""
        return b"".join(self._pieces(r))

    def assemble_for_relay(self, r: Recipient, *, signing: bool = False) -> tuple[bytes, bytes | None, bool]:
        """(the message, the SHA-256 of its canonical body when ``signing``, whether no
        line of it starts with "."). The last is checked on the few per-recipient pieces
        only (the static ones were checked once): with it the SMTP transport skips its
        transparency scan of the whole 50 KB message."""
        pieces = self._pieces(r)
        body_hash = self._body_hash(pieces) if signing else None
        dot_free = self._static_dot_free and all(_dot_free(pieces[i]) for i in self._slots)
        return b"".join(pieces), body_hash, dot_free

    def assemble_for_signing(self, r: Recipient) -> tuple[bytes, bytes]:
        """(the message, the SHA-256 of its canonical body) for a DKIM signature."""
        pieces = self._pieces(r)
        return b"".join(pieces), self._body_hash(pieces)

    def _body_hash(self, pieces: list[bytes]) -> bytes:
        if self._body_canon is None:
            raise ValueError("compiled without a body canonicalisation")
        digest = hashlib.sha256()
        for i in range(self._body_at, len(pieces)):
            static = self._canon[i]
            digest.update(static if static is not None else self._body_canon(pieces[i], False))
        return digest.digest()

    def _pieces(self, r: Recipient) -> list[bytes]:
        email = _check_addr_spec(_strip_controls(r.email).strip(), "recipient address")
        name = _strip_controls(r.name)
        message_id = _strip_controls(r.message_id).strip()
        if not (message_id.startswith("<") and message_id.endswith(">")) or not _ANGLE_TEXT.fullmatch(
            message_id[1:-1]
        ) or "@" not in message_id:
            raise InvalidInput(f"Message-ID must look like <id@domain>: {r.message_id!r}")
        unsubscribe_url = _clean_url(r.unsubscribe_url, "unsubscribe URL")
        mailto = _clean_url(r.unsubscribe_mailto, "unsubscribe mailto")
        preferences_url = _clean_url(r.preferences_url, "preferences URL")
        date = _strip_controls(r.date).strip() if r.date else _date_now()

        values = {
            "name": name or NAME_FALLBACK,
            "email": email,
            "unsubscribe_url": unsubscribe_url,
            "preferences_url": preferences_url,
        }
        unsubscribe = ", ".join(f"<{u}>" for u in (unsubscribe_url, mailto) if u)
        # Fold List-Unsubscribe between its URLs only: whitespace inside <...> is legal
        # (RFC 2369 §2) but not every client ignores it.
        if unsubscribe:
            unsubscribe_header = "List-Unsubscribe: " + unsubscribe.replace(", ", "," + CRLF + " ") + CRLF
        else:
            unsubscribe_header = ""
        encoded: dict[object, bytes] = {
            "to": _address_header("To", name, email).encode("ascii"),
            "date": f"Date: {date}{CRLF}".encode("ascii", "replace"),
            "message_id": f"Message-ID: {message_id}{CRLF}".encode("ascii"),
            "list_unsubscribe": unsubscribe_header.encode("ascii"),
        }
        values.update(r.extra)
        by_text: dict[str, bytes] = {}  # a value in both parts, unchanged by escaping, is encoded once
        for key in self._fields:
            name, is_html = key
            value = values.get(name, "")
            if is_html:
                value = _html.escape(value, quote=True)
            if value not in by_text:
                by_text[value] = _qp_value(value)
            encoded[key] = by_text[value]
        pieces = list(self._plan)
        for i in self._slots:
            pieces[i] = encoded[pieces[i]]
        return pieces


def compile_message(
    *,
    subject: str,
    from_: Address,
    html: str,
    text: str,
    list_id: str,
    list_name: str,
    feedback_id: str,
    extra_headers: Mapping[str, str] | None = None,
    body_canon: BodyCanon | None = None,
    html_markers: tuple[str, ...] = (),
) -> MessageTemplate:
    """Compile an issue once: static headers, MIME structure and encoded body chunks.

    ``html`` and ``text`` hold ``mailer.merge.MARKERS``. Raises ``InvalidInput`` for a
    subject or header value with a line break, a header we set ourselves in
    ``extra_headers``, or a non-ASCII address or list id. ``html_markers`` are more
    per-recipient slots of the HTML part (click and open tracking, ``mailer.tracking``),
    filled from ``Recipient.extra``; without them the HTML compiles as it always has.
    """
    if "\r" in subject or "\n" in subject:
        raise InvalidInput("the subject must be one line")
    subject = _strip_controls(subject.replace("\t", " ")).strip()
    if _CONTROL_RE.search(from_.display_name):
        raise InvalidInput("the sender's name must be one line without control characters")
    sender = _check_addr_spec(from_.addr_spec, "sender address")
    _check_plain(list_id, "List-Id")
    if not _ANGLE_TEXT.fullmatch(list_id):
        raise InvalidInput(f"List-Id must be a dotted name like news.example.com: {list_id!r}")
    _check_plain(feedback_id, "Feedback-ID")
    if _CONTROL_RE.search(list_name):
        raise InvalidInput("the list name must be one line without control characters")

    extra = []
    for hname, hvalue in (extra_headers or {}).items():
        if not _HEADER_NAME.fullmatch(hname):
            raise InvalidInput(f"not a header name: {hname!r}")
        if hname.lower() in _OWN_HEADERS:
            raise InvalidInput(f"{hname} is set by the mailer and cannot be given as an extra header")
        if _CONTROL_RE.search(hvalue):
            raise InvalidInput(f"{hname}: the value must be one line without control characters")
        extra.append(_unstructured(hname, hvalue))

    # "=_" cannot occur in quoted-printable output ("=" is always followed by hex or CRLF),
    # so no body line can be mistaken for the boundary (RFC 2045 §6.7, RFC 2046 §5.1.1).
    boundary = "=_NL_" + secrets.token_hex(12)
    part_headers = 'Content-Type: text/{}; charset="utf-8"' + CRLF + "Content-Transfer-Encoding: quoted-printable" + CRLF + CRLF

    plan: list[bytes | str | tuple[str, bool]] = [
        _address_header("From", from_.display_name, sender).encode("ascii"),
        "to",
        _unstructured("Subject", subject).encode("ascii"),
        "date",
        "message_id",
        ("MIME-Version: 1.0" + CRLF).encode("ascii"),
        "list_unsubscribe",
        ("List-Unsubscribe-Post: List-Unsubscribe=One-Click" + CRLF).encode("ascii"),
        _fold_words("List-Id", [*_phrase_words(list_name), f"<{list_id}>"]).encode("ascii"),
        f"Feedback-ID: {feedback_id}{CRLF}".encode("ascii"),
        *(h.encode("ascii") for h in extra),
        (f'Content-Type: multipart/alternative;{CRLF} boundary="{boundary}"{CRLF}{CRLF}').encode("ascii"),
        # RFC 8058 and mailbox providers want text/plain first, text/html last (RFC 2046 §5.1.4).
        (f"--{boundary}{CRLF}" + part_headers.format("plain")).encode("ascii"),
        *_compile_body(text, html=False),
        (f"{CRLF}--{boundary}{CRLF}" + part_headers.format("html")).encode("ascii"),
        *_compile_body(html, html=True, extra=html_markers),
        f"{CRLF}--{boundary}--{CRLF}".encode("ascii"),
    ]
    return MessageTemplate(plan, body_canon=body_canon)


# --- Feedback-ID -----------------------------------------------------------------------

# Gmail's Feedback Loop header is "a:b:c:SenderId": up to three identifiers of the
# sender's choice, then a SenderId of 5-15 characters that names the sender, the same on
# every message, so that Postmaster Tools can group complaints by campaign. No personal
# data goes into it (it is the same for every recipient anyway).
FEEDBACK_KIND = "newsletter"
_FEEDBACK_FIELD = re.compile(r"[A-Za-z0-9._-]{1,40}")


def feedback_sender_id(domain: str) -> str:
    """A stable SenderId for ``domain``: "nl" and 10 hex digits of its SHA-256 (12
    characters, whatever the length of the domain; a domain itself is often over 15)."""
    return "nl" + hashlib.sha256(domain.strip().lower().encode("utf-8")).hexdigest()[:10]


def feedback_id(campaign: int | str, mailing_list: int | str, *, domain: str, kind: str = FEEDBACK_KIND) -> str:
    """``campaign:list:kind:SenderId`` for the ``Feedback-ID`` header."""
    fields = [str(campaign), str(mailing_list), kind]
    for value in fields:
        if not _FEEDBACK_FIELD.fullmatch(value):
            raise InvalidInput(f"Feedback-ID fields are letters, digits and ._- only: {value!r}")
    return ":".join([*fields, feedback_sender_id(domain)])


# --- VERP ------------------------------------------------------------------------------

_VERP_RE = re.compile(r"^bounces\+([^@]+)@[^@]+$", re.IGNORECASE)


def verp_address(token: str, domain: str) -> str:
    """The per-recipient envelope sender ``bounces+TOKEN@domain``: a bounce to it names the
    delivery that failed, whatever the bouncing MTA writes in its report (VERP)."""
    if not token or not re.fullmatch(r"[A-Za-z0-9._=-]+", token):
        raise InvalidInput(f"a VERP token may hold letters, digits and ._=- only: {token!r}")
    _check_plain(domain, "VERP domain")
    return f"bounces+{token}@{domain}"


def parse_verp(address: str) -> str | None:
    """The token of a VERP address (``<...>`` and a display name allowed), or ``None``."""
    address = address.strip()
    if "<" in address and address.endswith(">"):
        address = address[address.rindex("<") + 1 : -1]
    m = _VERP_RE.match(address)
    return m.group(1) if m else None
