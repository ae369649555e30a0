"""``/api/admin/campaigns``: give an issue to a list, follow and change its campaign."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from mailer.core.clock import utcnow
from mailer.core.db import MAX_ID
from mailer.operations import campaigns as ops
from mailer.operations import commit
from mailer.operations import deliveries as delivery_ops
from mailer.operations import report as report_ops
from mailer.operations.preflight import Gate
from mailer.web.auth import ApiRoute
from mailer.web.deps import EngineDep, Id, SessionDep, SettingsDep, csv_response

router = APIRouter(route_class=ApiRoute)


class ScheduleIn(BaseModel):
    issue: int | str = Field(description="Issue id or slug.")
    list: str = Field(description="Name of the list.")
    at: str | None = Field(None, description="ISO 8601 time; without an offset it is read in 'tz'.")
    tz: str | None = Field(None, description="IANA time zone for 'at', e.g. Asia/Shanghai.")
    next_slot: bool = Field(False, description="Queue to the list's next free weekly slot.")
    now: bool = Field(False, description="Start sending now.")
    segment: str | None = Field(None, description='Only this segment of the list: an expression '
                                '(tag:founding AND country = "CN") or the name of a saved segment.')
    override_preflight: bool = Field(False, description="Start (or schedule) even though a pre-flight check failed.")


class PreflightIn(BaseModel):
    issue: int | str = Field(description="Issue id or slug.")
    list: str = Field(description="Name of the list.")


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
                              now=now, segment=body.segment,
                              gate=Gate(body.override_preflight, 'send "override_preflight": true to start anyway'))
    commit(session, done, settings=settings)
    return {**ops.stats(session, done.campaign_id), "preflight": done.preflight.as_dict()}


@router.post("/campaigns/preflight")
def preflight(body: PreflightIn, session: SessionDep, settings: SettingsDep) -> dict:
    """The checks a start runs (size, links, one-click unsubscribe, DKIM, SpamAssassin,
    complaint rate), changing nothing."""
    found = ops.preflight_issue(session, issue_ref=body.issue, list_name=body.list, settings=settings)
    session.rollback()
    return found.as_dict()


@router.get("/campaigns/{campaign_id}")
def campaign_stats(campaign_id: Id, session: SessionDep) -> dict:
    """Progress and outcome; every number is counted from delivery and event records."""
    return ops.stats(session, campaign_id)


@router.get("/campaigns/{campaign_id}/report")
def campaign_report(
    campaign_id: Id,
    session: SessionDep,
    compare: Annotated[int, Query(ge=0, le=report_ops.MAX_COMPARED,
                                  description="How many of the list's last campaigns to compare.")] = report_ops.COMPARED,
) -> dict:
    """The campaign's report: delivered, bounced (hard, soft), complaints, unsubscribes,
    people's opens and clicks with rates, machines apart by reason, clicks per link, the
    first 72 hours by the hour, and the list's last campaigns compared."""
    return report_ops.report(session, campaign_id=campaign_id, compare=compare)


DeliveryStatusQuery = Annotated[str, Query(description="attention (failed, bounced or skipped), failed, bounced, "
                                                      "skipped, queued, repeated or sent.")]
SearchQuery = Annotated[str, Query(max_length=delivery_ops.MAX_SEARCH,
                                   description="Part of the address or of the relay's last reply.")]


@router.get("/campaigns/{campaign_id}/deliveries")
def campaign_deliveries(
    campaign_id: Id,
    session: SessionDep,
    status: DeliveryStatusQuery = delivery_ops.DEFAULT_FILTER,
    q: SearchQuery = "",
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="Id of the last delivery of the previous page.")] = 0,
    limit: Annotated[int, Query(ge=1, le=delivery_ops.MAX_PAGE)] = 50,
) -> dict:
    """Who got it and who did not: one page of the campaign's deliveries by status, with
    address, attempts, the relay's last reply and its time."""
    return delivery_ops.list_deliveries(session, campaign_id=campaign_id, status=status, q=q, after=after,
                                        limit=limit)


@router.get("/campaigns/{campaign_id}/deliveries.csv")
def export_campaign_deliveries(campaign_id: Id, engine: EngineDep,
                               status: DeliveryStatusQuery = delivery_ops.DEFAULT_FILTER,
                               q: SearchQuery = "") -> StreamingResponse:
    """The same deliveries, every page, as CSV (streamed)."""
    return csv_response(delivery_ops.export_chunks(engine, campaign_id=campaign_id, status=status, q=q),
                        delivery_ops.csv_filename(campaign_id, status))


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
