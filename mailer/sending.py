"""Send one claimed batch: one message per recipient through a transport, each outcome
recorded on its delivery before the next message goes out.

The order of steps is what makes "exactly once" hold:
  1. claim a batch under a lease (``queries.claim_batch``);
  2. per recipient, in ONE transaction: record the previous message's outcome and mark
     this delivery 'sending' (that also checks the subscriber is still active and the
     campaign still sending, so unsubscribes and pauses take effect at the next message);
  3. hand the message to the relay;
  4. at the end, record the last outcome and release the batch.
A worker killed between 3 and the next 2 leaves exactly one delivery 'sending' whose
message may have left; the next claim of the batch sends that one again (the only repeat
possible, at most one per killed connection) and nothing is lost.

``send_batch`` is that loop; each step around it is a small named piece: the lease
(``_Lease``), throttling (``_throttle``), assembly (``_assemble``), what a reply means
(``mailer.outcomes.decide``) and the circuit breaker (``_CircuitBreaker``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from mailer import queries
from mailer.campaigns import pause_campaign
from mailer.core import signing
from mailer.core.clock import utcnow
from mailer.core.db import transaction
from mailer.core.errors import InvalidInput, TransientDeliveryError
from mailer.dkim import DkimSigner, relaxed_piece
from mailer.message import MessageTemplate, Recipient, compile_message, verp_address
from mailer.models import Campaign, DeliveryStatus, Issue
from mailer.outcomes import Outcome, decide
from mailer.ratelimit import Backoff, DomainSlots, NoDomainCap, NoLimit, RateLimiter
from mailer.replies import Kind, Verdict, classify
from mailer.transports.base import SendResult, Transport
from subscribers import links
from subscribers.models import MailingList

D = DeliveryStatus


@dataclass(frozen=True)
class EngineConfig:
    """What the engine needs, as plain values (it never reads settings itself)."""

    worker: str
    secret_key: str
    base_url: str
    from_name: str
    from_addr: str
    sending_domain: str
    lease: timedelta = timedelta(seconds=300)
    max_attempts: int = 5
    retry_base_seconds: float = 30.0
    permanent_error_limit: int = 25
    signers: tuple[DkimSigner, ...] = ()  # DKIM, when configured: RSA, and maybe Ed25519


@dataclass
class BatchOutcome:
    campaign_id: int
    seq: int
    sent: int = 0
    failed: int = 0
    bounced: int = 0
    skipped: int = 0
    retry_later: int = 0
    stopped: str = ""  # why the batch ended early: paused, relay unreachable, lease lost
    batch_status: str = ""
    campaign_finished: bool = False

    def count(self, status: DeliveryStatus) -> None:
        if status == D.queued:
            self.retry_later += 1
        else:
            setattr(self, status.value, getattr(self, status.value) + 1)


@dataclass(frozen=True)
class PreparedCampaign:
    """The issue compiled once into a message template for this campaign."""

    campaign_id: int
    template: MessageTemplate


_prepared: dict[tuple[int, str], PreparedCampaign] = {}


def prepare_campaign(session, campaign_id: int, cfg: EngineConfig) -> PreparedCampaign:
    """Compile the campaign's issue once per process (cached by issue update time)."""
    campaign = session.get(Campaign, campaign_id)
    issue = session.get(Issue, campaign.issue_id)
    key = (campaign_id, str(issue.updated_at), bool(cfg.signers))
    if key not in _prepared:
        mlist = session.get(MailingList, campaign.list_id)
        template = compile_message(
            subject=issue.subject,
            from_=Address(display_name=cfg.from_name, addr_spec=cfg.from_addr),
            html=issue.html,
            text=issue.text,
            list_id=f"{mlist.name}.{cfg.sending_domain}",
            list_name=mlist.description or mlist.name,
            # Gmail's Feedback-ID: campaign:list:kind:sender, no personal data.
            feedback_id=f"{campaign_id}:{mlist.id}:newsletter:{cfg.sending_domain}",
            body_canon=relaxed_piece if cfg.signers else None,
        )
        _prepared.clear()  # one campaign at a time is the common case; keep memory flat
        _prepared[key] = PreparedCampaign(campaign_id, template)
    return _prepared[key]


def recipient_for(r: queries.Recipient, campaign_id: int, cfg: EngineConfig) -> Recipient:
    token = signing.unsubscribe_token(cfg.secret_key, r.subscriber_id, campaign_id)
    return Recipient(
        email=r.email,
        name=r.name,
        message_id=signing.message_id(cfg.secret_key, campaign_id, r.delivery_id, cfg.sending_domain),
        unsubscribe_url=links.unsubscribe_url(cfg.base_url, token),
        unsubscribe_mailto=links.unsubscribe_mailto(token, cfg.sending_domain),
        preferences_url=links.preferences_url(cfg.base_url, token),
    )


# --- the steps around one message --------------------------------------------------------

class _Lease:
    """The claim's lease, renewed once half of it is used up, so a long batch keeps it
    while a dead worker's batch is free again within one lease."""

    def __init__(self, claim: queries.ClaimedBatch, cfg: EngineConfig):
        self.claim, self.cfg, self.until = claim, cfg, claim.lease_until

    def keep(self, conn, now: datetime) -> bool:
        """False when the batch was lost (the lease ran out and another worker took it)."""
        if self.until - now >= self.cfg.lease / 2:
            return True
        until = now + self.cfg.lease
        with conn.begin():
            kept = queries.renew_lease(conn, campaign_id=self.claim.campaign_id, seq=self.claim.seq,
                                       worker=self.cfg.worker, until=until)
        if kept:
            self.until = until
        return kept


class _Database:
    """The batch's connections, and the one way its steps run on them: a step that fails
    because the database went away (a restart, a failover, a dropped connection) runs
    again on fresh connections, with growing pauses, until ``deadline()``. A message the
    relay already took must have its outcome written; if that cannot be done within the
    lease, the delivery stays 'sending' and is sent again later (counted as a repeat).
    Every step is safe to run twice: its statements are guarded (``mailer.queries``)."""

    def __init__(self, engine: Engine, *, deadline: Callable[[], datetime], clock: Callable[[], datetime],
                 sleep: Callable[[float], None] = time.sleep):
        self.engine, self.deadline, self.clock, self.sleep = engine, deadline, clock, sleep
        self.conn = self.fast = None

    def run(self, step: Callable):
        pause = 0.05
        while True:
            try:
                if self.conn is None:
                    self._connect()
                return step(self.conn, self.fast)
            except DBAPIError as err:
                if not _database_gone(err) or self.clock() + timedelta(seconds=pause) >= self.deadline():
                    raise
                self.close()
                self.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _connect(self) -> None:
        self.conn = self.engine.connect()
        # PostgreSQL: a second connection in autocommit mode for the one statement per
        # message (``queries.record_and_mark``): a single statement is its own transaction,
        # so it costs one round trip instead of BEGIN, three statements and COMMIT. SQLite
        # cannot modify data inside a WITH, so it keeps the explicit transaction.
        if self.engine.dialect.name == "postgresql":
            self.fast = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def close(self) -> None:
        for conn in (self.conn, self.fast):
            if conn is not None:
                with contextlib.suppress(DBAPIError):
                    conn.close()
        self.conn = self.fast = None


def _database_gone(err: DBAPIError) -> bool:
    return err.connection_invalidated or isinstance(err, (OperationalError, InterfaceError))


class _CircuitBreaker:
    """Pause the campaign after ``limit`` permanent refusals in a row that are not about
    the address (a relay or a receiver refusing everything: a misconfigured sender, a
    blocklisting), instead of burning through the whole list. A success or a bad address
    resets it; a temporary refusal leaves it as it is."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row = limit, 0

    def tripped(self, verdict: Verdict) -> bool:
        if verdict.kind == Kind.sent or (verdict.kind == Kind.permanent and verdict.suppress):
            self.in_a_row = 0
        elif verdict.kind == Kind.permanent:
            self.in_a_row += 1
        return self.in_a_row >= self.limit


def _throttle(limiter: RateLimiter, backoff: Backoff) -> None:
    """Wait for the shared send-rate budget, then for the backoff after 4xx replies."""
    limiter.wait()
    backoff.pause()


def _assemble(prepared: PreparedCampaign, r: queries.Recipient, cfg: EngineConfig) -> tuple[str, bytes, str]:
    """(envelope sender, message bytes, Message-ID) for one recipient. ``InvalidInput``
    when the address or name cannot go into a message (a non-ASCII address needs
    SMTPUTF8): that recipient fails alone, with the reason recorded."""
    recipient = recipient_for(r, prepared.campaign_id, cfg)
    if cfg.signers:
        message, body_hash = prepared.template.assemble_for_signing(recipient)
        for signer in cfg.signers:
            message = signer.sign(message, body_hash=body_hash)
    else:
        message = prepared.template.assemble(recipient)
    envelope_from = verp_address(signing.verp_token(cfg.secret_key, r.delivery_id), cfg.sending_domain)
    return envelope_from, message, recipient.message_id


def _deliver(transport: Transport, slots: DomainSlots, envelope_from: str, email: str, message: bytes) -> SendResult:
    with slots.hold(email.rpartition("@")[2]):
        return transport.send(envelope_from, email, message)


def _mark(conn, fast, previous: Outcome | None, *, delivery_id: int, campaign_id: int, now: datetime) -> str:
    """Record ``previous`` and mark the next delivery 'sending', in one transaction:
    'sending', 'skipped' or 'stopped' (``queries.mark_sending``)."""
    if fast is not None and (previous is None or previous.suppress_subscriber is None):
        if queries.record_and_mark(fast, previous=previous, delivery_id=delivery_id, campaign_id=campaign_id,
                                   now=now):
            return D.sending  # PostgreSQL: both steps in one statement, one round trip
        previous = None  # recorded by that statement; only the mark is left to sort out
    with conn.begin():
        if previous is not None:
            queries.record_result(conn, previous, campaign_id=campaign_id)
        return queries.mark_sending(conn, delivery_id=delivery_id, campaign_id=campaign_id, now=now)


def _failed(r: queries.Recipient, err: InvalidInput, *, marked_at: datetime, now: datetime) -> Outcome:
    return Outcome(r.delivery_id, D.failed, reply=str(err), at=now, marked_at=marked_at)


# --- the loop -------------------------------------------------------------------------

def send_batch(engine: Engine, campaign_id: int, *, transport: Transport, cfg: EngineConfig,
               limiter: RateLimiter | None = None, backoff: Backoff | None = None,
               slots: DomainSlots | None = None,
               clock: Callable[[], datetime] = utcnow) -> BatchOutcome | None:
    """Claim one batch of the campaign and send it. Returns None when there is nothing
    to claim (all done, not due yet, or the campaign is not sending)."""
    limiter, slots, backoff = limiter or NoLimit(), slots or NoDomainCap(), backoff or Backoff()
    now = clock()
    broken: InvalidInput | None = None
    with transaction(engine) as s:
        claim = queries.claim_batch(s, campaign_id=campaign_id, worker=cfg.worker, now=now, lease=cfg.lease)
        if claim is None:
            return None
        recipients = queries.batch_recipients(s, campaign_id=campaign_id, seq=claim.seq, now=now)
        try:
            prepared = prepare_campaign(s, campaign_id, cfg)
        except InvalidInput as err:
            prepared, broken = None, err
    out = BatchOutcome(campaign_id=campaign_id, seq=claim.seq)
    if prepared is None:
        # The stored issue cannot become a message (a subject with a line break that got
        # past the issue parser, a bad sender setting): no message of this campaign can
        # go out, so stop it with the reason instead of failing every task forever.
        with transaction(engine) as s:
            pause_campaign(s, campaign_id=campaign_id, reason=f"cannot build the message: {broken}")
            queries.release_batch(s, campaign_id=campaign_id, seq=claim.seq, worker=cfg.worker, now=clock())
        out.stopped = f"paused: cannot build the message: {broken}"
        return out

    pending: Outcome | None = None  # the previous message's outcome, recorded with the next mark
    lease, breaker = _Lease(claim, cfg), _CircuitBreaker(cfg.permanent_error_limit)
    relay_down_until: datetime | None = None
    relay_error = ""
    # One connection for the whole batch, one short transaction per message on it: a
    # Session per message cost more than the SQL it ran (bench/send.py --profile).
    db = _Database(engine, deadline=lambda: lease.until, clock=clock)
    try:
        for r in recipients:
            now = clock()
            if not db.run(lambda conn, fast: lease.keep(conn, now)):
                out.stopped = "lease lost"
                break
            marked = db.run(lambda conn, fast: _mark(conn, fast, pending, delivery_id=r.delivery_id,
                                                     campaign_id=campaign_id, now=now))
            pending, marked_at = None, now
            if marked == "stopped":
                out.stopped = "campaign no longer sending"
                break
            if marked == D.skipped:
                out.skipped += 1
                continue
            try:
                envelope_from, message, message_id = _assemble(prepared, r, cfg)
                _throttle(limiter, backoff)
                result = _deliver(transport, slots, envelope_from, r.email, message)
            except InvalidInput as err:  # nothing to retry: this one recipient fails
                pending = _failed(r, err, marked_at=marked_at, now=clock())
                out.failed += 1
                continue
            except TransientDeliveryError as err:
                # The relay cannot be reached at all: this delivery goes back to the queue
                # without using up an attempt, and the batch waits before trying again.
                pending = Outcome(r.delivery_id, D.queued, reply=err.reply, at=clock(), marked_at=marked_at,
                                  counts_attempt=False)
                relay_down_until = clock() + timedelta(seconds=max(5.0, cfg.retry_base_seconds))
                relay_error = err.reply
                out.stopped = f"relay unreachable: {err.reply}"
                out.retry_later += 1
                break
            verdict = classify(result.code, result.reply)
            if verdict.kind == Kind.sent:
                backoff.accepted()
            elif verdict.kind == Kind.transient:
                backoff.refused()
            now = clock()
            decision = decide(verdict, r.attempts + 1, cfg, now)
            out.count(decision.status)
            pending = Outcome(
                r.delivery_id, decision.status, code=result.code, message_id=message_id, at=now,
                marked_at=marked_at, reply=f"{result.code} {result.reply}".strip() if result.code else result.reply,
                next_attempt_at=decision.next_attempt_at,
                suppress_subscriber=r.subscriber_id if decision.status == D.bounced else None,
            )
            if breaker.tripped(verdict):
                reason = f"{breaker.in_a_row} permanent errors in a row; last: {result.code} {result.reply}"
                db.run(lambda conn, fast: _pause_after(conn, pending, campaign_id=campaign_id, reason=reason))
                pending = None
                out.stopped = "paused: too many permanent errors in a row"
                break
        db.run(lambda conn, fast: _release(conn, out, pending, claim=claim, worker=cfg.worker, now=clock(),
                                           relay_down_until=relay_down_until, relay_error=relay_error))
    finally:
        db.close()
    return out


def _release(conn, out: BatchOutcome, pending: Outcome | None, *, claim: queries.ClaimedBatch, worker: str,
             now: datetime, relay_down_until: datetime | None, relay_error: str) -> None:
    """The end of a batch, in one transaction: the last outcome, the batch let go (done,
    or pending until its next retry), the campaign finished if it was the last, and the
    relay's state noted."""
    if conn.in_transaction():  # a step that failed inside its own transaction
        conn.rollback()
    with conn.begin():
        if pending is not None:
            queries.record_result(conn, pending, campaign_id=claim.campaign_id)
        out.batch_status = queries.release_batch(conn, campaign_id=claim.campaign_id, seq=claim.seq, worker=worker,
                                                 now=now, available_at=relay_down_until) or ""
        out.campaign_finished = queries.finish_campaign_if_done(conn, campaign_id=claim.campaign_id, now=now)
        if relay_down_until is not None:
            queries.note_relay(conn, campaign_id=claim.campaign_id, down=True, error=relay_error, now=now)
        elif out.sent:
            queries.note_relay(conn, campaign_id=claim.campaign_id, down=False, now=now)


def _pause_after(conn, outcome: Outcome, *, campaign_id: int, reason: str) -> None:
    """Record the last outcome and pause the campaign with the reason, together."""
    with conn.begin():
        queries.record_result(conn, outcome, campaign_id=campaign_id)
        with Session(bind=conn) as s:  # joins the connection's transaction
            pause_campaign(s, campaign_id=campaign_id, reason=reason)


def drain(engine: Engine, campaign_id: int, *, transport: Transport, cfg: EngineConfig,
          limiter: RateLimiter | None = None, slots: DomainSlots | None = None,
          backoff: Backoff | None = None, time_budget: float = 60.0) -> list[BatchOutcome]:
    """Send batches of one campaign until none is left to claim or the time budget is
    spent (then the caller queues another task, so one long campaign cannot hold a
    worker forever and a pause or a new campaign is not starved)."""
    started = time.monotonic()
    outcomes: list[BatchOutcome] = []
    backoff = backoff or Backoff()
    try:  # the transport connects on the first message, so an unreachable relay is recorded on it
        while time.monotonic() - started < time_budget:
            outcome = send_batch(engine, campaign_id, transport=transport, cfg=cfg, limiter=limiter,
                                 backoff=backoff, slots=slots)
            if outcome is None:
                break
            outcomes.append(outcome)
            if outcome.stopped:
                break
    finally:
        transport.close()
    return outcomes
