"""What an operator's tools ask the web app:

- ``/healthz``: the process answers; ``/readyz``: the database, the broker and, when
  configured, the relay answer (``mailer.health``). No token: a load balancer or a
  compose healthcheck asks them, and they say nothing but which service is down.
- ``/metrics``: Prometheus' text format, bearer ``NEWSLETTER_METRICS_TOKEN`` (401
  without it; 404 while no token is set). Every process's counters from the shared
  folder (``mailer.core.metrics``), and, read at scrape time, the campaigns in flight
  from their counter rows and the broker's queue: one query, one Redis call.
- ``RequestMetrics``: every answer counted by route (its template, not the URL, so ids
  do not make new series) and status.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from mailer import health
from mailer.campaigns import campaigns_in_flight
from mailer.core import metrics
from mailer.core.clock import utcnow
from mailer.core.config import Settings
from mailer.core.db import engine_for, transaction
from mailer.core.errors import NotFound
from mailer.models import COUNTED, WebhookStatus
from mailer.operations import webhooks
from mailer.web.deps import SettingsDep

router = APIRouter(include_in_schema=False)
STATES = tuple(str(state) for state in COUNTED)  # the campaign's counter columns


@router.get("/healthz")
def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


@router.get("/readyz")
def readyz(settings: SettingsDep) -> JSONResponse:
    """200 when every service answers; 503 naming each one that does not."""
    found = health.readiness(settings)
    body = {"ready": found.ok, "checks": found.as_dict()}
    if not found.ok:
        body["detail"] = found.summary()
    return JSONResponse(body, status_code=200 if found.ok else 503, headers={"Cache-Control": "no-store"})


@router.get("/metrics")
def metrics_page(settings: SettingsDep, authorization: Annotated[str, Header()] = "") -> Response:
    if not settings.metrics_token:
        raise NotFound("metrics are off: set NEWSLETTER_METRICS_TOKEN")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.metrics_token.encode()):
        raise HTTPException(401, "a metrics token is required: Authorization: Bearer <NEWSLETTER_METRICS_TOKEN>",
                            headers={"WWW-Authenticate": "Bearer"})
    body, content_type = metrics.exposition(_InFlight(settings))
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


class _InFlight:
    """Scrape-time values: campaigns in flight, deliveries still to go, the broker's
    queue. A service that does not answer shows as ``newsletter_up{service}`` 0 and the
    rest of the scrape still comes."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def collect(self):
        up = []
        try:
            with transaction(engine_for(self.settings.database)) as s:
                rows = [(c.id, c.status, c.total, *(getattr(c, state) for state in STATES))
                        for c in campaigns_in_flight(s)]
                hooks = webhooks.backlog(s)
        except SQLAlchemyError:
            up.append((["database"], 0))
        else:
            up.append((["database"], 1))
            yield from self._campaigns(rows)
            yield from self._webhooks(hooks)
        try:
            queued = health.broker_queue_length(self.settings)
        except Exception:  # noqa: BLE001 - whatever the broker's failure, it is down for the scrape
            up.append((["broker"], 0))
        else:
            up.append((["broker"], 1))
            yield metrics.gauge_family("newsletter_broker_queue_length", "Tasks waiting on the broker's queue", [],
                                       [([], queued)])
        yield metrics.gauge_family("newsletter_up", "Whether the scrape could read the service", ["service"], up)

    @staticmethod
    def _webhooks(hooks: webhooks.Backlog):
        yield metrics.gauge_family("newsletter_webhook_deliveries", "Outbound webhook deliveries waiting to go out "
                                   "and given up (every attempt failed)", ["state"],
                                   [(["waiting"], hooks.waiting), ([str(WebhookStatus.failed)], hooks.failed)])
        age = (utcnow() - hooks.oldest_waiting).total_seconds() if hooks.oldest_waiting else 0
        yield metrics.gauge_family("newsletter_webhook_oldest_waiting_seconds", "Age of the oldest webhook delivery "
                                   "still waiting (0 when none waits): an endpoint that is down makes it grow", [],
                                   [([], max(age, 0.0))])

    @staticmethod
    def _campaigns(rows):
        deliveries, progress, waiting = [], [], 0
        for cid, status, total, *counts in rows:
            done = sum(counts)
            left = max(total - done, 0)
            waiting += left
            deliveries += [([str(cid), status, state], n) for state, n in zip(STATES, counts)]
            deliveries.append(([str(cid), status, "waiting"], left))
            progress.append(([str(cid), status], done / total if total else 1.0))
        yield metrics.gauge_family("newsletter_campaign_deliveries", "Deliveries of each campaign in flight, by state "
                                   "(the campaign's counters, as of its last finished batch)",
                                   ["campaign", "status", "state"], deliveries)
        yield metrics.gauge_family("newsletter_campaign_progress_ratio", "Share of a campaign in flight that is done",
                                   ["campaign", "status"], progress)
        yield metrics.gauge_family("newsletter_deliveries_waiting", "Deliveries still to send over every campaign in "
                                   "flight", [], [([], waiting)])


class RequestMetrics:
    """Counts every answer by route template, method and status (a pure ASGI middleware)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            metrics.web_request(getattr(route, "path", None) or "unmatched", scope["method"], status)
