"""Subscribers, lists, memberships, suppressions and events, with their status enums.

Shaped for a million subscribers: the audience of a campaign is read through the
``membership`` primary key (list first) joined to ``subscriber`` by primary key, and
filtered on ``subscriber.status``; nothing on the hot path scans the whole table.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, false, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from mailer.core.clock import utcnow
from mailer.core.db import Base, BigId, UtcDateTime, enum_check

Json = JSON().with_variant(JSONB(), "postgresql")
EmailKey = String(320).with_variant(String(320, collation="C"), "postgresql")


class SubscriberStatus(enum.StrEnum):
    pending = "pending"
    active = "active"
    unsubscribed = "unsubscribed"
    bounced = "bounced"
    complained = "complained"


# Statuses that still receive mail (pending ones only the confirmation).
MAILABLE = frozenset({SubscriberStatus.pending, SubscriberStatus.active})
# Statuses a subscriber only leaves by confirming again themselves (double opt-in).
GONE = frozenset({SubscriberStatus.unsubscribed, SubscriberStatus.bounced, SubscriberStatus.complained})


class SuppressionReason(enum.StrEnum):
    bounce = "bounce"
    complaint = "complaint"
    erased = "erased"
    manual = "manual"
    # Unsubscribed on the platform an imported list came from (subscribers.presets).
    unsubscribed = "unsubscribed"


class EventKind(enum.StrEnum):
    subscribe = "subscribe"
    confirm = "confirm"
    unsubscribe = "unsubscribe"
    bounce = "bounce"
    complaint = "complaint"
    open = "open"
    click = "click"


class Subscriber(Base):
    __tablename__ = "subscriber"
    __table_args__ = (enum_check("status", SubscriberStatus),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    # lower(email): the key that makes addresses unique case-insensitively. Compared byte
    # for byte (COLLATE "C" on PostgreSQL, migration 0018): it only ever needs equality.
    email_key: Mapped[str] = mapped_column(EmailKey, unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default=SubscriberStatus.pending)
    attributes: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    tags: Mapped[list[str]] = mapped_column(Json, default=list, server_default=text("'[]'"))
    # The import that brought them in: its ``import_batch`` row is the consent evidence
    # (file, time, source). No foreign key: PostgreSQL would check it per inserted row of
    # a million-row import, and batches are never deleted.
    import_batch_id: Mapped[int | None] = mapped_column(BigInteger)


# Only the rare statuses are indexed (migration 0018): nearly everyone is active, where
# such an index is never used, and an imported active subscriber then costs no entry.
_RARE = Subscriber.status != SubscriberStatus.active
Index("ix_subscriber_status", Subscriber.status, postgresql_where=_RARE, sqlite_where=_RARE)


class MailingList(Base):
    __tablename__ = "mailing_list"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Off unless the editor turns them on, each on its own (migration 0012).
    track_clicks: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    track_opens: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Membership(Base):
    __tablename__ = "membership"
    __table_args__ = (Index("ix_membership_subscriber", "subscriber_id"),)

    # (list_id, subscriber_id) is the primary key: freezing an audience walks one list's
    # members in subscriber order straight off this index. No foreign keys (migration
    # 0013): PostgreSQL checked both per inserted row, ~45% of a million-row import's
    # merge; neither lists nor subscribers are ever deleted by the product
    # (tests/test_architecture.py keeps it so; erasure deletes the memberships itself).
    list_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Segment(Base):
    """A named segment of a list: an expression of ``subscribers.segments``, checked when
    saved and read again whenever it is used (migration 0014)."""

    __tablename__ = "segment"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # No foreign key, like ``membership``: lists are never deleted by the product.
    list_id: Mapped[int] = mapped_column(BigId)
    expression: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Suppression(Base):
    """An address that must never be mailed or re-imported. Only a hash is kept, so an
    erased subscriber leaves no address behind."""

    __tablename__ = "suppression"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Event(Base):
    """Something that happened to a subscriber, with where it came from (one-click,
    page, mailto, admin, smtp, dsn...).

    ``campaign_id`` and ``delivery_id`` point at the sending side's tables; their foreign
    keys are declared by ``mailer.models``, which owns those tables, so this package
    does not depend on the sending side (the database has them from migration 0001)."""

    __tablename__ = "event"
    __table_args__ = (
        enum_check("kind", EventKind),
        Index("ix_event_campaign_kind", "campaign_id", "kind"),
        Index("ix_event_subscriber", "subscriber_id"),
        Index("ix_event_kind_time", "kind", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str] = mapped_column(String(32), default="")
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscriber.id", ondelete="SET NULL"))
    campaign_id: Mapped[int | None] = mapped_column(BigId)
    delivery_id: Mapped[int | None] = mapped_column(BigId)
    detail: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, server_default=func.now())


class ImportBatch(Base):
    """One import of a file: the consent evidence for everyone it brought in (one row per
    file, not one event per subscriber), and its counts. ``finished_at`` stays empty if
    the import stopped part way; the counts are those of the chunks it committed."""

    __tablename__ = "import_batch"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    list_name: Mapped[str] = mapped_column(String(100))
    file_name: Mapped[str] = mapped_column(String(255), default="")
    # The file's format (csv, mailchimp, substack, listmonk) and who ran it (cli, admin-import...).
    source: Mapped[str] = mapped_column(String(32))
    origin: Mapped[str] = mapped_column(String(32))
    # The status the file's people were given: pending, or active when the operator vouched.
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    imported: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    skipped_suppressed: Mapped[int] = mapped_column(Integer, default=0)
    skipped_existing_status: Mapped[int] = mapped_column(Integer, default=0)
    suppressions_added: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)


class SignupLimit(Base):
    """A fixed-window counter for the public signup form and the sign-in page, per hashed
    client address or hashed target (see ``subscribers.signup``). Migration 0002."""

    __tablename__ = "signup_limit"
    __table_args__ = (Index("ix_signup_limit_window_start", "window_start"),)

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger)
    hits: Mapped[int] = mapped_column(Integer, default=0)
