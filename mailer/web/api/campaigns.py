"""``/api/admin/campaigns``: give an issue to a list, follow and change its campaign."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from mailer.core.clock import utcnow
from mailer.operations import campaigns as ops
from mailer.operations import commit
from mailer.web.auth import ApiRoute
from mailer.web.deps import Id, SessionDep, SettingsDep

router = APIRouter(route_class=ApiRoute)


class ScheduleIn(BaseModel):
    issue: int | str = Field(description="Issue id or slug.")
    list: str = Field(description="Name of the list.")
    at: str | None = Field(None, description="ISO 8601 time; without an offset it is read in 'tz'.")
    tz: str | None = Field(None, description="IANA time zone for 'at', e.g. Asia/Shanghai.")
    next_slot: bool = Field(False, description="Queue to the list's next free weekly slot.")
    now: bool = Field(False, description="Start sending now.")
    segment: str | None = Field(None, description='Only this segment of the list: tag:founding AND country = "CN".')


class RescheduleIn(BaseModel):
    at: str
    tz: str | None = None


@router.get("/campaigns")
def list_campaigns(session: SessionDep) -> list[dict]:
    return ops.list_stats(session)


@router.post("/campaigns", status_code=201)
def schedule_campaign(body: ScheduleIn, session: SessionDep, settings: SettingsDep) -> dict:
    """Send an issue to a list now, at a time, or at the list's next free weekly slot."""
    now = utcnow()
    when = ops.parse_when(at=body.at, tz=body.tz, next_slot=body.next_slot, now_flag=body.now, now=now)
    done = ops.schedule_issue(session, issue_ref=body.issue, list_name=body.list, when=when, settings=settings,
                              now=now, segment=body.segment)
    commit(session, done, settings=settings)
    return ops.stats(session, done.campaign_id)


@router.get("/campaigns/{campaign_id}")
def campaign_stats(campaign_id: Id, session: SessionDep) -> dict:
    """Progress and outcome; every number is counted from delivery and event records."""
    return ops.stats(session, campaign_id)


@router.post("/campaigns/{campaign_id}/reschedule")
def reschedule_campaign(campaign_id: Id, body: RescheduleIn, session: SessionDep) -> dict:
    ops.reschedule(session, campaign_id=campaign_id, at=body.at, tz=body.tz)
    session.commit()
    return ops.stats(session, campaign_id)


def _action(action: str):
    def act(campaign_id: Id, session: SessionDep, settings: SettingsDep) -> dict:
        done = ops.ACTIONS[action](session, campaign_id=campaign_id)
        commit(session, done, settings=settings)
        stats = ops.stats(session, campaign_id)
        if action == "retry":
            stats["requeued"] = done.requeued
        return stats

    act.__name__ = f"{action}_campaign"
    act.__doc__ = ops.ACTIONS[action].__doc__.splitlines()[0]
    return act


for _name in ops.ACTIONS:
    router.post(f"/campaigns/{{campaign_id}}/{_name}", name=f"{_name}_campaign")(_action(_name))
