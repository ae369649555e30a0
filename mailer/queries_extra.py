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
