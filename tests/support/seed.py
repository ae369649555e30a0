"""Seeding data for engine tests: a list of active subscribers, an issue, a campaign."""

from __future__ import annotations

from sqlalchemy import insert, text

from mailer.campaigns import create_campaign, start_campaign
from mailer.core.db import transaction
from mailer.merge import MARKERS
from mailer.models import Issue
from subscribers.models import MailingList, Membership, Subscriber

HTML = (
    "<html><body><p>Hi {name},</p><p>This week in AI.</p>"
    '<p><a href="{unsub}">Unsubscribe</a> · <a href="{prefs}">Preferences</a></p></body></html>'
).format(name=MARKERS["name"], unsub=MARKERS["unsubscribe_url"], prefs=MARKERS["preferences_url"])
TEXT = "Hi {name},\n\nThis week in AI.\n\nUnsubscribe: {unsub}\n".format(
    name=MARKERS["name"], unsub=MARKERS["unsubscribe_url"])


def seed_list(engine, n: int, *, list_name: str = "weekly", status: str = "active", start: int = 0) -> int:
    """Create (or extend) a list with ``n`` subscribers; returns the list id."""
    with transaction(engine) as s:
        mlist = s.query(MailingList).filter_by(name=list_name).one_or_none()
        if mlist is None:
            mlist = MailingList(name=list_name, description="Weekly China AI")
            s.add(mlist)
            s.flush()
        rows = [
            {"email": f"reader{i:06d}@example.com", "email_key": f"reader{i:06d}@example.com",
             "name": f"Reader {i}", "status": status, "attributes": {}}
            for i in range(start, start + n)
        ]
        if rows:
            ids = s.execute(insert(Subscriber).returning(Subscriber.id), rows).scalars().all()
            s.execute(insert(Membership), [{"list_id": mlist.id, "subscriber_id": sid} for sid in ids])
        return mlist.id


def seed_issue(engine, slug: str = "weekly-1", subject: str = "This week in AI") -> int:
    with transaction(engine) as s:
        issue = Issue(slug=slug, subject=subject, preheader="", source="---\nsubject: x\n---\n", html=HTML, text=TEXT,
                      status="ready")
        s.add(issue)
        s.flush()
        return issue.id


def seed_campaign(engine, n: int, *, batch_size: int = 50, start: bool = True) -> int:
    list_id = seed_list(engine, n)
    issue_id = seed_issue(engine)
    with transaction(engine) as s:
        campaign, _ = create_campaign(s, issue_id=issue_id, list_id=list_id)
        if start:
            start_campaign(s, campaign_id=campaign.id, batch_size=batch_size)
        return campaign.id


def count_rows(engine, table: str) -> int:
    """Rows in one of our tables (a name from the test, never from input)."""
    with transaction(engine) as s:
        return s.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
