"""``/admin/webhooks``: the outbound webhook endpoints and their delivery log; adding,
turning off or on, rotating the secret of and removing an endpoint; sending a failed
delivery again."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from mailer import hooks
from mailer.core.config import Settings
from mailer.core.errors import InvalidInput
from mailer.operations import webhooks as ops
from mailer.web.auth import CheckedFormDep, PageRoute, SignedIn, SignedInDep
from mailer.web.dashboard.pages import render, see_other
from mailer.web.deps import Id, SessionDep, SettingsDep, status_of

router = APIRouter(route_class=PageRoute)


def webhooks_page(request: Request, settings: Settings, session: Session, who: SignedIn, *, status: int = 200,
                  error: str | None = None, created: dict | None = None) -> HTMLResponse:
    return render(request, settings, "webhooks.html", who=who, section="webhooks", title="Webhooks",
                  endpoints=[ops.describe(e) for e in ops.endpoints(session)],
                  log=ops.deliveries(session, limit=100)["items"], counts=ops.counts(session),
                  event_types=[t.value for t in hooks.EventType], created=created, status=status, error=error)


@router.get("/webhooks", response_class=HTMLResponse)
def webhooks_overview(request: Request, who: SignedInDep, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    return webhooks_page(request, settings, session, who)


@router.post("/webhooks", response_class=HTMLResponse)
def add_endpoint(request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
                 settings: SettingsDep) -> HTMLResponse:
    try:
        endpoint = ops.add(session, url=str(form.get("url") or ""), events=[str(v) for v in form.getlist("events")],
                           description=str(form.get("description") or ""))
        shown = ops.describe(endpoint, with_secret=True)
        session.commit()
    except InvalidInput as err:
        session.rollback()
        return webhooks_page(request, settings, session, who, status=status_of(err), error=str(err))
    # The secret is shown on this page once, never in a URL: no redirect here.
    return webhooks_page(request, settings, session, who, status=201, created=shown)


@router.post("/webhooks/{endpoint_id}/enabled", response_class=HTMLResponse)
def toggle_endpoint(endpoint_id: Id, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
                    settings: SettingsDep):
    try:
        ops.set_enabled(session, endpoint_id=endpoint_id, enabled=form.get("enabled") == "true")
        session.commit()
    except InvalidInput as err:
        session.rollback()
        return webhooks_page(request, settings, session, who, status=status_of(err), error=str(err))
    return see_other("/admin/webhooks?done=endpoint")


@router.post("/webhooks/{endpoint_id}/rotate-secret", response_class=HTMLResponse)
def rotate_secret(endpoint_id: Id, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
                  settings: SettingsDep) -> HTMLResponse:
    try:
        shown = ops.describe(ops.rotate_secret(session, endpoint_id=endpoint_id), with_secret=True)
        session.commit()
    except InvalidInput as err:
        session.rollback()
        return webhooks_page(request, settings, session, who, status=status_of(err), error=str(err))
    return webhooks_page(request, settings, session, who, created=shown)  # the new secret, once


@router.post("/webhooks/{endpoint_id}/remove", response_class=HTMLResponse)
def remove_endpoint(endpoint_id: Id, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
                    settings: SettingsDep):
    try:
        ops.remove(session, endpoint_id=endpoint_id)
        session.commit()
    except InvalidInput as err:
        session.rollback()
        return webhooks_page(request, settings, session, who, status=status_of(err), error=str(err))
    return see_other("/admin/webhooks?done=removed")


@router.post("/webhooks/deliveries/{delivery_id}/redeliver", response_class=HTMLResponse)
def redeliver(delivery_id: Id, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
              settings: SettingsDep):
    try:
        ops.redeliver(session, delivery_id=delivery_id)
        session.commit()
    except InvalidInput as err:
        session.rollback()
        return webhooks_page(request, settings, session, who, status=status_of(err), error=str(err))
    return see_other("/admin/webhooks?done=redelivered")
