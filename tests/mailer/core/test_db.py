"""Times are stored and read back as aware UTC on both databases (``UtcDateTime``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import select

from mailer import queries
from mailer.core.db import transaction
from mailer.models import Issue, IssueStatus
from tests.support.seed import seed_issue, seed_list


def test_a_time_in_any_zone_comes_back_as_the_same_instant_in_utc(engine):
    shanghai = datetime(2026, 12, 1, 17, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    with transaction(engine) as s:
        s.add(Issue(slug="t", subject="s", source="", status=IssueStatus.ready, rendered_at=shanghai))
    with transaction(engine) as s:
        stored = s.scalar(select(Issue.rendered_at))
        # Compared in SQL as stored: the instant, not the wall-clock time.
        later = s.scalar(select(Issue.id).where(Issue.rendered_at > shanghai - timedelta(minutes=1)))
        earlier = s.scalar(select(Issue.id).where(Issue.rendered_at > shanghai + timedelta(minutes=1)))
    assert stored == shanghai and stored.tzinfo == timezone.utc and stored.hour == 9
    assert later is not None and earlier is None


def test_times_from_raw_sql_are_aware_utc_too(engine):
    at = datetime(2026, 12, 1, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    list_id, issue_id = seed_list(engine, 1), seed_issue(engine)
    with transaction(engine) as s:
        cid, _ = queries.insert_campaign(s, issue_id=issue_id, list_id=list_id, scheduled_at=at, now=at)
    with transaction(engine) as s:
        assert queries.due_campaigns(s, now=at - timedelta(seconds=1)) == []
        [(found, when)] = queries.due_campaigns(s, now=at)
    assert (found, when, when.tzinfo) == (cid, at, timezone.utc)
