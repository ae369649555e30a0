"""A campaign's report, the one the dashboard page, the API and ``newsletter campaign
report`` show: what was delivered and what came back, what people opened and clicked
(machines apart), per link, hour by hour over the first 72 hours, and the same rates for
the list's last campaigns next to it.

Every number is counted from the records it summarises: deliveries by status, soft
bounces, the campaign's unsubscribe and complaint events, and clicks and opens from the
events still kept plus the counts the retention roll-up left (``mailer.engagement``). The
roll-up keeps per-hour counts of the first 72 hours too, so the report reads the same
before and after it, and in strict mode (``NEWSLETTER_TRACKING_STRICT``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer import campaigns, engagement, queries
from mailer.core.errors import InvalidInput
from mailer.models import UNSENT, Campaign, DeliveryStatus, EngagementKind, Issue
from subscribers.models import Event, EventKind

D = DeliveryStatus
HOURS = queries.REPORT_HOURS
COMPARED = 5  # the list's last campaigns the report compares
MAX_COMPARED = 50


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _events(session: Session, campaign_id: int) -> dict[str, int]:
    found = dict(session.execute(
        select(Event.kind, func.count()).where(Event.campaign_id == campaign_id,
                                               Event.kind.in_((EventKind.unsubscribe, EventKind.complaint)))
        .group_by(Event.kind)
    ).all())
    return {kind: int(found.get(kind, 0)) for kind in (EventKind.unsubscribe, EventKind.complaint)}


def _summary(session: Session, campaign: Campaign) -> dict:
    """The numbers every row of the comparison shares with the report itself."""
    counts = queries.delivery_counts(session, campaign_id=campaign.id)
    delivered = counts.get(D.sent, 0)
    hard = counts.get(D.bounced, 0)
    seen = engagement.counts(session, campaign_id=campaign.id)
    events = _events(session, campaign.id)
    issue = session.get(Issue, campaign.issue_id)
    return {
        "campaign_id": campaign.id, "issue": issue.slug, "subject": issue.subject, "status": campaign.status,
        "started_at": campaign.started_at.isoformat() if campaign.started_at else None,
        "delivered": delivered,
        "opened": seen["unique_opens"], "clicked": seen["unique_clicks"],
        "unsubscribes": events[EventKind.unsubscribe], "complaints": events[EventKind.complaint],
        "hard_bounces": hard,
        # Of the messages delivered, each reader once; bounces of those the relay took.
        "open_rate": _rate(seen["unique_opens"], delivered),
        "click_rate": _rate(seen["unique_clicks"], delivered),
        "click_to_open_rate": _rate(seen["unique_clicks"], seen["unique_opens"]),
        "unsubscribe_rate": _rate(events[EventKind.unsubscribe], delivered),
        "complaint_rate": _rate(events[EventKind.complaint], delivered),
        "bounce_rate": _rate(hard, delivered + hard),
        "_counts": counts, "_seen": seen,
    }


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def hourly(session: Session, *, campaign_id: int, start: datetime | None) -> list[dict]:
    """Clicks and opens in each of the first ``HOURS`` hours from ``start``: people's,
    and machines' apart. All zero for a campaign that has not started."""
    out = [{"hour": h, "opens": 0, "clicks": 0, "machine_opens": 0, "machine_clicks": 0} for h in range(HOURS)]
    if start is None:
        return out
    for kind, machine, hour, events in queries.engagement_hours(session, campaign_id=campaign_id, start=start):
        if 0 <= hour < HOURS and machine is not None:
            key = ("machine_" if machine else "") + ("opens" if kind == EngagementKind.open else "clicks")
            out[hour][key] += events
    return out


def report(session: Session, *, campaign_id: int, compare: int = COMPARED) -> dict:
    """The campaign's report as plain values (the module docstring says what it counts).

    ``compare``: how many of the list's campaigns, started up to this one and newest
    first (this one among them), get a row of the same rates in ``compared``."""
    if not 0 <= compare <= MAX_COMPARED:
        raise InvalidInput(f"compare with 0 to {MAX_COMPARED} campaigns, not {compare}")
    campaign = campaigns.get_campaign(session, campaign_id)
    this = _summary(session, campaign)
    counts, seen = this["_counts"], this["_seen"]
    links = engagement.links(session, campaign_id=campaign_id,
                             targets=queries.campaign_links(session, campaign_id=campaign_id) or [])
    compared = []
    if compare and campaign.started_at is not None:
        recent = session.scalars(
            select(Campaign).where(Campaign.list_id == campaign.list_id, Campaign.started_at.is_not(None),
                                   Campaign.started_at <= campaign.started_at)
            .order_by(Campaign.started_at.desc(), Campaign.id.desc()).limit(compare)
        ).all()
        compared = [_public(this if c.id == campaign.id else _summary(session, c)) for c in recent]
    delivered = this["delivered"]
    return {
        **{k: this[k] for k in ("campaign_id", "issue", "subject", "status", "started_at")},
        "list": campaigns.campaign_list_name(session, campaign),
        "finished_at": campaign.finished_at.isoformat() if campaign.finished_at else None,
        "total": sum(counts.values()),
        "delivered": delivered,
        D.bounced: {"hard": this["hard_bounces"], "soft": queries.soft_bounces(session, campaign_id=campaign_id)},
        D.failed: counts.get(D.failed, 0),
        D.skipped: counts.get(D.skipped, 0),
        D.queued: sum(counts.get(s, 0) for s in UNSENT),  # still to be sent, or being sent
        "complaints": this["complaints"],
        "unsubscribes": this["unsubscribes"],
        # People's opens and clicks: the readers (each once) and every event.
        "opens": {"people": seen["unique_opens"], "total": seen["human_opens"], "rate": this["open_rate"]},
        "clicks": {"people": seen["unique_clicks"], "total": seen["human_clicks"], "rate": this["click_rate"],
                   "of_opened": this["click_to_open_rate"]},
        "rates": {k: this[k] for k in ("open_rate", "click_rate", "click_to_open_rate", "unsubscribe_rate",
                                       "complaint_rate", "bounce_rate")},
        "links": links,
        "hours": hourly(session, campaign_id=campaign_id, start=campaign.started_at),
        "machines": {"opens": seen["machine_opens"], "clicks": seen["machine_clicks"],
                     "reasons": dict(sorted(seen["machine_reasons"].items(), key=lambda kv: (-kv[1], kv[0])))},
        "compared": compared,
    }
