"""The public archive of sent issues: a list page, each issue's web version, an Atom feed.

The web version is the HTML that was mailed, with the per-recipient markers filled with
neutral values: no name, no personal unsubscribe or preferences link (those carry a
token that acts for one subscriber), and no tracking of any kind.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from mailer.core.clock import UTC, utcnow
from mailer.core.config import Settings
from mailer.issues import parse_issue
from mailer.merge import FIELDS, personalise
from mailer.models import Issue, IssueStatus
from mailer.render import context_from_settings, render_issue
from mailer.web.deps import SessionDep, SettingsDep
from mailer.web.templating import page_templates

router = APIRouter()

ATOM_NS = "http://www.w3.org/2005/Atom"
FEED_ENTRIES = 20
# Nothing in an issue runs code: no scripts, no forms, no frames; images and links only.
WEB_VERSION_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# XML 1.0 cannot carry these at all, escaped or not.
_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@router.get("/issues/", response_class=HTMLResponse)
def list_issues(request: Request, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    issues = [
        {
            "url": f"/issues/{issue.slug}",
            "subject": issue.subject,
            "preheader": issue.preheader,
            "date": issue.issue_date or (issue.rendered_at.date().isoformat() if issue.rendered_at else ""),
        }
        for issue in _sent_issues(session)
    ]
    return page_templates(settings).TemplateResponse(
        request,
        "web/archive_list.html",
        {
            "archive_title": _archive_title(settings),
            "issues": issues,
            "feed_url": "/issues/feed.atom",
            "subscribe_url": "/subscribe",
        },
    )


# Declared before /issues/{slug}, which would otherwise take "feed.atom" for a slug.
@router.get("/issues/feed.atom")
def issues_feed(session: SessionDep, settings: SettingsDep) -> Response:
    body = build_feed(_sent_issues(session, limit=FEED_ENTRIES), settings=settings)
    return Response(body, media_type="application/atom+xml; charset=utf-8")


@router.get("/issues/{slug}", response_class=HTMLResponse)
def show_issue(slug: str, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    issue = session.scalars(select(Issue).where(Issue.slug == slug, Issue.status == IssueStatus.sent)).first()
    if issue is None:  # an unsent issue is as unknown as a missing one: no drafts leak
        raise HTTPException(status_code=404, detail="No such issue")
    return HTMLResponse(web_version(issue, settings=settings), headers=WEB_VERSION_HEADERS)


def web_version(issue: Issue, *, settings: Settings) -> str:
    """The mailed HTML with neutral values in place of the per-recipient markers."""
    html = issue.html
    if not html:  # rendered before it was stored? render it now from its source
        ctx = context_from_settings(settings, web_url=f"{settings.base_url}/issues/{issue.slug}")
        html = render_issue(parse_issue(issue.source), ctx=ctx).html
    subscribe = f"{settings.base_url}/subscribe"
    # Every merge field gets a value (a field added later becomes ""), so no marker survives.
    neutral = dict.fromkeys(FIELDS, "") | {"name": "reader", "unsubscribe_url": subscribe, "preferences_url": subscribe}
    return personalise(html, neutral, html=True)


def build_feed(issues: list[Issue], *, settings: Settings) -> bytes:
    """An Atom (RFC 4287) feed of ``issues``, newest first."""
    base = settings.base_url
    ET.register_namespace("", ATOM_NS)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}", attrs)
        if text is not None:
            element.text = _XML_ILLEGAL.sub("", text)
        return element

    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    sub(feed, "title", _archive_title(settings))
    sub(feed, "id", f"{base}/issues/")
    sub(feed, "link", rel="self", href=f"{base}/issues/feed.atom")
    sub(feed, "link", rel="alternate", type="text/html", href=f"{base}/issues/")
    author = sub(feed, "author")
    sub(author, "name", settings.from_address.display_name or settings.from_address.addr_spec)
    updated = [_updated(issue) for issue in issues]
    sub(feed, "updated", _rfc3339(max(updated) if updated else utcnow()))
    for issue, when in zip(issues, updated):
        url = f"{base}/issues/{issue.slug}"
        entry = sub(feed, "entry")
        sub(entry, "title", issue.subject)
        sub(entry, "id", url)
        sub(entry, "link", rel="alternate", type="text/html", href=url)
        sub(entry, "updated", _rfc3339(when))
        if issue.preheader:
            sub(entry, "summary", issue.preheader)
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


def _sent_issues(session, *, limit: int | None = None) -> list[Issue]:
    query = (
        select(Issue)
        .where(Issue.status == IssueStatus.sent)
        .order_by(Issue.issue_date.desc(), Issue.rendered_at.desc(), Issue.id.desc())
    )
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query))


def _archive_title(settings: Settings) -> str:
    name = settings.from_address.display_name
    return f"{name}: archive" if name else "Newsletter archive"


def _updated(issue: Issue) -> datetime:
    return issue.rendered_at or issue.updated_at or issue.created_at or utcnow()


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

