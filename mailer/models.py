"""The sending side of the data model, with its status enums: issues, campaigns,
batches, deliveries, weekly schedules, and the dashboard's users and API tokens.

What comes back after sending (``mailer.bounces``): a ``soft_bounce`` row per message
that failed for a reason that may pass (counted towards the soft-bounce limit), and an
``inbound_message`` row for every inbound message or provider event that could not be
acted on, kept so that nothing is dropped silently.

A campaign is one issue sent to one list. Starting it freezes its audience into one
``delivery`` row per recipient, numbered into batches; workers claim a ``batch`` row
under a lease, and record one outcome per delivery. The counters on ``batch`` and
``campaign`` are counted from the deliveries when a batch is let go (and when an editor
or a bounce changes deliveries), in the same transaction: they agree with the
deliveries at every batch's end, without a write to the campaign row per message.

Status values exist here and in ``subscribers.models`` only, as enums; the code and
the SQL of ``mailer.queries`` use the members, never the bare strings.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text as sql_text,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from mailer.core.clock import utcnow
from mailer.core.db import Base, BigId, UtcDateTime, enum_check
from subscribers.models import Event, Json


class IssueStatus(enum.StrEnum):
    draft = "draft"
    ready = "ready"
    sent = "sent"  # a campaign of it started: it is in the public archive


class CampaignStatus(enum.StrEnum):
    draft = "draft"
    scheduled = "scheduled"
    sending = "sending"
    paused = "paused"
    sent = "sent"
    cancelled = "cancelled"


# Not started yet: can be moved, started (or held) by the dispatcher.
NOT_STARTED = (CampaignStatus.draft, CampaignStatus.scheduled)
# Mailing or has mailed the stored copy of its issue, which then can no longer change.
STARTED = (CampaignStatus.sending, CampaignStatus.paused, CampaignStatus.sent)
# Started and not over yet.
IN_FLIGHT = (CampaignStatus.sending, CampaignStatus.paused)


class BatchStatus(enum.StrEnum):
    pending = "pending"  # waiting for a worker (or for its retry time)
    claimed = "claimed"  # a worker holds it until lease_until
    done = "done"


class DeliveryStatus(enum.StrEnum):
    queued = "queued"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    bounced = "bounced"
    skipped = "skipped"  # left the list (or was suppressed) after the audience was frozen


# The outcomes a campaign counts (its counter columns have these names).
COUNTED = (DeliveryStatus.sent, DeliveryStatus.failed, DeliveryStatus.bounced, DeliveryStatus.skipped)
# The deliveries an editor looks for: they did not get the message (``Delivery.attention``).
ATTENTION = (DeliveryStatus.failed, DeliveryStatus.bounced, DeliveryStatus.skipped)
ATTENTION_SQL = "status IN (" + ", ".join(f"'{v}'" for v in ATTENTION) + ")"
# Not yet final: still to be sent (or its fate unknown after a crash).
UNSENT = (DeliveryStatus.queued, DeliveryStatus.sending)


class CampaignKind(enum.StrEnum):
    """What a campaign mails (migration 0014)."""

    issue = "issue"  # one issue, to the list's active members when it starts
    # The list's welcome mail: it stays 'sending' and gets one delivery, in a batch of
    # its own, per subscriber who confirms (``mailer.welcome``). One per list.
    welcome = "welcome"


class SlotOutcome(enum.StrEnum):
    """What happened at a weekly slot (``schedule_run.outcome``)."""

    started = "started"
    empty = "empty"
    held = "held"


class Issue(Base):
    __tablename__ = "issue"
    __table_args__ = (enum_check("status", IssueStatus),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    subject: Mapped[str] = mapped_column(String(998))
    preheader: Mapped[str] = mapped_column(String(500), default="")
    source: Mapped[str] = mapped_column(Text)
    # Rendered once; per-recipient merge fields are still markers in these.
    html: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    # Its content links, in the order a click token numbers them (``mailer.tracking``):
    # the redirect's targets live here, never in a URL. Migration 0012.
    links: Mapped[list[str]] = mapped_column(Json, default=list, server_default="[]")
    status: Mapped[str] = mapped_column(String(16), default=IssueStatus.draft)
    issue_date: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    rendered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Asset(Base):
    """A published image (``mailer.images``), found by the SHA-256 of its bytes: one row
    per distinct file, however many issues show it. Served at
    ``/issues/assets/{digest}.{ext}``. Migration 0005."""

    __tablename__ = "asset"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    media_type: Mapped[str] = mapped_column(String(50))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class IssueImage(Base):
    """A local image of an issue: the name its Markdown gives it, and the asset it was
    published as. Rendering the issue again from its text (the dashboard, the API, a
    re-render before scheduling) finds its images here. Migration 0005."""

    __tablename__ = "issue_image"

    issue_id: Mapped[int] = mapped_column(ForeignKey("issue.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(1000), primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("asset.id", ondelete="RESTRICT"), index=True)


class Campaign(Base):
    __tablename__ = "campaign"
    __table_args__ = (
        enum_check("status", CampaignStatus),
        enum_check("kind", CampaignKind),
        # One issue goes to one list once: a repeated start finds this campaign
        # instead of creating a second one.
        UniqueConstraint("issue_id", "list_id", name="uq_campaign_issue_list"),
        Index("ix_campaign_status_scheduled", "status", "scheduled_at"),
        # A list has one welcome campaign: two first confirmations racing agree on it.
        Index("uq_campaign_welcome_list", "list_id", unique=True,
              postgresql_where=sql_text("kind = 'welcome'"), sqlite_where=sql_text("kind = 'welcome'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issue.id", ondelete="RESTRICT"))
    list_id: Mapped[int] = mapped_column(ForeignKey("mailing_list.id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.draft)
    kind: Mapped[str] = mapped_column(String(16), default=CampaignKind.issue, server_default=CampaignKind.issue.value)
    scheduled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    pause_reason: Mapped[str] = mapped_column(Text, default="")
    # The segment of the list it goes to (``subscribers.segments``), empty for the whole
    # list; read when the audience is frozen.
    segment: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The relay does not answer since (and why): set when a batch stops for it, cleared
    # by the next accepted message.
    relay_down_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    relay_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    # Scheduled although pre-flight failed (the editor overrode it): the dispatcher does
    # not check again at its time. Otherwise it does, and a failure holds the campaign
    # with the checks as they ran (``held_checks``, ``Preflight.as_dict``).
    preflight_overridden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    held_checks: Mapped[dict | None] = mapped_column(Json)
    # When a task is queued to take over work whose lease runs out (one at a time).
    recovery_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Counters: the sums of its batches' (``queries.count_batch``).
    total: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    bounced: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)


class Batch(Base):
    __tablename__ = "batch"
    __table_args__ = (
        enum_check("status", BatchStatus),
        UniqueConstraint("campaign_id", "seq", name="uq_batch_campaign_seq"),
        # claim_batch looks for the next claimable batch of one campaign.
        Index("ix_batch_claim", "campaign_id", "status", "available_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=BatchStatus.pending)
    available_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    worker: Mapped[str] = mapped_column(String(200), default="")
    claims: Mapped[int] = mapped_column(Integer, default=0)
    # Its deliveries' outcomes when it was last let go (``queries.count_batch``).
    sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    bounced: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    skipped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Delivery(Base):
    """One message of a campaign to one subscriber: the table a million-subscriber send
    writes a million rows to, and updates twice per message. Two choices follow:

    - No foreign keys. PostgreSQL checks one per inserted row, locking the referenced row
      (FOR KEY SHARE): at a million deliveries the two checks took ~40% of the audience
      freeze. They would guard against nothing the product does: campaigns are never
      deleted once they have deliveries (``operations.issues.delete_issue`` refuses), and
      subscribers never are (erasure anonymises the row, ``subscribers.service.erase``);
      ``tests/test_architecture.py`` keeps it so.
    - No status in the big indexes: marking and recording a message change only columns no
      index holds, so PostgreSQL can update the row in place (a HOT update, with the free
      space the migration leaves in each page) instead of adding an entry to every index.
      The few deliveries that end failed, bounced or skipped have an index of their own,
      on ``attention``, a column the database computes from the status: PostgreSQL will
      not update a row in place when a column any index names changes, the columns of a
      partial index's condition included (an index on the status "where failed, bounced or
      skipped" made every mark and every record an insert into all four indexes: 3% of
      the updates were HOT). ``attention`` is false before and after a message's two
      updates, so they stay in place (migration 0019).
    """

    __tablename__ = "delivery"
    __table_args__ = (
        enum_check("status", DeliveryStatus),
        UniqueConstraint("campaign_id", "subscriber_id", name="uq_delivery_campaign_subscriber"),
        # A worker reads one batch's deliveries (200 rows; the status filter reads them).
        Index("ix_delivery_batch", "campaign_id", "batch_seq"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigId)
    subscriber_id: Mapped[int] = mapped_column(BigId)
    batch_seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.queued)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # counted when a try begins (the mark)
    # Sent again after a try whose outcome was never recorded: a possible duplicate.
    repeats: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_code: Mapped[int | None] = mapped_column(Integer)
    last_reply: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str] = mapped_column(String(255), default="")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    queued_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Failed, bounced or skipped: what an editor looks for (see the class docstring).
    attention: Mapped[bool] = mapped_column(Boolean, Computed(ATTENTION_SQL, persisted=True))


# The few deliveries an editor looks for, in id order for keyset pages of one campaign;
# rows entering it are the only updates that are not HOT.
Index("ix_delivery_attention", Delivery.campaign_id, Delivery.id,
      postgresql_where=Delivery.attention, sqlite_where=Delivery.attention)

# A subscriber's events name the campaign and the delivery they came from; the sending
# side owns those tables, so it declares these keys (``subscribers`` stays below it).
Event.__table__.append_constraint(ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="SET NULL"))
Event.__table__.append_constraint(ForeignKeyConstraint(["delivery_id"], ["delivery.id"], ondelete="SET NULL"))


class EngagementKind(enum.StrEnum):
    click = "click"
    open = "open"


class EngagementEvent(Base):
    """One click on a tracked link, or one fetch of the open pixel, of one delivery
    (``mailer.engagement``). No foreign keys, like ``delivery``: the redirect writes one
    row per click, and the rows it names are never deleted (an erasure removes a
    subscriber's events). Migration 0012."""

    __tablename__ = "engagement_event"
    __table_args__ = (
        enum_check("kind", EngagementKind),
        # A campaign's report counts its events by kind and time.
        Index("ix_engagement_event_campaign", "campaign_id", "kind", "created_at"),
        # A subscriber's export and erasure find theirs.
        Index("ix_engagement_event_subscriber", "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigId)
    delivery_id: Mapped[int | None] = mapped_column(BigId)
    subscriber_id: Mapped[int | None] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(16))
    link_index: Mapped[int | None] = mapped_column(Integer)  # a click: which of ``issue.links``
    method: Mapped[str] = mapped_column(String(8), default="GET", server_default="GET")
    user_agent: Mapped[str] = mapped_column(String(500), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Judged by ``mailer.machines`` once written (None until then), with the reason.
    machine: Mapped[bool | None] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(200), default="", server_default="")


class EngagementCount(Base):
    """Clicks and opens past the retention window, or all of them in strict mode
    (``mailer.engagement``): counts per campaign, kind, link and verdict, with no
    delivery or subscriber. ``link_index``: the link (>= 0), -1 an open, -2 a click on
    any link, -100 - h the hour h (0-71) after the campaign started, for the report's
    72-hour chart (``queries.HOUR_ROWS``; reason "" there). ``readers``: the deliveries
    that made them, counted when rolled up. Migration 0012."""

    __tablename__ = "engagement_count"
    __table_args__ = (
        enum_check("kind", EngagementKind),
        UniqueConstraint("campaign_id", "kind", "link_index", "machine", "reason", name="uq_engagement_count_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(16))
    link_index: Mapped[int] = mapped_column(Integer)
    machine: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(200))
    events: Mapped[int] = mapped_column(Integer)
    readers: Mapped[int] = mapped_column(Integer)


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
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ScheduleRun(Base):
    """What happened at one slot (a ``SlotOutcome``). The unique (schedule, slot) makes
    the dispatcher record each slot once, however many run."""

    __tablename__ = "schedule_run"
    __table_args__ = (
        UniqueConstraint("schedule_id", "slot_at", name="uq_schedule_run_slot"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedule.id", ondelete="CASCADE"))
    slot_at: Mapped[datetime] = mapped_column(UtcDateTime)
    outcome: Mapped[str] = mapped_column(String(16))
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaign.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AdminUser(Base):
    """Someone who may sign in to the dashboard (``mailer.accounts``). ``session_epoch``
    goes up on sign-out, which invalidates every session cookie issued before (cookies
    are stateless). Migration 0004."""

    __tablename__ = "admin_user"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # lower-cased
    password_hash: Mapped[str] = mapped_column(String(255))
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ApiToken(Base):
    """A bearer token for ``/api/admin``; only its SHA-256 is kept."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    user_id: Mapped[int | None] = mapped_column(ForeignKey("admin_user.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class InboundStatus(enum.StrEnum):
    """What became of an inbound message that is kept (``inbound_message.status``). A
    message that was acted on is not kept: its effects are the events it recorded."""

    unprocessed = "unprocessed"  # not understood, or not tied to a delivery: for a person to look at
    ignored = "ignored"  # understood, and nothing to do: an auto-reply, a "delivered" notice


class InboundMessage(Base):
    """An inbound message (or a provider's event) kept as it came, size-capped: the
    reason it was not acted on, where it came from, and the delivery it names if any.
    Migration 0007."""

    __tablename__ = "inbound_message"
    __table_args__ = (
        enum_check("status", InboundStatus),
        # The dashboard counts, and the CLI lists, the unprocessed ones newest first.
        Index("ix_inbound_message_status_received", "status", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    channel: Mapped[str] = mapped_column(String(16))  # mailer.reports.Channel
    status: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))  # mailer.reports.InboundKind
    reason: Mapped[str] = mapped_column(Text, default="")
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("delivery.id", ondelete="SET NULL"))
    size: Mapped[int] = mapped_column(Integer)  # of the whole message; ``raw`` holds at most the cap
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class SoftBounce(Base):
    """One delivery that failed for a reason that may pass (4.x.x, a full mailbox). N of
    them for one subscriber within D days suppress the address (``mailer.bounces``).
    One row per delivery: repeated delay notices about the same message count once.
    Migration 0007."""

    __tablename__ = "soft_bounce"
    __table_args__ = (Index("ix_soft_bounce_subscriber_time", "subscriber_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscriber.id", ondelete="CASCADE"))
    delivery_id: Mapped[int] = mapped_column(ForeignKey("delivery.id", ondelete="CASCADE"), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class WebhookStatus(enum.StrEnum):
    pending = "pending"  # not delivered yet: its first attempt, or a retry, is due at ``next_attempt_at``
    delivered = "delivered"  # the endpoint answered 2xx
    failed = "failed"  # every attempt failed (``NEWSLETTER_WEBHOOK_MAX_ATTEMPTS``)
    skipped = "skipped"  # the endpoint was disabled before it went out


class WebhookEndpoint(Base):
    """An outbound webhook endpoint (``mailer.hooks``): the URL, the event types it gets,
    its signing secret and, for a grace period after a rotation, the previous one (a
    message is signed with both meanwhile). Migration 0015."""

    __tablename__ = "webhook_endpoint"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(Json, default=list)
    description: Mapped[str] = mapped_column(String(200), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class WebhookDelivery(Base):
    """One event for one endpoint: the outbox row written in the transaction of the
    change itself (so no event is lost and none goes out for a change rolled back), then
    the log of its delivery. ``message_id`` is the ``webhook-id`` header, the same on
    every attempt; ``event_id`` is shared by the deliveries of one event to several
    endpoints. ``body`` is the exact payload every attempt sends. A worker holds a row
    under ``lease_until`` while it posts it. Migration 0015."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        enum_check("status", WebhookStatus),
        # The sweep's question: which pending ones are due (mailer.queries.due_webhooks).
        Index("ix_webhook_delivery_status_next", "status", "next_attempt_at"),
        Index("ix_webhook_delivery_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_delivery_subscriber", "subscriber_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(40))
    message_id: Mapped[str] = mapped_column(String(40), unique=True)
    event_type: Mapped[str] = mapped_column(String(40))
    # Whom a subscriber event is about: an erasure deletes their deliveries, whose bodies
    # name them (no foreign key: subscribers are anonymised, never deleted).
    subscriber_id: Mapped[int | None] = mapped_column(BigInteger)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=WebhookStatus.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
