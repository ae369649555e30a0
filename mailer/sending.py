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
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.headerregistry import Address

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mailer import queries
from mailer.db import transaction
from mailer.errors import InvalidInput, TransientDeliveryError
from mailer.message import MessageTemplate, Recipient, compile_message, verp_address
from mailer.models import Campaign, Issue, MailingList
from mailer.ratelimit import Backoff, DomainSlots, NoDomainCap, NoLimit, RateLimiter
from mailer.replies import classify
from mailer.transports.base import Transport
from subscribers import tokens

def utcnow() -> datetime:
    return datetime.now(timezone.utc)


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
    sign: Callable[[bytes], bytes] | None = None  # DKIM signer, when configured


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
    key = (campaign_id, str(issue.updated_at))
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
        )
        _prepared.clear()  # one campaign at a time is the common case; keep memory flat
        _prepared[key] = PreparedCampaign(campaign_id, template)
    return _prepared[key]


def delivery_token(secret_key: str, delivery_id: int) -> str:
    """The VERP token of a delivery: its id plus a MAC, so a bounce can be traced back
    to it and a forged bounce cannot mark someone else bounced."""
    mac = hmac.new(secret_key.encode(), f"verp:{delivery_id}".encode(), hashlib.sha256).hexdigest()[:12]
    return f"{delivery_id}-{mac}"


def message_id(secret_key: str, campaign_id: int, delivery_id: int, domain: str) -> str:
    """Stable per delivery: a repeated send after a crash carries the same Message-ID,
    which lets receiving systems drop the duplicate."""
    mac = hmac.new(secret_key.encode(), f"mid:{delivery_id}".encode(), hashlib.sha256).hexdigest()[:10]
    return f"<nl.{campaign_id}.{delivery_id}.{mac}@{domain}>"


def recipient_for(r: queries.Recipient, campaign_id: int, cfg: EngineConfig) -> Recipient:
    token = tokens.unsubscribe_token(cfg.secret_key, r.subscriber_id, campaign_id)
    return Recipient(
        email=r.email,
        name=r.name,
        message_id=message_id(cfg.secret_key, campaign_id, r.delivery_id, cfg.sending_domain),
        unsubscribe_url=tokens.unsubscribe_url(cfg.base_url, token),
        unsubscribe_mailto=tokens.unsubscribe_mailto(token, cfg.sending_domain),
        preferences_url=tokens.preferences_url(cfg.base_url, token),
    )


def _retry_at(now: datetime, attempts: int, cfg: EngineConfig) -> datetime:
    return now + timedelta(seconds=cfg.retry_base_seconds * (2 ** max(0, attempts - 1)))


def send_batch(engine: Engine, campaign_id: int, *, transport: Transport, cfg: EngineConfig,
               limiter: RateLimiter | None = None, backoff: Backoff | None = None,
               slots: DomainSlots | None = None,
               clock: Callable[[], datetime] = utcnow) -> BatchOutcome | None:
    """Claim one batch of the campaign and send it. Returns None when there is nothing
    to claim (all done, not due yet, or the campaign is not sending)."""
    limiter = limiter or NoLimit()
    slots = slots or NoDomainCap()
    backoff = backoff or Backoff()
    now = clock()
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
            from mailer.campaigns import pause_campaign

            pause_campaign(s, campaign_id=campaign_id, reason=f"cannot build the message: {broken}")
            queries.release_batch(s, campaign_id=campaign_id, seq=claim.seq, now=clock())
        out.stopped = f"paused: cannot build the message: {broken}"
        return out
    pending: dict | None = None  # the previous message's outcome, recorded with the next mark
    lease_until = claim.lease_until
    permanent_in_a_row = 0
    relay_down_until: datetime | None = None
    # One connection for the whole batch, one short transaction per message on it: a
    # Session per message cost more than the SQL it ran (bench/send.py --profile).
    with engine.connect() as conn, _fast_connection(engine) as fast:
        try:
            for r in recipients:
                now = clock()
                if lease_until - now < cfg.lease / 2:
                    lease_until = now + cfg.lease
                    with conn.begin():
                        if not queries.renew_lease(conn, campaign_id=campaign_id, seq=claim.seq,
                                                   worker=cfg.worker, until=lease_until):
                            out.stopped = "lease lost"
                            break
                if fast is not None and not (pending and pending.get("suppress")) and queries.record_and_mark(
                        fast, previous=pending, delivery_id=r.delivery_id, campaign_id=campaign_id, now=now):
                    marked = "sending"  # PostgreSQL: both steps in one statement, one round trip
                else:
                    with conn.begin():
                        if pending:
                            _record(conn, pending)
                        marked = queries.mark_sending(conn, delivery_id=r.delivery_id, campaign_id=campaign_id,
                                                      now=now)
                pending = None
                if marked == "stopped":
                    out.stopped = "campaign no longer sending"
                    break
                if marked == "skipped":
                    out.skipped += 1
                    continue
                try:
                    # A recipient whose address or name cannot go into a message (a non-ASCII
                    # address, which needs SMTPUTF8) fails alone, with the reason recorded.
                    recipient = recipient_for(r, campaign_id, cfg)
                    message = prepared.template.assemble(recipient)
                    if cfg.sign:
                        message = cfg.sign(message)
                    envelope_from = verp_address(delivery_token(cfg.secret_key, r.delivery_id), cfg.sending_domain)
                except InvalidInput as err:
                    pending = dict(delivery_id=r.delivery_id, campaign_id=campaign_id, status="failed", code=None,
                                   reply=str(err), message_id="", now=clock())
                    out.failed += 1
                    continue
                limiter.wait()
                backoff.pause()
                try:
                    with slots.hold(r.email.rpartition("@")[2]):
                        result = transport.send(envelope_from, r.email, message)
                    code, reply = result.code, result.reply
                except InvalidInput as err:
                    # An address that cannot go into an SMTP command: nothing to retry.
                    pending = dict(delivery_id=r.delivery_id, campaign_id=campaign_id, status="failed", code=None,
                                   reply=str(err), message_id="", now=clock())
                    out.failed += 1
                    continue
                except TransientDeliveryError as err:
                    # The relay cannot be reached at all: this delivery goes back to the queue
                    # without using up an attempt, and the batch waits before trying again.
                    pending = dict(delivery_id=r.delivery_id, campaign_id=campaign_id, status="queued",
                                   code=None, reply=err.reply, message_id="", now=clock(),
                                   next_attempt_at=None, count_attempt=False)
                    relay_down_until = clock() + timedelta(seconds=max(5.0, cfg.retry_base_seconds))
                    out.stopped = f"relay unreachable: {err.reply}"
                    out.retry_later += 1
                    break
                verdict = classify(code, reply)
                now = clock()
                attempts = r.attempts + 1
                if verdict.kind == "sent":
                    backoff.accepted()
                    permanent_in_a_row = 0
                    status, nxt = "sent", None
                    out.sent += 1
                elif verdict.kind == "transient":
                    backoff.refused()
                    if attempts >= cfg.max_attempts:
                        status, nxt = "failed", None
                        out.failed += 1
                    else:
                        status, nxt = "queued", _retry_at(now, attempts, cfg)
                        out.retry_later += 1
                else:
                    permanent_in_a_row = 0 if verdict.suppress else permanent_in_a_row + 1
                    status, nxt = ("bounced" if verdict.suppress else "failed"), None
                    if verdict.suppress:
                        out.bounced += 1
                    else:
                        out.failed += 1
                pending = dict(delivery_id=r.delivery_id, campaign_id=campaign_id, status=status, code=code,
                               reply=f"{code} {reply}".strip() if code else reply, message_id=recipient.message_id,
                               now=now, next_attempt_at=nxt, subscriber_id=r.subscriber_id,
                               suppress=verdict.suppress)
                if permanent_in_a_row >= cfg.permanent_error_limit:
                    with conn.begin():
                        _record(conn, pending)
                        pending = None
                        from mailer.campaigns import pause_campaign

                        with Session(bind=conn) as s:  # joins the connection's transaction
                            pause_campaign(s, campaign_id=campaign_id,
                                           reason=f"{permanent_in_a_row} permanent errors in a row; last: {code} {reply}")
                    out.stopped = "paused: too many permanent errors in a row"
                    break
        finally:
            now = clock()
            if conn.in_transaction():  # an error inside a message's transaction
                conn.rollback()
            with conn.begin():
                if pending:
                    _record(conn, pending)
                out.batch_status = queries.release_batch(conn, campaign_id=campaign_id, seq=claim.seq, now=now,
                                                         available_at=relay_down_until)
                out.campaign_finished = queries.finish_campaign_if_done(conn, campaign_id=campaign_id, now=now)
    return out


@contextlib.contextmanager
def _fast_connection(engine: Engine):
    """On PostgreSQL, a second connection in autocommit mode for the one statement per
    message (``queries.record_and_mark``): a single statement is its own transaction,
    so it costs one round trip instead of BEGIN, three statements and COMMIT. SQLite
    cannot modify data inside a WITH, so it keeps the explicit transaction."""
    if engine.dialect.name != "postgresql":
        yield None
        return
    with engine.connect() as fast:
        fast = fast.execution_options(isolation_level="AUTOCOMMIT")
        yield fast


def _record(conn, p: dict) -> None:
    queries.record_result(
        conn, delivery_id=p["delivery_id"], campaign_id=p["campaign_id"], status=p["status"],
        code=p["code"], reply=p["reply"], message_id=p["message_id"], now=p["now"],
        next_attempt_at=p.get("next_attempt_at"), count_attempt=p.get("count_attempt", True),
    )
    if p.get("suppress"):
        queries.mark_bounced(conn, subscriber_id=p["subscriber_id"], campaign_id=p["campaign_id"],
                             delivery_id=p["delivery_id"], reply=p["reply"], now=p["now"])


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
