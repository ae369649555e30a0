"""Every SQL statement that decides who gets what, or changes a campaign's state.

Each function takes an open ``Session`` (or, on the per-message path, a ``Connection``)
inside a transaction, and returns plain values; the caller commits. The comment on each
says why it is safe when several workers, beats, web requests or CLI runs execute it at
once. The ground rules:

- SQLite: every transaction is ``BEGIN IMMEDIATE`` (``mailer.core.db``): one writer at a
  time, so a read followed by a write in one transaction is atomic by construction.
- PostgreSQL: a state change is a guarded ``UPDATE ... WHERE status IN (...)``: the row
  lock makes a second, concurrent change see the new status and change nothing; a claim
  uses ``FOR UPDATE SKIP LOCKED`` so concurrent workers take different rows.
- Inserts that must happen once conflict on a unique key (``ON CONFLICT DO NOTHING``).

Status values come from the enums of ``mailer.models`` and ``subscribers.models``, also
inside the SQL text.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, ColumnElement, Integer, bindparam, exists, func, insert, literal, select, update
from sqlalchemy import text as _text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from mailer import outbox
from mailer.core.clock import as_utc
from mailer.core.db import UtcDateTime, dialect_name, insert_for
from mailer.hooks import EventType, signing_secrets
from mailer.models import (
    ATTENTION,
    EngagementKind,
    UNSENT,
    Batch,
    BatchStatus,
    Campaign,
    CampaignKind,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
    Issue,
    IssueStatus,
    ScheduleRun,
    SlotOutcome,
    SoftBounce,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookStatus,
)
from mailer.outcomes import Outcome
from subscribers.bulk import Counts, Target
from subscribers.models import (
    MAILABLE,
    Event,
    EventKind,
    Membership,
    Subscriber,
    SubscriberStatus,
    SuppressionReason,
)

D, B, C, S = DeliveryStatus, BatchStatus, CampaignStatus, SubscriberStatus
_TIME_PARAMS = ("now", "until", "next", "due", "sent_at", "rnow", "marked", "since", "start", "end", "at")


def text(sql: str):
    """``sqlalchemy.text`` with the time parameters typed, so SQLite stores and compares
    them in the same format as the ORM does."""
    clause = _text(sql)
    typed = [bindparam(p, type_=UtcDateTime()) for p in _TIME_PARAMS if f":{p}" in sql]
    return clause.bindparams(*typed) if typed else clause


def _in(values: Iterable[str]) -> str:
    """``('a', 'b')`` for statuses from an enum (never user input)."""
    return "(" + ", ".join(f"'{v}'" for v in sorted(values)) + ")"


@dataclass(frozen=True)
class ClaimedBatch:
    campaign_id: int
    seq: int
    lease_until: datetime
    batch_id: int = 0


@dataclass(frozen=True)
class Recipient:
    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    attempts: int
    status: str


# --- starting a campaign -------------------------------------------------------------------

def insert_campaign(session: Session, *, issue_id: int, list_id: int, scheduled_at: datetime | None,
                    now: datetime, segment: str = "") -> tuple[int, bool]:
    """The campaign of this issue for this list, created if there is none yet: (id,
    created). ``ON CONFLICT`` on (issue, list): two concurrent calls agree on one row."""
    insert_ = insert_for(session)
    status = C.scheduled if scheduled_at else C.draft
    created = session.execute(
        insert_(Campaign)
        .values(issue_id=issue_id, list_id=list_id, status=status, scheduled_at=scheduled_at, created_at=now,
                pause_reason="", segment=segment, total=0, sent=0, failed=0, bounced=0, skipped=0)
        .on_conflict_do_nothing(index_elements=["issue_id", "list_id"])
        .returning(Campaign.id)
    ).first() is not None
    campaign_id = session.scalar(select(Campaign.id).where(Campaign.issue_id == issue_id, Campaign.list_id == list_id))
    return campaign_id, created


def transition_campaign(session: Session, *, campaign_id: int, from_: Iterable[CampaignStatus],
                        to: CampaignStatus, **values) -> bool:
    """Move a campaign from one of ``from_`` to ``to`` (setting ``values`` with it), or
    change nothing. The one guarded status change: two starts, a start and a cancel, or
    two beats racing change the campaign once, because the second ``UPDATE`` waits for
    the first one's row lock (PostgreSQL) or write lock (SQLite) and then no longer
    matches its ``WHERE status IN``. True for the call that changed it."""
    moved = session.execute(
        update(Campaign).where(Campaign.id == campaign_id, Campaign.status.in_(list(from_)))
        .values(status=to, **values)
    ).rowcount
    return bool(moved)


def publish_issue(session: Session, *, issue_id: int) -> None:
    """An issue whose campaign started is in the public archive: its "view in browser"
    link must work from the first message. Idempotent."""
    session.execute(update(Issue).where(Issue.id == issue_id).values(status=IssueStatus.sent))


def has_audience(session: Session, *, list_id: int, segment: ColumnElement | None = None) -> bool:
    """Whether the list (its ``segment``) has an active member (stops at the first one found)."""
    return session.scalar(
        select(exists().where(Membership.list_id == list_id, Subscriber.id == Membership.subscriber_id,
                              Subscriber.status == S.active, *_segment(segment)))
    )


def _segment(segment: ColumnElement | None) -> tuple[ColumnElement, ...]:
    return () if segment is None else (segment,)


def freeze_audience(session: Session, *, campaign_id: int, list_id: int, batch_size: int, now: datetime,
                    segment: ColumnElement | None = None) -> int:
    """Create one ``delivery`` per active member of the list (of its ``segment``, a
    ``subscribers.segments`` filter made of bound parameters), numbered into batches, and
    one ``batch`` row per batch. Returns the number of deliveries.

    One INSERT ... SELECT: the database does the work, not a Python loop, so it stays
    fast at a million subscribers (the delivery table has no per-row foreign-key checks
    for the same reason, ``mailer.models.Delivery``). Only the start that won the guarded
    move to 'sending' (``transition_campaign``) freezes, so no ``ON CONFLICT`` is needed
    (it costs per row); the unique (campaign, subscriber) key still refuses a second
    delivery for anyone, whatever goes wrong. The batches are numbered from the count,
    not read back from the million rows just written.
    """
    audience = (
        select(literal(campaign_id, BigInteger), Subscriber.id,
               # Integer division in both databases (SQLAlchemy's // would be FLOOR(), which
               # SQLite may not have).
               (func.row_number().over(order_by=Subscriber.id) - 1).self_group().op("/", return_type=Integer)(
                   batch_size),
               literal(D.queued.value), literal(0), literal(0), literal(""), literal(""), literal(now, UtcDateTime()))
        .select_from(Membership).join(Subscriber, Subscriber.id == Membership.subscriber_id)
        .where(Membership.list_id == list_id, Subscriber.status == S.active, *_segment(segment))
    )
    columns = ["campaign_id", "subscriber_id", "batch_seq", "status", "attempts", "repeats", "last_reply",
               "message_id", "queued_at"]
    session.execute(insert(Delivery.__table__).from_select(columns, audience))
    # Counted, not taken from the rowcount: psycopg reports -1 for this statement built
    # with SQLAlchemy (it did report it for the same SQL as text). The count is an
    # index-only scan of ix_delivery_batch, a fraction of the freeze itself.
    total = session.scalar(select(func.count()).select_from(Delivery).where(Delivery.campaign_id == campaign_id))
    if total:
        session.execute(
            insert(Batch),
            [{"campaign_id": campaign_id, "seq": seq, "status": B.pending, "available_at": now, "worker": "",
              "claims": 0} for seq in range(-(-total // batch_size))],
        )
    session.execute(update(Campaign).where(Campaign.id == campaign_id).values(total=total))
    return total


# --- the welcome mail ----------------------------------------------------------------------

def insert_welcome_campaign(session: Session, *, issue_id: int, list_id: int, now: datetime) -> int:
    """The list's welcome campaign (kind 'welcome', 'sending' from the start), created if
    there is none. ``ON CONFLICT`` on the partial unique index of welcome campaigns per
    list: two editors setting the first template at once agree on one row."""
    session.execute(
        insert_for(session)(Campaign)
        .values(issue_id=issue_id, list_id=list_id, kind=CampaignKind.welcome, status=C.sending, started_at=now,
                created_at=now, pause_reason="", segment="", total=0, sent=0, failed=0, bounced=0, skipped=0)
        .on_conflict_do_nothing(index_elements=["list_id"], index_where=Campaign.kind == CampaignKind.welcome.value)
    )
    return session.scalar(select(Campaign.id).where(Campaign.list_id == list_id,
                                                    Campaign.kind == CampaignKind.welcome))


_QUEUE_WELCOME = text(
    f"""
    INSERT INTO delivery (campaign_id, subscriber_id, batch_seq, status, attempts, repeats, last_reply,
                          message_id, queued_at)
    SELECT :cid, s.id, 0, '{D.queued}', 0, 0, '', '', :now FROM subscriber s
    WHERE s.id = :sid AND s.status = '{S.active}'
    ON CONFLICT (campaign_id, subscriber_id) DO NOTHING
    RETURNING id
    """
)


def queue_welcome(session: Session, *, campaign_id: int, subscriber_id: int, now: datetime) -> int | None:
    """One welcome delivery for an active subscriber, in a batch of its own, or nothing
    when they already have one (ever: a second confirmation, or one after leaving and
    coming back, is not greeted again). Returns the delivery's id when one was queued.

    Exactly once: the unique (campaign, subscriber) key of ``delivery``, with ``ON
    CONFLICT DO NOTHING``. Two confirmations racing (two clicks, a click and an editor)
    both try the insert; PostgreSQL makes the second wait on the first's uncommitted key
    and then do nothing, SQLite's single writer runs them one after the other. Only the
    insert that queued a row adds its batch, so there is no batch without a delivery.
    The batch is numbered by the delivery's id (unique, so concurrent confirmations never
    take the same number, as a MAX(seq) + 1 would). From here on it is an ordinary batch:
    claimed under a lease, its delivery marked only while the subscriber is still active
    (an unsubscribe before it goes out skips it) and the campaign still sending."""
    delivery_id = session.execute(_QUEUE_WELCOME, {"cid": campaign_id, "sid": subscriber_id, "now": now}).scalar()
    if delivery_id is None:
        return None
    session.execute(update(Delivery).where(Delivery.id == delivery_id).values(batch_seq=delivery_id))
    session.execute(insert(Batch).values(campaign_id=campaign_id, seq=delivery_id, status=B.pending,
                                         available_at=now, worker="", claims=0))
    # The one write to the campaign row per confirmation (not per message sent): a
    # confirmation is a person clicking, not a million-row send.
    session.execute(update(Campaign).where(Campaign.id == campaign_id).values(total=Campaign.total + 1))
    return delivery_id


# --- changing a running campaign -----------------------------------------------------------

def skip_unsent(session: Session, *, campaign_id: int, reason: str, now: datetime) -> int:
    """A cancelled campaign's queued deliveries end as 'skipped' with the reason, and the
    counter moves with them, so every delivery still ends in a recorded state. Only
    'queued' ones: a delivery a worker holds ('sending') is recorded by that worker,
    whose next mark then sees the campaign is no longer sending."""
    n = session.execute(
        text(f"UPDATE delivery SET status = '{D.skipped}', last_reply = :reason, updated_at = :now "
             f"WHERE campaign_id = :cid AND status = '{D.queued}'"),
        {"cid": campaign_id, "now": now, "reason": reason},
    ).rowcount
    count_campaign(session, campaign_id=campaign_id)
    return n


def requeue_failed(session: Session, *, campaign_id: int, now: datetime) -> int:
    """Queue the failed deliveries of a campaign again, with their attempts reset; their
    batches become claimable and a finished campaign sends again. The counter moves with
    the deliveries in the same transaction; ``WHERE status = 'failed'`` makes a second,
    concurrent retry find nothing. Returns how many were queued."""
    n = session.execute(
        text(f"UPDATE delivery SET status = '{D.queued}', attempts = 0, next_attempt_at = NULL, updated_at = :now "
             f"WHERE campaign_id = :cid AND status = '{D.failed}'"),
        {"cid": campaign_id, "now": now},
    ).rowcount
    if not n:
        return 0
    count_campaign(session, campaign_id=campaign_id)
    session.execute(
        text(f"UPDATE batch SET status = '{B.pending}', available_at = :now "
             f"WHERE campaign_id = :cid AND status = '{B.done}' AND seq IN "
             f"(SELECT DISTINCT batch_seq FROM delivery WHERE campaign_id = :cid AND status = '{D.queued}')"),
        {"cid": campaign_id, "now": now},
    )
    transition_campaign(session, campaign_id=campaign_id, from_=[C.sent], to=C.sending, finished_at=None)
    return n


def claimable_batches(session: Session, *, campaign_id: int, now: datetime) -> int:
    """How many batches of a sending campaign a worker could claim now (to size the tasks
    queued on a resume or a retry: one per batch, up to ``NEWSLETTER_PARALLEL_TASKS``).
    A read only: the claims themselves decide who sends what."""
    return session.execute(
        text(f"SELECT COUNT(*) FROM batch WHERE campaign_id = :cid AND {_CLAIMABLE} "
             f"AND EXISTS (SELECT 1 FROM campaign c WHERE c.id = :cid AND c.status = '{C.sending}')"),
        {"cid": campaign_id, "now": now},
    ).scalar_one()


# --- the dispatcher ------------------------------------------------------------------------

def due_campaigns(session: Session, *, now: datetime) -> list[tuple[int, datetime]]:
    """(id, scheduled_at) of scheduled campaigns whose time has come, oldest first. A read
    only: each one is then started (or held) by its own guarded ``transition_campaign``,
    so two dispatchers reading the same list still start each campaign once."""
    rows = session.execute(
        text(f"SELECT id, scheduled_at FROM campaign WHERE status = '{C.scheduled}' AND scheduled_at <= :now "
             "ORDER BY scheduled_at"), {"now": now},
    ).all()
    return [(cid, as_utc(at)) for cid, at in rows]


def record_slot(session: Session, *, schedule_id: int, slot_at: datetime, outcome: SlotOutcome,
                campaign_id: int | None, now: datetime) -> bool:
    """Record what happened at one weekly slot, once: the unique (schedule, slot) makes
    every later or concurrent dispatcher's insert a no-op. True for the one that did."""
    insert_ = insert_for(session)
    return session.execute(
        insert_(ScheduleRun).values(schedule_id=schedule_id, slot_at=slot_at, outcome=outcome,
                                    campaign_id=campaign_id, created_at=now)
        .on_conflict_do_nothing(index_elements=["schedule_id", "slot_at"])
        .returning(ScheduleRun.id)
    ).first() is not None


# --- workers: claiming and releasing batches ----------------------------------------------

# A batch a worker may take: pending and due, or claimed by a worker whose lease ran out.
_CLAIMABLE = (f"((status = '{B.pending}' AND (available_at IS NULL OR available_at <= :now)) "
              f"OR (status = '{B.claimed}' AND lease_until < :now))")


def claim_batch(session: Session, *, campaign_id: int, worker: str, now: datetime, lease: timedelta) -> ClaimedBatch | None:
    """Take one batch of a campaign that is sending: a pending batch whose time has
    come, or a claimed one whose lease ran out (its worker died). The lease is what
    gives crash recovery: the broker may lose or repeat the task, the database decides.

    PostgreSQL: the inner SELECT ... FOR UPDATE SKIP LOCKED makes two workers take two
    different rows without blocking. SQLite: the transaction began IMMEDIATE, so no
    other writer runs between the SELECT and the UPDATE ... RETURNING.
    """
    skip_locked = "" if dialect_name(session) == "sqlite" else "FOR UPDATE SKIP LOCKED"
    row = session.execute(
        text(
            f"""
            UPDATE batch SET status = '{B.claimed}', worker = :worker, lease_until = :until,
                             claims = claims + 1
            WHERE id = (
                SELECT b.id FROM batch b
                WHERE b.campaign_id = :cid
                  AND ((b.status = '{B.pending}' AND (b.available_at IS NULL OR b.available_at <= :now))
                       OR (b.status = '{B.claimed}' AND b.lease_until < :now))
                  AND EXISTS (SELECT 1 FROM campaign c WHERE c.id = :cid AND c.status = '{C.sending}')
                ORDER BY b.seq
                LIMIT 1 {skip_locked}
            )
            RETURNING id, campaign_id, seq
            """
        ),
        {"cid": campaign_id, "worker": worker, "now": now, "until": now + lease},
    ).first()
    if row is None:
        return None
    return ClaimedBatch(campaign_id=row.campaign_id, seq=row.seq, lease_until=now + lease, batch_id=row.id)


def batch_recipients(session: Session, *, campaign_id: int, seq: int, now: datetime) -> list[Recipient]:
    """The deliveries of a claimed batch still to send now: queued ones whose retry time
    has come, and any left 'sending' by a worker that died mid-message (that one message
    may have reached the relay; sending it again is the one repeat we accept). Only the
    claim's holder reads them, so nobody else sends these."""
    rows = session.execute(
        text(
            f"""
            SELECT d.id, d.subscriber_id, s.email, s.name, d.attempts, d.status
            FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id
            WHERE d.campaign_id = :cid AND d.batch_seq = :seq
              AND (d.status = '{D.sending}'
                   OR (d.status = '{D.queued}' AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= :now)))
            ORDER BY d.id
            """
        ),
        {"cid": campaign_id, "seq": seq, "now": now},
    ).all()
    return [Recipient(*row) for row in rows]


# Once per batch: built once, not at every call.
_BATCH_PENDING = text(
    f"""
    SELECT MIN(COALESCE(next_attempt_at, :now)) AS due, COUNT(*) AS n
    FROM delivery WHERE campaign_id = :cid AND batch_seq = :seq AND status IN {_in(UNSENT)}
    """
)
_RELEASE_BATCH = text(
    "UPDATE batch SET status = :st, available_at = :due, lease_until = NULL, worker = '' "
    f"WHERE campaign_id = :cid AND seq = :seq AND status = '{B.claimed}' AND worker = :w"
)


def release_batch(session, *, campaign_id: int, seq: int, worker: str, now: datetime,
                  available_at: datetime | None = None) -> BatchStatus | None:
    """End a worker's hold on a batch: 'done' when nothing in it is left to send,
    otherwise back to 'pending' until the earliest retry time (or ``available_at``, when
    the relay is down). Returns the new status, or None when ``worker`` no longer holds
    the batch (its lease ran out and another worker claimed it: that one releases it)."""
    pending = session.execute(_BATCH_PENDING, {"cid": campaign_id, "seq": seq, "now": now}).one()
    if pending.n == 0:
        status, due = B.done, None
    else:
        status = B.pending
        due = max(filter(None, [as_utc(pending.due), available_at]), default=now)
    held = session.execute(_RELEASE_BATCH, {"st": status, "due": due, "cid": campaign_id, "seq": seq,
                                            "w": worker}).rowcount
    if not held:
        return None
    count_batch(session, campaign_id=campaign_id, seq=seq)
    return status


_OUTCOMES = tuple(s.value for s in (D.sent, D.failed, D.bounced, D.skipped))


_BATCH_COUNT_COLUMNS = f"SELECT {', '.join(_OUTCOMES)} FROM batch WHERE campaign_id = :cid AND seq = :seq"
# By "is it SQLite": its write lock does what FOR UPDATE does elsewhere.
_BATCH_COUNTS = {False: text(_BATCH_COUNT_COLUMNS + " FOR UPDATE"), True: text(_BATCH_COUNT_COLUMNS)}
_COUNT_BATCH_DELIVERIES = text(
    "SELECT status, COUNT(*) FROM delivery WHERE campaign_id = :cid AND batch_seq = :seq GROUP BY status")
_SET_BATCH_COUNTS = text(
    f"UPDATE batch SET {', '.join(f'{s} = :{s}' for s in _OUTCOMES)} WHERE campaign_id = :cid AND seq = :seq")
_ADD_CAMPAIGN_COUNTS = text(
    f"UPDATE campaign SET {', '.join(f'{s} = {s} + :{s}' for s in _OUTCOMES)} WHERE id = :cid")


def count_batch(session, *, campaign_id: int, seq: int) -> None:
    """Count a batch's outcomes from its deliveries (one index range of a few hundred
    rows) and move the campaign's counters by the difference from the last count. The
    batch row is locked first (``FOR UPDATE``; SQLite's write lock does the same), so two
    counts of one batch cannot both add the same difference."""
    before = session.execute(_BATCH_COUNTS[dialect_name(session) == "sqlite"], {"cid": campaign_id, "seq": seq}).one()
    now = dict(session.execute(_COUNT_BATCH_DELIVERIES, {"cid": campaign_id, "seq": seq}).all())
    after = [now.get(s, 0) for s in _OUTCOMES]
    if list(before) == after:
        return
    session.execute(_SET_BATCH_COUNTS, {"cid": campaign_id, "seq": seq, **dict(zip(_OUTCOMES, after))})
    session.execute(_ADD_CAMPAIGN_COUNTS,
                    {"cid": campaign_id, **{s: a - b for s, a, b in zip(_OUTCOMES, after, before)}})


def count_campaign(session, *, campaign_id: int) -> None:
    """Count every batch of a campaign again (after an editor's change to many of its
    deliveries: cancel, retry): batch counters from the deliveries, the campaign's from
    the batches, in two statements."""
    sums = ", ".join(f"SUM(CASE WHEN d.status = '{s}' THEN 1 ELSE 0 END)" for s in _OUTCOMES)
    rows = session.execute(
        text(f"SELECT d.batch_seq, {sums} FROM delivery d WHERE d.campaign_id = :cid GROUP BY d.batch_seq"),
        {"cid": campaign_id},
    ).all()
    if rows:
        session.execute(
            text(f"UPDATE batch SET {', '.join(f'{s} = :{s}' for s in _OUTCOMES)} "
                 "WHERE campaign_id = :cid AND seq = :seq"),
            [{"cid": campaign_id, "seq": seq, **dict(zip(_OUTCOMES, counts))} for seq, *counts in rows],
        )
    session.execute(
        text(f"UPDATE campaign SET {', '.join(f'{s} = (SELECT COALESCE(SUM({s}), 0) FROM batch WHERE campaign_id = :cid)' for s in _OUTCOMES)} "
             "WHERE id = :cid"),
        {"cid": campaign_id},
    )


def next_work_at(session, *, campaign_id: int, now: datetime) -> datetime | None:
    """When some batch of a sending campaign can next be claimed: now (or earlier) when
    one can be at once, the earliest retry time or lease end otherwise, None when there is
    nothing left (or the campaign is not sending). A read only."""
    at = session.execute(
        text(f"""
            SELECT MIN(CASE WHEN b.status = '{B.pending}' THEN COALESCE(b.available_at, :now)
                            ELSE b.lease_until END)
            FROM batch b JOIN campaign c ON c.id = b.campaign_id
            WHERE b.campaign_id = :cid AND b.status <> '{B.done}' AND c.status = '{C.sending}'
        """),
        {"cid": campaign_id, "now": now},
    ).scalar()
    return as_utc(at)


def claim_recovery(session, *, campaign_id: int, at: datetime, now: datetime) -> bool:
    """The right to queue the one task that comes back at ``at`` for work that is not
    claimable yet (a lease that may belong to a dead worker, a retry time). The guarded
    UPDATE gives it to one caller while an earlier one is still waiting, so idle tasks do
    not each queue a waiter."""
    return bool(session.execute(
        text("UPDATE campaign SET recovery_at = :at WHERE id = :cid AND (recovery_at IS NULL OR recovery_at <= :now)"),
        {"cid": campaign_id, "at": at, "now": now},
    ).rowcount)


def note_relay(session, *, campaign_id: int, down: bool, error: str = "", now: datetime) -> None:
    """The relay stopped answering (keep the first time it was seen down, and the latest
    reason), or answers again (clear both). Shown by the campaign's status."""
    if down:
        session.execute(text("UPDATE campaign SET relay_down_since = COALESCE(relay_down_since, :now), "
                             "relay_error = :err WHERE id = :cid"), {"cid": campaign_id, "now": now, "err": error[:500]})
    else:
        session.execute(text("UPDATE campaign SET relay_down_since = NULL, relay_error = '' "
                             "WHERE id = :cid AND relay_down_since IS NOT NULL"), {"cid": campaign_id})


def repeated(session, *, campaign_id: int) -> int:
    """Deliveries of a campaign sent more than once (a try whose outcome was lost)."""
    return session.execute(text("SELECT COUNT(*) FROM delivery WHERE campaign_id = :cid AND repeats > 0"),
                           {"cid": campaign_id}).scalar_one()


def finish_campaign_if_done(session, *, campaign_id: int, now: datetime) -> bool:
    """Mark a sending campaign sent once every batch is done. The guarded UPDATE makes
    it happen once even when two workers finish their last batches together. A welcome
    campaign never finishes: a confirmation may add a batch to it at any time, and one
    added while this ran would otherwise be left in a campaign no worker claims from."""
    n = session.execute(
        text(
            f"""
            UPDATE campaign SET status = '{C.sent}', finished_at = :now
            WHERE id = :cid AND status = '{C.sending}' AND kind = '{CampaignKind.issue}'
              AND NOT EXISTS (SELECT 1 FROM batch WHERE campaign_id = :cid AND status <> '{B.done}')
            """
        ),
        {"cid": campaign_id, "now": now},
    ).rowcount
    if n:  # its webhook, in the same transaction, once: only the one UPDATE that finished it gets here
        outbox.emit_campaign(session, EventType.campaign_finished, campaign_id=campaign_id, now=now)
    return bool(n)


def claimable_work(session: Session, *, now: datetime, idle_only: bool = False) -> list[tuple[int, int]]:
    """(campaign id, number of batches ready to claim) for every sending campaign. A read
    only: handing out the work is ``claim_batch``'s, so extra tasks are harmless.

    With ``idle_only`` (the periodic sweep), only campaigns nobody is working on: no
    batch held under a live lease. Those are the ones whose tasks were lost (a broker
    that drops a dead worker's task) or whose worker died; a campaign being worked on
    gets its next tasks from the running ones, so the queue does not pile up."""
    idle = (
        "AND NOT EXISTS (SELECT 1 FROM batch h WHERE h.campaign_id = c.id "
        f"AND h.status = '{B.claimed}' AND h.lease_until >= :now)" if idle_only else ""
    )
    rows = session.execute(
        text(
            f"""
            SELECT b.campaign_id, COUNT(*) FROM batch b JOIN campaign c ON c.id = b.campaign_id
            WHERE c.status = '{C.sending}'
              AND ((b.status = '{B.pending}' AND (b.available_at IS NULL OR b.available_at <= :now))
                   OR (b.status = '{B.claimed}' AND b.lease_until < :now))
              {idle}
            GROUP BY b.campaign_id
            """
        ),
        {"now": now},
    ).all()
    return [(r[0], r[1]) for r in rows]


# --- progress ------------------------------------------------------------------------------

def delivery_counts(session, *, campaign_id: int) -> dict[str, int]:
    """Deliveries of a campaign by status: what every report is counted from."""
    rows = session.execute(
        text("SELECT status, COUNT(*) FROM delivery WHERE campaign_id = :cid GROUP BY status"),
        {"cid": campaign_id},
    ).all()
    return {DeliveryStatus(status): n for status, n in rows}


def list_complaints(session: Session, *, list_id: int, campaigns: int) -> tuple[int, int]:
    """(complaints, messages delivered) over the list's ``campaigns`` most recently
    started campaigns: the complaint rate mailbox providers hold the sender to. Reads
    the campaigns' counter rows and the complaint index (ix_event_campaign_kind); a read
    only, safe at any time."""
    recent = (select(Campaign.id, Campaign.sent).where(Campaign.list_id == list_id, Campaign.started_at.is_not(None))
              .order_by(Campaign.started_at.desc()).limit(campaigns).subquery())
    delivered = session.scalar(select(func.coalesce(func.sum(recent.c.sent), 0))) or 0
    complaints = session.scalar(select(func.count()).select_from(Event).where(
        Event.kind == EventKind.complaint, Event.campaign_id.in_(select(recent.c.id)))) or 0
    return int(complaints), int(delivered)


def sent_since(session: Session, *, campaign_id: int, since: datetime) -> int:
    """Messages of a campaign the relay accepted since ``since`` (the send rate)."""
    return session.execute(
        text(f"SELECT COUNT(*) FROM delivery WHERE campaign_id = :cid AND status = '{D.sent}' AND sent_at >= :since"),
        {"cid": campaign_id, "since": since},
    ).scalar_one()


@dataclass(frozen=True)
class DeliveryRow:
    """One delivery as the editor's "who got it" list shows it."""

    delivery_id: int
    subscriber_id: int
    email: str
    status: str
    attempts: int
    repeats: int
    last_code: int | None
    last_reply: str
    at: datetime | None  # its last change: the outcome's record, the skip, or the freeze


# ix_delivery_attention's condition (SQLite uses a partial index only for a query with that very term).
_ATTENTION_INDEXED = "d.attention"


def campaign_deliveries(session: Session, *, campaign_id: int, statuses: Iterable[DeliveryStatus],
                        repeated_only: bool = False, search: str = "", after: int = 0,
                        limit: int = 50) -> list[DeliveryRow]:
    """One page of a campaign's deliveries in the given statuses (ascending id after
    ``after``), optionally only those sent more than once, optionally only those whose
    address or last reply contains ``search`` (lower-cased, LIKE-escaped by the caller).

    A read only, safe beside running workers: each row is read as last committed. The
    statuses are enum members written into the SQL (never input). A filter on failed,
    bounced or skipped also repeats the partial index's own condition word for word
    (``d.attention``: SQLite uses a partial index only for a query that has its WHERE
    term exactly), so both databases read those few rows of a million from
    ``ix_delivery_attention``, in id order;
    queued ones read the campaign's ``ix_delivery_batch`` range. Keyset pagination on
    the primary key: the last page costs what the first does."""
    statuses = set(statuses)
    where = [f"d.campaign_id = :cid AND d.status IN {_in(statuses)} AND d.id > :after"]
    if statuses <= set(ATTENTION):
        where.append(_ATTENTION_INDEXED)
    params: dict = {"cid": campaign_id, "after": after, "limit": limit}
    if repeated_only:
        where.append("d.repeats > 0")
    if search:
        where.append("(s.email_key LIKE :pattern ESCAPE '\\' OR LOWER(d.last_reply) LIKE :pattern ESCAPE '\\')")
        params["pattern"] = f"%{search}%"
    rows = session.execute(
        text(
            f"""
            SELECT d.id, d.subscriber_id, s.email, d.status, d.attempts, d.repeats, d.last_code, d.last_reply,
                   COALESCE(d.updated_at, d.sent_at, d.queued_at)
            FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id
            WHERE {' AND '.join(where)}
            ORDER BY d.id LIMIT :limit
            """
        ),
        params,
    ).all()
    return [DeliveryRow(*r[:8], as_utc(r[8])) for r in rows]


def subscriber_deliveries(session: Session, *, subscriber_id: int) -> list[tuple]:
    """Every message of every campaign to one subscriber, oldest first: (campaign id,
    issue slug, subject, delivery status, attempts, last code, last reply, sent at, last
    change; times as the driver returns them, ``as_utc`` reads them). A read only; one subscriber has one delivery per campaign at most (the
    unique key), so this is a handful of rows."""
    return session.execute(
        text(
            """
            SELECT d.campaign_id, i.slug, i.subject, d.status, d.attempts, d.last_code, d.last_reply, d.sent_at,
                   COALESCE(d.updated_at, d.sent_at, d.queued_at) AS at
            FROM delivery d JOIN campaign c ON c.id = d.campaign_id JOIN issue i ON i.id = c.issue_id
            WHERE d.subscriber_id = :sid ORDER BY d.id
            """
        ),
        {"sid": subscriber_id},
    ).all()


def weekly_new_subscribers(session: Session, *, start: datetime, end: datetime) -> dict[int, int]:
    """New subscribers (``subscriber.created_at``) per whole week since ``start``."""
    return _weekly(session, "subscriber", "1 = 1", start, end)


def weekly_unsubscribes(session: Session, *, start: datetime, end: datetime) -> dict[int, int]:
    """Unsubscribe events per whole week since ``start``."""
    return _weekly(session, "event", f"kind = '{EventKind.unsubscribe}'", start, end)


def _weekly(session: Session, table: str, where: str, start: datetime, end: datetime) -> dict[int, int]:
    """Rows of ``table`` by whole weeks of ``created_at``, counted in the database."""
    column = "created_at"
    if dialect_name(session) == "postgresql":
        bucket = f"FLOOR(EXTRACT(EPOCH FROM ({column} - :start)) / 604800)"
    else:  # SQLite stores ISO text; julianday() reads both the ORM's and CURRENT_TIMESTAMP's format
        bucket = f"CAST((julianday({column}) - julianday(:start)) / 7 AS INTEGER)"
    rows = session.execute(
        text(f"SELECT {bucket} AS week, COUNT(*) FROM {table} "
             f"WHERE {column} >= :start AND {column} < :end AND {where} GROUP BY week"),
        {"start": start, "end": end},
    ).all()
    return {int(week): n for week, n in rows if week is not None}


# --- after delivery: bounces and complaints ----------------------------------------------

@dataclass(frozen=True)
class DeliveryRef:
    delivery_id: int
    campaign_id: int
    subscriber_id: int
    status: str
    email: str


def find_delivery(session: Session, *, delivery_id: int) -> DeliveryRef | None:
    row = session.execute(
        text(
            "SELECT d.id, d.campaign_id, d.subscriber_id, d.status, s.email FROM delivery d "
            "JOIN subscriber s ON s.id = d.subscriber_id WHERE d.id = :did"
        ),
        {"did": delivery_id},
    ).first()
    return DeliveryRef(*row) if row else None


def bounce_sent_delivery(session: Session, *, delivery_id: int, campaign_id: int, code: int | None,
                         reply: str, now: datetime) -> bool:
    """A delivery the relay accepted ('sent') and whose message later bounced for good:
    move it to 'bounced' and count its batch again in the same transaction, so the
    counters keep equalling the counts of deliveries.

    ``WHERE status = 'sent'`` makes a second copy of the report a no-op, and leaves a
    delivery alone that is not (yet) recorded as sent: the engine records an outcome
    with the next message, so a very fast bounce can arrive first; the subscriber is
    still marked bounced, and the delivery keeps what the relay told us."""
    seq = session.execute(
        text(
            f"UPDATE delivery SET status = '{D.bounced}', last_code = :code, last_reply = :reply, updated_at = :now "
            f"WHERE id = :did AND status = '{D.sent}' RETURNING batch_seq"
        ),
        {"did": delivery_id, "code": code, "reply": reply[:2000], "now": now},
    ).scalar()
    if seq is not None:
        count_batch(session, campaign_id=campaign_id, seq=seq)
    return seq is not None


def set_subscriber_status(session: Session, *, subscriber_id: int, status: SubscriberStatus, now: datetime) -> bool:
    """'bounced' or 'complained' for a subscriber who still receives mail. True when it
    changed; an unsubscribed or already bounced subscriber keeps their status (guarded by
    ``WHERE status IN``, so two reports at once change it once)."""
    if status not in (S.bounced, S.complained):
        raise ValueError(status)
    return bool(session.execute(
        text(f"UPDATE subscriber SET status = :st, updated_at = :now WHERE id = :sid AND status IN {_in(MAILABLE)}"),
        {"st": status, "sid": subscriber_id, "now": now},
    ).rowcount)


def subscriber_status(session, *, subscriber_id: int) -> SubscriberStatus:
    return SubscriberStatus(session.execute(
        text("SELECT status FROM subscriber WHERE id = :sid"), {"sid": subscriber_id}).scalar_one())


def latest_delivery_to(session: Session, *, email_key: str, since: datetime) -> DeliveryRef | None:
    """The most recent delivery the relay accepted for this address (a subscriber's
    ``email_key``) since ``since``: where a report that names only an address belongs.
    A read only. Shaped for the indexes there are: the subscriber by its unique key, then
    one lookup per recent campaign in the (campaign, subscriber) unique index, instead of
    a scan of every delivery; recent campaigns are few. A delivery is sent after its
    campaign started, so a campaign that finished before ``since`` has none to offer."""
    row = session.execute(
        text(
            f"""
            SELECT d.id, d.campaign_id, d.subscriber_id, d.status, s.email
            FROM subscriber s
            JOIN campaign c ON c.started_at IS NOT NULL AND (c.finished_at IS NULL OR c.finished_at >= :since)
            JOIN delivery d ON d.campaign_id = c.id AND d.subscriber_id = s.id
            WHERE s.email_key = :key AND d.status IN {_in((D.sent, D.bounced))} AND d.sent_at >= :since
            ORDER BY d.sent_at DESC, d.id DESC
            LIMIT 1
            """
        ),
        {"key": email_key, "since": since},
    ).first()
    return DeliveryRef(*row) if row else None


def record_soft_bounce(session: Session, *, subscriber_id: int, delivery_id: int, since: datetime,
                       now: datetime) -> int:
    """Count one transient failure of a delivery towards its subscriber's soft-bounce
    limit; returns the subscriber's soft bounces since ``since``, this one included.

    One row per delivery (``ON CONFLICT (delivery_id) DO NOTHING``): a second copy of a
    report, or another delay notice about the same message, does not count again. Two
    reports about two of the subscriber's messages at once must not both count one short
    of the limit: on PostgreSQL the subscriber's row is locked first (``FOR UPDATE``), so
    the second waits for the first's commit and then sees its row; on SQLite the
    transaction began IMMEDIATE, which serialises writers anyway."""
    lock = "" if dialect_name(session) == "sqlite" else "FOR UPDATE"
    session.execute(text(f"SELECT id FROM subscriber WHERE id = :sid {lock}"), {"sid": subscriber_id})
    insert_ = insert_for(session)
    session.execute(
        insert_(SoftBounce).values(subscriber_id=subscriber_id, delivery_id=delivery_id, created_at=now)
        .on_conflict_do_nothing(index_elements=["delivery_id"])
    )
    return session.execute(
        text("SELECT COUNT(*) FROM soft_bounce WHERE subscriber_id = :sid AND created_at >= :since"),
        {"sid": subscriber_id, "since": since},
    ).scalar_one()


# --- engagement: clicks and opens ---------------------------------------------------------

def campaign_links(session, *, campaign_id: int) -> list[str] | None:
    """The tracked links' targets of a campaign's issue (``issue.links``), or None for
    no such campaign. A read only; an issue's links no longer change once a campaign of
    it has started, so a reader may keep them."""
    row = session.execute(
        text("SELECT i.links FROM campaign c JOIN issue i ON i.id = c.issue_id WHERE c.id = :cid"),
        {"cid": campaign_id},
    ).first()
    if row is None:
        return None
    links = row[0]
    return list(json.loads(links) if isinstance(links, str) else links or [])


_INSERT_ENGAGEMENT = text(
    """
    INSERT INTO engagement_event (campaign_id, delivery_id, subscriber_id, kind, link_index, method, user_agent,
                                  created_at)
    SELECT d.campaign_id, d.id, d.subscriber_id, :kind, :link, :method, :agent, :at
    FROM delivery d WHERE d.id = :did AND d.campaign_id = :cid
    """
)


def delivery_engagement(conn, *, delivery_ids: Sequence[int]) -> list[tuple]:
    """Every event of these deliveries, with what judging them needs: (delivery id,
    sent at, number of the issue's links, event id, kind, link index, method, user
    agent, time). A read by the subscriber-free keys: a delivery's events are few."""
    if not delivery_ids:
        return []
    return conn.execute(
        text(
            """
            SELECT d.id, d.sent_at, i.links, e.id, e.kind, e.link_index, e.method, e.user_agent, e.created_at
            FROM engagement_event e JOIN delivery d ON d.id = e.delivery_id
            JOIN campaign c ON c.id = d.campaign_id JOIN issue i ON i.id = c.issue_id
            WHERE e.delivery_id IN :ids ORDER BY e.id
            """
        ).bindparams(bindparam("ids", expanding=True)),
        {"ids": list(delivery_ids)},
    ).all()


_JUDGE = text("UPDATE engagement_event SET machine = :machine, reason = :reason WHERE id = :eid")


def judge_engagement(conn, verdicts: Sequence[dict]) -> None:
    """Store each event's verdict ({eid, machine, reason}). Judging a delivery again
    writes the same or a later verdict: the last writer has seen every event."""
    if verdicts:
        conn.execute(_JUDGE, list(verdicts))


# Rolled-up counts: per link (index >= 0), an open (-1), and a campaign's clicks over all
# its links (-2), so that readers are counted once per campaign as well as per link; and
# per hour of the first REPORT_HOURS after the campaign started (HOUR_ROWS - hour, reason
# ""), so the report's 72-hour chart survives the roll-up. Readers of the other rows never
# see the hourly ones (they ask for -1, -2 or >= 0).
OPEN_ROW, ALL_LINKS_ROW = -1, -2
HOUR_ROWS, REPORT_HOURS = -100, 72


def _hours_since(session, column: str, start: str) -> str:
    """Whole hours from ``start`` to ``column`` (both SQL expressions), in the database."""
    if dialect_name(session) == "postgresql":
        return f"FLOOR(EXTRACT(EPOCH FROM ({column} - {start})) / 3600)"
    # SQLite stores ISO text; julianday() reads it (as in ``_weekly``).
    return f"CAST((julianday({column}) - julianday({start})) * 24 AS INTEGER)"
_ENGAGEMENT_TOTALS = """
    SELECT {key}, SUM(events), SUM(readers) FROM (
        SELECT {key}, COUNT(*) AS events, COUNT(DISTINCT delivery_id) AS readers FROM engagement_event
        WHERE campaign_id = :cid AND machine IS NOT NULL {live} GROUP BY {key}
        UNION ALL
        SELECT {key}, events, readers FROM engagement_count WHERE campaign_id = :cid {rolled}
    ) t GROUP BY {key}
"""


def engagement_counts(session, *, campaign_id: int) -> list[tuple]:
    """(kind, machine, reason, events, readers) of a campaign: its judged events that
    are still kept plus what was rolled up. A read only."""
    sql = _ENGAGEMENT_TOTALS.format(key="kind, machine, reason", live="",
                                    rolled=f"AND link_index IN ({OPEN_ROW}, {ALL_LINKS_ROW})")
    return session.execute(text(sql), {"cid": campaign_id}).all()


def link_clicks(session, *, campaign_id: int) -> list[tuple]:
    """(link index, machine, clicks, readers) of a campaign, kept and rolled up alike."""
    click = f"AND kind = '{EngagementKind.click}'"
    sql = _ENGAGEMENT_TOTALS.format(key="link_index, machine", live=click, rolled=f"{click} AND link_index >= 0")
    return session.execute(text(sql), {"cid": campaign_id}).all()


def engagement_hours(session, *, campaign_id: int, start: datetime) -> list[tuple]:
    """(kind, machine, hour, events) of a campaign's judged clicks and opens in each of
    the first ``REPORT_HOURS`` whole hours from ``start`` (its start): the events still
    kept plus the hourly rows the roll-up left. A read only, by the campaign's
    (campaign, kind, time) index."""
    hour = _hours_since(session, "created_at", ":start")
    rows = session.execute(text(
        f"""
        SELECT kind, machine, hour, SUM(events) FROM (
            SELECT kind, machine, {hour} AS hour, COUNT(*) AS events FROM engagement_event
            WHERE campaign_id = :cid AND machine IS NOT NULL AND created_at >= :start AND created_at < :end
            GROUP BY kind, machine, {hour}
            UNION ALL
            SELECT kind, machine, {HOUR_ROWS} - link_index, events FROM engagement_count
            WHERE campaign_id = :cid AND link_index <= {HOUR_ROWS} AND link_index > {HOUR_ROWS - REPORT_HOURS}
        ) t GROUP BY kind, machine, hour
        """
    ), {"cid": campaign_id, "start": start, "end": start + timedelta(hours=REPORT_HOURS)}).all()
    return [(kind, machine, int(h), int(n)) for kind, machine, h, n in rows if h is not None]


def soft_bounces(session, *, campaign_id: int) -> int:
    """Deliveries of a campaign the relay accepted that later came back with a failure
    that may pass (a full mailbox, 4.x.x): one ``soft_bounce`` row each. A read only."""
    return int(session.execute(
        text("SELECT COUNT(*) FROM soft_bounce sb JOIN delivery d ON d.id = sb.delivery_id "
             "WHERE d.campaign_id = :cid"), {"cid": campaign_id}).scalar_one())


def roll_up_engagement(session, *, before: datetime | None = None, delivery_ids: Sequence[int] = ()) -> int:
    """Turn judged events (older than ``before``, or of these deliveries: strict mode)
    into counts, and delete them: no row is left that names a delivery or a subscriber,
    and every count of the campaign, per link and per hour of its first
    ``REPORT_HOURS`` too, stays what it was. Returns how many events.

    Two roll-ups at once must not count a row twice: on PostgreSQL the first takes a
    transaction-level advisory lock and the second waits for it, then finds the rows
    gone; SQLite's transactions are IMMEDIATE (one writer). New events always carry the
    current time, so none can slip under ``before`` between the two statements; a
    verdict changed meanwhile is counted as it was read."""
    if dialect_name(session) == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(1212)"))
    if before is not None:
        which, params, expanding = "created_at < :since", {"since": before}, ()
    else:
        which, params, expanding = "delivery_id IN :ids", {"ids": list(delivery_ids)}, (bindparam("ids", expanding=True),)
    where = f"machine IS NOT NULL AND {which}"
    # (the link column, which events, grouped by): SQLite reads a number in GROUP BY as a
    # column's position, so the constant row is not grouped by its constant.
    for link, only, by in ((f"COALESCE(link_index, {OPEN_ROW})", "", f"COALESCE(link_index, {OPEN_ROW}), "),
                           (str(ALL_LINKS_ROW), f"AND kind = '{EngagementKind.click}'", "")):
        session.execute(text(
            f"""
            INSERT INTO engagement_count (campaign_id, kind, link_index, machine, reason, events, readers)
            SELECT campaign_id, kind, {link}, machine, reason, COUNT(*), COUNT(DISTINCT delivery_id)
            FROM engagement_event WHERE {where} {only}
            GROUP BY campaign_id, kind, {by}machine, reason
            ON CONFLICT (campaign_id, kind, link_index, machine, reason) DO UPDATE
            SET events = engagement_count.events + excluded.events, readers = engagement_count.readers + excluded.readers
            """
        ).bindparams(*expanding), params)
    # The first REPORT_HOURS after the campaign started, per hour and verdict (no reason).
    hour = _hours_since(session, "e.created_at", "c.started_at")
    session.execute(text(
        f"""
        INSERT INTO engagement_count (campaign_id, kind, link_index, machine, reason, events, readers)
        SELECT e.campaign_id, e.kind, {HOUR_ROWS} - {hour}, e.machine, '', COUNT(*), COUNT(DISTINCT e.delivery_id)
        FROM engagement_event e JOIN campaign c ON c.id = e.campaign_id
        WHERE e.machine IS NOT NULL AND e.{which} AND e.created_at >= c.started_at AND {hour} < {REPORT_HOURS}
        GROUP BY e.campaign_id, e.kind, {hour}, e.machine
        ON CONFLICT (campaign_id, kind, link_index, machine, reason) DO UPDATE
        SET events = engagement_count.events + excluded.events, readers = engagement_count.readers + excluded.readers
        """
    ).bindparams(*expanding), params)
    return session.execute(text(f"DELETE FROM engagement_event WHERE {where}").bindparams(*expanding), params).rowcount


def insert_engagement(conn, events: Sequence[dict]) -> None:
    """Record clicks and opens, one row each (one ``executemany``): the subscriber is
    read from the delivery in the same statement, by its primary key, and an event whose
    delivery is not of the campaign its token named records nothing. Inserts only, so
    any number of web processes may write at once."""
    if events:
        conn.execute(_INSERT_ENGAGEMENT, list(events))


# --- importing subscribers ---------------------------------------------------------------

_STOPPED = (f"CASE st.suppress WHEN '{SuppressionReason.bounce}' THEN '{S.bounced}' "
            f"WHEN '{SuppressionReason.complaint}' THEN '{S.complained}' ELSE '{S.unsubscribed}' END")
_ROW_STATUS = "coalesce(i.status, :status)"

# The whole chunk in one statement, its parts as data-modifying CTEs that
# all see the same snapshot (so the UPDATE and the INSERT never touch the same row: one
# takes the addresses that exist, the other those that do not). Safe beside signups and
# other imports: an address someone added a moment ago makes the INSERT fail on the
# unique email_key, and ``merge_import_chunk`` runs the chunk again in the tolerant form
# (its INSERT with ON CONFLICT DO NOTHING, which costs per row, so only then), where the
# new snapshot finds that subscriber and updates them; the promotion is guarded on
# 'pending' in its WHERE, which PostgreSQL re-checks on a row changed concurrently, and a
# subscriber who left meanwhile is neither changed nor brought back. PostgreSQL runs every
# data-modifying CTE to completion whether or not the final SELECT reads it. Nothing here
# comes from the file but the staged values; the enum values spelled into the SQL are ours.
_MERGE_IMPORT_SQL = f"""
WITH staged AS NOT MATERIALIZED (  -- ``import_rows`` as ``subscribers.bulk`` staged it
    SELECT email, email_key, email_hash, coalesce(name, '') AS name, {{attributes}} AS attributes,
           coalesce(tags, '[]') AS tags, status, confirmed_at, suppress FROM import_rows
), new_suppressions AS (
    INSERT INTO suppression (email_hash, reason, created_at)
    SELECT email_hash, suppress, :now FROM staged WHERE suppress IS NOT NULL
    ON CONFLICT (email_hash) DO NOTHING
), stopped AS (
    UPDATE subscriber sub SET status = {_STOPPED},
        unsubscribed_at = CASE WHEN {_STOPPED} = '{S.unsubscribed}' THEN :now ELSE sub.unsubscribed_at END,
        updated_at = :now
    FROM staged st
    WHERE st.suppress IS NOT NULL AND sub.email_key = st.email_key AND sub.status IN {_in(MAILABLE)}
), matched AS (
    -- Each staged address once, with the subscriber it already is (id NULL: new).
    SELECT st.*, sub.id, sub.status AS current FROM staged st
    LEFT JOIN subscriber sub ON sub.email_key = st.email_key
    WHERE st.suppress IS NULL AND NOT EXISTS (SELECT 1 FROM suppression p WHERE p.email_hash = st.email_hash)
), inserted AS (
    INSERT INTO subscriber (email, email_key, name, status, attributes, tags, created_at, updated_at,
                            confirmed_at, import_batch_id)
    SELECT i.email, i.email_key, i.name, {_ROW_STATUS}, i.attributes, i.tags, :now, :now,
           CASE WHEN {_ROW_STATUS} = '{S.active}' THEN coalesce(i.confirmed_at, :now) END, :batch
    FROM matched i WHERE i.id IS NULL
    {{conflict}}
    RETURNING id
), changed AS (
    UPDATE subscriber sub SET
        name = CASE WHEN i.name <> '' THEN i.name ELSE sub.name END,
        attributes = sub.attributes || i.attributes,
        tags = CASE WHEN sub.tags @> i.tags THEN sub.tags
               ELSE (SELECT jsonb_agg(DISTINCT t.v ORDER BY t.v) FROM jsonb_array_elements(sub.tags || i.tags) t(v))
               END,
        status = CASE WHEN {_ROW_STATUS} = '{S.active}' AND sub.status = '{S.pending}' THEN '{S.active}'
                 ELSE sub.status END,
        confirmed_at = CASE WHEN {_ROW_STATUS} = '{S.active}' AND sub.status = '{S.pending}'
                       THEN coalesce(i.confirmed_at, :now) ELSE sub.confirmed_at END,
        updated_at = :now
    FROM matched i
    WHERE sub.id = i.id AND i.current IN {_in(MAILABLE)} AND sub.status IN {_in(MAILABLE)}
      AND ((i.name <> '' AND i.name <> sub.name) OR sub.attributes || i.attributes <> sub.attributes
           OR NOT sub.tags @> i.tags OR ({_ROW_STATUS} = '{S.active}' AND sub.status = '{S.pending}'))
), joined_new AS (
    -- New subscribers cannot be members yet: no ON CONFLICT (it costs per row).
    INSERT INTO membership (list_id, subscriber_id, created_at)
    SELECT :list_id, id, :now FROM inserted
), joined AS (
    INSERT INTO membership (list_id, subscriber_id, created_at)
    SELECT :list_id, m.id, :now FROM matched m WHERE m.current IN {_in(MAILABLE)}
    ON CONFLICT DO NOTHING
), found AS (  -- one pass over each for the counts
    SELECT count(*) AS matched, count(*) FILTER (WHERE current IN {_in(MAILABLE)}) AS kept,
           count(*) FILTER (WHERE current NOT IN {_in(MAILABLE)}) AS gone FROM matched
), given AS (
    SELECT count(*) FILTER (WHERE suppress IS NULL) AS rows,
           count(*) FILTER (WHERE suppress IS NOT NULL) AS suppressions FROM staged
)
SELECT (SELECT count(*) FROM inserted), f.kept, g.rows - f.matched, f.gone, g.suppressions FROM found f, given g
"""
# jsonb_build_object takes at most 100 arguments: 50 attributes per call, joined with ||.
_PAIRS_PER_CALL = 50


@functools.lru_cache(maxsize=64)
def _merge_import(columns: int | None, *, tolerant: bool):
    """The merge for a chunk whose attributes arrive as ``columns`` plain columns (their
    names bound as :k0, :k1, ...; empty cells arrive as NULL and are left out, as the
    parser leaves out an empty attribute), or as JSON (None)."""
    if columns is None:
        attributes = "coalesce(attributes, '{}')"
    else:
        calls = [", ".join(f"CAST(:k{n} AS text), a{n}" for n in range(start, min(columns, start + _PAIRS_PER_CALL)))
                 for start in range(0, columns, _PAIRS_PER_CALL)]
        attributes = " || ".join(f"jsonb_strip_nulls(jsonb_build_object({c}))" for c in calls) or "'{}'::jsonb"
    conflict = "ON CONFLICT (email_key) DO NOTHING" if tolerant else ""
    return text(_MERGE_IMPORT_SQL.format(conflict=conflict, attributes=attributes))


_UNIQUE_VIOLATION = "23505"


def merge_import_chunk(conn: Connection, target: Target) -> Counts:
    """Merge the chunk staged in ``import_rows`` (``subscribers.bulk.PostgresWriter``)
    into subscribers, memberships and suppressions in one statement (see ``_MERGE_IMPORT_SQL``
    for why it is safe beside signups and other imports); returns what it did."""
    params = {"now": target.now, "status": target.status, "batch": target.batch_id, "list_id": target.list_id,
              **{f"k{n}": name for n, name in enumerate(target.columns or ())}}
    columns = None if target.columns is None else len(target.columns)
    # Each staged row finds its subscriber (and suppression) by an index probe. Past a few
    # hundred thousand subscribers the cost model prefers hashing the whole subscriber
    # table for the chunk's 20,000 probes: a full scan per chunk, measured 0.4 s of the
    # merge at a million (bench/import_csv.py). For this transaction only.
    conn.exec_driver_sql("SET LOCAL enable_hashjoin = off")
    conn.exec_driver_sql("SET LOCAL enable_mergejoin = off")
    try:
        with conn.begin_nested():
            row = conn.execute(_merge_import(columns, tolerant=False), params).one()
    except IntegrityError as err:
        if getattr(err.orig, "sqlstate", None) != _UNIQUE_VIOLATION:
            raise
        # Someone added one of these addresses since the statement's snapshot.
        row = conn.execute(_merge_import(columns, tolerant=True), params).one()
    imported, updated, suppressed, gone, suppressions = row
    return Counts(imported=imported, updated=updated, skipped_suppressed=suppressed,
                  skipped_existing_status=gone, suppressions=suppressions)



# --- the per-message path ---------------------------------------------------------------
#
# These run once or three times per message, so the statements are built once here
# (``text`` parses its SQL for parameters on every call, about 0.1 ms) and take a plain
# ``Connection`` in a transaction (a Session adds its own bookkeeping per call; measured
# with bench/send.py --profile). A Session works too.

# The guard that makes an unsubscribe or a pause take effect at the next window of
# messages (``mark_window``).
_MARKABLE = f"""
    id IN :ids AND status IN {_in(UNSENT)}
      AND EXISTS (SELECT 1 FROM subscriber s WHERE s.id = delivery.subscriber_id AND s.status = '{S.active}')
      AND EXISTS (SELECT 1 FROM campaign c WHERE c.id = :cid AND c.status = '{C.sending}')
"""
# A try begins at its mark, so it is counted there. A delivery already 'sending' was
# marked by a try whose outcome never got recorded: this is a repeat (its message may
# have reached the relay). The same mark run again (after a connection dropped before
# its commit was confirmed) carries the same time and counts nothing twice.
_MARK = f"""status = '{D.sending}', updated_at = :now,
    attempts = attempts + CASE WHEN status = '{D.sending}' AND updated_at = :now THEN 0 ELSE 1 END,
    repeats = repeats + CASE WHEN status = '{D.sending}' AND updated_at <> :now THEN 1 ELSE 0 END"""
_IDS = bindparam("ids", expanding=True)
_MARK_WINDOW = text(f"UPDATE delivery SET {_MARK} WHERE {_MARKABLE} RETURNING id").bindparams(_IDS)
_CAMPAIGN_STATUS = text("SELECT status FROM campaign WHERE id = :cid")
# Skipped: only those whose subscriber left (a delivery another holder marked after a
# lost lease is not this worker's to skip).
_SKIP_LEFT = text(
    f"UPDATE delivery SET status = '{D.skipped}', last_reply = :reason, updated_at = :now "
    f"WHERE id IN :ids AND status IN {_in(UNSENT)} AND NOT EXISTS "
    f"(SELECT 1 FROM subscriber s WHERE s.id = delivery.subscriber_id AND s.status = '{S.active}')"
).bindparams(_IDS)
# A mark taken back before its message went out (the window ended early): queued again
# with its attempt given back. Only this very mark.
_UNMARK = text(
    f"UPDATE delivery SET status = '{D.queued}', updated_at = :now, next_attempt_at = NULL, "
    f"attempts = attempts - 1 WHERE id IN :ids AND status = '{D.sending}' AND updated_at = :marked"
).bindparams(_IDS)
_RECORD_FIELDS = """status = :status, last_code = :code, last_reply = :reply, message_id = :mid,
           attempts = attempts + :inc, updated_at = :rnow, sent_at = COALESCE(:sent_at, sent_at),
           next_attempt_at = :next"""
# Only onto the mark of this very try: after a lost lease another worker may have marked
# the delivery again, and its try is the one to record.
_RECORDABLE = f"id = :prev AND status = '{D.sending}' AND updated_at = :marked"
_RECORD = text(f"UPDATE delivery SET {_RECORD_FIELDS} WHERE {_RECORDABLE}")
_RENEW_LEASE = text(
    f"UPDATE batch SET lease_until = :until WHERE campaign_id = :cid AND seq = :seq "
    f"AND status = '{B.claimed}' AND worker = :w"
)
_BOUNCE_SUBSCRIBER = text(
    f"UPDATE subscriber SET status = '{S.bounced}', updated_at = :now WHERE id = :sid AND status = '{S.active}'"
)


def _record_params(o: Outcome) -> dict:
    return {"prev": o.delivery_id, "status": o.status, "code": o.code, "reply": o.reply[:2000],
            "mid": o.message_id, "inc": 0 if o.counts_attempt else -1, "rnow": o.at, "marked": o.marked_at,
            "sent_at": o.at if o.status == D.sent else None, "next": o.next_attempt_at}


def mark_window(conn, *, delivery_ids: Sequence[int], campaign_id: int, now: datetime) -> set[int] | None:
    """Mark a window of deliveries 'sending', right before their messages go to the
    relay, in the transaction that records the previous window's outcomes. A subscriber
    must still be active and the campaign still sending, so an unsubscribe or a pause
    takes effect at the next window. Returns the ids marked (go ahead with those; the
    others' subscribers left and they are recorded as skipped), or None when the
    campaign is no longer sending (nothing marked).

    A worker's connection has only its window marked at a time, so a worker killed
    mid-window leaves at most a window of messages whose fate is unknown."""
    marked = set(conn.execute(_MARK_WINDOW, {"ids": list(delivery_ids), "cid": campaign_id, "now": now}).scalars())
    return settle_unmarked(conn, delivery_ids=delivery_ids, marked=marked, campaign_id=campaign_id, now=now)


def settle_unmarked(conn, *, delivery_ids: Sequence[int], marked: set[int], campaign_id: int,
                    now: datetime) -> set[int] | None:
    """After marking a window: the ones not marked are skipped (their subscriber left),
    or, when the campaign stopped meanwhile, every mark of the window is taken back and
    None says so."""
    rest = [i for i in delivery_ids if i not in marked]
    if not rest:
        return marked
    if conn.execute(_CAMPAIGN_STATUS, {"cid": campaign_id}).scalar_one() != C.sending:
        if marked:
            unmark(conn, delivery_ids=list(marked), marked_at=now, now=now)
        return None
    conn.execute(_SKIP_LEFT, {"ids": rest, "now": now, "reason": "subscriber is no longer active"})
    return marked


def unmark(conn, *, delivery_ids: Sequence[int], marked_at: datetime, now: datetime) -> None:
    """Take back marks whose messages were never handed to the relay."""
    if delivery_ids:
        conn.execute(_UNMARK, {"ids": list(delivery_ids), "marked": marked_at, "now": now})


def record_results(conn, outcomes: Sequence[Outcome], *, campaign_id: int) -> None:
    """``record_result`` for each of a window's outcomes (one ``executemany``)."""
    if outcomes:
        conn.execute(_RECORD, [_record_params(o) for o in outcomes])
    for outcome in outcomes:
        if outcome.suppress_subscriber is not None:
            mark_bounced(conn, subscriber_id=outcome.suppress_subscriber, campaign_id=campaign_id,
                         delivery_id=outcome.delivery_id, reply=outcome.reply, now=outcome.at)


def record_result(conn, outcome: Outcome, *, campaign_id: int) -> None:
    """Store one attempt's outcome on its delivery. The guard (still 'sending', and from
    this try's mark) makes a late or repeated record harmless: a delivery already
    recorded, skipped by an unsubscribe, or marked again by another worker after a lost
    lease is left as it is. The campaign's counters move when the batch is released
    (``count_batch``), not here: no per-message write to the one campaign row that every
    worker would wait on. A permanent "no such mailbox" marks the subscriber bounced in
    the same transaction."""
    conn.execute(_RECORD, _record_params(outcome))
    if outcome.suppress_subscriber is not None:
        mark_bounced(conn, subscriber_id=outcome.suppress_subscriber, campaign_id=campaign_id,
                     delivery_id=outcome.delivery_id, reply=outcome.reply, now=outcome.at)


def renew_lease(conn, *, campaign_id: int, seq: int, worker: str, until: datetime) -> bool:
    """Extend a held batch's lease. False when this worker no longer holds it (the lease
    ran out and another worker claimed it): the caller must stop sending from it."""
    return bool(conn.execute(_RENEW_LEASE, {"until": until, "cid": campaign_id, "seq": seq, "w": worker}).rowcount)


def mark_bounced(conn, *, subscriber_id: int, campaign_id: int, delivery_id: int, reply: str,
                 now: datetime) -> None:
    """A permanent 'no such user' (5.1.x) at SMTP time marks the address bounced, with
    an event (origin 'smtp'): it is never mailed again (the audience freeze and
    ``mark_sending`` take only active subscribers). Guarded: once per subscriber."""
    if conn.execute(_BOUNCE_SUBSCRIBER, {"sid": subscriber_id, "now": now}).rowcount:
        conn.execute(insert(Event.__table__).values(
            kind=EventKind.bounce, origin="smtp", subscriber_id=subscriber_id, campaign_id=campaign_id,
            delivery_id=delivery_id, detail={"reply": reply[:500]}, created_at=now))
        # A Core insert: the outbox's listener on event rows does not see it.
        outbox.emit_event(conn, kind=EventKind.bounce, origin="smtp", subscriber_id=subscriber_id,
                          campaign_id=campaign_id, delivery_id=delivery_id,
                          detail={"reply": reply[:500], "verdict": "permanent", "permanent": True}, now=now)


# PostgreSQL: a window's outcomes recorded and the next window marked in ONE statement
# (data-modifying WITH clauses): one round trip and one commit per window instead of
# BEGIN, the statements and COMMIT. The same guards as record_result and mark_window:
# the record only touches this try's mark, the mark only takes a queued delivery of an
# active subscriber while the campaign is sending. Both UPDATEs see the snapshot from
# before the statement and touch different rows (the previous window's and the next
# one's), as PostgreSQL requires. The outcomes come as one JSON array of rows: a single
# text parameter, where ten typed arrays cost a send worker twice the CPU to adapt
# (psycopg's array dumpers run in Python, per element).
# ``d.id = ANY(...)`` next to the join keeps the plan on the primary key: a prepared
# (generic) plan otherwise joins the rows to a scan of the whole table.
_RECORD_AND_MARK_WINDOW = text(
    f"""
    WITH v AS (
        SELECT * FROM json_to_recordset(CAST(:rows AS JSON))
            AS v(id BIGINT, status TEXT, code INT, reply TEXT, mid TEXT, inc INT, at TIMESTAMPTZ,
                 marked TIMESTAMPTZ, sent_at TIMESTAMPTZ, next TIMESTAMPTZ)
    ), rec AS (
        UPDATE delivery d SET status = v.status, last_code = v.code, last_reply = v.reply, message_id = v.mid,
               attempts = d.attempts + v.inc, updated_at = v.at, sent_at = COALESCE(v.sent_at, d.sent_at),
               next_attempt_at = v.next
        FROM v WHERE d.id = ANY(CAST(:r_id AS BIGINT[])) AND d.id = v.id
          AND d.status = '{D.sending}' AND d.updated_at = v.marked
        RETURNING d.id
    ), marked AS (
        UPDATE delivery SET {_MARK}
        WHERE {_MARKABLE.replace("id IN :ids", "id = ANY(CAST(:ids AS BIGINT[]))")}
        RETURNING id
    )
    SELECT id FROM marked
    """
)


def plan_window_once(conn) -> None:
    """On the connection that runs ``record_and_mark_window`` and nothing else: plan it
    once and keep the plan. PostgreSQL otherwise plans it again at every window (its
    cost estimate favours a fresh plan each time): 1.6 ms of server CPU, five times what
    running it costs, and as much as a worker spends on a window's messages. The kept
    (generic) plan is the same one: both UPDATEs go through primary keys given as
    arrays. ``unplan_window`` puts the default back before the connection is pooled."""
    conn.execute(_text("SET plan_cache_mode = force_generic_plan"))


def unplan_window(conn) -> None:
    """PostgreSQL's default plan choice again (``plan_window_once``'s undo)."""
    conn.execute(_text("RESET plan_cache_mode"))


def _iso(at: datetime | None) -> str | None:
    return None if at is None else as_utc(at).isoformat()


def _array_literal(ids: Iterable[int]) -> str:
    """``{1,2,3}``: PostgreSQL's text form of an array of integers."""
    return "{" + ",".join(str(int(i)) for i in ids) + "}"


@functools.lru_cache(maxsize=8)
def _driver_sql(dialect) -> str:
    """The window statement as the driver takes it (``%(name)s`` placeholders)."""
    return _RECORD_AND_MARK_WINDOW.compile(dialect=dialect).string


def record_and_mark_window(conn, *, outcomes: Sequence[Outcome], delivery_ids: Sequence[int], campaign_id: int,
                           now: datetime) -> set[int]:
    """``record_results`` and ``mark_window``'s marking, atomically, on PostgreSQL, in
    one statement on a connection in autocommit mode. Returns the ids marked; when some
    were not, the caller settles them (``settle_unmarked``) in a transaction. Outcomes
    that suppress their subscriber go through ``record_results`` instead.

    It runs on the driver's own connection: SQLAlchemy's execution around one statement
    cost a send worker as much CPU as the rest of the statement's work on its side (0.1
    ms a window). A driver error comes back as SQLAlchemy's, as from ``conn.execute``,
    so a caller tells a database that went away from any other error the same way."""
    # ``_record_params``' values; times in ISO 8601 with their offset and microseconds,
    # so the guard on the mark's time compares equal. A window's outcomes share their
    # mark's time: written once.
    marked: dict[datetime | None, str | None] = {}
    rows = []
    for p in map(_record_params, outcomes):
        at = _iso(p["rnow"])
        if p["marked"] not in marked:
            marked[p["marked"]] = _iso(p["marked"])
        rows.append({"id": p["prev"], "status": str(p["status"]), "code": p["code"], "reply": p["reply"],
                     "mid": p["mid"], "inc": p["inc"], "at": at, "marked": marked[p["marked"]],
                     "sent_at": None if p["sent_at"] is None else at, "next": _iso(p["next"])})
    # The two id lists as array literals: text to the driver, where a list goes through
    # its array dumpers in Python, element by element.
    params = {"rows": json.dumps(rows), "r_id": _array_literal(o.delivery_id for o in outcomes),
              "ids": _array_literal(delivery_ids), "cid": campaign_id, "now": now}
    sql = _driver_sql(conn.dialect)
    dbapi = conn.dialect.loaded_dbapi
    try:
        with conn.connection.driver_connection.cursor() as cursor:
            cursor.execute(sql, params)
            return {row[0] for row in cursor.fetchall()}
    except dbapi.Error as err:
        raise DBAPIError.instance(sql, params, err, dbapi.Error) from err


# --- outbound webhooks ------------------------------------------------------------------

@dataclass(frozen=True)
class ClaimedWebhook:
    delivery_id: int
    attempt: int  # this one: 1, 2, ...
    lease_until: datetime
    url: str
    enabled: bool
    secrets: list[str]
    message_id: str
    body: str


def claim_webhook(session: Session, *, delivery_id: int, now: datetime, lease_until: datetime) -> ClaimedWebhook | None:
    """Take a pending, due webhook delivery for one attempt, or None (delivered, failed,
    not due yet, or held by another worker). Safe when two tasks for the same row run at
    once (the after-commit task and the sweep's, or a retry): the guarded UPDATE lets
    one of them through, and the lease makes a worker that died mid-POST give the row
    back. A task that comes before ``next_attempt_at`` (a duplicate, or a retry run
    early by another machine's clock) does nothing: the sweep hands the row out when
    it is due, so the backoff holds however many tasks there are."""
    n = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == WebhookStatus.pending,
               WebhookDelivery.next_attempt_at <= now,
               (WebhookDelivery.lease_until.is_(None)) | (WebhookDelivery.lease_until < now))
        .values(attempts=WebhookDelivery.attempts + 1, lease_until=lease_until, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not n:
        return None
    row = session.execute(
        select(WebhookDelivery.attempts, WebhookDelivery.message_id, WebhookDelivery.body, WebhookEndpoint.url,
               WebhookEndpoint.enabled, WebhookEndpoint.secret, WebhookEndpoint.previous_secret,
               WebhookEndpoint.previous_secret_until)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.id == delivery_id)).one()
    return ClaimedWebhook(delivery_id, row.attempts, lease_until, row.url, row.enabled,
                          signing_secrets(row.secret, row.previous_secret, row.previous_secret_until, now),
                          row.message_id, row.body)


def record_webhook_attempt(session: Session, claim: ClaimedWebhook, *, status: WebhookStatus, code: int | None,
                           error: str, next_attempt_at: datetime | None, now: datetime) -> bool:
    """Write one attempt's outcome and give the row back; only the holder of this
    attempt's lease does (a worker whose lease ran out while it waited on a slow
    endpoint, and whose row another worker took, records nothing)."""
    return bool(session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == claim.delivery_id, WebhookDelivery.lease_until == claim.lease_until,
               WebhookDelivery.attempts == claim.attempt)
        .values(status=status, last_code=code, last_error=error[:1000], lease_until=None, updated_at=now,
                next_attempt_at=next_attempt_at or now,
                delivered_at=now if status == WebhookStatus.delivered else None)
        .execution_options(synchronize_session=False)
    ).rowcount)


def due_webhooks(session: Session, *, now: datetime, limit: int = 1000) -> list[int]:
    """Pending webhook deliveries that are due and held by no live lease: those whose
    task was lost, or never queued (written on a bare connection, or while the broker
    was away). A read only: ``claim_webhook`` decides who posts, so an extra task is
    harmless. On ``ix_webhook_delivery_status_next``."""
    return list(session.execute(
        select(WebhookDelivery.id)
        .where(WebhookDelivery.status == WebhookStatus.pending, WebhookDelivery.next_attempt_at <= now,
               (WebhookDelivery.lease_until.is_(None)) | (WebhookDelivery.lease_until < now))
        .order_by(WebhookDelivery.next_attempt_at).limit(limit)).scalars())
