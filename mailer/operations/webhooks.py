"""Outbound webhook endpoints: register one for some event types, list them, turn one
off or on, rotate its secret, remove it; the log of what was sent to them, and sending
a failed one again; the backlog that status and metrics show. The pure part (event types, signatures) is ``mailer.hooks``; the outbox that writes the
deliveries is ``mailer.outbox``; posting them is ``mailer.hookdelivery``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from mailer import hooks, outbox
from mailer.core.clock import as_utc, utcnow
from mailer.core.errors import ConflictError, InvalidInput, NotFound
from mailer.models import WebhookDelivery, WebhookEndpoint, WebhookStatus

MAX_PAGE = 200
DEFAULT_GRACE_HOURS = 24.0


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def describe(e: WebhookEndpoint, *, now: datetime | None = None, with_secret: bool = False) -> dict:
    """An endpoint as every adapter shows it. The secret only right after it was made
    (``with_secret``): it is shown once, like an API token."""
    now = now or utcnow()
    rotating = bool(e.previous_secret and e.previous_secret_until and e.previous_secret_until > now)
    out = {"id": e.id, "url": e.url, "events": list(e.event_types or []), "description": e.description,
           "enabled": e.enabled, "created_at": _iso(e.created_at),
           "previous_secret_valid_until": _iso(e.previous_secret_until) if rotating else None}
    if with_secret:
        out["secret"] = e.secret
    return out


def get(session: Session, endpoint_id: int) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return endpoint


def add(session: Session, *, url: str, events: Iterable[str], description: str = "",
        enabled: bool = True) -> WebhookEndpoint:
    """Register an endpoint for the event types named (``mailer.hooks.parse_event_types``),
    with a new secret. A non-http(s) URL or an unknown event type is ``InvalidInput``."""
    url = hooks.check_url(url)
    types = hooks.parse_event_types(events)
    description = " ".join((description or "").split())
    if len(description) > 200:
        raise InvalidInput("a description is at most 200 characters")
    now = utcnow()
    endpoint = WebhookEndpoint(url=url, event_types=[str(t) for t in types], description=description,
                               enabled=enabled, secret=hooks.new_secret(), created_at=now, updated_at=now)
    session.add(endpoint)
    session.flush()
    return endpoint


def endpoints(session: Session) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


def set_enabled(session: Session, *, endpoint_id: int, enabled: bool) -> WebhookEndpoint:
    """Turn an endpoint off (it gets no new events, and what was waiting for it is
    skipped) or on again (from the next event on)."""
    endpoint = get(session, endpoint_id)
    endpoint.enabled = enabled
    endpoint.updated_at = utcnow()
    session.flush()
    return endpoint


def remove(session: Session, *, endpoint_id: int) -> None:
    """Remove an endpoint and its delivery log."""
    get(session, endpoint_id)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id))
    session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))


def rotate_secret(session: Session, *, endpoint_id: int, grace_hours: float = DEFAULT_GRACE_HOURS,
                  now: datetime | None = None) -> WebhookEndpoint:
    """A new secret for the endpoint; the old one keeps signing next to it for
    ``grace_hours`` (0: at once no more), so the receiver can switch without missing a
    message. A rotation during a grace period drops the oldest secret."""
    if not 0 <= grace_hours <= 24 * 30:
        raise InvalidInput("the grace period is between 0 and 720 hours")
    now = now or utcnow()
    endpoint = get(session, endpoint_id)
    endpoint.previous_secret = endpoint.secret if grace_hours else None
    endpoint.previous_secret_until = now + timedelta(hours=grace_hours) if grace_hours else None
    endpoint.secret = hooks.new_secret()
    endpoint.updated_at = now
    session.flush()
    return endpoint


def redeliver(session: Session, *, delivery_id: int, now: datetime | None = None) -> WebhookDelivery:
    """Send a failed or skipped delivery again, as it was (the same ``webhook-id`` and
    body, so a receiver that did get it can tell), with a fresh set of attempts; queued
    after the commit. Its endpoint must be enabled."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise NotFound(f"no webhook delivery {delivery_id}")
    if delivery.status not in (WebhookStatus.failed, WebhookStatus.skipped):
        raise ConflictError(f"webhook delivery {delivery_id} is {delivery.status}; only a failed or skipped one "
                            "is sent again")
    if not get(session, delivery.endpoint_id).enabled:
        raise ConflictError(f"endpoint {delivery.endpoint_id} is disabled; enable it first")
    now = now or utcnow()
    delivery.status, delivery.attempts, delivery.next_attempt_at = WebhookStatus.pending, 0, now
    delivery.lease_until, delivery.updated_at = None, now
    session.flush()
    outbox.queue_after_commit(session, [delivery.id])
    return delivery


def describe_delivery(d: WebhookDelivery, url: str) -> dict:
    return {"id": d.id, "endpoint_id": d.endpoint_id, "url": url, "event_id": d.event_id, "webhook_id": d.message_id,
            "event": d.event_type, "status": d.status, "attempts": d.attempts, "last_code": d.last_code,
            "last_error": d.last_error, "created_at": _iso(d.created_at), "updated_at": _iso(d.updated_at),
            "next_attempt_at": _iso(d.next_attempt_at) if d.status == WebhookStatus.pending else None,
            "delivered_at": _iso(d.delivered_at)}


def deliveries(session: Session, *, endpoint_id: int | None = None, status: str | None = None,
               event: str | None = None, before: int | None = None, limit: int = 50,
               with_payload: bool = False) -> dict:
    """The delivery log, newest first: ``items`` and ``next_before`` (the id to pass as
    ``before`` for the next page, None at the end)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit is between 1 and {MAX_PAGE}")
    query = select(WebhookDelivery, WebhookEndpoint.url).join(
        WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
    if endpoint_id is not None:
        get(session, endpoint_id)
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    if status:
        try:
            query = query.where(WebhookDelivery.status == WebhookStatus(status))
        except ValueError:
            raise InvalidInput(f"unknown status {status!r}; one of: {', '.join(WebhookStatus)}") from None
    if event:
        query = query.where(WebhookDelivery.event_type == str(hooks.parse_event_types([event])[0]))
    if before is not None:
        query = query.where(WebhookDelivery.id < before)
    rows = session.execute(query.order_by(WebhookDelivery.id.desc()).limit(limit + 1)).all()
    items = []
    for d, url in rows[:limit]:
        item = describe_delivery(d, url)
        if with_payload:
            item["payload"] = d.body
        items.append(item)
    return {"items": items, "next_before": rows[limit - 1][0].id if len(rows) > limit else None}


def counts(session: Session) -> dict[str, int]:
    """Deliveries by status, for the dashboard."""
    rows = session.execute(select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)).all()
    return {str(s): 0 for s in WebhookStatus} | {status: n for status, n in rows}


@dataclass(frozen=True)
class Backlog:
    waiting: int  # not delivered yet (a first attempt or a retry to come)
    oldest_waiting: datetime | None  # when the oldest of them was written
    failed: int  # every attempt failed: given up


def backlog(session: Session) -> Backlog:
    """What ``newsletter status`` and /metrics say of the outbound webhooks: an endpoint
    that is down shows as a growing, ageing backlog long before its deliveries give up."""
    by_status = counts(session)
    oldest = session.scalar(select(func.min(WebhookDelivery.created_at))
                            .where(WebhookDelivery.status == WebhookStatus.pending))
    return Backlog(waiting=by_status[WebhookStatus.pending], failed=by_status[WebhookStatus.failed],
                   oldest_waiting=as_utc(oldest) if oldest else None)
