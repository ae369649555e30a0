"""Campaigns: one issue to one list. Create, start (freeze the audience), pause,
resume, cancel, retry the failed, and report progress.

Plain functions taking a Session inside a transaction (``mailer.db.transaction``); the
state changes are guarded UPDATEs (``... WHERE status = 'x'``), so a repeated or
concurrent command changes a campaign at most once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailer import queries
from mailer.queries import text
from mailer.errors import ConflictError, InvalidInput, NotFound
from mailer.models import Campaign, CampaignStatus, Issue, IssueStatus, MailingList, Membership, Subscriber


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def store_issue(session: Session, *, slug: str, subject: str, preheader: str, source: str,
                html: str, text_part: str, issue_date: str = "") -> Issue:
    """Save a rendered issue under its slug. Re-saving the same slug updates it while
    nothing has been sent from it; once a campaign of it started, the stored copy is
    what subscribers got, so a changed source is refused instead of silently replaced."""
    issue = session.scalar(select(Issue).where(Issue.slug == slug))
    if issue is None:
        issue = Issue(slug=slug, subject=subject, preheader=preheader, source=source, html=html,
                      text=text_part, issue_date=issue_date, status=IssueStatus.ready.value,
                      rendered_at=utcnow())
        session.add(issue)
        session.flush()
        return issue
    started = session.scalar(
        select(func.count()).select_from(Campaign)
        .where(Campaign.issue_id == issue.id, Campaign.status.in_(("sending", "paused", "sent")))
    )
    if started:
        if issue.source != source:
            raise ConflictError(f"issue {slug!r} has already been sent; give the new version another slug")
        return issue
    issue.subject, issue.preheader, issue.source = subject, preheader, source
    issue.html, issue.text, issue.issue_date = html, text_part, issue_date
    issue.status, issue.rendered_at = IssueStatus.ready.value, utcnow()
    return issue


def find_list(session: Session, name: str) -> MailingList:
    found = session.scalar(select(MailingList).where(MailingList.name == name))
    if found is None:
        raise NotFound(f"no list named {name!r}")
    return found


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFound(f"no campaign {campaign_id}")
    return campaign


def create_campaign(session: Session, *, issue_id: int, list_id: int,
                    scheduled_at: datetime | None = None) -> tuple[Campaign, bool]:
    """The campaign of this issue for this list, created if there is none yet.
    Returns (campaign, created). ON CONFLICT makes two concurrent calls agree."""
    insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    status = CampaignStatus.scheduled.value if scheduled_at else CampaignStatus.draft.value
    result = session.execute(
        insert(Campaign)
        .values(issue_id=issue_id, list_id=list_id, status=status, scheduled_at=scheduled_at,
                created_at=utcnow(), pause_reason="", total=0, sent=0, failed=0, bounced=0, skipped=0)
        .on_conflict_do_nothing(index_elements=["issue_id", "list_id"])
        .returning(Campaign.id)
    )
    created = result.first() is not None
    campaign = session.scalar(
        select(Campaign).where(Campaign.issue_id == issue_id, Campaign.list_id == list_id)
        .execution_options(populate_existing=True)
    )
    return campaign, created


def active_audience_size(session: Session, list_id: int) -> int:
    return session.scalar(
        select(func.count()).select_from(Membership)
        .join(Subscriber, Subscriber.id == Membership.subscriber_id)
        .where(Membership.list_id == list_id, Subscriber.status == "active")
    )


def start_campaign(session: Session, *, campaign_id: int, batch_size: int, now: datetime | None = None) -> int:
    """Move a draft or scheduled campaign to 'sending', publish its issue in the archive
    and freeze its audience, in one transaction. The guarded UPDATE means only the first
    of several concurrent or repeated starts freezes anything; the others return 0.
    Returns the audience size."""
    now = now or utcnow()
    campaign = get_campaign(session, campaign_id)
    if campaign.status not in ("draft", "scheduled"):
        return 0
    if active_audience_size(session, campaign.list_id) == 0:
        raise InvalidInput(f"list {campaign_list_name(session, campaign)!r} has no active subscribers; nothing to send")
    moved = session.execute(
        text("UPDATE campaign SET status = 'sending', started_at = :now "
             "WHERE id = :cid AND status IN ('draft', 'scheduled')"),
        {"cid": campaign_id, "now": now},
    ).rowcount
    if not moved:
        return 0
    # From the first message on, the issue's "view in browser" link must work: it is
    # published in the archive now.
    session.execute(text("UPDATE issue SET status = 'sent' WHERE id = :iid"), {"iid": campaign.issue_id})
    return queries.freeze_audience(session, campaign_id=campaign_id, list_id=campaign.list_id,
                                   batch_size=batch_size, now=now)


def campaign_list_name(session: Session, campaign: Campaign) -> str:
    return session.get(MailingList, campaign.list_id).name


def _set_status(session: Session, campaign_id: int, *, to: str, allowed: tuple[str, ...], extra: str = "", **params) -> bool:
    get_campaign(session, campaign_id)
    placeholders = ", ".join(f"'{s}'" for s in allowed)
    n = session.execute(
        text(f"UPDATE campaign SET status = :to{extra} WHERE id = :cid AND status IN ({placeholders})"),
        {"to": to, "cid": campaign_id, **params},
    ).rowcount
    return bool(n)


def pause_campaign(session: Session, *, campaign_id: int, reason: str = "paused by the editor") -> bool:
    """Stop sending at the next message; deliveries not yet sent stay queued."""
    return _set_status(session, campaign_id, to="paused", allowed=("sending",), extra=", pause_reason = :reason",
                       reason=reason)


def resume_campaign(session: Session, *, campaign_id: int) -> bool:
    """Send to exactly the deliveries not yet sent: they are still queued."""
    return _set_status(session, campaign_id, to="sending", allowed=("paused",), extra=", pause_reason = ''")


def cancel_campaign(session: Session, *, campaign_id: int, now: datetime | None = None) -> bool:
    """Stop for good. Deliveries not yet sent end as 'skipped' with the reason, so every
    delivery still ends in a recorded state."""
    now = now or utcnow()
    if not _set_status(session, campaign_id, to="cancelled", allowed=("draft", "scheduled", "sending", "paused"),
                       extra=", finished_at = :now", now=now):
        return False
    n = session.execute(
        text("UPDATE delivery SET status = 'skipped', last_reply = 'campaign cancelled', updated_at = :now "
             "WHERE campaign_id = :cid AND status = 'queued'"),
        {"cid": campaign_id, "now": now},
    ).rowcount
    session.execute(text("UPDATE campaign SET skipped = skipped + :n WHERE id = :cid"), {"n": n, "cid": campaign_id})
    return True


def retry_failed(session: Session, *, campaign_id: int, now: datetime | None = None) -> int:
    """Queue the failed deliveries of a campaign again ("retry the failed ones")."""
    now = now or utcnow()
    campaign = get_campaign(session, campaign_id)
    if campaign.status == "cancelled":
        raise ConflictError(f"campaign {campaign_id} was cancelled")
    n = session.execute(
        text("UPDATE delivery SET status = 'queued', attempts = 0, next_attempt_at = NULL, updated_at = :now "
             "WHERE campaign_id = :cid AND status = 'failed'"),
        {"cid": campaign_id, "now": now},
    ).rowcount
    if not n:
        return 0
    session.execute(text("UPDATE campaign SET failed = failed - :n WHERE id = :cid"), {"n": n, "cid": campaign_id})
    session.execute(
        text("UPDATE batch SET status = 'pending', available_at = :now WHERE campaign_id = :cid AND status = 'done' "
             "AND seq IN (SELECT DISTINCT batch_seq FROM delivery WHERE campaign_id = :cid AND status = 'queued')"),
        {"cid": campaign_id, "now": now},
    )
    session.execute(
        text("UPDATE campaign SET status = 'sending', finished_at = NULL WHERE id = :cid AND status = 'sent'"),
        {"cid": campaign_id},
    )
    return n


@dataclass(frozen=True)
class CampaignReport:
    id: int
    issue: str
    list: str
    status: str
    total: int
    sent: int
    failed: int
    bounced: int
    skipped: int
    queued: int
    rate_per_minute: float
    eta_seconds: float | None
    pause_reason: str
    scheduled_at: str | None
    started_at: str | None
    finished_at: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def campaign_report(session: Session, campaign_id: int, *, now: datetime | None = None) -> CampaignReport:
    now = now or utcnow()
    c = get_campaign(session, campaign_id)
    issue = session.get(Issue, c.issue_id)
    counts = queries.delivery_counts(session, campaign_id=campaign_id)
    queued = counts.get("queued", 0) + counts.get("sending", 0)
    recent = session.execute(
        text("SELECT COUNT(*) FROM delivery WHERE campaign_id = :cid AND status = 'sent' AND sent_at >= :now"),
        {"cid": campaign_id, "now": now - timedelta(seconds=60)},
    ).scalar_one()
    rate = float(recent)
    eta = (queued / rate * 60) if rate and queued else (0.0 if not queued else None)
    iso = lambda d: d.isoformat() if d else None  # noqa: E731
    return CampaignReport(
        id=c.id, issue=issue.slug, list=campaign_list_name(session, c), status=c.status, total=c.total,
        sent=c.sent, failed=c.failed, bounced=c.bounced, skipped=c.skipped, queued=queued,
        rate_per_minute=rate, eta_seconds=eta, pause_reason=c.pause_reason,
        scheduled_at=iso(c.scheduled_at), started_at=iso(c.started_at), finished_at=iso(c.finished_at),
    )


def list_campaigns(session: Session) -> list[Campaign]:
    return list(session.scalars(select(Campaign).order_by(Campaign.id.desc())))
