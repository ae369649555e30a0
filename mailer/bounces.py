"""Bounces and complaints that arrive after the relay accepted a message.

A relay's 250 only means "I will try". When the receiving system later gives up it
sends a delivery status notification (DSN, RFC 3464: ``multipart/report;
report-type=delivery-status``, one ``Action:``/``Status:`` block per recipient) to the
envelope sender, which is the delivery's VERP address ``bounces+<id>-<mac>@domain``
(``mailer.core.signing.verp_token``). Complaints ("this is spam") arrive from feedback
loops as ARF reports (RFC 5965: ``report-type=feedback-report``).

What is recorded, in one transaction:
- a permanent failure of the address itself (5.1.x, as ``mailer.replies.classify``
  decides): the delivery moves from 'sent' to 'bounced' with the campaign counters, the
  subscriber becomes 'bounced' and their address is suppressed, and a bounce event
  (origin 'dsn') keeps the report's status and diagnostic;
- any other failure or delay (4.x.x, 5.7.x policy, 5.2.2 mailbox full): a bounce
  event only. Nobody is unsubscribed for a full mailbox or for our own reputation;
- a complaint: the subscriber becomes 'complained', suppressed, and a complaint event.

The delivery is found only through something we signed: the VERP token (its MAC is
checked with ``hmac.compare_digest``) or, in a report that quotes our message, its
Message-ID (which carries a MAC too). A forged report cannot touch anyone else.
"""

from __future__ import annotations

import email
import email.policy
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.parser import HeaderParser

from sqlalchemy.engine import Engine

from mailer import queries
from mailer.core import signing
from mailer.core.clock import utcnow
from mailer.core.db import transaction
from mailer.core.errors import InvalidInput, NotFound
from mailer.message import parse_verp
from mailer.replies import Kind, Verdict, classify
from subscribers import service
from subscribers.links import delivered_to
from subscribers.models import Event, EventKind, SubscriberStatus, SuppressionReason

_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})")
_DIAG_CODE = re.compile(r"^\s*(?:smtp|x-[\w-]+)\s*;\s*([245]\d\d)\b", re.IGNORECASE)


class DsnAction(enum.StrEnum):
    """RFC 3464 §2.3.3: what the reporting MTA did for a recipient."""

    failed = "failed"
    delayed = "delayed"
    delivered = "delivered"
    relayed = "relayed"
    expanded = "expanded"


class ReportKind(enum.StrEnum):
    bounce = "bounce"
    complaint = "complaint"
    none = "none"  # nothing to record: an auto-reply, a "delivered" notice


@dataclass(frozen=True)
class Report:
    """What an inbound message says about one delivery."""

    kind: ReportKind
    status: str = ""  # RFC 3463 code, "5.1.1"
    action: str = ""  # RFC 3464 Action: failed, delayed...
    diagnostic: str = ""  # Diagnostic-Code text, or the feedback type of a complaint
    code: int | None = None  # the SMTP reply code inside the diagnostic, when there is one
    recipient: str = ""  # Final-Recipient / Original-Rcpt-To
    reporter: str = ""  # Reporting-MTA or the sender of the report
    original_message_ids: tuple[str, ...] = ()
    original_senders: tuple[str, ...] = ()  # envelope senders of the quoted original (VERP)


def is_bounce(raw: bytes, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``newsletter inbound`` should hand this message to ``handle_inbound``:
    it went to a ``bounces+`` address, or it is a delivery or feedback report."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if any(parse_verp(a) for a in delivered_to(message, environ)):
        return True
    return message.get_content_type() == "multipart/report" and (
        (message.get_param("report-type") or "").lower() in ("delivery-status", "feedback-report"))


# --- reading reports -------------------------------------------------------------------


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


def _quoted_original(report: Message) -> Message | None:
    for part in report.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner:
                return inner[0]
        elif ctype in ("text/rfc822-headers", "text/rfc822-header"):
            payload = part.get_payload(decode=True) or b""
            return HeaderParser().parsestr(payload.decode("utf-8", "replace"))
    return None


def _value(block: Message, name: str) -> str:
    raw = block.get(name)
    return " ".join(str(raw).split()) if raw else ""


def _after_type(value: str) -> str:
    """``rfc822; user@example.com`` -> ``user@example.com`` (RFC 3464 §2.3.2)."""
    return value.split(";", 1)[1].strip() if ";" in value else value


def _originals(original: Message | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if original is None:
        return (), ()
    ids = tuple(str(v) for v in original.get_all("Message-ID", []))
    senders = tuple(str(v) for v in original.get_all("Return-Path", []))
    return ids, senders


def _status_from_text(text: str) -> tuple[str, int | None]:
    """For a bounce that is not a DSN (old MTAs write prose): the first enhanced status
    code after an SMTP reply code, as in "550 5.1.1 <x@y>: user unknown"."""
    m = re.search(r"\b([245]\d\d)[ -]+([245]\.\d{1,3}\.\d{1,3})\b", text)
    if m:
        return m.group(2), int(m.group(1))
    m = re.search(r"\b(?:Status|status code)\s*:?\s*([245]\.\d{1,3}\.\d{1,3})\b", text)
    return (m.group(1), None) if m else ("", None)


def _first_text(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True) or b""
            return payload.decode(part.get_content_charset() or "utf-8", "replace")
    return ""


def read_report(message: Message) -> Report:
    """What ``message`` reports: a DSN, an ARF complaint, a prose bounce, or nothing."""
    report_type = (message.get_param("report-type") or "").lower() \
        if message.get_content_type() == "multipart/report" else ""
    original = _quoted_original(message)
    ids, senders = _originals(original)

    if report_type == "feedback-report":
        fields = next((b for part in message.walk() if part.get_content_type() == "message/feedback-report"
                       for b in _field_blocks(part)[:1]), None)
        feedback_type = (_value(fields, "Feedback-Type") if fields is not None else "abuse").lower() or "abuse"
        if fields is not None:
            senders += tuple(v for v in (_value(fields, "Original-Mail-From"),) if v)
        # RFC 5965 §7.3: "not-spam" undoes a complaint; it is not one.
        kind = ReportKind.none if feedback_type == "not-spam" else ReportKind.complaint
        return Report(kind=kind, diagnostic=feedback_type,
                      recipient=_value(fields, "Original-Rcpt-To") if fields is not None else "",
                      reporter=_value(fields, "Reporting-MTA") if fields is not None else str(message.get("From", "")),
                      original_message_ids=ids, original_senders=senders)

    if report_type == "delivery-status":
        blocks = [b for part in message.walk() if part.get_content_type() == "message/delivery-status"
                  for b in _field_blocks(part)]
        per_message = blocks[0] if blocks else Message()
        for block in blocks[1:] or blocks:
            action = _value(block, "Action").lower()
            if action not in (DsnAction.failed, DsnAction.delayed):
                continue  # delivered, relayed, expanded: good news, nothing to record
            status = _value(block, "Status")
            m = _STATUS.match(status)
            diagnostic = _after_type(_value(block, "Diagnostic-Code"))
            code_m = _DIAG_CODE.match(_value(block, "Diagnostic-Code"))
            return Report(kind=ReportKind.bounce, status=".".join(m.groups()) if m else "", action=action,
                          diagnostic=diagnostic, code=int(code_m.group(1)) if code_m else None,
                          recipient=_after_type(_value(block, "Final-Recipient")
                                                or _value(block, "Original-Recipient")),
                          reporter=_after_type(_value(per_message, "Reporting-MTA")),
                          original_message_ids=ids, original_senders=senders)
        return Report(kind=ReportKind.none, action=DsnAction.delivered, original_message_ids=ids, original_senders=senders)

    # Not a report. RFC 3834 §5: auto-replies go to the envelope sender too, and say so.
    auto = (str(message.get("Auto-Submitted", "")).lower().startswith("auto-replied")
            or message.get("X-Autoreply") or str(message.get("Precedence", "")).lower() == "auto_reply")
    if auto:
        return Report(kind=ReportKind.none, action="auto-reply", original_message_ids=ids, original_senders=senders)
    status, code = _status_from_text(_first_text(message))
    if not status:
        return Report(kind=ReportKind.none, action="no delivery status", original_message_ids=ids, original_senders=senders)
    return Report(kind=ReportKind.bounce, status=status, action=DsnAction.failed, code=code, diagnostic=_first_text(message)[:500].strip(),
                  reporter=str(message.get("From", "")), original_message_ids=ids, original_senders=senders)


def verdict_for(report: Report) -> Verdict:
    """The one classification of SMTP outcomes (``mailer.replies``), applied to the
    report's Status: the enhanced code decides permanent or not, and whose fault."""
    if report.status:
        code = report.code or (500 if report.status[0] == "5" else 400 if report.status[0] == "4" else 200)
        return classify(code, f"{report.status} {report.diagnostic}")
    return classify(report.code, report.diagnostic)


# --- recording -------------------------------------------------------------------------


def _delivery_id(message: Message, report: Report, secret_keys: Sequence[str], environ, envelope_to) -> int:
    tokens = [t for a in [*delivered_to(message, environ, envelope_to), *report.original_senders]
              if (t := parse_verp(a))]
    for token in tokens:
        if (did := signing.read_verp_token(secret_keys, token)) is not None:
            return did
    for mid in report.original_message_ids:
        if (did := signing.read_message_id(secret_keys, mid)) is not None:
            return did
    if tokens:
        raise InvalidInput("the bounce address is not valid (its token does not verify)")
    raise InvalidInput("no bounces+TOKEN recipient and no message of ours quoted in the report")


def handle_inbound(engine: Engine, raw: bytes, *, secret_keys: Sequence[str],
                   environ: Mapping[str, str] | None = None, envelope_to: Iterable[str] = (),
                   now: datetime | None = None) -> str:
    """Read one inbound bounce or complaint (as an MTA pipe hands it over) and record it.
    Returns one line saying what was done. A message that cannot be tied to one of our
    deliveries (no or a forged token) raises ``InvalidInput``."""
    if not secret_keys:
        raise InvalidInput("no secret key to verify bounce tokens with")
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    report = read_report(message)
    delivery_id = _delivery_id(message, report, secret_keys, environ, envelope_to)
    if report.kind == ReportKind.none:
        return f"delivery {delivery_id}: nothing to record ({report.action or report.diagnostic})"
    now = now or utcnow()
    with transaction(engine) as s:
        ref = queries.find_delivery(s, delivery_id=delivery_id)
        if ref is None:
            raise NotFound(f"no delivery {delivery_id}")
        if report.kind == ReportKind.complaint:
            changed = queries.set_subscriber_status(s, subscriber_id=ref.subscriber_id,
                                                    status=SubscriberStatus.complained, now=now)
            service.suppress(s, email=ref.email, reason=SuppressionReason.complaint)
            s.add(Event(kind=EventKind.complaint, origin="arf", subscriber_id=ref.subscriber_id,
                        campaign_id=ref.campaign_id, delivery_id=ref.delivery_id,
                        detail={"feedback_type": report.diagnostic, "reporter": report.reporter[:200]},
                        created_at=now))
            return (f"delivery {delivery_id}: complaint ({report.diagnostic}); subscriber "
                    + ("marked complained" if changed else f"was already {_status_of(s, ref)}"))

        verdict = verdict_for(report)
        reply = " ".join(f"{report.status} {report.diagnostic}".split())
        detail = {"status": report.status, "action": report.action, "diagnostic": report.diagnostic[:500],
                  "reporter": report.reporter[:200], "permanent": verdict.kind == Kind.permanent,
                  "suppress": verdict.suppress}
        s.add(Event(kind=EventKind.bounce, origin="dsn", subscriber_id=ref.subscriber_id, campaign_id=ref.campaign_id,
                    delivery_id=ref.delivery_id, detail=detail, created_at=now))
        if not verdict.suppress:
            what = "temporary" if verdict.kind != Kind.permanent else "permanent, not the address"
            return f"delivery {delivery_id}: {what} ({reply}); recorded as an event"
        moved = queries.bounce_sent_delivery(s, delivery_id=ref.delivery_id, campaign_id=ref.campaign_id,
                                                   code=report.code, reply=f"DSN: {reply}", now=now)
        changed = queries.set_subscriber_status(s, subscriber_id=ref.subscriber_id, status=SubscriberStatus.bounced,
                                                now=now)
        service.suppress(s, email=ref.email, reason=SuppressionReason.bounce)
        return (f"delivery {delivery_id}: bounced ({reply}); "
                + ("delivery moved from sent to bounced" if moved else f"delivery stays {ref.status}") + "; "
                + ("subscriber marked bounced" if changed else f"subscriber was already {_status_of(s, ref)}"))


def _status_of(session, ref: queries.DeliveryRef) -> str:
    return queries.subscriber_status(session, subscriber_id=ref.subscriber_id)
