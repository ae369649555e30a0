"""What the admin API and the dashboard both do, once: save an issue from its Markdown,
schedule or start it, and read back what happened.

Every function validates everything it can before its first write and leaves the
commit to the caller, so a refused request leaves the database as it was (the route
commits only after the whole operation succeeded; anything raised rolls it all back).
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from sqlalchemy import DateTime, bindparam, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mailer import campaigns, queries, schedules
from mailer.config import Settings
from mailer.errors import ConflictError, InvalidInput, NotFound
from mailer.issues import parse_issue
from mailer.models import Campaign, Issue, MailingList, Schedule
from mailer.render import RenderedIssue, context_from_settings, render_issue
from subscribers import service
from subscribers.models import Event, Subscriber

UTC = timezone.utc
# A campaign in one of these states has mailed (or is mailing) the stored copy.
STARTED = ("sending", "paused", "sent")
When = Literal["now", "next_slot"] | datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- issues -----------------------------------------------------------------------------

def render_source(source: str, settings: Settings) -> RenderedIssue:
    """Markdown with front matter -> rendered issue, as ``newsletter issue render`` does."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidInput("the issue is empty: start with '---', 'subject: ...', '---', then the content")
    parsed = parse_issue(source)
    return render_issue(parsed, ctx=context_from_settings(settings, list_name=parsed.list_name))


def get_issue(session: Session, issue_id: int) -> Issue:
    issue = session.get(Issue, issue_id)
    if issue is None:
        raise NotFound(f"no issue {issue_id}")
    return issue


def find_issue(session: Session, ref: int | str) -> Issue:
    """An issue by id (a number) or by slug."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        found = session.get(Issue, int(ref))
        if found is not None:
            return found
    found = session.scalar(select(Issue).where(Issue.slug == str(ref)))
    if found is None:
        raise NotFound(f"no issue {ref!r}")
    return found


def issue_campaigns(session: Session, issue_id: int) -> list[Campaign]:
    return list(session.scalars(select(Campaign).where(Campaign.issue_id == issue_id).order_by(Campaign.id)))


def refuse_if_started(session: Session, issue: Issue) -> None:
    for c in issue_campaigns(session, issue.id):
        if c.status in STARTED:
            raise ConflictError(
                f"issue {issue.slug!r} is already {'sent' if c.status == 'sent' else 'sending'} (campaign {c.id} is "
                f"{c.status}); it can no longer be edited: save the changes as a new issue with another slug"
            )


def create_issue(session: Session, *, source: str, settings: Settings) -> Issue:
    rendered = render_source(source, settings)
    if session.scalar(select(Issue.id).where(Issue.slug == rendered.slug)) is not None:
        raise ConflictError(f"there is already an issue {rendered.slug!r}; edit that one, "
                            "or give this one another 'slug:' in its front matter")
    return _store(session, rendered, source)


def update_issue(session: Session, *, issue_id: int, source: str, settings: Settings) -> Issue:
    """Replace an issue's source. Refused once a campaign of it started: subscribers
    already got the stored copy. The slug follows the source (its ``slug:`` or subject)."""
    issue = get_issue(session, issue_id)
    refuse_if_started(session, issue)
    rendered = render_source(source, settings)
    if rendered.slug != issue.slug:
        if session.scalar(select(Issue.id).where(Issue.slug == rendered.slug, Issue.id != issue.id)) is not None:
            raise ConflictError(f"another issue already has the slug {rendered.slug!r}")
        issue.slug = rendered.slug
        session.flush()
    return _store(session, rendered, source)


def _store(session: Session, rendered: RenderedIssue, source: str) -> Issue:
    return campaigns.store_issue(session, slug=rendered.slug, subject=rendered.subject, preheader=rendered.preheader,
                                 source=source, html=rendered.html, text_part=rendered.text,
                                 issue_date=rendered.date)


def delete_issue(session: Session, *, issue_id: int) -> None:
    """Delete an issue nothing was ever planned from (a campaign keeps its issue)."""
    issue = get_issue(session, issue_id)
    planned = issue_campaigns(session, issue.id)
    if planned:
        raise ConflictError(f"issue {issue.slug!r} has campaign {planned[0].id} ({planned[0].status}); "
                            "only an issue with no campaign can be deleted")
    session.delete(issue)
    session.flush()


# --- campaigns --------------------------------------------------------------------------

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


def schedule_issue(session: Session, *, issue_ref: int | str, list_name: str, when: When,
                   settings: Settings, now: datetime) -> Scheduled:
    """Give an issue to a list now, at a time, or at the list's next free weekly slot.
    The issue is rendered again first (templates or settings may have changed since it
    was saved): an issue that does not render is refused and nothing is scheduled."""
    issue = find_issue(session, issue_ref)
    mlist = campaigns.find_list(session, (list_name or "").strip())
    try:
        rendered = render_source(issue.source, settings)
    except InvalidInput as err:
        raise InvalidInput(f"issue {issue.slug!r} does not render, so it cannot be scheduled: {err}") from err
    campaigns.store_issue(session, slug=issue.slug, subject=rendered.subject, preheader=rendered.preheader,
                          source=issue.source, html=rendered.html, text_part=rendered.text,
                          issue_date=issue.issue_date)
    if when == "now":
        campaign, _ = campaigns.create_campaign(session, issue_id=issue.id, list_id=mlist.id)
        started = campaigns.start_campaign(session, campaign_id=campaign.id, batch_size=settings.batch_size, now=now)
        if not started:
            raise ConflictError(f"campaign {campaign.id} of {issue.slug!r} to {mlist.name!r} is already "
                                f"{campaign.status}; nothing new was started")
    else:
        at = None if when == "next_slot" else when
        campaign = schedules.schedule_campaign(session, issue_id=issue.id, list_id=mlist.id, at=at, now=now)
        started = 0
    session.refresh(campaign)
    return Scheduled(campaign.id, campaign.status, aware(campaign.scheduled_at), started)


def enqueue_started(campaign_id: int, started: int, settings: Settings) -> None:
    """Queue the first send tasks, after the commit. If the broker is down the campaign
    is still 'sending' with pending batches, and beat's sweep queues it later."""
    from mailer.dispatch import enqueue_campaign

    if started:
        enqueue_campaign(campaign_id, -(-started // settings.batch_size), settings)


def change_campaign(session: Session, *, campaign_id: int, action: str) -> int:
    """pause / resume / cancel / retry. Returns how much changed (retry: deliveries
    queued again); a change the campaign's state forbids is a ``ConflictError``."""
    c = campaigns.get_campaign(session, campaign_id)
    before = c.status
    if action == "retry":
        return campaigns.retry_failed(session, campaign_id=campaign_id)
    fn = {"pause": campaigns.pause_campaign, "resume": campaigns.resume_campaign,
          "cancel": campaigns.cancel_campaign}.get(action)
    if fn is None:
        raise NotFound(f"no campaign action {action!r}")
    if not fn(session, campaign_id=campaign_id):
        raise ConflictError(f"campaign {campaign_id} is {before}; it cannot be {_past(action)}")
    return 1


def _past(action: str) -> str:
    return {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}.get(action, action)


def campaign_stats(session: Session, campaign_id: int, *, now: datetime | None = None) -> dict:
    """``campaign_report`` with every number read from the records it summarises: the
    delivery rows by status, and the unsubscribe and complaint events of the campaign."""
    report = campaigns.campaign_report(session, campaign_id, now=now)
    counts = queries.delivery_counts(session, campaign_id=campaign_id)
    events = dict(session.execute(
        select(Event.kind, func.count()).where(Event.campaign_id == campaign_id,
                                               Event.kind.in_(("unsubscribe", "complaint")))
        .group_by(Event.kind)
    ).all())
    stats = report.as_dict()
    for key in ("scheduled_at", "started_at", "finished_at"):  # SQLite gives naive UTC back
        if stats[key]:
            stats[key] = aware(datetime.fromisoformat(stats[key])).isoformat()
    stats.update(
        total=sum(counts.values()) if counts else report.total,
        sent=counts.get("sent", 0), failed=counts.get("failed", 0), bounced=counts.get("bounced", 0),
        skipped=counts.get("skipped", 0), queued=counts.get("queued", 0) + counts.get("sending", 0),
        unsubscribed=events.get("unsubscribe", 0), complaints=events.get("complaint", 0),
        deliveries=counts,
    )
    done = stats["total"] - stats["queued"]
    stats["progress"] = round(done / stats["total"], 4) if stats["total"] else (1.0 if report.status == "sent" else 0.0)
    return stats


# --- schedules ----------------------------------------------------------------------------

def schedule_view(session: Session, mlist: MailingList, *, now: datetime, weeks: int = 6) -> dict:
    sch: Schedule | None = schedules.schedule_for(session, mlist.id)
    slots = schedules.upcoming(session, list_id=mlist.id, now=now, weeks=weeks) if sch else []
    return {
        "list": mlist.name,
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
            {"campaign_id": c.id, "issue": slug, "status": c.status, "scheduled_at": aware(c.scheduled_at).isoformat()}
            for c, slug in session.execute(
                select(Campaign, Issue.slug).join(Issue, Issue.id == Campaign.issue_id)
                .where(Campaign.list_id == mlist.id, Campaign.status == "scheduled", Campaign.scheduled_at >= now)
                .order_by(Campaign.scheduled_at)
            ).all()
            if aware(c.scheduled_at) not in {s.slot_at for s in slots}
        ],
    }


def all_lists(session: Session) -> list[MailingList]:
    return list(session.scalars(select(MailingList).order_by(MailingList.name)))


# --- subscribers --------------------------------------------------------------------------

MAX_PAGE = 200


def search_subscribers(session: Session, *, q: str = "", status: str | None = None, list_name: str | None = None,
                       after: int = 0, limit: int = 50) -> dict:
    """Keyset pagination by id (``after``): the millionth row costs what the first does."""
    from subscribers.models import Membership

    limit = max(1, min(limit, MAX_PAGE))
    query = select(Subscriber).where(Subscriber.id > after)
    if q.strip():
        pattern = "%" + q.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(Subscriber.email_key.like(pattern, escape="\\")
                            | func.lower(Subscriber.name).like(pattern, escape="\\"))
    if status:
        query = query.where(Subscriber.status == status)
    if list_name:
        mlist = service.find_list(session, list_name)
        query = query.join(Membership, (Membership.subscriber_id == Subscriber.id) & (Membership.list_id == mlist.id))
    rows = list(session.scalars(query.order_by(Subscriber.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [subscriber_dict(s) for s in rows], "next_after": rows[-1].id if more else None}


def subscriber_dict(s: Subscriber) -> dict:
    iso = lambda d: aware(d).isoformat() if d else None  # noqa: E731
    return {"id": s.id, "email": s.email, "name": s.name, "status": s.status, "attributes": dict(s.attributes or {}),
            "created_at": iso(s.created_at), "confirmed_at": iso(s.confirmed_at),
            "unsubscribed_at": iso(s.unsubscribed_at)}


def edit_subscriber(session: Session, *, subscriber_id: int, name: str | None, status: str | None) -> Subscriber:
    """An editor may rename, confirm a pending subscriber, or unsubscribe one. Bringing
    back someone who left is theirs to do (their own confirmation), not the editor's."""
    sub = service.get_subscriber(session, subscriber_id)
    if status not in (None, sub.status, "active", "unsubscribed"):
        raise InvalidInput(f"status can be set to 'active' (a pending subscriber) or 'unsubscribed', not {status!r}")
    if status == "active" and sub.status != "active":
        if sub.status != "pending":
            raise ConflictError(f"{sub.email} is {sub.status}; only their own confirmation can bring them back")
    clean = service.clean_name(name) if name is not None else None
    if clean is not None:
        service.change_name(session, subscriber_id=sub.id, name=clean)
    if status == "active" and sub.status == "pending":
        service.confirm_subscriber(session, subscriber_id=sub.id, list_id=None, origin="admin")
    elif status == "unsubscribed" and sub.status != "unsubscribed":
        if not service.unsubscribe(session, subscriber_id=sub.id, origin="admin"):
            raise ConflictError(f"{sub.email} is {sub.status}; there is nothing to unsubscribe")
    session.refresh(sub)
    return sub


def export_chunks(engine: Engine, *, list_name: str | None) -> Iterator[bytes]:
    """``subscribers.csvio.export_csv`` as a byte stream: it runs in a thread writing to
    a small bounded queue, so memory stays flat however many subscribers there are, and
    it stops when the client goes away (the generator is closed)."""
    from mailer.db import transaction
    from subscribers.csvio import export_csv

    chunks: queue.Queue = queue.Queue(maxsize=16)
    stop = threading.Event()
    done = object()

    class Pipe(io.TextIOBase):
        def __init__(self):
            self.buf = io.StringIO()

        def write(self, text: str) -> int:
            self.buf.write(text)
            if self.buf.tell() >= 64 * 1024:
                self.flush()
            return len(text)

        def flush(self) -> None:
            data = self.buf.getvalue()
            self.buf = io.StringIO()
            while data and not stop.is_set():
                try:
                    chunks.put(data.encode("utf-8"), timeout=0.5)
                    return
                except queue.Full:
                    continue
            if stop.is_set():
                raise BrokenPipeError("export cancelled")

    def run():
        pipe = Pipe()
        try:
            with transaction(engine) as s:
                export_csv(s, pipe, list_name=list_name)
            pipe.flush()
        except BaseException as err:  # noqa: BLE001 - handed to the reader, which re-raises
            chunks.put(err) if not stop.is_set() else None
        finally:
            if not stop.is_set():
                chunks.put(done)

    thread = threading.Thread(target=run, name="csv-export", daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


# --- growth chart -------------------------------------------------------------------------

def weekly_growth(session: Session, *, now: datetime, weeks: int = 26) -> list[dict]:
    """Per week (oldest first): new subscribers (``subscriber.created_at``) and
    unsubscribes (``event`` of kind unsubscribe). Counted in the database in one query
    each, bucketed by whole weeks back from ``now``."""
    start = now - timedelta(weeks=weeks)
    subs = _bucket_counts(session, "subscriber", "created_at", start, now)
    unsubs = _bucket_counts(session, "event", "created_at", start, now, where="kind = 'unsubscribe'")
    return [
        {"week_start": (start + timedelta(weeks=i)).date().isoformat(), "subscribed": subs.get(i, 0),
         "unsubscribed": unsubs.get(i, 0)}
        for i in range(weeks)
    ]


def _bucket_counts(session: Session, table: str, column: str, start: datetime, end: datetime,
                   where: str = "1 = 1") -> dict[int, int]:
    if session.get_bind().dialect.name == "postgresql":
        bucket = f"FLOOR(EXTRACT(EPOCH FROM ({column} - :start)) / 604800)"
    else:  # SQLite stores ISO text; julianday() reads both the ORM's and CURRENT_TIMESTAMP's format
        bucket = f"CAST((julianday({column}) - julianday(:start)) / 7 AS INTEGER)"
    # Typed parameters: SQLite then gets the ORM's own text format, so comparisons hold.
    sql = text(f"SELECT {bucket} AS week, COUNT(*) FROM {table} "
               f"WHERE {column} >= :start AND {column} < :end AND {where} GROUP BY week").bindparams(
        bindparam("start", type_=DateTime(timezone=True)), bindparam("end", type_=DateTime(timezone=True)))
    rows = session.execute(sql, {"start": start, "end": end}).all()
    return {int(week): n for week, n in rows if week is not None}


def subscriber_totals(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status)).all())
