"""``/api/admin/schedules``: each list's weekly slot and its coming weeks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from mailer.operations import schedules as ops
from mailer.web.auth import ApiRoute
from mailer.web.deps import SessionDep

router = APIRouter(route_class=ApiRoute)
Weeks = Annotated[int, Query(ge=1, le=52)]


class WeeklySlotIn(BaseModel):
    weekday: str | int = Field(description="monday … sunday (or 0-6, Monday = 0).")
    time: str = Field(description="Local time, HH:MM.")
    timezone: str = Field(description="IANA time zone, e.g. Asia/Shanghai.")
    active: bool = True


@router.get("/schedules")
def list_schedules(session: SessionDep, weeks: Weeks = 6) -> list[dict]:
    return ops.all_views(session, weeks=weeks)


@router.get("/schedules/{list_name}")
def get_schedule(list_name: str, session: SessionDep, weeks: Weeks = 6) -> dict:
    return ops.schedule_view(session, list_name=list_name, weeks=weeks)


@router.put("/schedules/{list_name}")
def set_schedule(list_name: str, body: WeeklySlotIn, session: SessionDep) -> dict:
    view = ops.set_weekly_slot(session, list_name=list_name, weekday=body.weekday, time=body.time, tz=body.timezone,
                               active=body.active)
    session.commit()
    return view
