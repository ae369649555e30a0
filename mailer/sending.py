"""Send one claimed batch: one message per recipient through a transport, each outcome
recorded on its delivery before the window after it goes out.

The order of steps is what makes "exactly once" hold:
  1. claim a batch under a lease (``queries.claim_batch``);
  2. per window of ``EngineConfig.window`` recipients (NEWSLETTER_SEND_WINDOW, 8 by
     default), in ONE transaction: record the previous window's outcomes and mark this
     window's deliveries 'sending' (that also checks each subscriber is still active and
     the campaign still sending, so unsubscribes and pauses take effect at the next
     window);
  3. hand the window's messages to the relay, one after the other;
  4. at the end, record the last outcomes, give back the marks of any message that
     never went out, and release the batch.
A worker killed between 3 and the next 2 leaves at most one window of deliveries
'sending' whose messages may have left; the next claim of the batch sends those again
(the only repeats possible, at most a window per killed connection, each counted in
``delivery.repeats``) and nothing is lost. A window of 1 is one message per connection.

``send_batch`` is that loop; each step around it is a small named piece: the lease
(``_Lease``), the window (``_send_window``), throttling (``_throttle``), assembly
(``assemble``), what a reply means (``mailer.outcomes.decide``) and the circuit
breaker (``_CircuitBreaker``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from mailer import queries, tracking
from mailer.campaigns import pause_campaign
from mailer.core import metrics, signing
from mailer.core.logs import event, mask_address
from mailer.core.clock import utcnow
from mailer.core.db import transaction
from mailer.core.errors import InvalidInput, TransientDeliveryError
from mailer.dkim import DkimSigner, relaxed_piece
from mailer.message import MessageTemplate, Recipient, compile_message, feedback_id, verp_address
from mailer.models import Campaign, DeliveryStatus, Issue
from mailer.outcomes import Outcome, decide
from mailer.ratelimit import Backoff, DomainSlots, NoDomainCap, NoLimit, RateLimiter
from mailer.replies import Kind, Verdict, classify
from mailer.transports.base import SendResult, Transport
from subscribers import links
from subscribers.models import MailingList

D = DeliveryStatus
RETRY = "retry"  # the metrics' outcome of a message queued again for a later attempt
log = logging.getLogger(__name__)


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
    # Messages marked 'sending' together, then sent, then recorded together: one
    # database round trip per window instead of per message; a connection that dies
    # leaves at most this many messages of unknown fate.
    window: int = 1


@dataclass
class BatchOutcome:
    campaign_id: int
    seq: int
    batch_id: int = 0
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
    """The issue compiled once into a message template for this campaign: with its
    content links rewritten to the redirect when the list tracks clicks (``links``: how
    many tokens a message carries), and the open pixel when it tracks opens."""

    campaign_id: int
    template: MessageTemplate
    links: int = 0
    pixel: bool = False


_prepared: dict[tuple[int, str], PreparedCampaign] = {}


def _cache_key(campaign_id: int, cfg: EngineConfig, updated_at, links: list[str] | None, track_clicks: bool,
               track_opens: bool) -> tuple:
    return (campaign_id, str(updated_at), bool(cfg.signers), len(links or ()) if track_clicks else 0, track_opens)


def prepare_campaign(session, campaign_id: int, cfg: EngineConfig) -> PreparedCampaign:
    """Compile the campaign's issue once per process (cached by issue update time). A
    batch reads only what the cache is keyed on, not the issue's 50 KB of HTML and its
    source, unless it compiles."""
    row = session.execute(
        select(Issue.updated_at, Issue.links, MailingList.track_clicks, MailingList.track_opens)
        .join(Campaign, Campaign.issue_id == Issue.id).join(MailingList, MailingList.id == Campaign.list_id)
        .where(Campaign.id == campaign_id)
    ).one()
    prepared = _prepared.get(_cache_key(campaign_id, cfg, *row))
    if prepared is None:
        campaign = session.get(Campaign, campaign_id)
        issue = session.get(Issue, campaign.issue_id)
        mlist = session.get(MailingList, campaign.list_id)
        key = _cache_key(campaign_id, cfg, issue.updated_at, issue.links, mlist.track_clicks, mlist.track_opens)
        prepared = compile_campaign(issue, mlist, campaign_id, cfg, links=key[3])
        # One campaign at a time is the common case; keep memory flat. A send task's
        # threads may compile it at once: each keeps its own result, the cache keeps one.
        _prepared.clear()
        _prepared[key] = prepared
    return prepared


def compile_campaign(issue: Issue, mlist: MailingList, campaign_id: int, cfg: EngineConfig, *,
                     links: int | None = None) -> PreparedCampaign:
    """The issue as this campaign mails it (also what pre-flight checks before a start):
    ``links`` content links rewritten for click tracking (the list's setting when not
    given), the open pixel when the list tracks opens."""
    if links is None:
        links = len(issue.links or ()) if mlist.track_clicks else 0
    # Tracking off: the stored HTML exactly as it is, no extra marker, so the bytes
    # are those of the untracked render.
    html, markers = issue.html, ()
    if links:
        html = tracking.rewrite_links(html, issue.links, cfg.base_url)
        markers = tuple(tracking.click_marker(i) for i in range(links))
    if mlist.track_opens:
        html = tracking.add_pixel(html, cfg.base_url)
        markers += (tracking.OPEN_MARKER,)
    template = compile_message(
        subject=issue.subject,
        from_=Address(display_name=cfg.from_name, addr_spec=cfg.from_addr),
        html=html,
        text=issue.text,
        list_id=f"{mlist.name}.{cfg.sending_domain}",
        list_name=mlist.description or mlist.name,
        # Gmail's Feedback-ID: campaign:list:kind:SenderId, no personal data.
        feedback_id=feedback_id(campaign_id, mlist.id, domain=cfg.sending_domain),
        body_canon=relaxed_piece if cfg.signers else None,
        html_markers=markers,
    )
    return PreparedCampaign(campaign_id, template, links=links, pixel=mlist.track_opens)


def recipient_for(r: queries.Recipient, campaign_id: int, cfg: EngineConfig,
                  prepared: PreparedCampaign | None = None) -> Recipient:
    token = signing.unsubscribe_token(cfg.secret_key, r.subscriber_id, campaign_id)
    extra: dict[str, str] = {}
    if prepared is not None and prepared.links:
        tokens = signing.click_tokens(cfg.secret_key, campaign_id, r.delivery_id, prepared.links)
        extra.update((tracking.click_marker(i), t) for i, t in enumerate(tokens))
    if prepared is not None and prepared.pixel:
        extra[tracking.OPEN_MARKER] = signing.open_token(cfg.secret_key, campaign_id, r.delivery_id)
    return Recipient(
        email=r.email,
        name=r.name,
        message_id=signing.message_id(cfg.secret_key, campaign_id, r.delivery_id, cfg.sending_domain),
        unsubscribe_url=links.unsubscribe_url(cfg.base_url, token),
        unsubscribe_mailto=links.unsubscribe_mailto(token, cfg.sending_domain),
        preferences_url=links.preferences_url(cfg.base_url, token),
        extra=extra,
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
            queries.plan_window_once(self.fast)

    def close(self) -> None:
        if self.fast is not None:
            try:
                queries.unplan_window(self.fast)
            except SQLAlchemyError:  # gone (a restart) or unusable: never pooled with the setting
                with contextlib.suppress(SQLAlchemyError):
                    self.fast.invalidate()
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


def _throttle(limiter: RateLimiter, backoff: Backoff, tally: metrics.Tally) -> None:
    """Wait for the shared send-rate budget, then for the backoff after 4xx replies."""
    with tally.timed("rate_wait"):
        limiter.wait()
        backoff.pause()


class Assembled(NamedTuple):
    envelope_from: str
    message: bytes
    message_id: str
    # No line starts with "." (MessageTemplate.assemble_for_relay; a DKIM-Signature
    # header's folded lines start with a space): SMTP needs no transparency pass.
    dot_free: bool


def assemble(prepared: PreparedCampaign, r: queries.Recipient, cfg: EngineConfig, *,
             envelope_from: str | None = None) -> Assembled:
    """One recipient's message, ready for the relay. ``InvalidInput`` when the address
    or name cannot go into a message (a non-ASCII address needs SMTPUTF8): that
    recipient fails alone, with the reason recorded. ``envelope_from``: the recipient's
    return path when the caller has it already (``envelope_sender``)."""
    recipient = recipient_for(r, prepared.campaign_id, cfg, prepared)
    message, body_hash, dot_free = prepared.template.assemble_for_relay(recipient, signing=bool(cfg.signers))
    if cfg.signers:
        # Each signature covers the header section without the others (none signs a
        # DKIM-Signature field), so all are made from it and the 50 KB body is copied
        # once; the last signer's field goes on top, as signing one after the other would.
        head = message[:message.find(b"\r\n\r\n")]
        message = b"".join([*(signer.header(head, body_hash) for signer in reversed(cfg.signers)), message])
    return Assembled(envelope_from or envelope_sender(r, cfg), message, recipient.message_id, dot_free)


def envelope_sender(r: queries.Recipient, cfg: EngineConfig) -> str:
    """The delivery's own VERP return path: bounces name the delivery they are about."""
    return verp_address(signing.verp_token(cfg.secret_key, r.delivery_id), cfg.sending_domain)


def _deliver(transport: Transport, slots: DomainSlots, built: Assembled, email: str, *, ahead: bool,
             then: tuple[str, str] | None, tally: metrics.Tally) -> SendResult:
    with slots.hold(email.rpartition("@")[2]), tally.timed("smtp"):
        if not ahead:
            return transport.send(built.envelope_from, email, built.message)
        return transport.send(built.envelope_from, email, built.message, then=then, dot_free=built.dot_free)


def _mark(conn, fast, pending: list[Outcome], window: list[int], *, campaign_id: int,
          now: datetime) -> set[int] | None:
    """Record the previous window's outcomes and mark this window 'sending', in one
    transaction: the ids marked, or None when the campaign stopped
    (``queries.mark_window``)."""
    if fast is not None and not any(o.suppress_subscriber is not None for o in pending):
        # PostgreSQL: both steps in one statement, one round trip.
        marked = queries.record_and_mark_window(fast, outcomes=pending, delivery_ids=window,
                                                campaign_id=campaign_id, now=now)
        if len(marked) == len(window):
            return marked
        with conn.begin():  # recorded already; only the ones left unmarked to sort out
            return queries.settle_unmarked(conn, delivery_ids=window, marked=marked, campaign_id=campaign_id,
                                           now=now)
    with conn.begin():
        queries.record_results(conn, pending, campaign_id=campaign_id)
        return queries.mark_window(conn, delivery_ids=window, campaign_id=campaign_id, now=now)


def _failed(r: queries.Recipient, err: InvalidInput, *, marked_at: datetime, now: datetime) -> Outcome:
    return Outcome(r.delivery_id, D.failed, reply=str(err), at=now, marked_at=marked_at)


@dataclass
class _Window:
    """What sending one window came to: its outcomes, the marks to take back (the
    window ended early), and why it ended early ('' when it did not)."""

    outcomes: list[Outcome]
    unsent: list[int]
    stopped: str = ""
    relay_down_until: datetime | None = None
    relay_error: str = ""
    pause_reason: str = ""


# --- the loop -------------------------------------------------------------------------

def send_batch(engine: Engine, campaign_id: int, *, transport: Transport, cfg: EngineConfig,
               limiter: RateLimiter | None = None, backoff: Backoff | None = None,
               slots: DomainSlots | None = None,
               clock: Callable[[], datetime] = utcnow) -> BatchOutcome | None:
    """Claim one batch of the campaign and send it, a window of ``cfg.window`` messages
    at a time. Returns None when there is nothing to claim (all done, not due yet, or
    the campaign is not sending)."""
    limiter, slots, backoff = limiter or NoLimit(), slots or NoDomainCap(), backoff or Backoff()
    now = clock()
    broken: InvalidInput | None = None
    with transaction(engine) as s:
        with metrics.timed("batch_claim"):
            claim = queries.claim_batch(s, campaign_id=campaign_id, worker=cfg.worker, now=now, lease=cfg.lease)
            if claim is None:
                return None
            recipients = queries.batch_recipients(s, campaign_id=campaign_id, seq=claim.seq, now=now)
        try:
            prepared = prepare_campaign(s, campaign_id, cfg)
        except InvalidInput as err:
            prepared, broken = None, err
    out = BatchOutcome(campaign_id=campaign_id, seq=claim.seq, batch_id=claim.batch_id)
    event(log, "batch claimed", campaign_id=campaign_id, batch_id=claim.batch_id, batch_seq=claim.seq,
          recipients=len(recipients), worker=cfg.worker)
    if prepared is None:
        # The stored issue cannot become a message (a subject with a line break that got
        # past the issue parser, a bad sender setting): no message of this campaign can
        # go out, so stop it with the reason instead of failing every task forever.
        with transaction(engine) as s:
            pause_campaign(s, campaign_id=campaign_id, reason=f"cannot build the message: {broken}")
            queries.release_batch(s, campaign_id=campaign_id, seq=claim.seq, worker=cfg.worker, now=clock())
        out.stopped = f"paused: cannot build the message: {broken}"
        return out

    pending: list[Outcome] = []  # the previous window's outcomes, recorded with the next marks
    unsent: list[int] = []  # marks to take back at the end
    marked_at = now
    lease, breaker = _Lease(claim, cfg), _CircuitBreaker(cfg.permanent_error_limit)
    ended = _Window([], [])
    # One connection for the whole batch, one short transaction per window on it: a
    # Session per message cost more than the SQL it ran (bench/send.py --profile).
    db = _Database(engine, deadline=lambda: lease.until, clock=clock)
    tally = metrics.Tally()  # written once per window (mailer.core.metrics)
    try:
        for start in range(0, len(recipients), cfg.window):
            window = recipients[start:start + cfg.window]
            now = clock()
            if not db.run(lambda conn, fast: lease.keep(conn, now)):
                out.stopped = "lease lost"
                break
            marked = db.run(lambda conn, fast: _mark(conn, fast, pending, [r.delivery_id for r in window],
                                                     campaign_id=campaign_id, now=now))
            pending, marked_at = [], now
            if marked is None:
                out.stopped = "campaign no longer sending"
                break
            out.skipped += len(window) - len(marked)
            ended = _send_window([r for r in window if r.delivery_id in marked], prepared, cfg, out,
                                 transport=transport, limiter=limiter, backoff=backoff, slots=slots, breaker=breaker,
                                 marked_at=marked_at, clock=clock, tally=tally,
                                 after=recipients[start + cfg.window] if start + cfg.window < len(recipients) else None)
            tally.flush()
            pending, unsent = ended.outcomes, ended.unsent
            if ended.pause_reason:
                db.run(lambda conn, fast: _pause_after(conn, pending, unsent, marked_at=marked_at,
                                                       campaign_id=campaign_id, reason=ended.pause_reason,
                                                       now=clock()))
                pending, unsent = [], []
            if ended.stopped:
                out.stopped = ended.stopped
                break
        db.run(lambda conn, fast: _release(conn, out, pending, unsent, marked_at=marked_at, claim=claim,
                                           worker=cfg.worker, now=clock(), relay_down_until=ended.relay_down_until,
                                           relay_error=ended.relay_error))
    finally:
        tally.flush()
        db.close()
    event(log, "batch released", campaign_id=campaign_id, batch_id=out.batch_id, batch_status=out.batch_status,
          sent=out.sent, failed=out.failed, bounced=out.bounced, skipped=out.skipped, retry_later=out.retry_later,
          stopped=out.stopped)
    if out.campaign_finished:
        event(log, "campaign finished", campaign_id=campaign_id)
    return out


def _logged(r: queries.Recipient, out: BatchOutcome, what: str, *, level: int = logging.INFO, **fields) -> None:
    """A message's event: its ids and the masked address, and a DEBUG line with the
    full address. The relay's reply text stays out (it often quotes the address): its
    code and class say what happened, and the delivery record keeps the text."""
    ids = {"campaign_id": out.campaign_id, "batch_id": out.batch_id, "delivery_id": r.delivery_id}
    event(log, what, level=level, **ids, recipient=mask_address(r.email), **fields)
    if log.isEnabledFor(logging.DEBUG):
        event(log, what, level=logging.DEBUG, **ids, address=r.email)


def _send_window(window: list[queries.Recipient], prepared: PreparedCampaign, cfg: EngineConfig,
                 out: BatchOutcome, *, transport: Transport, limiter: RateLimiter, backoff: Backoff,
                 slots: DomainSlots, breaker: _CircuitBreaker, marked_at: datetime,
                 clock: Callable[[], datetime], tally: metrics.Tally,
                 after: queries.Recipient | None = None) -> _Window:
    """Hand each marked message of a window to the relay and decide what its reply
    means. Stops early when the relay cannot be reached or the circuit breaker trips;
    the rest of the window's marks are then given back. ``after``: the recipient the
    batch goes on with after this window (its envelope may follow the last message)."""
    done = _Window([], [])
    # Only envelopes go early, never content: the next message's envelope goes to the
    # relay behind this one's content and end of data, so each message costs one round
    # trip, not two. The window's last message takes the envelope of the next window's
    # first recipient, whose mark comes before its content does; when that one is not
    # marked after all (they left the list), the transport drops the envelope with the
    # connection and connects again.
    ahead = getattr(transport, "pipelines_ahead", False)
    envelope_from = None  # this message's return path, when it went early as the one before's ``then``
    for i, r in enumerate(window):
        try:
            built = assemble(prepared, r, cfg, envelope_from=envelope_from)
            _throttle(limiter, backoff, tally)
            following = (window[i + 1] if i + 1 < len(window) else after) if ahead else None
            then = (envelope_sender(following, cfg), following.email) if following is not None else None
            result = _deliver(transport, slots, built, r.email, ahead=ahead, then=then, tally=tally)
            envelope_from = then[0] if then is not None else None
        except InvalidInput as err:  # nothing to retry: this one recipient fails
            envelope_from = None
            done.outcomes.append(_failed(r, err, marked_at=marked_at, now=clock()))
            out.failed += 1
            tally.message(D.failed, "invalid_message")
            _logged(r, out, "message failed", status=D.failed.value, reply_class="invalid_message",
                    attempt=r.attempts + 1)
            continue
        except TransientDeliveryError as err:
            # The relay cannot be reached at all: this delivery goes back to the queue
            # without using up an attempt, and the batch waits before trying again.
            done.outcomes.append(Outcome(r.delivery_id, D.queued, reply=err.reply, at=clock(), marked_at=marked_at,
                                         counts_attempt=False))
            done.unsent = [r.delivery_id for r in window[i + 1:]]
            done.relay_down_until = clock() + timedelta(seconds=max(5.0, cfg.retry_base_seconds))
            done.relay_error = err.reply
            done.stopped = f"relay unreachable: {err.reply}"
            out.retry_later += 1 + len(done.unsent)
            tally.message(RETRY, "unreachable")
            _logged(r, out, "message deferred", status=D.queued.value, reply_class="unreachable",
                    attempt=r.attempts + 1, level=logging.WARNING)
            return done
        verdict = classify(result.code, result.reply)
        if verdict.kind == Kind.sent:
            backoff.accepted()
        elif verdict.kind == Kind.transient:
            backoff.refused()
        now = clock()
        decision = decide(verdict, r.attempts + 1, cfg, now)
        out.count(decision.status)
        tally.message(RETRY if decision.retry else decision.status, verdict.reply_class)
        _logged(r, out, _WHAT[decision.status], status=decision.status.value, reply_class=verdict.reply_class,
                code=result.code, attempt=r.attempts + 1,
                **({"next_attempt_at": decision.next_attempt_at.isoformat()} if decision.next_attempt_at else {}))
        done.outcomes.append(Outcome(
            r.delivery_id, decision.status, code=result.code, message_id=built.message_id, at=now,
            marked_at=marked_at, reply=f"{result.code} {result.reply}".strip() if result.code else result.reply,
            next_attempt_at=decision.next_attempt_at,
            suppress_subscriber=r.subscriber_id if decision.status == D.bounced else None,
        ))
        if breaker.tripped(verdict):
            done.pause_reason = f"{breaker.in_a_row} permanent errors in a row; last: {result.code} {result.reply}"
            done.unsent = [r.delivery_id for r in window[i + 1:]]
            done.stopped = "paused: too many permanent errors in a row"
            return done
    return done


_WHAT = {D.sent: "message sent", D.failed: "message failed", D.bounced: "message bounced",
         D.queued: "message deferred"}


def _release(conn, out: BatchOutcome, pending: list[Outcome], unsent: list[int], *, marked_at: datetime,
             claim: queries.ClaimedBatch, worker: str, now: datetime, relay_down_until: datetime | None,
             relay_error: str) -> None:
    """The end of a batch, in one transaction: the last window's outcomes (and its marks
    that never went out taken back), the batch let go (done, or pending until its next
    retry), the campaign finished if it was the last, and the relay's state noted."""
    if conn.in_transaction():  # a step that failed inside its own transaction
        conn.rollback()
    with conn.begin():
        queries.record_results(conn, pending, campaign_id=claim.campaign_id)
        queries.unmark(conn, delivery_ids=unsent, marked_at=marked_at, now=now)
        out.batch_status = queries.release_batch(conn, campaign_id=claim.campaign_id, seq=claim.seq, worker=worker,
                                                 now=now, available_at=relay_down_until) or ""
        out.campaign_finished = queries.finish_campaign_if_done(conn, campaign_id=claim.campaign_id, now=now)
        if relay_down_until is not None:
            queries.note_relay(conn, campaign_id=claim.campaign_id, down=True, error=relay_error, now=now)
        elif out.sent:
            queries.note_relay(conn, campaign_id=claim.campaign_id, down=False, now=now)


def _pause_after(conn, outcomes: list[Outcome], unsent: list[int], *, marked_at: datetime, campaign_id: int,
                 reason: str, now: datetime) -> None:
    """Record the window's outcomes, take back its unsent marks and pause the campaign
    with the reason, together."""
    if conn.in_transaction():
        conn.rollback()
    with conn.begin():
        queries.record_results(conn, outcomes, campaign_id=campaign_id)
        queries.unmark(conn, delivery_ids=unsent, marked_at=marked_at, now=now)
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
