"""A list's weekly slot, and what goes out in the coming weeks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import campaigns, dispatch, schedules
from mailer.core.clock import utcnow
from mailer.core.config import Settings, get_settings
from mailer.core.errors import InvalidInput
from mailer.models import Campaign, CampaignStatus, Issue
from mailer.operations import preflight
from subscribers.models import MailingList


def set_weekly_slot(session: Session, *, list_name: str, weekday: str | int, time: str, tz: str,
                    active: bool = True, now: datetime | None = None) -> dict:
    """Set a list's weekly slot (day, local time, IANA zone): every part is checked
    before anything is stored. Returns the schedule view."""
    mlist = campaigns.find_list(session, (list_name or "").strip())
    schedules.set_schedule(session, list_id=mlist.id, weekday=weekday, local_time=time, tz=(tz or "").strip(),
                           active=active, now=now or utcnow())
    return schedule_view(session, list_name=mlist.name, now=now)


def schedule_view(session: Session, *, list_name: str, now: datetime | None = None, weeks: int = 6,
                  require: bool = False) -> dict:
    """A list's schedule, its coming slots (each with its campaign, if any) and the
    one-off campaigns scheduled outside the slots. ``require``: a list without a weekly
    schedule is refused instead of shown empty."""
    now = now or utcnow()
    mlist = campaigns.find_list(session, (list_name or "").strip())
    sch = schedules.schedule_for(session, mlist.id)
    if sch is None and require:
        raise InvalidInput(f"list {mlist.name!r} has no weekly schedule; set one with: newsletter schedule set")
    slots = schedules.upcoming(session, list_id=mlist.id, now=now, weeks=weeks) if sch else []
    slot_times = {s.slot_at for s in slots}
    return {
        "list": mlist.name,
        "id": mlist.id,
        "schedule": None if sch is None else {
            "weekday": schedules.WEEKDAYS[sch.weekday], "local_time": sch.local_time, "timezone": sch.timezone,
            "active": sch.active,
        },
        "upcoming": [
            {"slot_at": s.slot_at.isoformat(),
             "local": s.slot_at.astimezone(schedules.zone(sch.timezone)).strftime("%a %Y-%m-%d %H:%M %Z"),
             "campaign_id": s.campaign_id, "issue": s.issue, "status": s.status}
            for s in slots
        ],
        "one_off": [
            {"campaign_id": c.id, "issue": slug, "status": c.status, "scheduled_at": c.scheduled_at.isoformat()}
            for c, slug in session.execute(
                select(Campaign, Issue.slug).join(Issue, Issue.id == Campaign.issue_id)
                .where(Campaign.list_id == mlist.id, Campaign.status == CampaignStatus.scheduled,
                       Campaign.scheduled_at >= now)
                .order_by(Campaign.scheduled_at)
            ).all()
            if c.scheduled_at not in slot_times
        ],
    }


def all_views(session: Session, *, now: datetime | None = None, weeks: int = 6) -> list[dict]:
    return [schedule_view(session, list_name=m.name, now=now, weeks=weeks) for m in all_lists(session)]


def all_lists(session: Session) -> list[MailingList]:
    return list(session.scalars(select(MailingList).order_by(MailingList.name)))


def dispatch_due(settings: Settings | None = None, *, now: datetime | None = None) -> schedules.DispatchReport:
    """One run of the dispatcher (beat every minute, or ``newsletter dispatch``), with
    pre-flight run again on each campaign whose time has come: a campaign scheduled days
    ago whose issue or list changed since is held with the checks that now fail, unless
    the editor overrode pre-flight when scheduling it."""
    settings = settings or get_settings()
    return dispatch.dispatch_due(
        settings, now=now,
        preflight=lambda session, cid: preflight.recheck(session, campaign_id=cid, settings=settings))
