"""The queries that must be right when several workers run them at once.

Every function here takes an open ``Session`` inside a transaction and returns plain
values. On SQLite every transaction is ``BEGIN IMMEDIATE`` (see ``mailer.db``): one
writer at a time, so a claim is atomic by construction. On PostgreSQL the claim uses
``FOR UPDATE SKIP LOCKED`` so concurrent workers take different batches without
waiting for each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import DateTime, bindparam
from sqlalchemy import text as _text
from sqlalchemy.orm import Session



_TIME_PARAMS = ("now", "until", "next", "due", "sent_at")


def text(sql: str):
    """``sqlalchemy.text`` with the time parameters typed, so SQLite stores them in the
    same format as the ORM does and string comparisons of times stay correct."""
    clause = _text(sql)
    typed = [bindparam(p, type_=DateTime(timezone=True)) for p in _TIME_PARAMS if f":{p}" in sql]
    return clause.bindparams(*typed) if typed else clause


@dataclass(frozen=True)
class ClaimedBatch:
    campaign_id: int
    seq: int
    lease_until: datetime


@dataclass(frozen=True)
class Recipient:
    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    attempts: int
    status: str


def freeze_audience(session: Session, *, campaign_id: int, list_id: int, batch_size: int, now: datetime) -> int:
    """Create one ``delivery`` per active, non-suppressed member of the list, numbered
    into batches, and one ``batch`` row per batch. Returns the number of deliveries.

    One INSERT ... SELECT: the database does the work, not a Python loop, so it stays
    fast at a million subscribers. ``ON CONFLICT DO NOTHING`` on (campaign, subscriber)
    makes a second run a no-op, so a repeated start cannot queue anyone twice.
    """
    session.execute(
        text(
            """
            INSERT INTO delivery (campaign_id, subscriber_id, batch_seq, status, attempts,
                                  last_reply, message_id, queued_at)
            SELECT :cid, s.id, (ROW_NUMBER() OVER (ORDER BY s.id) - 1) / :size,
                   'queued', 0, '', '', :now
            FROM membership m JOIN subscriber s ON s.id = m.subscriber_id
            WHERE m.list_id = :lid AND s.status = 'active'
            ON CONFLICT (campaign_id, subscriber_id) DO NOTHING
            """
        ),
        {"cid": campaign_id, "lid": list_id, "size": batch_size, "now": now},
    )
    session.execute(
        text(
            """
            INSERT INTO batch (campaign_id, seq, status, available_at, worker, claims)
            SELECT DISTINCT :cid, batch_seq, 'pending', :now, '', 0
            FROM delivery WHERE campaign_id = :cid
            ON CONFLICT (campaign_id, seq) DO NOTHING
            """
        ),
        {"cid": campaign_id, "now": now},
    )
    total = session.execute(
        text("SELECT COUNT(*) FROM delivery WHERE campaign_id = :cid"), {"cid": campaign_id}
    ).scalar_one()
    session.execute(text("UPDATE campaign SET total = :n WHERE id = :cid"), {"n": total, "cid": campaign_id})
    return total


def claim_batch(session: Session, *, campaign_id: int, worker: str, now: datetime, lease: timedelta) -> ClaimedBatch | None:
    """Take one batch of a campaign that is sending: a pending batch whose time has
    come, or a claimed one whose lease ran out (its worker died). The lease is what
    gives crash recovery: the broker may lose or repeat the task, the database decides.

    PostgreSQL: the inner SELECT ... FOR UPDATE SKIP LOCKED makes two workers take two
    different rows without blocking. SQLite: the transaction began IMMEDIATE, so no
    other writer runs between the SELECT and the UPDATE ... RETURNING.
    """
    skip_locked = "" if session.bind.dialect.name == "sqlite" else "FOR UPDATE SKIP LOCKED"
    row = session.execute(
        text(
            f"""
            UPDATE batch SET status = 'claimed', worker = :worker, lease_until = :until,
                             claims = claims + 1
            WHERE id = (
                SELECT b.id FROM batch b
                WHERE b.campaign_id = :cid
                  AND ((b.status = 'pending' AND (b.available_at IS NULL OR b.available_at <= :now))
                       OR (b.status = 'claimed' AND b.lease_until < :now))
                  AND EXISTS (SELECT 1 FROM campaign c WHERE c.id = :cid AND c.status = 'sending')
                ORDER BY b.seq
                LIMIT 1 {skip_locked}
            )
            RETURNING campaign_id, seq, lease_until
            """
        ),
        {"cid": campaign_id, "worker": worker, "now": now, "until": now + lease},
    ).first()
    if row is None:
        return None
    return ClaimedBatch(campaign_id=row.campaign_id, seq=row.seq, lease_until=now + lease)


def batch_recipients(session: Session, *, campaign_id: int, seq: int, now: datetime) -> list[Recipient]:
    """The deliveries of a batch still to send now: queued ones whose retry time has
    come, and any left 'sending' by a worker that died mid-message (that one message may
    have reached the relay; sending it again is the one repeat we accept)."""
    rows = session.execute(
        text(
            """
            SELECT d.id, d.subscriber_id, s.email, s.name, d.attempts, d.status
            FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id
            WHERE d.campaign_id = :cid AND d.batch_seq = :seq
              AND (d.status = 'sending'
                   OR (d.status = 'queued' AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= :now)))
            ORDER BY d.id
            """
        ),
        {"cid": campaign_id, "seq": seq, "now": now},
    ).all()
    return [Recipient(*row) for row in rows]


def release_batch(session: Session, *, campaign_id: int, seq: int, now: datetime, available_at: datetime | None = None) -> str:
    """End a worker's hold on a batch: 'done' when nothing in it is left to send,
    otherwise back to 'pending' until the earliest retry time. Returns the new status."""
    pending = session.execute(
        text(
            """
            SELECT MIN(COALESCE(next_attempt_at, :now)) AS due, COUNT(*) AS n
            FROM delivery WHERE campaign_id = :cid AND batch_seq = :seq AND status IN ('queued', 'sending')
            """
        ),
        {"cid": campaign_id, "seq": seq, "now": now},
    ).one()
    if pending.n == 0:
        status, due = "done", None
    else:
        status = "pending"
        due = max(filter(None, [_aware(pending.due, now), available_at])) if (pending.due or available_at) else now
    session.execute(
        text(
            "UPDATE batch SET status = :st, available_at = :due, lease_until = NULL, worker = '' "
            "WHERE campaign_id = :cid AND seq = :seq"
        ),
        {"st": status, "due": due, "cid": campaign_id, "seq": seq},
    )
    return status


def finish_campaign_if_done(session: Session, *, campaign_id: int, now: datetime) -> bool:
    """Mark a sending campaign sent once every batch is done. The guarded UPDATE makes
    it happen once even when two workers finish their last batches together."""
    n = session.execute(
        text(
            """
            UPDATE campaign SET status = 'sent', finished_at = :now
            WHERE id = :cid AND status = 'sending'
              AND NOT EXISTS (SELECT 1 FROM batch WHERE campaign_id = :cid AND status <> 'done')
            """
        ),
        {"cid": campaign_id, "now": now},
    ).rowcount
    return bool(n)


def claimable_work(session: Session, *, now: datetime, idle_only: bool = False) -> list[tuple[int, int]]:
    """(campaign id, number of batches ready to claim) for every sending campaign.

    With ``idle_only`` (the periodic sweep), only campaigns nobody is working on: no
    batch held under a live lease. Those are the ones whose tasks were lost (a broker
    that drops a dead worker's task) or whose worker died; a campaign being worked on
    gets its next tasks from the running ones, so the queue does not pile up."""
    idle = (
        "AND NOT EXISTS (SELECT 1 FROM batch h WHERE h.campaign_id = c.id "
        "AND h.status = 'claimed' AND h.lease_until >= :now)" if idle_only else ""
    )
    rows = session.execute(
        text(
            f"""
            SELECT b.campaign_id, COUNT(*) FROM batch b JOIN campaign c ON c.id = b.campaign_id
            WHERE c.status = 'sending'
              AND ((b.status = 'pending' AND (b.available_at IS NULL OR b.available_at <= :now))
                   OR (b.status = 'claimed' AND b.lease_until < :now))
              {idle}
            GROUP BY b.campaign_id
            """
        ),
        {"now": now},
    ).all()
    return [(r[0], r[1]) for r in rows]


def delivery_counts(session: Session, *, campaign_id: int) -> dict[str, int]:
    rows = session.execute(
        text("SELECT status, COUNT(*) FROM delivery WHERE campaign_id = :cid GROUP BY status"),
        {"cid": campaign_id},
    ).all()
    return {status: n for status, n in rows}


def _aware(value, now: datetime):
    """SQLite hands back naive datetimes (or strings) from raw SQL; make them aware."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=now.tzinfo)
    return value


# --- after delivery: bounces and complaints ----------------------------------------------

# pending and active: the statuses that still receive mail (subscribers.service.MAILABLE).
_MAILABLE = "('pending', 'active')"


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
    move it to 'bounced' and move the campaign's counters with it (sent - 1, bounced + 1)
    in the same transaction, so counters keep equalling the counts of deliveries.

    ``WHERE status = 'sent'`` makes a second copy of the report a no-op, and leaves a
    delivery alone that is not (yet) recorded as sent: the engine records an outcome
    with the next message, so a very fast bounce can arrive first; the subscriber is
    still marked bounced, and the delivery keeps what the relay told us."""
    n = session.execute(
        text(
            "UPDATE delivery SET status = 'bounced', last_code = :code, last_reply = :reply, updated_at = :now "
            "WHERE id = :did AND status = 'sent'"
        ),
        {"did": delivery_id, "code": code, "reply": reply[:2000], "now": now},
    ).rowcount
    if n:
        session.execute(
            text("UPDATE campaign SET sent = sent - 1, bounced = bounced + 1 WHERE id = :cid"), {"cid": campaign_id}
        )
    return bool(n)


def set_subscriber_status(session: Session, *, subscriber_id: int, status: str, now: datetime) -> bool:
    """'bounced' or 'complained' for a subscriber who still receives mail. True when it
    changed; an unsubscribed or already bounced subscriber keeps their status."""
    if status not in ("bounced", "complained"):
        raise ValueError(status)
    return bool(session.execute(
        text(f"UPDATE subscriber SET status = :st, updated_at = :now WHERE id = :sid AND status IN {_MAILABLE}"),
        {"st": status, "sid": subscriber_id, "now": now},
    ).rowcount)


# --- the per-message path ---------------------------------------------------------------
#
# These run once or three times per message, so the statements are built once here
# (``text`` parses its SQL for parameters on every call, about 0.1 ms) and take a plain
# ``Connection`` in a transaction (a Session adds its own bookkeeping per call; measured
# with bench/send.py --profile). A Session works too.

_MARK_SENDING = text(
    """
    UPDATE delivery SET status = 'sending', updated_at = :now
    WHERE id = :did AND status IN ('queued', 'sending')
      AND EXISTS (SELECT 1 FROM subscriber s WHERE s.id = delivery.subscriber_id AND s.status = 'active')
      AND EXISTS (SELECT 1 FROM campaign c WHERE c.id = :cid AND c.status = 'sending')
    """
)
_CAMPAIGN_STATUS = text("SELECT status FROM campaign WHERE id = :cid")
_SKIP = text(
    "UPDATE delivery SET status = 'skipped', last_reply = :reason, updated_at = :now "
    "WHERE id = :did AND status IN ('queued', 'sending')"
)
_COUNT_SKIPPED = text("UPDATE campaign SET skipped = skipped + 1 WHERE id = :cid")
_RECORD = text(
    """
    UPDATE delivery SET status = :status, last_code = :code, last_reply = :reply,
           message_id = :mid, attempts = attempts + :inc, updated_at = :now,
           sent_at = COALESCE(:sent_at, sent_at),
           next_attempt_at = :next
    WHERE id = :did AND status = 'sending'
    """
)
_COUNT = {s: text(f"UPDATE campaign SET {s} = {s} + 1 WHERE id = :cid") for s in ("sent", "failed", "bounced")}
_RENEW_LEASE = text(
    "UPDATE batch SET lease_until = :until WHERE campaign_id = :cid AND seq = :seq "
    "AND status = 'claimed' AND worker = :w"
)
_BOUNCE_SUBSCRIBER = text(
    "UPDATE subscriber SET status = 'bounced', updated_at = :now WHERE id = :sid AND status = 'active'"
)


def mark_sending(conn, *, delivery_id: int, campaign_id: int, now: datetime) -> str:
    """Mark one delivery as being sent, right before it goes to the relay, in the
    transaction that records the previous message's outcome. The subscriber must still
    be active and the campaign still sending, so an unsubscribe or a pause takes effect
    at the very next message, not the next batch. Returns 'sending' (go ahead),
    'skipped' (the subscriber left; recorded and counted) or 'stopped' (the campaign is
    no longer sending; nothing changed).

    Only one delivery per worker is ever 'sending', so a worker killed mid-message
    leaves at most one message whose fate is unknown."""
    if conn.execute(_MARK_SENDING, {"did": delivery_id, "cid": campaign_id, "now": now}).rowcount:
        return "sending"
    if conn.execute(_CAMPAIGN_STATUS, {"cid": campaign_id}).scalar_one() != "sending":
        return "stopped"
    if conn.execute(_SKIP, {"did": delivery_id, "now": now, "reason": "subscriber is no longer active"}).rowcount:
        conn.execute(_COUNT_SKIPPED, {"cid": campaign_id})
    return "skipped"


def record_result(conn, *, delivery_id: int, campaign_id: int, status: str, code: int | None, reply: str,
                  message_id: str, now: datetime, next_attempt_at: datetime | None = None,
                  count_attempt: bool = True) -> None:
    """Store the outcome of one attempt on its delivery and move the campaign counter in
    the same transaction, so counters always equal the counts of deliveries.
    ``WHERE status = 'sending'`` makes a late or repeated record harmless: a delivery
    already recorded (or skipped by an unsubscribe) is not counted twice."""
    n = conn.execute(_RECORD, {
        "did": delivery_id, "status": status, "code": code, "reply": reply[:2000], "mid": message_id, "now": now,
        "next": next_attempt_at, "sent_at": now if status == "sent" else None, "inc": 1 if count_attempt else 0,
    }).rowcount
    if n and status in _COUNT:
        conn.execute(_COUNT[status], {"cid": campaign_id})


def renew_lease(conn, *, campaign_id: int, seq: int, worker: str, until: datetime) -> bool:
    return bool(conn.execute(_RENEW_LEASE, {"until": until, "cid": campaign_id, "seq": seq, "w": worker}).rowcount)


def mark_bounced(conn, *, subscriber_id: int, campaign_id: int, delivery_id: int, reply: str,
                 now: datetime) -> None:
    """A permanent 'no such user' (5.1.x) at SMTP time marks the address bounced, with
    an event (origin 'smtp'): it is never mailed again (the audience freeze and
    ``mark_sending`` take only active subscribers)."""
    if conn.execute(_BOUNCE_SUBSCRIBER, {"sid": subscriber_id, "now": now}).rowcount:
        from sqlalchemy import insert

        from subscribers.models import Event

        conn.execute(insert(Event.__table__).values(
            kind="bounce", origin="smtp", subscriber_id=subscriber_id, campaign_id=campaign_id,
            delivery_id=delivery_id, detail={"reply": reply[:500]}, created_at=now))


# PostgreSQL only: the previous message's outcome, its campaign counter and the mark of
# the next delivery in ONE statement (one round trip, its own transaction). The same
# guards as record_result and mark_sending: the record only touches a delivery still
# 'sending', the counter moves only with it, the mark only takes a queued delivery of an
# active subscriber while the campaign is sending. Data-modifying WITH clauses all see
# the snapshot from before the statement and touch different rows here (the previous and
# the next delivery differ), which PostgreSQL allows.
_RECORD_AND_MARK = text(
    """
    WITH rec AS (
        UPDATE delivery SET status = :status, last_code = :code, last_reply = :reply, message_id = :mid,
               attempts = attempts + :inc, updated_at = :rnow, sent_at = COALESCE(:sent_at, sent_at),
               next_attempt_at = :next
        WHERE id = :prev AND status = 'sending'
        RETURNING status
    ), counted AS (
        UPDATE campaign SET sent = sent + (SELECT COUNT(*) FROM rec WHERE status = 'sent'),
                            failed = failed + (SELECT COUNT(*) FROM rec WHERE status = 'failed'),
                            bounced = bounced + (SELECT COUNT(*) FROM rec WHERE status = 'bounced')
        WHERE id = :cid AND EXISTS (SELECT 1 FROM rec WHERE status IN ('sent', 'failed', 'bounced'))
        RETURNING id
    ), marked AS (
        UPDATE delivery SET status = 'sending', updated_at = :now
        WHERE id = :did AND status IN ('queued', 'sending')
          AND EXISTS (SELECT 1 FROM subscriber s WHERE s.id = delivery.subscriber_id AND s.status = 'active')
          AND EXISTS (SELECT 1 FROM campaign c WHERE c.id = :cid AND c.status = 'sending')
        RETURNING id
    )
    SELECT (SELECT COUNT(*) FROM marked), (SELECT COUNT(*) FROM counted)
    """
).bindparams(bindparam("rnow", type_=DateTime(timezone=True)))


def record_and_mark(conn, *, previous: dict | None, delivery_id: int, campaign_id: int, now: datetime) -> bool:
    """Record ``previous`` (the outcome dict the engine keeps, or None) and mark the next
    delivery 'sending', atomically, on PostgreSQL. True when the delivery is marked.
    False means nothing was marked (the subscriber left or the campaign stopped) — the
    previous outcome IS recorded then — and the caller sorts out which with
    ``mark_sending`` in a transaction of its own."""
    p = previous or {}
    status = p.get("status", "sent")
    marked, _counted = conn.execute(_RECORD_AND_MARK, {
        "prev": p.get("delivery_id", -1), "status": status, "code": p.get("code"),
        "reply": (p.get("reply") or "")[:2000], "mid": p.get("message_id", ""),
        "inc": 1 if p.get("count_attempt", True) else 0, "rnow": p.get("now", now),
        "sent_at": p.get("now", now) if status == "sent" else None, "next": p.get("next_attempt_at"),
        "did": delivery_id, "cid": campaign_id, "now": now,
    }).one()
    return bool(marked)
