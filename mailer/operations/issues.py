"""Issues: save one from its Markdown, change it until it is sent, delete one nothing
was planned from, preview it, send a test of it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import campaigns
from mailer.core.config import Settings
from mailer.core.errors import ConflictError, InvalidInput, NotFound
from mailer.issues import parse_issue
from mailer.models import STARTED, Campaign, CampaignStatus, Issue
from mailer.render import (
    RenderedIssue,
    context_from_settings,
    preview_html,
    preview_text,
    render_issue,
)
from mailer.testsend import TestResult
from mailer.testsend import send_test as _send_test
from subscribers.models import MailingList


def render_source(source: str, *, settings: Settings, filename: str | None = None) -> RenderedIssue:
    """Markdown with front matter -> rendered issue. ``filename`` names the file it came
    from: its name is the slug when the front matter gives none."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidInput("the issue is empty: start with '---', 'subject: ...', '---', then the content")
    parsed = parse_issue(source, filename=filename)
    return render_issue(parsed, ctx=context_from_settings(settings, list_name=parsed.list_name))


def preview(source: str, *, settings: Settings) -> dict:
    """Render Markdown without saving it: subject, slug, the HTML and text with sample
    values in place of each subscriber's, and the warnings."""
    rendered = render_source(source, settings=settings)
    return {"slug": rendered.slug, "subject": rendered.subject, "preheader": rendered.preheader,
            "html": preview_html(rendered), "text": preview_text(rendered), "warnings": list(rendered.warnings)}


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
    """Subscribers got the stored copy of a started issue: it can no longer change."""
    for c in issue_campaigns(session, issue.id):
        if c.status in STARTED:
            raise ConflictError(
                f"issue {issue.slug!r} is already {CampaignStatus.sent if c.status == CampaignStatus.sent else CampaignStatus.sending} "
                f"(campaign {c.id} is {c.status}); it can no longer be edited: save the changes as a new issue "
                "with another slug"
            )


def create_issue(session: Session, *, source: str, settings: Settings, filename: str | None = None) -> Issue:
    """A new issue. Refused when its slug is taken (edit that one, or give another)."""
    rendered = render_source(source, settings=settings, filename=filename)
    if session.scalar(select(Issue.id).where(Issue.slug == rendered.slug)) is not None:
        raise ConflictError(f"there is already an issue {rendered.slug!r}; edit that one, "
                            "or give this one another 'slug:' in its front matter")
    return _store(session, rendered, source)


def update_issue(session: Session, *, issue_id: int, source: str, settings: Settings) -> Issue:
    """Replace an issue's source. Refused once a campaign of it started: subscribers
    already got the stored copy. The slug follows the source (its ``slug:`` or subject)."""
    issue = get_issue(session, issue_id)
    refuse_if_started(session, issue)
    rendered = render_source(source, settings=settings)
    if rendered.slug != issue.slug:
        if session.scalar(select(Issue.id).where(Issue.slug == rendered.slug, Issue.id != issue.id)) is not None:
            raise ConflictError(f"another issue already has the slug {rendered.slug!r}")
        issue.slug = rendered.slug
        session.flush()
    return _store(session, rendered, source)


def save_issue(session: Session, *, source: str, settings: Settings, filename: str | None = None) -> Issue:
    """Create the issue, or update the one with its slug (what ``newsletter send FILE``
    does, so that sending a file twice finds the same issue). Once sent, an issue with
    a changed source is refused; the same source again is fine."""
    rendered = render_source(source, settings=settings, filename=filename)
    return _store(session, rendered, source)


def rerender(session: Session, issue: Issue, *, settings: Settings) -> Issue:
    """Render a stored issue again before it is scheduled (templates or settings may
    have changed since it was saved). An issue that no longer renders is refused."""
    try:
        rendered = render_source(issue.source, settings=settings)
    except InvalidInput as err:
        raise InvalidInput(f"issue {issue.slug!r} does not render, so it cannot be scheduled: {err}") from err
    return campaigns.store_issue(session, slug=issue.slug, subject=rendered.subject, preheader=rendered.preheader,
                                 source=issue.source, html=rendered.html, text_part=rendered.text,
                                 issue_date=issue.issue_date)


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


def send_test(*, source: str, to: list[str], settings: Settings) -> list[TestResult]:
    """The real message of an issue, marked [TEST], to a few addresses, outside any
    campaign. Takes the source, not a session: no database lock is held while the
    relay is talked to."""
    return _send_test(render_source(source, settings=settings), to, settings)


def describe(session: Session, issue: Issue, *, source: bool = False) -> dict:
    """An issue as the API and the dashboard show it, with its campaigns."""
    lists = dict(session.execute(select(MailingList.id, MailingList.name)).all())
    out = {
        "id": issue.id, "slug": issue.slug, "subject": issue.subject, "preheader": issue.preheader,
        "status": issue.status, "issue_date": issue.issue_date,
        "created_at": _iso(issue.created_at), "rendered_at": _iso(issue.rendered_at),
        "campaigns": [{"id": c.id, "list": lists.get(c.list_id), "status": c.status,
                       "scheduled_at": _iso(c.scheduled_at)} for c in issue_campaigns(session, issue.id)],
    }
    if source:
        out["source"] = issue.source
    return out


def list_issues(session: Session) -> list[dict]:
    return [describe(session, i) for i in session.scalars(select(Issue).order_by(Issue.id.desc()))]


def _iso(value) -> str | None:
    return value.isoformat() if value else None
