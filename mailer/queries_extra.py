"""Named queries added with issue 4's follow-ups (bounces after delivery), kept beside
``mailer.queries`` so the two can be merged later. Same rules: each function takes an
open Session inside a transaction, and each write is a guarded UPDATE, so running it
twice (a report delivered twice, two processes at once) changes things once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from mailer.queries import text

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
# (``queries.text`` parses its SQL for parameters on every call, about 0.1 ms) and take
# a plain ``Connection`` in a transaction (a Session adds its own bookkeeping per call;
# measured with bench/send.py --profile). Same SQL and the same guards as their
# counterparts in ``mailer.queries``.

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
    """``queries.mark_sending`` in one statement on the common path: the campaign's
    status is checked inside the UPDATE instead of by a SELECT before it. Returns
    'sending' (go ahead), 'skipped' (the subscriber left; recorded and counted) or
    'stopped' (the campaign is no longer sending; nothing changed)."""
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
    """``queries.record_result`` with prebuilt statements: the outcome on the delivery
    and the campaign counter in the same transaction; ``WHERE status = 'sending'``
    makes a repeated record harmless."""
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
    """``queries.mark_bounced`` without the ORM: a 5.1.x at SMTP time marks the address
    bounced, with an event (origin 'smtp')."""
    if conn.execute(_BOUNCE_SUBSCRIBER, {"sid": subscriber_id, "now": now}).rowcount:
        from sqlalchemy import insert

        from subscribers.models import Event

        conn.execute(insert(Event.__table__).values(
            kind="bounce", origin="smtp", subscriber_id=subscriber_id, campaign_id=campaign_id,
            delivery_id=delivery_id, detail={"reply": reply[:500]}, created_at=now))
