"""Issues, campaigns, batches and deliveries: the sending side of the data model.

A campaign is one issue sent to one list. Starting it freezes its audience into one
``delivery`` row per recipient, numbered into batches; workers claim a ``batch`` row
under a lease, and record one outcome per delivery. The counters on ``campaign`` are
updated in the same transaction as the deliveries they count, so they always agree.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailer.db import Base, BigId
from subscribers.models import Event, MailingList, Membership, Subscriber, Suppression, _check, utcnow

__all__ = [
    "Base", "Issue", "Campaign", "Batch", "Delivery", "Subscriber", "MailingList",
    "Membership", "Suppression", "Event", "Schedule", "ScheduleRun",
    "IssueStatus", "CampaignStatus", "BatchStatus", "DeliveryStatus",
]


class IssueStatus(str, enum.Enum):
    draft = "draft"
    ready = "ready"
    sent = "sent"


class CampaignStatus(str, enum.Enum):
    draft = "draft"
    scheduled = "scheduled"
    sending = "sending"
    paused = "paused"
    sent = "sent"
    cancelled = "cancelled"


class BatchStatus(str, enum.Enum):
    pending = "pending"  # waiting for a worker (or for its retry time)
    claimed = "claimed"  # a worker holds it until lease_until
    done = "done"


class DeliveryStatus(str, enum.Enum):
    queued = "queued"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    bounced = "bounced"
    skipped = "skipped"  # left the list (or was suppressed) after the audience was frozen


FINAL_DELIVERY_STATES = ("sent", "failed", "bounced", "skipped")


class Issue(Base):
    __tablename__ = "issue"
    __table_args__ = (_check("status", IssueStatus),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    subject: Mapped[str] = mapped_column(String(998))
    preheader: Mapped[str] = mapped_column(String(500), default="")
    source: Mapped[str] = mapped_column(Text)
    # Rendered once; per-recipient merge fields are still markers in these.
    html: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=IssueStatus.draft.value)
    issue_date: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    rendered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Campaign(Base):
    __tablename__ = "campaign"
    __table_args__ = (
        _check("status", CampaignStatus),
        # One issue goes to one list once: a repeated start finds this campaign
        # instead of creating a second one.
        UniqueConstraint("issue_id", "list_id", name="uq_campaign_issue_list"),
        Index("ix_campaign_status_scheduled", "status", "scheduled_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issue.id", ondelete="RESTRICT"))
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_list.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.draft.value)
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    pause_reason: Mapped[str] = mapped_column(Text, default="")
    # Counters, kept in the same transactions as the deliveries they count.
    total: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    bounced: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)


class Batch(Base):
    __tablename__ = "batch"
    __table_args__ = (
        _check("status", BatchStatus),
        UniqueConstraint("campaign_id", "seq", name="uq_batch_campaign_seq"),
        # claim_batch looks for the next claimable batch of one campaign.
        Index("ix_batch_claim", "campaign_id", "status", "available_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=BatchStatus.pending.value)
    available_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str] = mapped_column(String(200), default="")
    claims: Mapped[int] = mapped_column(Integer, default=0)


class Delivery(Base):
    __tablename__ = "delivery"
    __table_args__ = (
        _check("status", DeliveryStatus),
        UniqueConstraint("campaign_id", "subscriber_id", name="uq_delivery_campaign_subscriber"),
        # A worker reads one batch's unsent deliveries; status pages count by status.
        Index("ix_delivery_batch", "campaign_id", "batch_seq", "status"),
        Index("ix_delivery_campaign_status", "campaign_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscriber.id", ondelete="CASCADE"))
    batch_seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.queued.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_code: Mapped[int | None] = mapped_column(Integer)
    last_reply: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str] = mapped_column(String(255), default="")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Schedule(Base):
    """A list's weekly slot: a day, a local time and an IANA time zone. The slot is a
    local time, so it stays at 09:00 in Shanghai or New York across daylight saving."""

    __tablename__ = "schedule"
    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_list.id", ondelete="CASCADE"), unique=True)
    weekday: Mapped[int] = mapped_column(Integer)  # Monday = 0, as datetime.weekday()
    local_time: Mapped[str] = mapped_column(String(5))  # "HH:MM"
    timezone: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ScheduleRun(Base):
    """What happened at one slot: a campaign started, or the slot was empty. The unique
    (schedule, slot) makes the dispatcher record each slot once, however many run."""

    __tablename__ = "schedule_run"
    __table_args__ = (
        UniqueConstraint("schedule_id", "slot_at", name="uq_schedule_run_slot"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedule.id", ondelete="CASCADE"))
    slot_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str] = mapped_column(String(16))  # started | empty | held
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaign.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
import mailer.accounts  # noqa: E402,F401  (admin_user, api_token: migration 0004)
