"""What an inbound message says, per recipient, as plain values: no database, no settings.

Mail comes back to the envelope sender of each message, the delivery's VERP address
``bounces+<id>-<mac>@domain``. What arrives there, read in this order:

1. An ARF complaint (RFC 5965): a ``message/feedback-report`` part anywhere in the
   message. ``not-spam`` (§7.3) and ``auth-failure`` (RFC 6591, a DMARC failure sample)
   name nobody who complained.
2. A DSN (RFC 3464): a ``message/delivery-status`` part anywhere in the message, with or
   without ``report-type``, nested in ``multipart/mixed`` or not; one field block per
   recipient, every one of them read. Non-standard ``Action`` values (``failure``,
   ``failed (...)``, ``error``) are read for what they mean.
3. A ``mailto:unsubscribe+TOKEN@`` request (RFC 8058's mailto alternative).
4. An auto-reply (RFC 3834: ``Auto-Submitted``, and the ``X-Autoreply``/``Precedence``
   headers older responders use) from anybody but a mail system.
5. Every other bounce format of the MTAs in use (qmail, Exim, Postfix without DSN,
   Exchange, GroupWise, Yahoo, AOL, Sendmail, delay warnings...): GNU Mailman's detectors
   (``flufl.bounce``) find the failed recipients; the status and reply codes near each
   address in the notification text are then judged like a DSN's.
6. Anything else is unknown, with the reason, and is kept for a person to look at.

Each failed recipient gets one verdict (``judge``), built on the one classification of
SMTP replies (``mailer.replies.classify``): permanent (the address is bad: suppress it),
transient (it may pass: counted towards the soft-bounce limit), policy (5.7.x, spam,
reputation: the sender is to blame, never the address) or ignore.

A report also carries everything that may tie it to one of our deliveries: VERP tokens
and our Message-IDs, unverified here (``mailer.bounces`` checks their MACs).
"""

from __future__ import annotations

import email
import email.policy
import enum
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from email.message import Message
from email.parser import HeaderParser
from email.utils import parseaddr

from flufl.bounce import all_failures

from mailer.core import signing
from mailer.message import parse_verp
from mailer.replies import Kind, classify
from subscribers.links import UNSUBSCRIBE_PREFIX, delivered_to

log = logging.getLogger(__name__)
# A library logs; the application decides where to. Without these, Python's last-resort
# handler would print flufl.bounce's tracebacks on a command's stderr.
log.addHandler(logging.NullHandler())
logging.getLogger("flufl.bounce").addHandler(logging.NullHandler())


class InboundKind(enum.StrEnum):
    bounce = "bounce"
    complaint = "complaint"
    auto_reply = "auto-reply"
    unsubscribe = "unsubscribe"
    unknown = "unknown"


class Verdict(enum.StrEnum):
    """What one recipient's failure means for the address."""

    permanent = "permanent"  # the address is bad (or its owner complained): suppress it
    transient = "transient"  # it may pass: counted towards the soft-bounce limit
    policy = "policy"  # 5.7.x, spam, reputation: the sender is to blame, never the address
    ignore = "ignore"  # delivered, relayed, an auto-reply, "not spam": nothing to do


class Channel(enum.StrEnum):
    """The way an inbound message or event came in (``inbound_message.channel``)."""

    pipe = "pipe"  # newsletter inbound, fed by the MTA
    lmtp = "lmtp"
    smtp = "smtp"
    imap = "imap"
    pop3 = "pop3"
    ses = "ses"
    postmark = "postmark"
    mailgun = "mailgun"
    sendgrid = "sendgrid"
    cli = "cli"  # newsletter inbound explain (never recorded)


class Source(enum.StrEnum):
    """What a report was read from (the ``origin`` of the events it records)."""

    dsn = "dsn"  # RFC 3464
    arf = "arf"  # RFC 5965
    mta = "mta"  # another MTA's bounce format, found by flufl.bounce
    mail = "mail"  # an auto-reply, an unsubscribe request, or nothing known


class DsnAction(enum.StrEnum):
    """RFC 3464 §2.3.3: what the reporting MTA did for a recipient."""

    failed = "failed"
    delayed = "delayed"
    delivered = "delivered"
    relayed = "relayed"
    expanded = "expanded"


class OddAction(enum.StrEnum):
    """Action values MTAs write that RFC 3464 does not define, with what they mean."""

    error = "error"  # OpenSMTPD: failed
    bounced = "bounced"
    rejected = "rejected"
    undeliverable = "undeliverable"
    deferred = "deferred"  # delayed
    retrying = "retrying"
    warning = "warning"


_ODD_FAILED = (OddAction.error, OddAction.bounced, OddAction.rejected, OddAction.undeliverable)
_ODD_DELAYED = (OddAction.deferred, OddAction.retrying, OddAction.warning)
GOOD_NEWS = (DsnAction.delivered, DsnAction.relayed, DsnAction.expanded)
# RFC 5965 §7.3 and RFC 6591: feedback reports that are not somebody complaining.
NOT_COMPLAINTS = ("not-spam", "auth-failure")


@dataclass(frozen=True)
class Reported:
    """One recipient of a report."""

    address: str  # as reported, without angle brackets, domain lower-cased; "" when withheld
    status: str  # RFC 3463 "5.1.1"; X.0.0 when the report gives none; "" for complaints
    diagnostic: str  # what the receiving system said, or the feedback type of a complaint
    verdict: Verdict
    action: str = ""  # DSN Action, or what the report said instead
    original: str = ""  # Original-Recipient, when the report gives it


@dataclass(frozen=True)
class Report:
    """What an inbound message (or a provider's event) reports."""

    kind: InboundKind
    source: str = Source.mail
    recipients: tuple[Reported, ...] = ()
    reporter: str = ""
    # Where the report was delivered to (a forged or mangled token there is refused).
    envelope_tokens: tuple[str, ...] = ()
    # Found elsewhere in it (the quoted message, ARF Original-Mail-From, a provider's event).
    quoted_tokens: tuple[str, ...] = ()
    message_ids: tuple[str, ...] = ()
    unsubscribe_tokens: tuple[str, ...] = ()
    reason: str = ""  # why it is unknown


# --- verdicts ------------------------------------------------------------------------------

_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# An SMTP reply code in prose: "said: 550 5.1.1 ...", "554 delivery error", "550-5.7.1".
# Failures only: a "250" in a bounce's text is more likely a size or a count.
_REPLY_CODE = re.compile(r"(?<![\d.])([45]\d\d)(?:[ -]+(?=[245]\.\d)|[ -](?=[A-Za-z<#(\[]))")


def _first_status(text: str) -> str:
    m = _STATUS.search(text or "")
    return ".".join(m.groups()) if m else ""


def reply_code(text: str) -> int | None:
    m = _REPLY_CODE.search(text or "")
    return int(m.group(1)) if m else None


def judge(*, status: str = "", diagnostic: str = "", code: int | None = None,
          failed: bool | None = None) -> tuple[str, Verdict]:
    """(the status to record, the verdict) for one recipient's failure.

    ``failed`` is what the report says when its codes say nothing: True it gave up
    (Action: failed, a detector's permanent failure, a provider's hard bounce), False it
    is still trying (delayed, a warning), None it does not say.
    """
    status = _first_status(status)
    specific = _first_status(diagnostic)
    # "Status: 5.0.0" with "550 5.1.1 user unknown" in the diagnostic: the diagnostic
    # knows more (RFC 3463 X.0.0 is "other undefined status").
    if (not status or status.endswith(".0.0")) and specific and (not status or specific[0] == status[0]):
        status = specific
    if code is None:
        code = reply_code(diagnostic)
    if status:
        default_code = {"2": 250, "4": 450, "5": 550}[status[0]]
        verdict = classify(code or default_code, f"{status} {diagnostic}")
        if verdict.kind == Kind.sent:
            return status, Verdict.ignore
        if verdict.blame_sender:
            return status, Verdict.policy
        if verdict.suppress:
            return status, Verdict.permanent
        # 4.x.x, or permanent for a reason that is not the address (5.2.2 mailbox full,
        # 5.3.4 too big, 5.4.x routing): it may pass; counted, never suppressed at once.
        return status, Verdict.transient
    if code is not None and 200 <= code < 300:
        return "2.0.0", Verdict.ignore
    verdict = classify(code, diagnostic)
    gave_up = failed is True or (code is not None and 500 <= code < 600)
    shown = "5.0.0" if gave_up and not (code is not None and 400 <= code < 500) else "4.0.0"
    if verdict.blame_sender:
        return shown, Verdict.policy
    if code is not None and 400 <= code < 500:
        return shown, Verdict.transient
    if verdict.suppress:
        return shown, Verdict.permanent
    # No code at all, or a bare 5yz without a word about the mailbox: what the report says
    # it did decides (a detector that found the address under "permanent error" is right).
    if failed is True:
        return shown, Verdict.permanent
    return shown, Verdict.transient


# --- reading a message ---------------------------------------------------------------------

def parse(raw: bytes) -> Message:
    """The message as Python's lenient compat32 parser reads it (never raises on garbage)."""
    return email.message_from_bytes(raw, policy=email.policy.compat32)


# Control characters (NUL above all: PostgreSQL stores it in no text column) never reach
# what is recorded as text; the raw bytes of a kept message keep them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(value: object, limit: int = 500) -> str:
    """``value`` as one line of text: control characters and runs of space made one space."""
    return " ".join(_CONTROL.sub(" ", str(value)).split())[:limit] if value not in (None, "") else ""



def _value(block: Message, name: str) -> str:
    return one_line(block.get(name), 2000)


def _after_type(value: str) -> str:
    """``rfc822; user@example.com`` -> ``user@example.com`` (RFC 3464 §2.3.2)."""
    return value.split(";", 1)[1].strip() if ";" in value else value.strip()


def normalise_address(value: str) -> str:
    """``<Reader@Example.ORG>`` -> ``Reader@example.org``; "" when there is no address."""
    value = _after_type(value or "").strip()
    _, addr = parseaddr(value if "<" in value else f"<{value.strip(chr(34)).strip()}>")
    addr = addr.strip().strip("<>")
    if "@" not in addr or any(c.isspace() for c in addr) or _CONTROL.search(addr):
        return ""
    local, _, domain = addr.rpartition("@")
    return f"{local}@{domain.lower().rstrip('.')}" if local and domain else ""


def _field_blocks(part: Message) -> list[Message]:
    """The field blocks of a message/delivery-status or message/feedback-report part.
    Python parses the first into a list of blocks; other message/* types become one
    enclosed message whose headers are the fields; a lenient sender may send text."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    if isinstance(payload, str):
        text = payload.replace("\r\n", "\n")
        return [HeaderParser().parsestr(block + "\n") for block in re.split(r"\n\s*\n", text) if block.strip()]
    return []


def _parts(message: Message, ctype: str) -> list[Message]:
    return [p for p in message.walk() if p.get_content_type() == ctype]


def _quoted_headers(message: Message) -> list[Message]:
    """The returned message's headers: message/rfc822 or text/rfc822-headers parts."""
    found = []
    for part in message.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/rfc822-headers"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                found.append(inner[0])
        elif ctype in ("text/rfc822-headers", "text/rfc822-header"):
            payload = part.get_payload(decode=True) or b""
            found.append(HeaderParser().parsestr(payload.decode("utf-8", "replace")))
    return found


def _text(message: Message) -> str:
    """All the text of a message, decoded, for finding our tokens and Message-IDs."""
    chunks = []
    for part in message.walk():
        if part.is_multipart():
            continue
        try:
            payload = part.get_payload(decode=True)
        except Exception:  # a broken transfer encoding: take what is there
            payload = None
        if isinstance(payload, bytes):
            chunks.append(payload.decode(part.get_content_charset() or "utf-8", "replace")
                          if _known_charset(part) else payload.decode("utf-8", "replace"))
        elif isinstance(part.get_payload(), str):
            chunks.append(part.get_payload())
    return "\n".join(chunks)


def _known_charset(part: Message) -> bool:
    try:
        "".encode(part.get_content_charset() or "utf-8")
        return True
    except LookupError:
        return False


def _notification_text(message: Message) -> str:
    """The notification a bounce starts with: its text parts outside any returned
    message (a quoted message's own words must not be read as the reason)."""
    chunks = []

    def walk(part: Message) -> None:
        ctype = part.get_content_type()
        if ctype.startswith("message/") or ctype in ("text/rfc822-headers", "text/rfc822-header"):
            return
        if part.is_multipart():
            for sub in part.get_payload():
                if isinstance(sub, Message):
                    walk(sub)
        elif part.get_content_maintype() == "text" and ctype != "text/html":
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "utf-8"
            chunks.append(payload.decode(charset if _known_charset(part) else "utf-8", "replace"))

    walk(message)
    return "\n".join(chunks).replace("\r\n", "\n")


def _tokens(message: Message, *, environ: Mapping[str, str] | None, envelope_to: Iterable[str]):
    """(VERP tokens it was delivered to, tokens and our Message-IDs found anywhere else)."""
    recipients = delivered_to(message, environ, envelope_to)
    envelope = tuple(dict.fromkeys(t for a in recipients if (t := parse_verp(a))))
    text = _text(message)
    headers = "\n".join(f"{k}: {v}" for k, v in message.items())
    quoted = "\n".join(f"{k}: {v}" for h in _quoted_headers(message) for k, v in h.items())
    everywhere = "\n".join((headers, quoted, text))
    tokens = tuple(t for t in signing.verp_tokens_in(everywhere) if t not in envelope)
    return envelope, tokens, tuple(signing.message_ids_in(everywhere)), recipients


def _action(raw: str, status: str) -> str:
    """An Action value as RFC 3464 means it. MTAs have written ``failure``, ``failed
    (bad destination mailbox address)``, ``error`` (OpenSMTPD) or nothing at all."""
    word = re.match(r"[a-z]+", raw.strip().lower())
    w = word.group(0) if word else ""
    if w.startswith("fail") or w in _ODD_FAILED:
        return DsnAction.failed
    if w.startswith("delay") or w in _ODD_DELAYED:
        return DsnAction.delayed
    if w in GOOD_NEWS:
        return w
    # Missing or unknown: the status class says what happened.
    return {"5": DsnAction.failed, "4": DsnAction.delayed, "2": DsnAction.delivered}.get(status[:1], "")


def _read_dsn(message: Message) -> list[Reported] | None:
    parts = _parts(message, "message/delivery-status")
    if not parts:
        return None
    found = []
    for part in parts:
        for block in _field_blocks(part):
            final = _value(block, "Final-Recipient") or _value(block, "X-Actual-Recipient")
            original = _value(block, "Original-Recipient")
            if not (final or original or block.get("Action")):
                continue  # the per-message block (Reporting-MTA, Arrival-Date)
            status = _first_status(_value(block, "Status"))
            action = _action(_value(block, "Action"), status)
            diagnostic = _after_type(_value(block, "Diagnostic-Code"))
            address = normalise_address(final) or normalise_address(original)
            if action in GOOD_NEWS:
                shown, verdict = status or "2.0.0", Verdict.ignore
            else:
                failed = True if action == DsnAction.failed else False if action == DsnAction.delayed else None
                shown, verdict = judge(status=status, diagnostic=diagnostic, failed=failed)
            found.append(Reported(address=address, status=shown, diagnostic=diagnostic[:1000], verdict=verdict,
                                  action=action, original=normalise_address(original)))
    return found


def _reporter(message: Message) -> str:
    for part in _parts(message, "message/delivery-status") + _parts(message, "message/feedback-report"):
        for block in _field_blocks(part):
            if block.get("Reporting-MTA"):
                return _after_type(_value(block, "Reporting-MTA"))[:200]
    return one_line(message.get("From"), 200)


def _read_arf(message: Message) -> tuple[str, list[str], list[str]] | None:
    """(feedback type, reported recipients, Original-Mail-From tokens) of an ARF report."""
    parts = _parts(message, "message/feedback-report")
    if not parts:
        return None
    blocks = [b for p in parts for b in _field_blocks(p)]
    fields = blocks[0] if blocks else Message()
    feedback_type = (_value(fields, "Feedback-Type").lower() or "abuse")[:64]
    rcpts = [a for v in fields.get_all("Original-Rcpt-To", []) if (a := normalise_address(str(v)))]
    mail_from = [t for v in fields.get_all("Original-Mail-From", []) if (t := parse_verp(normalise_address(str(v))))]
    return feedback_type, list(dict.fromkeys(rcpts)), mail_from


_DAEMON = re.compile(r"^(?:mailer-daemon|mail-daemon|maildaemon|postmaster|mdaemon|mail\.daemon)\b", re.IGNORECASE)


def _from_daemon(message: Message) -> bool:
    _, addr = parseaddr(str(message.get("From", "")))
    return bool(_DAEMON.match(addr)) or not addr


def _is_auto_reply(message: Message) -> bool:
    """RFC 3834 §5 ``Auto-Submitted``, and what responders wrote before it."""
    submitted = str(message.get("Auto-Submitted", "")).strip().lower()
    precedence = str(message.get("Precedence", "") or message.get("X-Precedence", "")).strip().lower()
    return (submitted.startswith(("auto-replied", "auto-generated")) or bool(message.get("X-Autoreply"))
            or bool(message.get("X-Autorespond")) or precedence == "auto_reply")


def _unsubscribe_tokens(recipients: Iterable[str]) -> tuple[str, ...]:
    found = []
    for addr in recipients:
        local = addr.rsplit("@", 1)[0]
        if local.lower().startswith(UNSUBSCRIBE_PREFIX):
            found.append(local[len(UNSUBSCRIBE_PREFIX):])
    return tuple(dict.fromkeys(found))


def _near(text: str, address: str, others: Iterable[str]) -> str:
    """The notification's words about one address: from where it is named to the next
    recipient, the start of the returned message, or 600 characters."""
    lower = text.lower()
    at = lower.find(address.lower())
    if at < 0:
        return ""
    end = min(len(text), at + 600)
    for other in others:
        if other.lower() != address.lower():
            nxt = lower.find(other.lower(), at + len(address))
            if nxt > 0:
                end = min(end, nxt)
    snippet = text[at + len(address):end]
    lines = []
    for line in snippet.split("\n"):
        stripped = line.strip()
        if stripped.startswith(("---", "Received:", "Return-Path:", "Original message", "Below this line")):
            break
        lines.append(stripped)
    return one_line(" ".join(lines), 2000).lstrip(">:\"') ")


def _detected(message: Message) -> tuple[list[str], list[str]]:
    """(temporary, permanent) failed recipients that flufl.bounce's detectors find."""
    if not message.get("From"):  # every bounce names its sender; some detectors need it
        return [], []
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # a heuristic detector tripping over a malformed message
        log.warning("flufl.bounce could not read a message", exc_info=True)
        return [], []

    def decode(found) -> list[str]:
        out = []
        for item in found:
            addr = normalise_address(item.decode("ascii", "replace") if isinstance(item, bytes) else str(item))
            if addr:
                out.append(addr)
        return sorted(set(out))

    perm = decode(permanent)
    return [a for a in decode(temporary) if a not in perm], perm


def _read_detected(message: Message) -> list[Reported]:
    temporary, permanent = _detected(message)
    if not temporary and not permanent:
        return []
    text = _notification_text(message)
    everyone = temporary + permanent
    found = []
    for failed, addresses in ((False, temporary), (True, permanent)):
        for address in addresses:
            words = _near(text, address, everyone)
            status, verdict = judge(status=_first_status(words), diagnostic=words, failed=failed)
            found.append(Reported(address=address, status=status, diagnostic=words[:1000], verdict=verdict,
                                  action=DsnAction.failed if failed else DsnAction.delayed))
    return found


def read_message(raw: bytes, *, environ: Mapping[str, str] | None = None,
                 envelope_to: Iterable[str] = ()) -> Report:
    """What one inbound message reports (the module docstring gives the order)."""
    if not raw or not raw.strip():
        return Report(kind=InboundKind.unknown, reason="an empty message")
    message = parse(raw)
    envelope, tokens, message_ids, recipients = _tokens(message, environ=environ, envelope_to=envelope_to)
    base = Report(kind=InboundKind.unknown, envelope_tokens=envelope, quoted_tokens=tokens,
                  message_ids=message_ids, reporter=_reporter(message))

    arf = _read_arf(message)
    if arf is not None:
        feedback_type, rcpts, mail_from = arf
        verdict = Verdict.ignore if feedback_type in NOT_COMPLAINTS else Verdict.permanent
        listed = [Reported(address=a, status="", diagnostic=feedback_type, verdict=verdict, action=feedback_type)
                  for a in rcpts] or [Reported(address="", status="", diagnostic=feedback_type, verdict=verdict,
                                               action=feedback_type)]
        return replace(base, kind=InboundKind.complaint, source=Source.arf, recipients=tuple(listed),
                       quoted_tokens=tuple(dict.fromkeys([*mail_from, *tokens])))

    dsn = _read_dsn(message)
    if dsn is not None:
        if not dsn:
            return replace(base, reason="a delivery status report without a recipient field")
        return replace(base, kind=InboundKind.bounce, source=Source.dsn, recipients=tuple(dsn))

    unsubscribe = _unsubscribe_tokens(recipients)
    if unsubscribe and not envelope:
        return replace(base, kind=InboundKind.unsubscribe, unsubscribe_tokens=unsubscribe)

    if _is_auto_reply(message) and not _from_daemon(message):
        sender = normalise_address(str(message.get("From", "")))
        listed = (Reported(address=sender, status="", diagnostic=one_line(message.get("Subject"), 200),
                           verdict=Verdict.ignore, action=InboundKind.auto_reply),) if sender else ()
        return replace(base, kind=InboundKind.auto_reply, recipients=listed)

    detected = _read_detected(message)
    if detected:
        return replace(base, kind=InboundKind.bounce, source=Source.mta, recipients=tuple(detected))

    if not message.keys():
        return replace(base, reason="not a mail message: no header could be read")
    return replace(base, reason="no delivery or feedback report, and no bounce format that is known")
