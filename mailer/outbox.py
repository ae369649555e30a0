"""The outbox of outbound webhooks: an event becomes one ``webhook_delivery`` row per
enabled endpoint that asked for its type, written in the transaction of the change
itself. A change rolled back takes its rows with it (nothing is sent for it); a
committed one has them (nothing is lost, whatever happens to the broker). After a
session commits, each row's delivery task is queued on the webhooks queue; a row whose
task was lost (or that was written on a bare connection, as the send path does) is
picked up by beat's webhook sweep (``mailer.hookdelivery.sweep``).

Where the events come from, each from the one place it happens:

- subscribed, confirmed, unsubscribed, bounced, complained: the ``event`` row that
  ``subscribers`` (and ``mailer.bounces``) write for every such change. A listener on
  that table adds the deliveries in the same flush, so ``subscribers`` knows nothing of
  webhooks and no code path that records the change can forget them. A bounce at SMTP
  time is written on a bare connection (``mailer.queries.mark_bounced``), which calls
  ``emit_event`` itself.
- campaign started: ``mailer.campaigns.start_campaign``; campaign finished:
  ``mailer.queries.finish_campaign_if_done``.

Imports of a file record no events (one ``import_batch`` row per file instead), and so
send no webhooks.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import event, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, object_session

from mailer import hooks
from mailer.celeryapp import HOOKS_QUEUE, make_celery
from mailer.core.clock import utcnow
from mailer.core.config import get_settings
from mailer.hooks import EventType
from mailer.models import Campaign, Issue, WebhookDelivery, WebhookEndpoint, WebhookStatus
from subscribers.models import Event, MailingList, Subscriber

log = logging.getLogger(__name__)

TASK = "newsletter.deliver_webhook"
_PENDING = "newsletter.webhooks_to_queue"  # Session.info key: rows to queue after the commit


def _endpoints_for(bind: Session | Connection, event_type: EventType) -> list[int]:
    # A handful of endpoints at most: their event types are compared here rather than in
    # SQL, where JSON containment is spelled differently on each database.
    rows = bind.execute(select(WebhookEndpoint.id, WebhookEndpoint.event_types)
                        .where(WebhookEndpoint.enabled.is_(True)).order_by(WebhookEndpoint.id)).all()
    return [row.id for row in rows if str(event_type) in (row.event_types or [])]


def emit(bind: Session | Connection, event_type: EventType, data: dict, *, now: datetime | None = None,
         subscriber_id: int | None = None) -> list[int]:
    """Write the deliveries of one event in ``bind``'s transaction; their ids. With a
    ``Session`` they are queued once it commits; on a bare connection the sweep does it."""
    endpoints = _endpoints_for(bind, event_type)
    if not endpoints:
        return []
    now = now or utcnow()
    event_id = "evt_" + secrets.token_hex(16)
    body = hooks.payload(event_type, {"event_id": event_id, **data}, at=now).decode()
    ids = [bind.execute(insert(WebhookDelivery).values(
        endpoint_id=endpoint_id, event_id=event_id, message_id=hooks.new_message_id(), event_type=str(event_type),
        subscriber_id=subscriber_id, body=body, status=WebhookStatus.pending, attempts=0, next_attempt_at=now, last_error="",
        created_at=now, updated_at=now,
    ).returning(WebhookDelivery.id)).scalar_one() for endpoint_id in endpoints]
    if isinstance(bind, Session):
        _remember(bind, ids)
    return ids


def _remember(session: Session, ids: Iterable[int]) -> None:
    session.info.setdefault(_PENDING, []).extend(ids)


def queue_after_commit(session: Session, ids: Iterable[int]) -> None:
    """Queue these deliveries' tasks once the session commits (a delivery sent again)."""
    _remember(session, ids)


def subscriber_data(bind: Session | Connection, *, kind: str, subscriber_id: int | None, origin: str,
                    campaign_id: int | None, delivery_id: int | None, detail: dict | None) -> dict:
    """The ``data`` of a subscriber event: who, where from, and the event's details
    (less the signup's client address, which stays with us)."""
    detail = {k: v for k, v in (detail or {}).items() if k != "client"}
    who = None
    if subscriber_id is not None:
        row = bind.execute(select(Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.status)
                           .where(Subscriber.id == subscriber_id)).first()
        who = dict(row._mapping) if row else {"id": subscriber_id}
    list_name = detail.pop("list", None)
    if list_name is None and detail.get("list_id"):
        list_name = bind.execute(select(MailingList.name).where(MailingList.id == detail["list_id"])).scalar()
    return {"subscriber": who, "list": list_name or None, "origin": origin, "campaign_id": campaign_id,
            "delivery_id": delivery_id, "detail": detail}


def emit_event(bind: Session | Connection, *, kind: str, subscriber_id: int | None, origin: str = "",
               campaign_id: int | None = None, delivery_id: int | None = None, detail: dict | None = None,
               now: datetime | None = None) -> list[int]:
    """The webhook of a subscriber ``event`` row (``subscribers.models.EventKind``), if
    its kind has one."""
    event_type = hooks.FROM_EVENT_KIND.get(str(kind))
    if event_type is None or not _endpoints_for(bind, event_type):
        return []
    data = subscriber_data(bind, kind=kind, subscriber_id=subscriber_id, origin=origin, campaign_id=campaign_id,
                           delivery_id=delivery_id, detail=detail)
    return emit(bind, event_type, data, now=now, subscriber_id=subscriber_id)


# The campaign's counters (columns), as the dashboard shows them.
_COUNTERS = (Campaign.total, Campaign.sent, Campaign.failed, Campaign.bounced, Campaign.skipped)


def campaign_data(bind: Session | Connection, *, campaign_id: int) -> dict:
    row = bind.execute(
        select(Campaign.id, Campaign.status, Campaign.segment, Campaign.started_at, Campaign.finished_at,
               *_COUNTERS, Issue.slug, Issue.subject, MailingList.name.label("list"))
        .join(Issue, Issue.id == Campaign.issue_id).join(MailingList, MailingList.id == Campaign.list_id)
        .where(Campaign.id == campaign_id)).one()
    m = row._mapping
    return {"campaign": {"id": m["id"], "status": m["status"], "list": m["list"], "segment": m["segment"] or None,
                         "started_at": m["started_at"], "finished_at": m["finished_at"],
                         "counts": {c.key: m[c.key] for c in _COUNTERS}},
            "issue": {"slug": m["slug"], "subject": m["subject"]}}


def emit_campaign(bind: Session | Connection, event_type: EventType, *, campaign_id: int,
                  now: datetime | None = None) -> list[int]:
    if not _endpoints_for(bind, event_type):
        return []
    return emit(bind, event_type, campaign_data(bind, campaign_id=campaign_id), now=now)


@event.listens_for(Event, "after_insert")
def _event_recorded(_mapper, connection: Connection, target: Event) -> None:
    # Runs inside the flush that inserts the event, on its connection: the deliveries
    # are part of the same transaction.
    ids = emit_event(connection, kind=target.kind, subscriber_id=target.subscriber_id, origin=target.origin or "",
                     campaign_id=target.campaign_id, delivery_id=target.delivery_id, detail=target.detail,
                     now=target.created_at)
    session = object_session(target)
    if ids and session is not None:
        _remember(session, ids)


@event.listens_for(Session, "after_commit")
def _queue_after_commit(session: Session) -> None:
    ids = session.info.pop(_PENDING, None)
    if ids:
        enqueue(ids)


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    # Their rows are gone with the transaction (a savepoint's rollback does not come
    # here: a task for a row that is not there finds nothing to do).
    session.info.pop(_PENDING, None)


@functools.lru_cache(maxsize=4)
def _producer(broker: str, var_dir: str):
    return make_celery(get_settings())


def enqueue(ids: Iterable[int]) -> int:
    """Queue a delivery task per row, now. A broker that does not answer is logged, not
    raised: the change is committed, and the sweep queues the rows once it answers.
    Returns how many were queued."""
    settings = get_settings()
    queued = 0
    try:
        app = _producer(settings.broker, str(settings.var_dir.resolve()))
        for delivery_id in ids:
            app.send_task(TASK, args=[delivery_id], queue=HOOKS_QUEUE, retry=False)
            queued += 1
    except Exception as err:  # noqa: BLE001 - whatever the broker raises, the sweep recovers
        log.warning("webhook deliveries not queued (the sweep will): %s", " ".join(str(err).split()))
    return queued
