"""``/api/admin/webhooks``: outbound webhook endpoints and their delivery log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, field_validator

from mailer import hooks
from mailer.core.db import MAX_ID
from mailer.operations import webhooks as ops
from mailer.web.auth import ApiRoute
from mailer.web.deps import Id, SessionDep

router = APIRouter(route_class=ApiRoute)
EVENTS = ", ".join(t.value for t in hooks.EventType)


class EndpointIn(BaseModel):
    url: str = Field(description="Where to POST the events: an http:// or https:// URL.")
    events: list[str] = Field(description=f"Event types: {EVENTS} (or short names: subscribed, started...; or 'all').")
    description: str = ""
    enabled: bool = True

    # Checked here, so a bad URL or an unknown event type is a 422 naming the field.
    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return hooks.check_url(v)

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        return [str(t) for t in hooks.parse_event_types(v)]


class EndpointPatch(BaseModel):
    enabled: bool


class RotateIn(BaseModel):
    grace_hours: float = Field(ops.DEFAULT_GRACE_HOURS, ge=0, le=720,
                               description="How long the old secret keeps signing next to the new one.")


@router.get("/webhooks")
def list_endpoints(session: SessionDep) -> list[dict]:
    return [ops.describe(e) for e in ops.endpoints(session)]


@router.post("/webhooks", status_code=201)
def add_endpoint(body: EndpointIn, session: SessionDep) -> dict:
    """Register an endpoint. The answer carries its signing secret, shown only here."""
    endpoint = ops.add(session, url=body.url, events=body.events, description=body.description, enabled=body.enabled)
    session.commit()
    return ops.describe(endpoint, with_secret=True)


@router.get("/webhooks/deliveries")
def deliveries(
    session: SessionDep,
    endpoint: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this endpoint's.")] = None,
    status: Annotated[str | None, Query(description="pending, delivered, failed or skipped.")] = None,
    event: Annotated[str | None, Query(description="Only this event type.")] = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Id of the last one of the previous page.")
                      ] = None,
    limit: Annotated[int, Query(ge=1, le=ops.MAX_PAGE)] = 50,
    payload: Annotated[bool, Query(description="Include each payload as sent.")] = False,
) -> dict:
    """The delivery log, newest first: status, attempts, the last answer."""
    return ops.deliveries(session, endpoint_id=endpoint, status=status, event=event, before=before, limit=limit,
                          with_payload=payload)


@router.post("/webhooks/deliveries/{delivery_id}/redeliver")
def redeliver(delivery_id: Id, session: SessionDep) -> dict:
    """Send a failed or skipped delivery again (the same ``webhook-id``, fresh attempts);
    409 for one that is pending or delivered, or whose endpoint is disabled."""
    delivery = ops.redeliver(session, delivery_id=delivery_id)
    url = ops.get(session, delivery.endpoint_id).url
    session.commit()
    return ops.describe_delivery(delivery, url)


@router.get("/webhooks/{endpoint_id}")
def get_endpoint(endpoint_id: Id, session: SessionDep) -> dict:
    return ops.describe(ops.get(session, endpoint_id))


@router.patch("/webhooks/{endpoint_id}")
def edit_endpoint(endpoint_id: Id, body: EndpointPatch, session: SessionDep) -> dict:
    """Turn an endpoint off (what waits for it is skipped) or on again."""
    endpoint = ops.set_enabled(session, endpoint_id=endpoint_id, enabled=body.enabled)
    session.commit()
    return ops.describe(endpoint)


@router.post("/webhooks/{endpoint_id}/rotate-secret")
def rotate_secret(endpoint_id: Id, body: RotateIn, session: SessionDep) -> dict:
    """A new secret (in the answer, only here); the old one signs too for ``grace_hours``."""
    endpoint = ops.rotate_secret(session, endpoint_id=endpoint_id, grace_hours=body.grace_hours)
    session.commit()
    return ops.describe(endpoint, with_secret=True)


@router.delete("/webhooks/{endpoint_id}", status_code=204)
def remove_endpoint(endpoint_id: Id, session: SessionDep) -> None:
    ops.remove(session, endpoint_id=endpoint_id)
    session.commit()
