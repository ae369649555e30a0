"""``/admin/schedules``: each list's weekly slot and its coming weeks, and its click and
open tracking switches (the operation the CLI and the API use)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from mailer import schedules
from mailer.core.config import Settings
from mailer.core.errors import InvalidInput, NotFound
from mailer.operations import schedules as ops
from mailer.operations import subscribers as subscriber_ops
from mailer.web.auth import CheckedFormDep, PageRoute, SignedIn, SignedInDep
from mailer.web.dashboard.pages import render, see_other, zones
from mailer.web.deps import Id, SessionDep, SettingsDep, status_of
from subscribers.models import MailingList

router = APIRouter(route_class=PageRoute)


def schedules_page(request: Request, settings: Settings, session: Session, who: SignedIn, *, status: int = 200,
                   error: str | None = None) -> HTMLResponse:
    views = ops.all_views(session)
    tracking = {v["list"]: subscriber_ops.set_tracking(session, list_name=v["list"]) for v in views}  # read only
    return render(request, settings, "schedules.html", who=who, section="schedules", title="Schedules",
                  views=views, tracking=tracking, weekdays=schedules.WEEKDAYS, zones=zones(), status=status,
                  error=error)


@router.get("/schedules", response_class=HTMLResponse)
def schedule_overview(request: Request, who: SignedInDep, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    return schedules_page(request, settings, session, who)


@router.post("/schedules/{list_id}", response_class=HTMLResponse)
def set_slot(list_id: Id, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
             settings: SettingsDep):
    try:
        mlist = session.get(MailingList, list_id)
        if mlist is None:
            raise NotFound(f"no list {list_id}")
        ops.set_weekly_slot(session, list_name=mlist.name, weekday=str(form.get("weekday") or ""),
                            time=str(form.get("time") or ""), tz=str(form.get("timezone") or ""))
        session.commit()
    except InvalidInput as err:
        session.rollback()
        return schedules_page(request, settings, session, who, status=status_of(err), error=str(err))
    return see_other("/admin/schedules?done=slot")


@router.post("/schedules/{list_id}/tracking", response_class=HTMLResponse)
def set_tracking(list_id: Id, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
                 settings: SettingsDep):
    """Both switches at once, as the form shows them: an unticked box is off."""
    try:
        mlist = session.get(MailingList, list_id)
        if mlist is None:
            raise NotFound(f"no list {list_id}")
        subscriber_ops.set_tracking(session, list_name=mlist.name, clicks=form.get("clicks") == "on",
                                    opens=form.get("opens") == "on")
        session.commit()
    except InvalidInput as err:
        session.rollback()
        return schedules_page(request, settings, session, who, status=status_of(err), error=str(err))
    return see_other(f"/admin/schedules?done=tracking#list-{mlist.name}")
