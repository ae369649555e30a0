"""What comes back, through every channel an operator uses, handled once.

The channels: the MTA pipe (``newsletter inbound``), the SMTP/LMTP listener
(``newsletter inbound serve``), the bounce-mailbox poller over IMAP or POP3
(``newsletter inbound poll``), and the relay providers' webhooks (``/webhooks/...``).
Mail is read by ``mailer.reports.read_message`` (``receive``), a provider's events by
``mailer.webhooks.read`` (``receive_webhook``); both end in ``handle``, which acts on
one report in one transaction: bounces and complaints (``mailer.bounces.record``) or a
``mailto:unsubscribe+TOKEN@`` request. Whatever cannot be acted on is kept, with the
reason, as unprocessed: nothing is dropped silently, and a channel answers "done"
(exit 0, 250, a handled mark, HTTP 200) only after something was recorded.

``explain`` says what ``handle`` would record, reading only.

Unlike the editor's operations, these take the engine and commit their own one
transaction: a pipe, a listener or a poller has nothing else to commit with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mailer import bounces, webhooks
from mailer.core import metrics, signing
from mailer.core.clock import utcnow
from mailer.core.config import Settings
from mailer.core.db import engine_for, transaction
from mailer.core.errors import InvalidInput, NotFound
from mailer.models import InboundMessage, InboundStatus
from mailer.reports import Channel, InboundKind, Report, Reported, Verdict, read_message
from subscribers import service
from subscribers.models import SubscriberStatus


@dataclass(frozen=True)
class Received:
    """What was done with one message or event: one line, and whether it was kept."""

    kind: InboundKind
    line: str
    stored_id: int | None = None
    stored_as: InboundStatus | None = None


def _unsubscribe(session: Session, report: Report, *, raw: bytes, channel: str, settings: Settings,
                 now: datetime) -> Received:
    """A ``mailto:unsubscribe+TOKEN@`` request (RFC 8058's mailto alternative)."""
    for token in report.unsubscribe_tokens:
        try:
            subscriber_id, campaign_id = signing.read_unsubscribe_token(settings.signing_keys, token)
            service.get_subscriber(session, subscriber_id)
        except (signing.InvalidToken, NotFound):
            continue
        changed = service.unsubscribe(session, subscriber_id=subscriber_id, campaign_id=campaign_id, origin="mailto")
        return Received(InboundKind.unsubscribe, f"{SubscriberStatus.unsubscribed}" if changed
                        else f"already {SubscriberStatus.unsubscribed}")
    reason = "the unsubscribe address is not valid (its token does not verify)"
    stored = bounces.store(session, raw=raw, channel=channel, status=InboundStatus.unprocessed,
                           kind=InboundKind.unsubscribe, reason=reason, delivery_id=None,
                           max_bytes=settings.inbound_max_bytes, now=now)
    return Received(InboundKind.unsubscribe, f"refused, kept as unprocessed #{stored}: {reason}", stored,
                    InboundStatus.unprocessed)


def handle(engine: Engine, report: Report, *, raw: bytes, channel: str, settings: Settings,
           now: datetime | None = None) -> Received:
    """THE handler every channel ends in: act on one report, or keep it, in one
    transaction. A database that does not answer raises; nothing is then recorded and
    the channel must say "try again later"."""
    now = now or utcnow()
    with transaction(engine) as session:
        if report.kind == InboundKind.unsubscribe:
            received = _unsubscribe(session, report, raw=raw, channel=channel, settings=settings, now=now)
        else:
            done = bounces.record(session, report, raw=raw, channel=channel, policy=bounces.policy_from(settings),
                                  now=now)
            received = Received(done.kind, done.line, done.stored_id, done.stored_as)
    # Counted once committed: a message the channel must offer again is not counted twice.
    metrics.inbound(received.kind, channel, received.stored_as or "recorded")
    return received


def receive(raw: bytes, *, settings: Settings, channel: str = Channel.pipe,
            environ: Mapping[str, str] | None = None, envelope_to: Iterable[str] = (),
            engine: Engine | None = None) -> Received:
    """One inbound message, as the pipe, the listener or the poller hands it over
    (``envelope_to``: the envelope recipients, when the channel knows them)."""
    report = read_message(raw, environ=environ, envelope_to=envelope_to)
    return handle(engine or engine_for(settings.database), report, raw=raw, channel=channel, settings=settings)


@dataclass(frozen=True)
class WebhookResult:
    received: tuple[Received, ...]
    ignored: tuple[str, ...]
    confirm_url: str = ""

    @property
    def line(self) -> str:
        parts = [r.line for r in self.received]
        if self.ignored:
            parts.append(f"not recorded: {', '.join(self.ignored)}")
        if self.confirm_url:
            parts.append("SNS subscription confirmed")
        return "; ".join(parts) or "nothing in it"


def receive_webhook(provider: str, body: bytes, headers: Mapping[str, str], *, settings: Settings,
                    sns: webhooks.SnsVerifier, engine: Engine | None = None) -> WebhookResult:
    """One provider webhook request: its signature verified (``Forbidden`` otherwise,
    before anything changes), each event handled like a message. An SNS subscription
    confirmation is confirmed by fetching its SubscribeURL (an SNS host, over verified
    TLS), as the SNS documentation asks."""
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook = webhooks.read(provider, body, lowered, secrets=webhooks.secrets_from(settings), sns=sns, now=utcnow())
    engine = engine or engine_for(settings.database)
    received = tuple(handle(engine, e.report, raw=e.raw, channel=provider, settings=settings) for e in webhook.events)
    if webhook.confirm_url:
        try:
            sns.fetch(webhook.confirm_url)
        except Exception as err:  # SNS's host did not answer: say so; SNS can be asked to send it again
            raise InvalidInput(f"the SNS subscription could not be confirmed: {' '.join(str(err).split())}") from err
    return WebhookResult(received, webhook.ignored, webhook.confirm_url)


# --- explain -------------------------------------------------------------------------------

def _permanent(report: Report, r: Reported) -> bool:
    """What ``explain`` calls permanent: the address will be suppressed (a hard bounce or
    a complaint), which a 5.7.x policy block or a full mailbox is not."""
    return report.kind in (InboundKind.bounce, InboundKind.complaint) and r.verdict == Verdict.permanent


def explain(raw: bytes, *, settings: Settings, environ: Mapping[str, str] | None = None,
            envelope_to: Iterable[str] = (), engine: Engine | None = None) -> dict:
    """What ``receive`` would record for ``raw``, changing nothing:
    ``{"kind", "recipients": [{"address", "status", "diagnostic", "permanent", "delivery_id"}]}``.
    Any input gives an answer; one that is not understood is kind "unknown"."""
    report = read_message(raw, environ=environ, envelope_to=envelope_to)
    engine = engine or engine_for(settings.database)
    recipients: list[dict] = []
    with Session(engine) as session:
        try:
            if report.kind == InboundKind.unsubscribe:
                for token in report.unsubscribe_tokens:
                    try:
                        sid, _ = signing.read_unsubscribe_token(settings.signing_keys, token)
                        email = service.get_subscriber(session, sid).email
                    except (signing.InvalidToken, NotFound):
                        continue
                    recipients.append({"address": email, "status": None, "diagnostic": "mailto unsubscribe",
                                       "permanent": False, "delivery_id": None})
                    break
            elif report.kind != InboundKind.unknown:
                ties = bounces.tie(session, report, policy=bounces.policy_from(settings), now=utcnow())
                for t in ties.recipients:
                    r = t.recipient
                    recipients.append({"address": r.address or None, "status": r.status or None,
                                       "diagnostic": r.diagnostic, "permanent": _permanent(report, r),
                                       "delivery_id": None if ties.refused or t.delivery is None
                                       else t.delivery.delivery_id})
        finally:
            session.rollback()  # reads only; and never a write, whatever happened
    return {"kind": str(report.kind), "recipients": recipients}


def explain_lines(raw: bytes, *, settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """``explain`` for people: the kind, the reason or source, and a line per recipient
    with its verdict."""
    report = read_message(raw, environ=environ)
    shown = explain(raw, settings=settings, environ=environ)
    lines = [f"kind: {shown['kind']}" + (f" ({report.source})" if report.kind != InboundKind.unknown else "")]
    if report.reason:
        lines.append(f"reason: {report.reason}")
    verdicts = {i: r.verdict for i, r in enumerate(report.recipients)}
    for i, r in enumerate(shown["recipients"]):
        verdict = verdicts.get(i, "")
        delivery = f"delivery {r['delivery_id']}" if r["delivery_id"] else "no delivery found"
        lines.append(f"  {r['address'] or '(not named)'}: {r['status'] or '-'} {verdict}; {delivery}"
                     + (f" - {r['diagnostic'][:200]}" if r["diagnostic"] else ""))
    return lines


# --- what is kept ----------------------------------------------------------------------------

def unprocessed_count(session: Session) -> int:
    return bounces.unprocessed_count(session)


def kept(session: Session, *, include_ignored: bool = False, limit: int = 50) -> list[dict]:
    """Kept inbound messages, newest first, as JSON-ready values."""
    rows = bounces.kept_messages(session, status=None if include_ignored else InboundStatus.unprocessed,
                                 limit=limit)
    return [{"id": m.id, "received_at": m.received_at.isoformat(), "channel": m.channel, "status": m.status,
             "kind": m.kind, "reason": m.reason, "size": m.size, "delivery_id": m.delivery_id} for m in rows]


def kept_raw(session: Session, *, message_id: int) -> bytes:
    row = session.get(InboundMessage, message_id)
    if row is None:
        raise NotFound(f"no kept inbound message {message_id}")
    return row.raw
