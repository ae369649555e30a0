"""Weekly schedules and the dispatcher that starts due campaigns.

A schedule is a local slot (Tuesday 09:00 Asia/Shanghai): each week's instant is worked
out in the zone itself, so it stays 09:00 local across daylight-saving changes. An
issue is queued to the list's next free slot (a campaign with that ``scheduled_at``) or
given an explicit time. The dispatcher (Celery beat, every minute) starts due campaigns
with the guarded UPDATE of ``campaigns.start_campaign`` — a status change in the
database, not a lock in memory — so two beats, a restart, or an overlapping run start
each campaign once; and it records every slot, empty ones included, once (unique
(schedule, slot) row).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mailer import campaigns, queries
from mailer.core.clock import UTC, utcnow
from mailer.core.db import transaction
from mailer.core.errors import ConflictError, InvalidInput
from mailer.models import (
    STARTED,
    Campaign,
    CampaignStatus,
    Issue,
    Schedule,
    SlotOutcome,
)

C = CampaignStatus
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# How far back the dispatcher looks for slots it has not recorded (downtime longer than
# this leaves older slots unrecorded; their campaigns are still found and held).
LOOKBACK = timedelta(weeks=8)


# --- times (pure) ---------------------------------------------------------------------

def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as err:
        raise InvalidInput(f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)") from err


def parse_weekday(value: str | int) -> int:
    if isinstance(value, int) or (str(value).isascii() and str(value).isdigit()):
        day = int(value)
        if 0 <= day <= 6:
            return day
    else:
        matches = [i for i, name in enumerate(WEEKDAYS) if name.startswith(str(value).strip().lower()[:3])]
        if len(str(value).strip()) >= 3 and len(matches) == 1:
            return matches[0]
    raise InvalidInput(f"not a weekday: {value!r} (monday … sunday)")


def parse_clock(value: str) -> time:
    try:
        hh, mm = value.strip().split(":")
        return time(int(hh), int(mm))
    except (ValueError, AttributeError) as err:
        raise InvalidInput(f"not a time of day: {value!r} (use HH:MM)") from err


def exists_locally(local: datetime) -> bool:
    """False for a wall-clock time skipped by a daylight-saving jump (e.g. 02:30 on the
    night clocks go forward): it round-trips through UTC to another time."""
    back = local.astimezone(UTC).astimezone(local.tzinfo)
    return back.replace(tzinfo=None) == local.replace(tzinfo=None)


def local_to_utc(naive: datetime, tz: str) -> datetime:
    """An editor's local time to UTC. A time inside a DST gap does not exist and is
    refused; an ambiguous one (the repeated hour in autumn) is the first occurrence."""
    local = naive.replace(tzinfo=zone(tz), fold=0)
    if not exists_locally(local):
        raise InvalidInput(f"{naive:%Y-%m-%d %H:%M} does not exist in {tz} (clocks jump forward then)")
    return local.astimezone(UTC)


def parse_when(value: str, tz: str | None = None) -> datetime:
    """ISO 8601 with an offset, or a local time read in ``tz`` (UTC when none)."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError) as err:
        raise InvalidInput(f"not a time: {value!r} (use e.g. 2026-12-01T09:00+08:00)") from err
    if parsed.tzinfo is not None:
        if tz:
            zone(tz)
        return parsed.astimezone(UTC)
    return local_to_utc(parsed, tz or "UTC")


def slot_at(day: date, clock: time, tz: str) -> datetime:
    """The UTC instant of a weekly slot on ``day``. A slot that falls in a DST gap that
    day goes out at the same distance after the jump (02:30 becomes 03:30)."""
    local = datetime.combine(day, clock, tzinfo=zone(tz))
    return local.astimezone(UTC)  # zoneinfo maps a gap time forward by the gap's length


def slots(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """The schedule's slot instants in [start, end)."""
    z = zone(schedule.timezone)
    clock = parse_clock(schedule.local_time)
    day = start.astimezone(z).date() - timedelta(days=1)
    day += timedelta(days=(schedule.weekday - day.weekday()) % 7)
    found = []
    while True:
        instant = slot_at(day, clock, schedule.timezone)
        if instant >= end:
            return found
        if instant >= start:
            found.append(instant)
        day += timedelta(days=7)


def next_slots(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    return slots(schedule, after, after + timedelta(weeks=count, days=1))[:count]


# --- schedules and queuing ------------------------------------------------------------

def set_schedule(session: Session, *, list_id: int, weekday: int | str, local_time: str, tz: str,
                 active: bool = True, now: datetime | None = None) -> Schedule:
    """Create or change a list's weekly slot (validated before anything is stored)."""
    day, clock = parse_weekday(weekday), parse_clock(local_time)
    zone(tz)
    found = session.scalar(select(Schedule).where(Schedule.list_id == list_id))
    if found is None:
        found = Schedule(list_id=list_id, weekday=day, local_time=f"{clock:%H:%M}", timezone=tz, active=active,
                         created_at=now or utcnow())
        session.add(found)
    else:
        found.weekday, found.local_time, found.timezone, found.active = day, f"{clock:%H:%M}", tz, active
    session.flush()
    return found


def schedule_for(session: Session, list_id: int) -> Schedule | None:
    return session.scalar(select(Schedule).where(Schedule.list_id == list_id))


def taken_slots(session: Session, list_id: int, after: datetime) -> set[datetime]:
    rows = session.scalars(
        select(Campaign.scheduled_at).where(
            Campaign.list_id == list_id, Campaign.scheduled_at >= after,
            Campaign.status.in_((C.scheduled, *STARTED)))
    )
    return {r for r in rows if r is not None}


def next_free_slot(session: Session, *, list_id: int, now: datetime) -> datetime:
    schedule = schedule_for(session, list_id)
    if schedule is None or not schedule.active:
        raise InvalidInput("this list has no weekly schedule; set one or give an explicit time")
    taken = taken_slots(session, list_id, now)
    for instant in next_slots(schedule, now, 520):
        if instant not in taken:
            return instant
    raise InvalidInput("no free slot in the next ten years")  # pragma: no cover


def schedule_campaign(session: Session, *, issue_id: int, list_id: int, at: datetime | None, now: datetime,
                      segment: str | None = None) -> Campaign:
    """Give an issue to a list at ``at``, or at the list's next free slot when ``at`` is
    None. A time in the past is refused; an already scheduled campaign is moved."""
    when = at or next_free_slot(session, list_id=list_id, now=now)
    if when <= now:
        raise InvalidInput(f"{when.isoformat()} is in the past")
    campaign, created = campaigns.create_campaign(session, issue_id=issue_id, list_id=list_id, scheduled_at=when,
                                                  segment=segment)
    if not created:
        reschedule(session, campaign_id=campaign.id, at=when, now=now)
    return campaign


def reschedule(session: Session, *, campaign_id: int, at: datetime, now: datetime) -> Campaign:
    """Move a draft or scheduled campaign to another time (a held one is scheduled again)."""
    if at <= now:
        raise InvalidInput(f"{at.isoformat()} is in the past")
    campaign = campaigns.get_campaign(session, campaign_id)
    if not queries.transition_campaign(session, campaign_id=campaign_id, from_=campaigns.MOVABLE, to=C.scheduled,
                                       scheduled_at=at, pause_reason=""):
        raise ConflictError(f"campaign {campaign_id} is {campaign.status}; only a draft or scheduled one can be moved")
    session.refresh(campaign)
    return campaign


@dataclass(frozen=True)
class SlotView:
    slot_at: datetime
    campaign_id: int | None
    issue: str | None
    status: str | None


def upcoming(session: Session, *, list_id: int, now: datetime, weeks: int = 6) -> list[SlotView]:
    """The coming weeks of a list's schedule, each slot with its campaign, if any."""
    schedule = schedule_for(session, list_id)
    if schedule is None:
        return []
    by_slot = {c.scheduled_at: c for c in
               session.scalars(select(Campaign).where(Campaign.list_id == list_id, Campaign.scheduled_at >= now))}
    views = []
    for instant in next_slots(schedule, now, weeks):
        c = by_slot.get(instant)
        views.append(SlotView(instant, c.id if c else None,
                              session.get(Issue, c.issue_id).slug if c else None, c.status if c else None))
    return views


# --- the dispatcher -------------------------------------------------------------------

@dataclass
class DispatchReport:
    started: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    empty_slots: list[tuple[int, datetime]] = field(default_factory=list)


# Pre-flight again at a campaign's time: None when it passes, else the one line naming
# the failed checks and every check as it ran (``mailer.operations.preflight``).
Recheck = Callable[[Session, int], "tuple[str, dict] | None"]


def dispatch_due(engine: Engine, *, now: datetime, missed_limit: timedelta, batch_size: int,
                 enqueue: Callable[[int, int], object] | None = None,
                 preflight: Recheck | None = None) -> DispatchReport:
    """Start every scheduled campaign whose time has come, hold the ones missed by more
    than ``missed_limit`` (the editor decides), and record each weekly slot once.
    ``preflight`` checks each campaign again before it starts (its issue or its list
    may have changed since it was scheduled, days ago): a failure holds it, with the
    checks, unless the editor overrode pre-flight when scheduling it.
    Safe to run concurrently: every change is a guarded UPDATE or an insert that
    conflicts on a unique key."""
    report = DispatchReport()
    with transaction(engine) as s:
        due = queries.due_campaigns(s, now=now)
    for cid, scheduled in due:
        frozen = 0
        with transaction(engine) as s:
            if now - scheduled > missed_limit:
                if hold(s, campaign_id=cid, reason=f"missed its time ({scheduled:%Y-%m-%d %H:%M} UTC) by more than "
                                                   f"{missed_limit}; held for the editor"):
                    report.held.append(cid)
                continue
            failed = None
            if preflight is not None and not campaigns.get_campaign(s, cid).preflight_overridden:
                failed = preflight(s, cid)
            if failed is not None:
                summary, checks = failed
                if hold(s, campaign_id=cid, reason=f"{summary}; held for the editor (checked at its time)",
                        held_checks=checks):
                    report.held.append(cid)
                continue
            try:
                frozen = campaigns.start_campaign(s, campaign_id=cid, batch_size=batch_size, now=now)
            except InvalidInput as err:  # an empty list: keep it for the editor, with the reason
                s.rollback()
                with transaction(engine) as s2:
                    hold(s2, campaign_id=cid, reason=str(err))
                report.held.append(cid)
        if frozen:
            report.started.append(cid)
            if enqueue:
                enqueue(cid, -(-frozen // batch_size))
    report.empty_slots = record_slots(engine, now=now)
    return report


def hold(session: Session, *, campaign_id: int, reason: str, held_checks: dict | None = None) -> bool:
    """A scheduled campaign goes back to draft for the editor, with the reason (and the
    pre-flight checks, when they are why)."""
    return queries.transition_campaign(session, campaign_id=campaign_id, from_=[C.scheduled], to=C.draft,
                                       pause_reason=reason, held_checks=held_checks)


def record_slots(engine: Engine, *, now: datetime) -> list[tuple[int, datetime]]:
    """One ``schedule_run`` per past slot of every active schedule: 'started' with its
    campaign, 'held', or 'empty'. Returns the empty slots recorded by this call."""
    empty = []
    with transaction(engine) as s:
        schedules = list(s.scalars(select(Schedule).where(Schedule.active.is_(True))))
        for sch in schedules:
            start = max(sch.created_at, now - LOOKBACK)
            for instant in slots(sch, start, now + timedelta(microseconds=1)):
                c = s.scalar(select(Campaign).where(Campaign.list_id == sch.list_id, Campaign.scheduled_at == instant,
                                                    Campaign.status != C.cancelled))
                if c is None:
                    outcome = SlotOutcome.empty
                elif c.status == C.scheduled:
                    continue  # not started yet (a dispatcher run is about to); record later
                else:
                    outcome = SlotOutcome.held if c.status == C.draft else SlotOutcome.started
                added = queries.record_slot(s, schedule_id=sch.id, slot_at=instant, outcome=outcome,
                                            campaign_id=c.id if c else None, now=now)
                if added and outcome == SlotOutcome.empty:
                    empty.append((sch.id, instant))
    return empty
