"""What the dashboard's first page shows: subscribers by status and their growth."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from mailer import queries
from subscribers.models import SubscriberStatus

# The two series: subscribers who joined, and those who became unsubscribed.
NEW_SUBSCRIBERS, UNSUBSCRIBES = "subscribed", SubscriberStatus.unsubscribed


def weekly_growth(session: Session, *, now: datetime, weeks: int = 26) -> list[dict]:
    """Per week (oldest first): new subscribers and unsubscribes, bucketed by whole
    weeks back from ``now``."""
    start = now - timedelta(weeks=weeks)
    subs = queries.weekly_new_subscribers(session, start=start, end=now)
    unsubs = queries.weekly_unsubscribes(session, start=start, end=now)
    return [
        {"week_start": (start + timedelta(weeks=i)).date().isoformat(), NEW_SUBSCRIBERS: subs.get(i, 0), UNSUBSCRIBES: unsubs.get(i, 0)}
        for i in range(weeks)
    ]
