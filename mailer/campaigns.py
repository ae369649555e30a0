"""Campaigns: one issue to one list. Store the issue, create, start (freeze the audience),
pause, resume, cancel, retry the failed, and report progress.

Plain functions taking a Session inside a transaction (``mailer.core.db.transaction``);
every state change is ``queries.transition_campaign``, a guarded UPDATE, so a repeated
or concurrent command changes a campaign at most once. What the editor may do and
what happens after the commit (queueing send tasks) is ``mailer.operations``'.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer import outbox, queries
from mailer.core.clock import utcnow
from mailer.core.db import insert_for
from mailer.core.logs import event
from mailer.core.errors import ConflictError, InvalidInput, NotFound
from mailer.hooks import EventType
from mailer.models import (
    COUNTED,
    CampaignKind,
    IN_FLIGHT,
    NOT_STARTED,
    STARTED,
    UNSENT,
    Campaign,
    CampaignStatus,
    Issue,
    IssueStatus,
)
from subscribers import segments
from subscribers.models import MailingList

log = logging.getLogger(__name__)

C = CampaignStatus
# The states each of the editor's changes starts from.
PAUSABLE = (C.sending,)
RESUMABLE = (C.paused,)
CANCELLABLE = (*NOT_STARTED, C.sending, C.paused)
RETRYABLE = (C.sending, C.paused, C.sent)  # and only with failed deliveries
MOVABLE = NOT_STARTED


def available_actions(status: str, *, failed: int) -> list[str]:
    """What the editor can do with a campaign in ``status`` now (the dashboard offers
    these buttons; the operations refuse the rest)."""
    offered = {"pause": status in PAUSABLE, "resume": status in RESUMABLE,
               "retry": status in RETRYABLE and failed > 0, "cancel": status in CANCELLABLE,
               "reschedule": status in MOVABLE}
    return [action for action, ok in offered.items() if ok]


def store_issue(session: Session, *, slug: str, subject: str, preheader: str, source: str,
                html: str, text_part: str, issue_date: str = "", links: list[str] | None = None) -> Issue:
    """Save a rendered issue under its slug. Re-saving the same slug updates it while
    nothing has been sent from it; once a campaign of it started, the stored copy is
    what subscribers got, so a changed source is refused instead of silently replaced."""
    issue = session.scalar(select(Issue).where(Issue.slug == slug))
    if issue is None:
        # Two `newsletter send` of one file at once: ON CONFLICT makes the second find the
        # first one's issue instead of failing on the unique slug.
        now = utcnow()
        created = session.execute(
            insert_for(session)(Issue).values(slug=slug, subject=subject, preheader=preheader, source=source,
                                              html=html, text=text_part, issue_date=issue_date,
                                              links=list(links or []), status=IssueStatus.ready, rendered_at=now, created_at=now,
                                              updated_at=now)
            .on_conflict_do_nothing(index_elements=["slug"]).returning(Issue.id)
        ).first()
        issue = session.scalar(select(Issue).where(Issue.slug == slug).execution_options(populate_existing=True))
        if created is not None:
            return issue
    started = session.scalar(
        select(func.count()).select_from(Campaign).where(Campaign.issue_id == issue.id, Campaign.status.in_(STARTED))
    )
    if started:
        if issue.source != source:
            raise ConflictError(f"issue {slug!r} has already been sent; give the new version another slug")
        return issue
    issue.subject, issue.preheader, issue.source = subject, preheader, source
    issue.html, issue.text, issue.issue_date = html, text_part, issue_date
    issue.links = list(links or [])
    issue.status, issue.rendered_at = IssueStatus.ready, utcnow()
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
                    scheduled_at: datetime | None = None, segment: str | None = None) -> tuple[Campaign, bool]:
    """The campaign of this issue for this list, created if there is none yet.
    Returns (campaign, created); two concurrent calls agree on one campaign. A
    ``segment`` given for one not started yet becomes its segment: an expression, or
    the name of a segment saved for the list, kept as the expression it stands for now."""
    if segment:
        segment = segments.resolve(session, segment, list_id=list_id)
        segments.segment_filter(session, segment)  # refused now, not when it starts
    campaign_id, created = queries.insert_campaign(session, issue_id=issue_id, list_id=list_id,
                                                   scheduled_at=scheduled_at, now=utcnow(), segment=segment or "")
    campaign = session.get(Campaign, campaign_id, populate_existing=True)
    if not created and segment is not None and campaign.status in NOT_STARTED:
        campaign.segment = segment
    return campaign, created


def start_campaign(session: Session, *, campaign_id: int, batch_size: int, now: datetime | None = None) -> int:
    """Move a draft or scheduled campaign to 'sending', publish its issue in the archive
    and freeze its audience, in one transaction. Only the first of several concurrent or
    repeated starts freezes anything; the others return 0. Returns the audience size."""
    now = now or utcnow()
    campaign = get_campaign(session, campaign_id)
    if campaign.status not in NOT_STARTED:
        return 0
    segment = segments.segment_filter(session, campaign.segment) if campaign.segment else None
    if not queries.has_audience(session, list_id=campaign.list_id, segment=segment):
        raise InvalidInput(f"list {campaign_list_name(session, campaign)!r} has no active subscribers"
                           + (f" in segment {campaign.segment!r}" if campaign.segment else "") + "; nothing to send")
    if not queries.transition_campaign(session, campaign_id=campaign_id, from_=NOT_STARTED, to=C.sending,
                                       started_at=now):
        return 0
    queries.publish_issue(session, issue_id=campaign.issue_id)
    frozen = queries.freeze_audience(session, campaign_id=campaign_id, list_id=campaign.list_id,
                                     batch_size=batch_size, now=now, segment=segment)
    outbox.emit_campaign(session, EventType.campaign_started, campaign_id=campaign_id, now=now)
    event(log, "campaign started", campaign_id=campaign_id, issue_id=campaign.issue_id, list_id=campaign.list_id,
          deliveries=frozen, segment=campaign.segment or None)
    return frozen


def campaign_list_name(session: Session, campaign: Campaign) -> str:
    return session.get(MailingList, campaign.list_id).name


def pause_campaign(session: Session, *, campaign_id: int, reason: str = "paused by the editor") -> bool:
    """Stop sending at the next window (NEWSLETTER_SEND_WINDOW); deliveries not yet sent stay queued."""
    get_campaign(session, campaign_id)
    return queries.transition_campaign(session, campaign_id=campaign_id, from_=PAUSABLE, to=C.paused,
                                       pause_reason=reason)


def resume_campaign(session: Session, *, campaign_id: int) -> bool:
    """Send to exactly the deliveries not yet sent: they are still queued."""
    get_campaign(session, campaign_id)
    return queries.transition_campaign(session, campaign_id=campaign_id, from_=RESUMABLE, to=C.sending,
                                       pause_reason="")


def cancel_campaign(session: Session, *, campaign_id: int, now: datetime | None = None) -> bool:
    """Stop for good. Deliveries not yet sent end as 'skipped' with the reason, so every
    delivery still ends in a recorded state."""
    now = now or utcnow()
    get_campaign(session, campaign_id)
    if not queries.transition_campaign(session, campaign_id=campaign_id, from_=CANCELLABLE, to=C.cancelled,
                                       finished_at=now):
        return False
    queries.skip_unsent(session, campaign_id=campaign_id, reason="campaign cancelled", now=now)
    return True


def retry_failed(session: Session, *, campaign_id: int, now: datetime | None = None) -> int:
    """Queue the failed deliveries of a campaign again ("retry the failed ones")."""
    campaign = get_campaign(session, campaign_id)
    if campaign.status == C.cancelled:
        raise ConflictError(f"campaign {campaign_id} was cancelled")
    return queries.requeue_failed(session, campaign_id=campaign_id, now=now or utcnow())


@dataclass(frozen=True)
class CampaignReport:
    """Progress and outcome of a campaign, every number counted from its deliveries."""

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
    repeated: int  # sent more than once: a try whose outcome was lost (a crash), then sent again
    rate_per_minute: float
    eta_seconds: float | None
    pause_reason: str
    relay_down_since: str | None  # the relay does not answer since then ...
    relay_error: str  # ... saying this
    scheduled_at: str | None
    started_at: str | None
    finished_at: str | None
    # Held by the dispatcher because pre-flight failed at its time: every check as it ran.
    held_checks: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def campaign_report(session: Session, campaign_id: int, *, now: datetime | None = None) -> CampaignReport:
    now = now or utcnow()
    c = get_campaign(session, campaign_id)
    issue = session.get(Issue, c.issue_id)
    counts = queries.delivery_counts(session, campaign_id=campaign_id)
    queued = sum(counts.get(s, 0) for s in UNSENT)
    rate = float(queries.sent_since(session, campaign_id=campaign_id, since=now - timedelta(seconds=60)))
    relay_down = c.relay_down_since is not None
    eta = None if relay_down and queued else (queued / rate * 60) if rate and queued else (0.0 if not queued else None)
    iso = lambda d: d.isoformat() if d else None  # noqa: E731
    return CampaignReport(
        id=c.id, issue=issue.slug, list=campaign_list_name(session, c), status=c.status,
        total=sum(counts.values()) if counts else c.total,
        **{s.value: counts.get(s, 0) for s in COUNTED}, queued=queued,
        repeated=queries.repeated(session, campaign_id=campaign_id),
        rate_per_minute=rate, eta_seconds=eta, pause_reason=c.pause_reason,
        relay_down_since=iso(c.relay_down_since), relay_error=c.relay_error or "",
        scheduled_at=iso(c.scheduled_at), started_at=iso(c.started_at), finished_at=iso(c.finished_at),
        held_checks=c.held_checks if c.status == C.draft else None,
    )


def list_campaigns(session: Session) -> list[Campaign]:
    """The issues' campaigns, newest first (a list's welcome campaign is not one of them:
    ``operations.welcome`` shows it)."""
    return list(session.scalars(select(Campaign).where(Campaign.kind == CampaignKind.issue)
                                .order_by(Campaign.id.desc())))


def campaigns_in_flight(session: Session) -> list[Campaign]:
    """Issue campaigns started and not over: sending, or paused (their counters say how
    far). A welcome campaign is always 'sending' and is left out."""
    return list(session.scalars(select(Campaign).where(Campaign.status.in_(IN_FLIGHT),
                                                       Campaign.kind == CampaignKind.issue).order_by(Campaign.id)))
