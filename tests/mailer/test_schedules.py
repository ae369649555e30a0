"""Weekly schedules and the dispatcher, with a frozen clock, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import date, datetime, time, timedelta, timezone

import pytest
from sqlalchemy import select

from mailer import schedules
from mailer.core.db import transaction
from mailer.core.errors import InvalidInput
from mailer.models import Campaign, ScheduleRun
from tests.support.seed import seed_issue, seed_list

UTC = timezone.utc


def test_slot_is_local_time_across_dst():
    # Europe/Berlin leaves winter time on 2027-03-28: 09:00 local is 08:00 UTC before, 07:00 after.
    assert schedules.slot_at(date(2027, 3, 23), time(9), "Europe/Berlin") == datetime(2027, 3, 23, 8, tzinfo=UTC)
    assert schedules.slot_at(date(2027, 3, 30), time(9), "Europe/Berlin") == datetime(2027, 3, 30, 7, tzinfo=UTC)
    # A slot inside the gap itself goes out just after the jump.
    assert schedules.slot_at(date(2027, 3, 28), time(2, 30), "Europe/Berlin") == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize("value, tz, message", [
    ("2027-03-28 02:30", "Europe/Berlin", "does not exist"),
    ("2027-03-28 02:30", "Mars/Olympus", "unknown time zone"),
    ("tuesday 9am", "UTC", "not a time"),
])
def test_bad_times_are_refused(value, tz, message):
    with pytest.raises(InvalidInput, match=message):
        schedules.parse_when(value, tz)


def test_ambiguous_autumn_time_is_the_first_occurrence():
    assert schedules.parse_when("2027-10-31 02:30", "Europe/Berlin") == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize("weekday, clock, tz", [("someday", "09:00", "UTC"), ("tue", "25:00", "UTC"),
                                                 ("tue", "09:00", "Nowhere/City")])
def test_bad_schedule_is_refused_and_nothing_stored(engine, weekday, clock, tz):
    list_id = seed_list(engine, 1)
    with pytest.raises(InvalidInput):
        with transaction(engine) as s:
            schedules.set_schedule(s, list_id=list_id, weekday=weekday, local_time=clock, tz=tz)
    with transaction(engine) as s:
        assert schedules.schedule_for(s, list_id) is None


def test_six_weekly_slots_across_dst_with_one_empty(engine):
    """Tuesday 09:00 Europe/Berlin for six weeks around the March 2027 change; slot 4 is
    left empty. Exactly five campaigns start, each once, at the right UTC instant, even
    with two dispatchers racing at every slot."""
    list_id = seed_list(engine, 10)
    t0 = datetime(2027, 3, 1, 12, tzinfo=UTC)
    with transaction(engine) as s:
        schedules.set_schedule(s, list_id=list_id, weekday="tuesday", local_time="09:00", tz="Europe/Berlin", now=t0)
    expected = [datetime(2027, 3, d, 8, tzinfo=UTC) for d in (2, 9, 16, 23)] + \
               [datetime(2027, 3, 30, 7, tzinfo=UTC), datetime(2027, 4, 6, 7, tzinfo=UTC)]
    with transaction(engine) as s:
        got = [v.slot_at for v in schedules.upcoming(s, list_id=list_id, now=t0, weeks=6)]
    assert got == expected

    issue_ids = [seed_issue(engine, slug=f"weekly-{i}") for i in range(5)]
    with transaction(engine) as s:
        for issue_id in issue_ids[:3]:  # next free slots: 1, 2, 3
            schedules.schedule_campaign(s, issue_id=issue_id, list_id=list_id, at=None, now=t0)
        schedules.schedule_campaign(s, issue_id=issue_ids[3], list_id=list_id, at=expected[4], now=t0)
        schedules.schedule_campaign(s, issue_id=issue_ids[4], list_id=list_id, at=expected[5], now=t0)

    started: list[int] = []
    lock = threading.Lock()

    def enqueue(cid, _tasks):
        with lock:
            started.append(cid)

    for slot in expected:
        now = slot + timedelta(seconds=30)
        threads = [threading.Thread(target=schedules.dispatch_due, args=(engine,),
                                    kwargs=dict(now=now, missed_limit=timedelta(hours=6), batch_size=50,
                                                enqueue=enqueue)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        # A later, overlapping run changes nothing.
        schedules.dispatch_due(engine, now=now + timedelta(seconds=60), missed_limit=timedelta(hours=6),
                               batch_size=50, enqueue=enqueue)

    assert len(started) == 5 and len(set(started)) == 5
    with transaction(engine) as s:
        campaigns = list(s.scalars(select(Campaign).order_by(Campaign.scheduled_at)))
        assert [c.started_at for c in campaigns] == \
               [e + timedelta(seconds=30) for e in expected if e != expected[3]]
        assert all(c.status == "sending" and c.total == 10 for c in campaigns)
        runs = list(s.scalars(select(ScheduleRun).order_by(ScheduleRun.slot_at)))
        assert [(r.slot_at, r.outcome) for r in runs] == [
            (e, "empty" if e == expected[3] else "started") for e in expected]


def test_missed_campaign_starts_late_or_is_held(engine):
    list_id = seed_list(engine, 3)
    t0 = datetime(2027, 5, 1, tzinfo=UTC)
    a, b = seed_issue(engine, slug="a"), seed_issue(engine, slug="b")
    with transaction(engine) as s:
        ca = schedules.schedule_campaign(s, issue_id=a, list_id=list_id, at=t0 + timedelta(hours=1), now=t0)
        cb = schedules.schedule_campaign(s, issue_id=b, list_id=list_id, at=t0 + timedelta(hours=5), now=t0)
    # Everything was down; it comes back at t0 + 8h. A is 7 h late (> 6 h): held. B is 3 h late: starts.
    report = schedules.dispatch_due(engine, now=t0 + timedelta(hours=8), missed_limit=timedelta(hours=6),
                                    batch_size=50)
    assert report.started == [cb.id] and report.held == [ca.id]
    with transaction(engine) as s:
        held = s.get(Campaign, ca.id)
        assert held.status == "draft" and "held for the editor" in held.pause_reason


def test_past_time_and_moving_a_sending_campaign_are_refused(engine):
    list_id = seed_list(engine, 2)
    issue_id = seed_issue(engine)
    now = datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="past"):
        with transaction(engine) as s:
            schedules.schedule_campaign(s, issue_id=issue_id, list_id=list_id, at=now - timedelta(minutes=1), now=now)
    with pytest.raises(InvalidInput, match="no weekly schedule"):
        with transaction(engine) as s:
            schedules.schedule_campaign(s, issue_id=issue_id, list_id=list_id, at=None, now=now)
    with transaction(engine) as s:
        assert s.scalar(select(Campaign)) is None  # nothing half-scheduled
        c = schedules.schedule_campaign(s, issue_id=issue_id, list_id=list_id, at=now + timedelta(hours=1), now=now)
    schedules.dispatch_due(engine, now=now + timedelta(hours=1), missed_limit=timedelta(hours=6), batch_size=50)
    with pytest.raises(InvalidInput, match="sending"):
        with transaction(engine) as s:
            schedules.reschedule(s, campaign_id=c.id, at=now + timedelta(days=1), now=now)
