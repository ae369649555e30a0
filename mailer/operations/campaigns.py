"""Campaigns: give an issue to a list (now, at a time, or at its next weekly slot),
pause, resume, cancel, retry the failed, move a scheduled one; and what happened."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer import campaigns, engagement, queries, schedules
from mailer.core.clock import utcnow
from mailer.core.config import Settings
from mailer.core.errors import ConflictError, InvalidInput
from mailer.models import CampaignStatus
from mailer.operations import Queue, preflight
from mailer.operations.issues import find_issue, render_again, rerender
from subscribers.models import Event, EventKind

C = CampaignStatus
# Gmail's and Yahoo's bulk-sender rule: spam complaints under 0.3% of the mail delivered
# (aim under 0.1%); the dashboard draws the line there, and pre-flight checks it.
COMPLAINT_RATE_LIMIT = preflight.COMPLAINT_RATE_LIMIT
When = Literal["now", "next_slot"] | datetime


def parse_when(*, at: str | None, tz: str | None, next_slot: bool, now_flag: bool, now: datetime) -> When:
    """Exactly one of: an explicit time (``at``, read in ``tz`` when it has no offset),
    the list's next free slot, or now. Past times, unknown zones and local times that do
    not exist (a DST gap) are refused here, before anything is written."""
    given = [bool(at), bool(next_slot), bool(now_flag)]
    if sum(given) != 1:
        raise InvalidInput("say when: give exactly one of 'at' (a time), 'next_slot' or 'now'")
    if now_flag:
        return "now"
    if next_slot:
        if tz:
            schedules.zone(tz)
        return "next_slot"
    when = schedules.parse_when(at, tz or None)
    if when <= now:
        raise InvalidInput(f"{when.isoformat()} is in the past (it is now {now.replace(microsecond=0).isoformat()})")
    return when


@dataclass(frozen=True)
class Scheduled:
    campaign_id: int
    status: str
    scheduled_at: datetime | None
    started: int  # deliveries frozen now (0 unless sent now)
    queue: tuple[Queue, ...] = ()
    preflight: preflight.Preflight | None = None


def schedule_issue(session: Session, *, issue_ref: int | str, list_name: str, when: When,
                   settings: Settings, now: datetime | None = None, segment: str | None = None,
                   gate: preflight.Gate = preflight.Gate()) -> Scheduled:
    """Give an issue to a list (to its ``segment`` only, if given: ``subscribers.segments``)
    now, at a time, or at the list's next free weekly slot.
    The issue is rendered again first (templates or settings may have changed since it
    was saved): an issue that does not render is refused and nothing is scheduled. Then
    pre-flight checks the message as the list would get it: a failed check refuses it
    (``PreflightFailed``) unless ``gate`` overrides. A campaign already started is
    refused; a scheduled one is moved."""
    now = now or utcnow()
    issue = find_issue(session, issue_ref)
    mlist = campaigns.find_list(session, (list_name or "").strip())
    rerender(session, issue, settings=settings)
    checked = preflight.enforce(session, issue=issue, mlist=mlist, settings=settings, gate=gate)
    if when == "now":
        campaign, _ = campaigns.create_campaign(session, issue_id=issue.id, list_id=mlist.id, segment=segment)
        started = campaigns.start_campaign(session, campaign_id=campaign.id, batch_size=settings.batch_size, now=now)
        if not started:
            raise ConflictError(f"campaign {campaign.id} of {issue.slug!r} to {mlist.name!r} is already "
                                f"{campaign.status}; nothing new was started")
    else:
        at = None if when == "next_slot" else when
        campaign = schedules.schedule_campaign(session, issue_id=issue.id, list_id=mlist.id, at=at, now=now,
                                               segment=segment)
        # The dispatcher checks again at its time, unless the editor overrode a failure
        # now; an earlier hold's checks are the past.
        campaign.preflight_overridden, campaign.held_checks = checked.overridden, None
        session.flush()
        started = 0
    session.refresh(campaign)
    queue = (Queue(campaign.id, -(-started // settings.batch_size)),) if started else ()
    return Scheduled(campaign.id, campaign.status, campaign.scheduled_at, started, queue, checked)


def preflight_issue(session: Session, *, issue_ref: int | str, list_name: str, settings: Settings) -> preflight.Preflight:
    """Pre-flight alone, as a start would run it (the issue rendered again as it would
    be, nothing stored)."""
    issue = find_issue(session, issue_ref)
    mlist = campaigns.find_list(session, (list_name or "").strip())
    return preflight.check(session, issue=render_again(session, issue, settings=settings), mlist=mlist,
                           settings=settings)


@dataclass(frozen=True)
class Changed:
    campaign_id: int
    status: str
    requeued: int = 0  # retry: deliveries queued again
    queue: tuple[Queue, ...] = ()


_PAST = {"pause": C.paused, "resume": "resumed", "cancel": C.cancelled}


def _work(session: Session, campaign_id: int) -> tuple[Queue, ...]:
    return (Queue(campaign_id, queries.claimable_batches(session, campaign_id=campaign_id, now=utcnow())),)


def _change(session: Session, campaign_id: int, action: str, change) -> Changed:
    """Apply a guarded change, or refuse with the state that forbids it."""
    before = campaigns.get_campaign(session, campaign_id).status
    if not change(session, campaign_id=campaign_id):
        raise ConflictError(f"campaign {campaign_id} is {before}; it cannot be {_PAST[action]}")
    return Changed(campaign_id, campaigns.get_campaign(session, campaign_id).status)


def pause(session: Session, *, campaign_id: int) -> Changed:
    """Stop sending at the next window (NEWSLETTER_SEND_WINDOW); deliveries not yet sent stay queued."""
    return _change(session, campaign_id, "pause", campaigns.pause_campaign)


def resume(session: Session, *, campaign_id: int) -> Changed:
    """Send to exactly the deliveries not yet sent; a task per claimable batch."""
    done = _change(session, campaign_id, "resume", campaigns.resume_campaign)
    return replace(done, queue=_work(session, campaign_id))


def cancel(session: Session, *, campaign_id: int) -> Changed:
    """Stop for good; deliveries not yet sent are recorded as skipped."""
    return _change(session, campaign_id, "cancel", campaigns.cancel_campaign)


def retry(session: Session, *, campaign_id: int) -> Changed:
    """Queue the failed deliveries again. Nothing failed: nothing to do (not an error)."""
    requeued = campaigns.retry_failed(session, campaign_id=campaign_id)
    status = campaigns.get_campaign(session, campaign_id).status
    return Changed(campaign_id, status, requeued=requeued, queue=_work(session, campaign_id) if requeued else ())


def reschedule(session: Session, *, campaign_id: int, at: str, tz: str | None, now: datetime | None = None) -> Changed:
    """Move a draft or scheduled campaign to another time."""
    now = now or utcnow()
    when = parse_when(at=at, tz=tz or None, next_slot=False, now_flag=False, now=now)
    campaign = schedules.reschedule(session, campaign_id=campaign_id, at=when, now=now)
    return Changed(campaign_id, campaign.status)


ACTIONS = {"pause": pause, "resume": resume, "cancel": cancel, "retry": retry}


def stats(session: Session, campaign_id: int, *, now: datetime | None = None) -> dict:
    """Progress and outcome of a campaign, every number read from the records it
    summarises: the delivery rows by status, and the campaign's unsubscribe and
    complaint events."""
    report = campaigns.campaign_report(session, campaign_id, now=now)
    counts = queries.delivery_counts(session, campaign_id=campaign_id)
    events = dict(session.execute(
        select(Event.kind, func.count()).where(Event.campaign_id == campaign_id,
                                               Event.kind.in_((EventKind.unsubscribe, EventKind.complaint)))
        .group_by(Event.kind)
    ).all())
    out = report.as_dict()
    out.update(unsubscribed=events.get(EventKind.unsubscribe, 0), complaints=events.get(EventKind.complaint, 0),
               deliveries=counts, actions=campaigns.available_actions(report.status, failed=report.failed))
    # Complaints per message delivered (the relay accepted it and it did not bounce), as
    # mailbox providers count them.
    delivered = report.sent
    out["complaint_rate"] = round(out["complaints"] / delivered, 6) if delivered else 0.0
    out["complaint_rate_limit"] = COMPLAINT_RATE_LIMIT
    # Clicks and opens of lists that track them: people's, and machines' apart.
    # Rates are of the messages delivered, counting each reader once.
    seen = engagement.counts(session, campaign_id=campaign_id)
    seen["open_rate"] = round(seen["unique_opens"] / delivered, 4) if delivered else 0.0
    seen["click_rate"] = round(seen["unique_clicks"] / delivered, 4) if delivered else 0.0
    seen["links"] = engagement.links(session, campaign_id=campaign_id,
                                     targets=queries.campaign_links(session, campaign_id=campaign_id) or [])
    out["engagement"] = seen
    done = report.total - report.queued
    out["progress"] = round(done / report.total, 4) if report.total else (1.0 if report.status == C.sent else 0.0)
    return out


def list_stats(session: Session, *, limit: int | None = None) -> list[dict]:
    """``stats`` of every campaign (or the ``limit`` newest), newest first."""
    return [stats(session, c.id) for c in campaigns.list_campaigns(session)[:limit]]
