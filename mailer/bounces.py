"""Bounces and complaints recorded on the deliveries they are about.

A relay's 250 only means "I will try". What comes back later (read by
``mailer.reports`` from mail, or from a provider's webhook) is tied to deliveries here
and acted on, in one transaction, by ``record``:

Tying each reported recipient to its delivery, in this order:
1. the VERP token of the address the report was delivered to (its MAC is checked;
   ``mailer.core.signing``). A token there that does not verify, mangled or forged, is
   refused: nothing changes, and the message is kept as unprocessed;
2. a verified token or one of our Message-IDs (they carry a MAC too) found in the
   report: the quoted message, ARF ``Original-Mail-From``, a provider's event;
3. the address's most recent delivery accepted by the relay within
   ``NEWSLETTER_BOUNCE_MATCH_DAYS``, for the recipients the first two do not name.

What is recorded for each tied recipient, after its verdict (``mailer.reports.judge``):
- permanent (5.1.x, "user unknown"): the delivery moves from 'sent' to 'bounced' with
  the campaign counters, the subscriber becomes 'bounced', the address is suppressed;
- transient (4.x.x, a full mailbox): a soft bounce. ``NEWSLETTER_SOFT_BOUNCE_LIMIT``
  of them within ``NEWSLETTER_SOFT_BOUNCE_DAYS`` suppress the address;
- policy (5.7.x, spam and reputation blocks): our problem, not the subscriber's; an
  event only, and it never counts towards the soft-bounce limit;
- a complaint: the subscriber becomes 'complained' and the address is suppressed, at once.
Each of these is an event in the subscriber's history (kind bounce or complaint, the
report's format or provider as its origin, the verdict and counts in its detail).

Nothing is dropped: a message that is not understood, a recipient that cannot be tied,
a refused token, are kept (``inbound_message``, raw bytes capped at
``NEWSLETTER_INBOUND_MAX_BYTES``) with the reason, as 'unprocessed'; an auto-reply or a
report of good news is kept as 'ignored'.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer import queries
from mailer.core import signing
from mailer.core.errors import InvalidInput
from mailer.core.logs import event, mask_address
from mailer.models import InboundMessage, InboundStatus
from mailer.reports import InboundKind, Report, Reported, Verdict, one_line, reply_code
from subscribers import service
from subscribers.models import Event, EventKind, SubscriberStatus, SuppressionReason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BouncePolicy:
    """The settings recording needs, as plain values (``policy_from(settings)``)."""

    secret_keys: tuple[str, ...]
    soft_bounce_limit: int = 3
    soft_bounce_window: timedelta = timedelta(days=15)
    match_window: timedelta = timedelta(days=30)
    max_bytes: int = 262_144


def policy_from(settings) -> BouncePolicy:
    return BouncePolicy(secret_keys=settings.signing_keys, soft_bounce_limit=settings.soft_bounce_limit,
                        soft_bounce_window=timedelta(days=settings.soft_bounce_days),
                        match_window=timedelta(days=settings.bounce_match_days),
                        max_bytes=settings.inbound_max_bytes)


class How:
    """How a recipient was tied to its delivery (shown by ``explain``, kept in events)."""

    verp = "verp"
    message_id = "message-id"
    address = "address"


@dataclass(frozen=True)
class Tie:
    recipient: Reported  # its address filled in from the delivery when the report withheld it
    delivery: queries.DeliveryRef | None
    how: str = ""


@dataclass(frozen=True)
class Ties:
    recipients: tuple[Tie, ...]
    named: queries.DeliveryRef | None  # the delivery the report's token or Message-ID names
    refused: str = ""  # why nothing may be recorded (a token that does not verify)


def _key(address: str) -> str:
    try:
        return service.email_key(service.normalise_email(address))
    except InvalidInput:
        return address.strip().lower()


def _named_delivery(session: Session, report: Report, keys) -> tuple[queries.DeliveryRef | None, str, str]:
    """(the delivery a signed token or Message-ID names, how, refusal)."""
    if report.envelope_tokens:
        ids = [d for t in report.envelope_tokens if (d := signing.read_verp_token(keys, t)) is not None]
        if not ids:
            return None, "", "the bounce address is not valid (its token does not verify)"
        return queries.find_delivery(session, delivery_id=ids[0]), How.verp, ""
    for token in report.quoted_tokens:
        if (did := signing.read_verp_token(keys, token)) is not None:
            return queries.find_delivery(session, delivery_id=did), How.verp, ""
    for mid in report.message_ids:
        if (did := signing.read_message_id(keys, mid)) is not None:
            return queries.find_delivery(session, delivery_id=did), How.message_id, ""
    return None, "", ""


def tie(session: Session, report: Report, *, policy: BouncePolicy, now: datetime) -> Ties:
    """Each recipient of ``report`` with the delivery it is about (or None). Reads only."""
    if not policy.secret_keys:
        raise InvalidInput("no secret key to verify bounce tokens with")
    named, how, refused = _named_delivery(session, report, policy.secret_keys)
    if refused:
        return Ties(recipients=tuple(Tie(r, None) for r in report.recipients), named=None, refused=refused)
    acting = [r for r in report.recipients if r.verdict != Verdict.ignore]
    since = now - policy.match_window
    ties = []
    for r in report.recipients:
        delivery, tied_by = None, ""
        if named is not None:
            mine = {_key(named.email)}
            if not r.address or _key(r.address) in mine or (r.original and _key(r.original) in mine) \
                    or (len(acting) <= 1 and (r in acting or not acting)):
                # The named message failed; a single recipient with another address is
                # where our subscriber's mail was forwarded to.
                delivery, tied_by = named, how
        if delivery is None and r.address:
            delivery = queries.latest_delivery_to(session, email_key=_key(r.address), since=since)
            tied_by = How.address if delivery else ""
        if delivery is not None and not r.address:
            r = replace(r, address=delivery.email)
        ties.append(Tie(r, delivery, tied_by))
    return Ties(recipients=tuple(ties), named=named)


# --- recording ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Recorded:
    """What ``record`` did: one line for people, and the message kept, if it was."""

    kind: InboundKind
    line: str
    stored_id: int | None = None
    stored_as: InboundStatus | None = None


def store(session: Session, *, raw: bytes, channel: str, status: InboundStatus, kind: InboundKind,
          reason: str, delivery_id: int | None, max_bytes: int, now: datetime) -> int:
    """Keep an inbound message as it came (its first ``max_bytes``), with the reason."""
    row = InboundMessage(received_at=now, channel=channel, status=status, kind=kind, reason=one_line(reason, 2000),
                         delivery_id=delivery_id, size=len(raw), raw=raw[:max_bytes])
    session.add(row)
    session.flush()
    return row.id


def _event(session: Session, *, kind: EventKind, report: Report, ref: queries.DeliveryRef, detail: dict,
           now: datetime) -> None:
    detail = {k: one_line(v, 1000) if isinstance(v, str) else v for k, v in detail.items()}
    session.add(Event(kind=kind, origin=str(report.source)[:32], subscriber_id=ref.subscriber_id,
                      campaign_id=ref.campaign_id, delivery_id=ref.delivery_id, detail=detail, created_at=now))


def _status_of(session: Session, ref: queries.DeliveryRef) -> str:
    return queries.subscriber_status(session, subscriber_id=ref.subscriber_id)


def _suppress_bounced(session: Session, ref: queries.DeliveryRef, now: datetime) -> str:
    changed = queries.set_subscriber_status(session, subscriber_id=ref.subscriber_id,
                                            status=SubscriberStatus.bounced, now=now)
    service.suppress(session, email=ref.email, reason=SuppressionReason.bounce)
    return "subscriber marked bounced" if changed else f"subscriber was already {_status_of(session, ref)}"


def _record_bounce(session: Session, report: Report, t: Tie, *, channel: str, policy: BouncePolicy,
                   now: datetime) -> str:
    r, ref = t.recipient, t.delivery
    reply = one_line(f"{r.status} {r.diagnostic}", 300)
    detail = {"status": r.status, "action": r.action, "diagnostic": r.diagnostic[:500],
              "reporter": report.reporter[:200], "verdict": r.verdict, "permanent": r.verdict == Verdict.permanent,
              "suppress": r.verdict == Verdict.permanent, "channel": channel, "tied_by": t.how}
    head = f"delivery {ref.delivery_id}"
    if r.verdict == Verdict.policy:
        _event(session, kind=EventKind.bounce, report=report, ref=ref, detail={**detail, "blame_sender": True},
               now=now)
        return f"{head}: blocked by policy, not the address ({reply}); recorded as an event"
    if r.verdict == Verdict.transient:
        count = queries.record_soft_bounce(session, subscriber_id=ref.subscriber_id, delivery_id=ref.delivery_id,
                                           since=now - policy.soft_bounce_window, now=now)
        limit, days = policy.soft_bounce_limit, round(policy.soft_bounce_window / timedelta(days=1), 2)
        _event(session, kind=EventKind.bounce, report=report, ref=ref,
               detail={**detail, "soft_bounces": count, "soft_bounce_limit": limit, "soft_bounce_days": days}, now=now)
        line = f"{head}: temporary ({reply}); soft bounce {count} of {limit} in {days:g} days"
        if count < limit:
            return line
        # The limit is a step of its own in the subscriber's history.
        _event(session, kind=EventKind.bounce, report=report, ref=ref,
               detail={"verdict": "soft-bounce limit", "soft_bounces": count, "soft_bounce_limit": limit,
                       "soft_bounce_days": days, "suppress": True, "channel": channel}, now=now)
        return f"{line}; limit reached: {_suppress_bounced(session, ref, now)}"
    _event(session, kind=EventKind.bounce, report=report, ref=ref, detail=detail, now=now)
    moved = queries.bounce_sent_delivery(session, delivery_id=ref.delivery_id, campaign_id=ref.campaign_id,
                                         code=reply_code(r.diagnostic), reply=f"{str(report.source).upper()}: {reply}",
                                         now=now)
    return (f"{head}: bounced ({reply}); "
            + ("delivery moved from sent to bounced" if moved else f"delivery stays {ref.status}") + "; "
            + _suppress_bounced(session, ref, now))


def _record_complaint(session: Session, report: Report, t: Tie, *, channel: str, now: datetime) -> str:
    r, ref = t.recipient, t.delivery
    changed = queries.set_subscriber_status(session, subscriber_id=ref.subscriber_id,
                                            status=SubscriberStatus.complained, now=now)
    service.suppress(session, email=ref.email, reason=SuppressionReason.complaint)
    _event(session, kind=EventKind.complaint, report=report, ref=ref,
           detail={"feedback_type": r.diagnostic[:64], "reporter": report.reporter[:200], "channel": channel,
                   "tied_by": t.how}, now=now)
    return (f"delivery {ref.delivery_id}: complaint ({r.diagnostic}); subscriber "
            + ("marked complained" if changed else f"was already {_status_of(session, ref)}"))


def record(session: Session, report: Report, *, raw: bytes, channel: str, policy: BouncePolicy,
           now: datetime) -> Recorded:
    """Act on one report and keep what cannot be acted on. The caller commits, once:
    the changes and the kept message go together or not at all."""

    def keep(status: InboundStatus, reason: str, delivery_id: int | None = None) -> int:
        return store(session, raw=raw, channel=channel, status=status, kind=report.kind, reason=reason,
                     delivery_id=delivery_id, max_bytes=policy.max_bytes, now=now)

    if report.kind == InboundKind.unknown:
        stored = keep(InboundStatus.unprocessed, report.reason or "not understood")
        return Recorded(report.kind, f"kept as unprocessed #{stored}: {report.reason}", stored,
                        InboundStatus.unprocessed)
    ties = tie(session, report, policy=policy, now=now)
    if ties.refused:
        stored = keep(InboundStatus.unprocessed, ties.refused)
        return Recorded(report.kind, f"refused, kept as unprocessed #{stored}: {ties.refused}", stored,
                        InboundStatus.unprocessed)
    named_id = ties.named.delivery_id if ties.named else None
    if report.kind == InboundKind.auto_reply:
        stored = keep(InboundStatus.ignored, "an auto-reply", named_id)
        about = f"delivery {named_id}: " if named_id else ""
        return Recorded(report.kind, f"{about}auto-reply, nothing to record (kept as ignored #{stored})", stored,
                        InboundStatus.ignored)

    lines, untied, done = [], [], set()
    for t in ties.recipients:
        if t.recipient.verdict == Verdict.ignore:
            continue
        if t.delivery is None:
            untied.append(t.recipient.address or "a recipient the report does not name")
            continue
        if (t.delivery.delivery_id, report.kind) in done:
            continue
        done.add((t.delivery.delivery_id, report.kind))
        if report.kind == InboundKind.complaint:
            lines.append(_record_complaint(session, report, t, channel=channel, now=now))
        else:
            lines.append(_record_bounce(session, report, t, channel=channel, policy=policy, now=now))
        # Logged as judged; the caller's one commit makes it so (or nothing is, and the
        # channel offers the message again).
        ref = t.delivery
        event(log, f"{report.kind} judged", campaign_id=ref.campaign_id, delivery_id=ref.delivery_id,
              channel=channel, verdict=str(t.recipient.verdict), status=t.recipient.status or None,
              tied_by=t.how, recipient=mask_address(ref.email))
        event(log, f"{report.kind} judged", level=logging.DEBUG, campaign_id=ref.campaign_id,
              delivery_id=ref.delivery_id, address=ref.email)

    if untied:
        reason = (f"{len(untied)} of {len([t for t in ties.recipients if t.recipient.verdict != Verdict.ignore])} "
                  f"recipients not tied to a delivery: {', '.join(untied)[:500]}")
        stored = keep(InboundStatus.unprocessed, reason, named_id)
        lines.append(f"kept as unprocessed #{stored}: {reason}")
        return Recorded(report.kind, "; ".join(lines), stored, InboundStatus.unprocessed)
    if not lines:
        what = ", ".join(dict.fromkeys(t.recipient.action or t.recipient.verdict for t in ties.recipients)) \
            or "no recipient"
        reason = f"nothing to record ({what})"
        stored = keep(InboundStatus.ignored, reason, named_id)
        about = f"delivery {named_id}: " if named_id else ""
        return Recorded(report.kind, f"{about}{reason}; kept as ignored #{stored}", stored, InboundStatus.ignored)
    return Recorded(report.kind, "; ".join(lines))


# --- what is kept --------------------------------------------------------------------------

def unprocessed_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(InboundMessage)
                          .where(InboundMessage.status == InboundStatus.unprocessed))


def kept_messages(session: Session, *, status: InboundStatus | None = InboundStatus.unprocessed,
                  limit: int = 50) -> list[InboundMessage]:
    """Kept inbound messages, newest first (unprocessed only, unless ``status`` is None)."""
    query = select(InboundMessage).order_by(InboundMessage.received_at.desc(), InboundMessage.id.desc()).limit(limit)
    if status is not None:
        query = query.where(InboundMessage.status == status)
    return list(session.scalars(query))
