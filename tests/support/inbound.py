"""Helpers for the tests of what comes back: campaigns whose messages went out to given
addresses, the VERP address and Message-ID of a delivery, reading a corpus message,
and a snapshot of every table to show that something changed nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import inspect, select, text

from mailer.campaigns import create_campaign, start_campaign
from mailer.core import signing
from mailer.core.clock import utcnow
from mailer.core.db import transaction
from mailer.models import Delivery
from subscribers import service
from subscribers.models import Subscriber, Suppression
from tests.support.seed import seed_issue

SECRET = "s3cret"  # tests.support.delivery.config() signs with it too
DOMAIN = "example.com"
CORPUS = Path(__file__).resolve().parents[1] / "mailer" / "bounce_corpus"


@dataclass(frozen=True)
class Sent:
    """One delivery of a campaign that the relay accepted."""

    delivery_id: int
    campaign_id: int
    subscriber_id: int
    email: str
    message_id: str

    def verp(self, secret: str = SECRET) -> str:
        return f"bounces+{signing.verp_token(secret, self.delivery_id)}@{DOMAIN}"


def sent_campaign(engine, emails: list[str], *, slug: str = "weekly-1", secret: str = SECRET,
                  at: datetime | None = None) -> dict[str, Sent]:
    """A campaign of ``slug`` to the list "weekly", whose members are (made) ``emails``,
    every message accepted by the relay at ``at``: as ``drain`` leaves it, without
    sending. Returns the deliveries by address."""
    at = at or utcnow()
    with transaction(engine) as s:
        for email in emails:
            if service.find_subscriber(s, email) is None:
                service.add_subscriber(s, email=email, status="active", list_name="weekly")
    issue_id = seed_issue(engine, slug=slug)
    with transaction(engine) as s:
        mlist = service.find_list(s, "weekly")
        campaign, _ = create_campaign(s, issue_id=issue_id, list_id=mlist.id)
        start_campaign(s, campaign_id=campaign.id, batch_size=50, now=at)
        cid = campaign.id
        rows = s.execute(select(Delivery.id, Subscriber.id, Subscriber.email)
                         .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                         .where(Delivery.campaign_id == cid)).all()
        found = {}
        for did, sid, email in rows:
            mid = signing.message_id(secret, cid, did, DOMAIN)
            s.execute(text("UPDATE delivery SET status = 'sent', sent_at = :at, message_id = :mid, attempts = 1 "
                           "WHERE id = :d"), {"at": at, "mid": mid, "d": did})
            found[email] = Sent(did, cid, sid, email, mid)
        s.execute(text("UPDATE batch SET status = 'done' WHERE campaign_id = :c"), {"c": cid})
        s.execute(text("UPDATE campaign SET status = 'sent', sent = total, started_at = :at, finished_at = :at "
                       "WHERE id = :c"), {"c": cid, "at": at + timedelta(seconds=1)})
    return found


def corpus(name: str, *, crlf: bool = False) -> bytes:
    """A message of the corpus; with ``crlf`` as it travels over SMTP (RFC 5321 §2.3.8)."""
    raw = (CORPUS / f"{name}.eml").read_bytes()
    return raw.replace(b"\n", b"\r\n") if crlf else raw


def statuses(engine) -> dict[str, str]:
    with transaction(engine) as s:
        return dict(s.execute(select(Subscriber.email, Subscriber.status)).all())


def suppressed(engine, email: str) -> bool:
    with transaction(engine) as s:
        return service.is_suppressed(s, email)


def suppressions(engine) -> int:
    with transaction(engine) as s:
        return len(s.execute(select(Suppression.id)).all())


def snapshot(engine) -> dict[str, list]:
    """Every row of every table, for "this changed nothing"."""
    tables = sorted(t for t in inspect(engine).get_table_names() if t != "alembic_version")
    with transaction(engine) as s:
        return {t: sorted(map(tuple, s.execute(text(f"SELECT * FROM {t}")).all()), key=repr) for t in tables}
