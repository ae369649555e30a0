"""The welcome mail: a Markdown template per list, sent once to each subscriber who
confirms, through the workers like any issue.

A list's welcome is an issue of its own (slug ``welcome.<list id>``, never in the
archive or the editor's issue list) and one campaign of kind 'welcome' that stays
'sending'. Each confirmation adds one delivery, in a batch of its own
(``queries.queue_welcome``): from there the ordinary engine sends it, so the welcome has
the same transport, headers, DKIM signature, one-click List-Unsubscribe and exactly-once
guarantees as an issue, and is recorded as a delivery of that campaign.

What greets (``greet``): a pending subscriber confirming through their link, an editor
confirming one (``subscribers edit --status active``, the API, the dashboard), and an
editor adding one person as already confirmed (``add --confirmed``: someone new who
joined through the editor). What does not: a bulk import, confirmed or not. An imported
list is people moving from another platform who have been reading for years; greeting
thousands of them at once as new readers is what an editor does not expect (and what
would look like spam to their mailbox providers). A subscriber is greeted once per list,
ever: confirming again, or coming back after leaving, sends nothing more.

No template, no welcome: removing it cancels the welcomes not yet sent
(``set_welcome(source=None)``), and confirmations after that queue none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer import dispatch, queries
from mailer.core.clock import utcnow
from mailer.core.config import Settings
from mailer.core.errors import InvalidInput, ServiceUnavailable
from mailer.issues import is_local, parse_issue
from mailer.models import IN_FLIGHT, Campaign, CampaignKind, CampaignStatus, Delivery, DeliveryStatus, Issue, IssueStatus
from mailer.operations import Queue
from mailer.operations.issues import WELCOME_PREFIX
from mailer.render import context_from_settings, render_issue
from subscribers import service
from subscribers.models import MailingList, Membership

log = logging.getLogger(__name__)
C = CampaignStatus
SLUG_PREFIX = WELCOME_PREFIX  # a dot: no slug of an editor's issue has one (mailer.issues.SLUG_RE)
# Where the optional link to the latest issue points: the archive sends it on to the
# newest issue when it is read, not when the template was saved.
LATEST_PATH = "/issues/latest"
# session.info key: the welcome campaigns this transaction queued deliveries in.
_QUEUED = "newsletter.welcome_queued"


@dataclass(frozen=True)
class Welcome:
    list: str
    subject: str = ""
    source: str = ""
    enabled: bool = False
    campaign_id: int | None = None
    sent: int = 0
    queued: int = 0
    skipped: int = 0
    queue: tuple[Queue, ...] = ()

    def as_dict(self) -> dict:
        return {"list": self.list, "enabled": self.enabled, "subject": self.subject, "source": self.source,
                "campaign_id": self.campaign_id, "sent": self.sent, "queued": self.queued, "skipped": self.skipped}


def welcome_slug(list_id: int) -> str:
    return f"{SLUG_PREFIX}{list_id}"


def _campaign(session: Session, list_id: int) -> Campaign | None:
    return session.scalar(select(Campaign).where(Campaign.list_id == list_id, Campaign.kind == CampaignKind.welcome)
                          .execution_options(populate_existing=True))


def show_welcome(session: Session, *, list_name: str) -> Welcome:
    """The list's welcome template (empty when it has none) and how many went out."""
    mlist = service.find_list(session, (list_name or "").strip())
    campaign = _campaign(session, mlist.id)
    if campaign is None:
        return Welcome(list=mlist.name)
    issue = session.get(Issue, campaign.issue_id)
    counts = dict(session.execute(select(Delivery.status, func.count()).where(Delivery.campaign_id == campaign.id)
                                  .group_by(Delivery.status)).all())
    enabled = campaign.status in IN_FLIGHT
    return Welcome(list=mlist.name, subject=issue.subject if enabled else "", source=issue.source if enabled else "",
                   enabled=enabled, campaign_id=campaign.id, sent=counts.get(DeliveryStatus.sent, 0),
                   queued=counts.get(DeliveryStatus.queued, 0) + counts.get(DeliveryStatus.sending, 0),
                   skipped=counts.get(DeliveryStatus.skipped, 0))


def set_welcome(session: Session, *, list_name: str, source: str | None, settings: Settings,
                latest_link: bool = False) -> Welcome:
    """Set the list's welcome template (Markdown with front matter, like an issue: a
    ``subject:`` is required), rendered now through the issue pipeline; or remove it
    (``source`` None or blank), which cancels the welcomes still queued. ``latest_link``
    adds a link to the latest issue in the archive. A template that does not parse or
    render is refused and changes nothing."""
    mlist = service.find_list(session, (list_name or "").strip())
    now = utcnow()
    campaign = _campaign(session, mlist.id)
    if source is None or not source.strip():
        if campaign is not None and campaign.status in IN_FLIGHT:
            queries.transition_campaign(session, campaign_id=campaign.id, from_=IN_FLIGHT, to=C.cancelled,
                                        finished_at=now)
            queries.skip_unsent(session, campaign_id=campaign.id, reason="the welcome template was removed", now=now)
        return show_welcome(session, list_name=mlist.name)
    if latest_link:
        source = source.rstrip("\n") + f"\n\n[Read the latest issue]({settings.base_url.rstrip('/')}{LATEST_PATH})\n"
    parsed = parse_issue(source, filename="welcome.md")
    if any(is_local(img.src) for img in parsed.images):
        raise InvalidInput("a welcome template can only show images by their https:// address, not local files")
    ctx = context_from_settings(settings, list_name=mlist.description or mlist.name,
                                web_url=f"{settings.base_url.rstrip('/')}/issues/")
    rendered = render_issue(parsed, ctx=ctx)
    slug = welcome_slug(mlist.id)
    issue = session.scalar(select(Issue).where(Issue.slug == slug))
    if issue is None:
        issue = Issue(slug=slug, created_at=now)
        session.add(issue)
    issue.subject, issue.preheader, issue.source = rendered.subject, rendered.preheader, source
    issue.html, issue.text, issue.links = rendered.html, rendered.text, list(rendered.links)
    # 'ready', never 'sent': the archive shows only sent issues, and this is not one.
    issue.status, issue.rendered_at, issue.updated_at = IssueStatus.ready, now, now
    session.flush()
    campaign_id = queries.insert_welcome_campaign(session, issue_id=issue.id, list_id=mlist.id, now=now)
    queries.transition_campaign(session, campaign_id=campaign_id, from_=(C.cancelled,), to=C.sending,
                                finished_at=None)
    ready = queries.claimable_batches(session, campaign_id=campaign_id, now=now)
    shown = show_welcome(session, list_name=mlist.name)
    return Welcome(**{**shown.__dict__, "queue": (Queue(campaign_id, ready),) if ready else ()})


def greet(session: Session, *, subscriber_id: int, list_id: int | None = None) -> list[int]:
    """Queue the welcome of each list (``list_id``, or every list the subscriber is on)
    that has a template, for a subscriber who just became active. Does nothing for one
    already greeted (``queries.queue_welcome``). Returns the welcome campaigns that got a
    delivery; ``wake`` queues their send tasks once the transaction is committed."""
    lists = [list_id] if list_id else list(session.scalars(
        select(Membership.list_id).where(Membership.subscriber_id == subscriber_id)))
    if not lists:
        return []
    session.flush()  # the subscriber's new status, for the insert's check
    now = utcnow()
    queued = []
    for campaign_id in session.scalars(select(Campaign.id).where(
            Campaign.kind == CampaignKind.welcome, Campaign.list_id.in_(lists), Campaign.status.in_(IN_FLIGHT))):
        if queries.queue_welcome(session, campaign_id=campaign_id, subscriber_id=subscriber_id, now=now):
            queued.append(campaign_id)
    session.info.setdefault(_QUEUED, set()).update(queued)
    return queued


def wake(session: Session, settings: Settings) -> int:
    """After the commit of a transaction that greeted someone: one send task per welcome
    campaign it queued a delivery in. A broker that does not answer is logged, not
    raised: the confirmation is done, and beat's sweep hands the batch out once the
    broker is back. Returns the tasks queued."""
    n = 0
    for campaign_id in sorted(session.info.pop(_QUEUED, ())):
        try:
            dispatch.enqueue(campaign_id, settings)
            n += 1
        except ServiceUnavailable as err:
            log.warning("welcome of campaign %s queued; its send task waits for the sweep: %s", campaign_id, err)
    return n


def lists_with_welcome(session: Session) -> dict[int, str]:
    """List id -> name of every list whose welcome is on."""
    return dict(session.execute(
        select(MailingList.id, MailingList.name).join(Campaign, Campaign.list_id == MailingList.id)
        .where(Campaign.kind == CampaignKind.welcome, Campaign.status.in_(IN_FLIGHT))).all())
