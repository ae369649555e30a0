"""The admin API under ``/api/admin``: issues, campaigns, schedules, subscribers.

Every route needs an API token (``auth.api_token``). Errors are one line in ``detail``:
400 bad input, 404 unknown thing, 409 a state that forbids it, 422 a malformed body.
A write commits once, at the end, after everything was checked; a refused request
changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import campaigns, schedules
from mailer.db import engine_for
from mailer.models import Issue, MailingList
from mailer.render import preview_html, preview_text
from mailer.web import admin_service as ops
from mailer.web.auth import ApiRoute, api_token
from mailer.web.deps import SessionDep, SettingsDep

router = APIRouter(prefix="/api/admin", tags=["admin"], route_class=ApiRoute, dependencies=[Depends(api_token)],
                   responses={401: {"description": "No or an invalid API token"}})


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- bodies -------------------------------------------------------------------------------

class IssueSourceIn(BaseModel):
    source: str = Field(description="Markdown with YAML front matter ('---', 'subject: ...', '---', content).")


class TestSendIn(BaseModel):
    to: list[str] = Field(min_length=1, description="Addresses to send the test to.")


class ScheduleIn(BaseModel):
    issue: int | str = Field(description="Issue id or slug.")
    list: str = Field(description="Name of the list.")
    at: str | None = Field(None, description="ISO 8601 time; without an offset it is read in 'tz'.")
    tz: str | None = Field(None, description="IANA time zone for 'at', e.g. Asia/Shanghai.")
    next_slot: bool = Field(False, description="Queue to the list's next free weekly slot.")
    now: bool = Field(False, description="Start sending now.")


class RescheduleIn(BaseModel):
    at: str
    tz: str | None = None


class WeeklySlotIn(BaseModel):
    weekday: str | int = Field(description="monday … sunday (or 0-6, Monday = 0).")
    time: str = Field(description="Local time, HH:MM.")
    timezone: str = Field(description="IANA time zone, e.g. Asia/Shanghai.")
    active: bool = True


class SubscriberIn(BaseModel):
    email: str
    name: str = ""
    list: str | None = None
    status: str = Field("pending", description="'pending' (double opt-in) or 'active' (consent recorded elsewhere).")


class SubscriberPatch(BaseModel):
    name: str | None = None
    status: str | None = Field(None, description="'active' (confirm a pending one) or 'unsubscribed'.")


# --- issues -------------------------------------------------------------------------------

def issue_dict(session: Session, issue: Issue, *, source: bool = False, warnings: tuple[str, ...] = ()) -> dict:
    lists = dict(session.execute(select(MailingList.id, MailingList.name)).all())
    out = {
        "id": issue.id, "slug": issue.slug, "subject": issue.subject, "preheader": issue.preheader,
        "status": issue.status, "issue_date": issue.issue_date,
        "created_at": _iso(issue.created_at), "rendered_at": _iso(issue.rendered_at),
        "campaigns": [{"id": c.id, "list": lists.get(c.list_id), "status": c.status,
                       "scheduled_at": _iso(c.scheduled_at)} for c in ops.issue_campaigns(session, issue.id)],
    }
    if source:
        out["source"] = issue.source
    if warnings:
        out["warnings"] = list(warnings)
    return out


def _iso(value: datetime | None) -> str | None:
    return ops.aware(value).isoformat() if value else None


@router.get("/issues")
def list_issues(session: SessionDep) -> list[dict]:
    return [issue_dict(session, i) for i in session.scalars(select(Issue).order_by(Issue.id.desc()))]


@router.post("/issues", status_code=201)
def create_issue(body: IssueSourceIn, session: SessionDep, settings: SettingsDep) -> dict:
    issue = ops.create_issue(session, source=body.source, settings=settings)
    session.commit()
    return issue_dict(session, issue, source=True)


@router.get("/issues/{issue_id}")
def get_issue(issue_id: int, session: SessionDep) -> dict:
    return issue_dict(session, ops.get_issue(session, issue_id), source=True)


@router.put("/issues/{issue_id}")
def update_issue(issue_id: int, body: IssueSourceIn, session: SessionDep, settings: SettingsDep) -> dict:
    issue = ops.update_issue(session, issue_id=issue_id, source=body.source, settings=settings)
    session.commit()
    return issue_dict(session, issue, source=True)


@router.delete("/issues/{issue_id}", status_code=204)
def delete_issue(issue_id: int, session: SessionDep) -> None:
    ops.delete_issue(session, issue_id=issue_id)
    session.commit()


@router.post("/issues/preview")
def preview_issue(body: IssueSourceIn, settings: SettingsDep) -> dict:
    """Render Markdown without saving it: the HTML and text with sample values."""
    rendered = ops.render_source(body.source, settings)
    return {"slug": rendered.slug, "subject": rendered.subject, "preheader": rendered.preheader,
            "html": preview_html(rendered), "text": preview_text(rendered), "warnings": list(rendered.warnings)}


@router.post("/issues/{issue_id}/test")
def test_issue(issue_id: int, body: TestSendIn, session: SessionDep, settings: SettingsDep) -> list[dict]:
    """Send the stored issue, marked [TEST], to a few addresses; outside any campaign."""
    from mailer.testsend import send_test

    rendered = ops.render_source(ops.get_issue(session, issue_id).source, settings)
    session.rollback()  # hold no database lock (SQLite: the write lock) while talking SMTP
    return [{"address": r.address, "code": r.code, "reply": r.reply, "ok": r.ok}
            for r in send_test(rendered, body.to, settings)]


# --- campaigns ----------------------------------------------------------------------------

@router.get("/campaigns")
def list_campaigns(session: SessionDep) -> list[dict]:
    return [ops.campaign_stats(session, c.id) for c in campaigns.list_campaigns(session)]


@router.post("/campaigns", status_code=201)
def schedule_campaign(body: ScheduleIn, session: SessionDep, settings: SettingsDep) -> dict:
    """Send an issue to a list now, at a time, or at the list's next free weekly slot."""
    now = utcnow()
    when = ops.parse_when(at=body.at, tz=body.tz, next_slot=body.next_slot, now_flag=body.now, now=now)
    done = ops.schedule_issue(session, issue_ref=body.issue, list_name=body.list, when=when, settings=settings, now=now)
    session.commit()
    ops.enqueue_started(done.campaign_id, done.started, settings)
    return ops.campaign_stats(session, done.campaign_id)


@router.get("/campaigns/{campaign_id}")
def campaign_stats(campaign_id: int, session: SessionDep) -> dict:
    """Progress and outcome; every number is counted from delivery and event records."""
    return ops.campaign_stats(session, campaign_id)


@router.post("/campaigns/{campaign_id}/reschedule")
def reschedule_campaign(campaign_id: int, body: RescheduleIn, session: SessionDep) -> dict:
    now = utcnow()
    when = ops.parse_when(at=body.at, tz=body.tz, next_slot=False, now_flag=False, now=now)
    schedules.reschedule(session, campaign_id=campaign_id, at=when, now=now)
    session.commit()
    return ops.campaign_stats(session, campaign_id)


def _action(action: str):
    def act(campaign_id: int, session: SessionDep, settings: SettingsDep) -> dict:
        changed = ops.change_campaign(session, campaign_id=campaign_id, action=action)
        session.commit()
        if action == "resume" or (action == "retry" and changed):
            from mailer.dispatch import enqueue_campaign

            enqueue_campaign(campaign_id, max(changed, 1), settings)  # idle extra tasks just end
        stats = ops.campaign_stats(session, campaign_id)
        if action == "retry":
            stats["requeued"] = changed
        return stats

    act.__name__ = f"{action}_campaign"
    act.__doc__ = {"pause": "Stop sending at the next message.", "resume": "Send the deliveries not yet sent.",
                   "cancel": "Stop for good; unsent deliveries end as skipped.",
                   "retry": "Queue the failed deliveries again."}[action]
    return act


for _name in ("pause", "resume", "cancel", "retry"):
    router.post(f"/campaigns/{{campaign_id}}/{_name}", name=f"{_name}_campaign")(_action(_name))


# --- schedules ----------------------------------------------------------------------------

@router.get("/schedules")
def list_schedules(session: SessionDep, weeks: Annotated[int, Query(ge=1, le=52)] = 6) -> list[dict]:
    now = utcnow()
    return [ops.schedule_view(session, m, now=now, weeks=weeks) for m in ops.all_lists(session)]


@router.get("/schedules/{list_name}")
def get_schedule(list_name: str, session: SessionDep, weeks: Annotated[int, Query(ge=1, le=52)] = 6) -> dict:
    return ops.schedule_view(session, campaigns.find_list(session, list_name), now=utcnow(), weeks=weeks)


@router.put("/schedules/{list_name}")
def set_schedule(list_name: str, body: WeeklySlotIn, session: SessionDep) -> dict:
    mlist = campaigns.find_list(session, list_name)
    schedules.set_schedule(session, list_id=mlist.id, weekday=body.weekday, local_time=body.time, tz=body.timezone,
                           active=body.active, now=utcnow())
    session.commit()
    return ops.schedule_view(session, mlist, now=utcnow())


# --- subscribers --------------------------------------------------------------------------

@router.get("/subscribers")
def search_subscribers(
    session: SessionDep,
    q: str = "",
    status: str | None = None,
    list: Annotated[str | None, Query(description="Only members of this list.")] = None,
    after: Annotated[int, Query(ge=0, description="Id of the last subscriber of the previous page.")] = 0,
    limit: Annotated[int, Query(ge=1, le=ops.MAX_PAGE)] = 50,
) -> dict:
    return ops.search_subscribers(session, q=q, status=status, list_name=list, after=after, limit=limit)


@router.post("/subscribers", status_code=201)
def add_subscriber(body: SubscriberIn, session: SessionDep) -> dict:
    from subscribers import service

    sub = service.add_subscriber(session, email=body.email, name=body.name, list_name=body.list, status=body.status,
                                 origin="admin")
    session.commit()
    return ops.subscriber_dict(sub)


@router.get("/subscribers/export")
def export_subscribers(session: SessionDep, settings: SettingsDep,
                       list: Annotated[str | None, Query(description="Only members of this list.")] = None
                       ) -> StreamingResponse:
    """CSV of subscribers, streamed (flat memory for a million rows)."""
    if list is not None:
        campaigns.find_list(session, list)  # 404 now, not half-way through a download
    session.rollback()  # the export reads in its own transaction
    name = f"subscribers-{list or 'all'}.csv".replace('"', "")
    return StreamingResponse(ops.export_chunks(engine_for(settings.database), list_name=list),
                             media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.post("/subscribers/import")
def import_subscribers(
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="CSV with an 'email' column; 'name' and others are optional.")],
    list: Annotated[str, Form(description="List to add everyone to (created if needed).")],
    confirmed: Annotated[bool, Form(description="Import as active: you hold their consent.")] = False,
) -> dict:
    """Streams the file in chunks of 1000 rows (each chunk its own transaction, so a
    re-run is harmless); bad rows are reported by line and the rest import. A file
    without a usable header is refused before anything is written."""
    from subscribers.csvio import import_csv

    report = import_csv(engine_for(settings.database), file.file, list_name=list, confirmed=confirmed,
                        origin="admin-import")
    return {"imported": report.imported, "updated": report.updated,
            "skipped_suppressed": report.skipped_suppressed,
            "skipped_existing_status": report.skipped_existing_status,
            "error_count": report.error_count,
            "errors": [{"line": line, "reason": reason} for line, reason in report.errors[:1000]]}


@router.patch("/subscribers/{subscriber_id}")
def edit_subscriber(subscriber_id: int, body: SubscriberPatch, session: SessionDep) -> dict:
    sub = ops.edit_subscriber(session, subscriber_id=subscriber_id, name=body.name, status=body.status)
    session.commit()
    return ops.subscriber_dict(sub)


@router.get("/subscribers/{subscriber_id}")
def get_subscriber(subscriber_id: int, session: SessionDep) -> dict:
    from subscribers import service

    return ops.subscriber_dict(service.get_subscriber(session, subscriber_id))
