"""The public archive of sent issues, as a small site: an index in pages, each issue's
own page, its published images, an Atom feed with the full content, and robots.txt.

An issue's page is rendered from the same parsed content as its email
(``mailer.issues``) through a public template (``web/archive_issue.html``): no
greeting, no "you are receiving this", no unsubscribe or preferences link (those carry
a token that acts for one subscriber), no tracking; instead a subscribe form, the
previous and next issues, and the way back to the index.

Rendered pages are cached in this process, keyed by everything they are made from: the
issue's id and ``updated_at`` (any save changes it), its neighbours (a newly sent issue
changes its predecessor's "next" link), and the settings the page shows. A change to
any of them is a new key, so nothing is ever served stale and nothing has to be
invalidated by hand; an operator's template change needs a restart of ``newsletter
web``. The same key is the page's ETag: a browser or a proxy that has it gets a 304.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.core.clock import UTC, utcnow
from mailer.core.config import Settings
from mailer.core.errors import InvalidInput
from mailer.images import MEDIA_TYPES
from mailer.issues import is_local, parse_issue
from mailer.models import Asset, Campaign, Issue, IssueStatus
from mailer.operations.issues import image_refs
from mailer.web.deps import SessionDep, SettingsDep
from mailer.web.templating import page_templates
from subscribers.models import MailingList

router = APIRouter()

ATOM_NS = "http://www.w3.org/2005/Atom"
FEED_ENTRIES = 20
PAGE_SIZE = 20
DESCRIPTION_CHARS = 200
CACHED_PAGES = 256
# Pages with no script at all; the only form posts to our own /subscribe.
PUBLIC_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self' https: data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# A few minutes: a page changes only when an issue is sent or corrected.
PAGE_CACHE_CONTROL = "public, max-age=300"
# An asset's URL is the hash of its bytes: it never changes.
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
ROBOTS = """User-agent: *
Allow: /issues/
Disallow: /u/
Disallow: /p/
Disallow: /confirm/
Disallow: /admin
Disallow: /api/
"""
# XML 1.0 cannot carry these at all, escaped or not.
_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ASSET_NAME = re.compile(r"^([0-9a-f]{64})\.([a-z]{3,4})$")

_pages: OrderedDict[str, str] = OrderedDict()


@dataclass(frozen=True)
class Entry:
    """One sent issue as the index and the neighbours' links show it."""

    id: int
    slug: str
    subject: str
    preheader: str
    date: str

    @property
    def url(self) -> str:
        return f"/issues/{self.slug}"


@router.get("/robots.txt", include_in_schema=False)
def robots(settings: SettingsDep) -> PlainTextResponse:
    return PlainTextResponse(ROBOTS + f"Sitemap: {settings.base_url}/issues/feed.atom\n")


@router.get("/issues/", response_class=HTMLResponse)
def list_issues(request: Request, session: SessionDep, settings: SettingsDep, page: str = "1") -> HTMLResponse:
    number = _page_number(page)
    total = session.scalar(select(func.count()).select_from(Issue).where(Issue.status == IssueStatus.sent)) or 0
    pages = max(1, -(-total // PAGE_SIZE))
    if number > pages:
        raise HTTPException(status_code=404, detail=f"No page {number}: the archive has {pages}")
    entries = _entries(session, offset=(number - 1) * PAGE_SIZE, limit=PAGE_SIZE)

    def page_url(n: int) -> str:
        return "/issues/" if n == 1 else f"/issues/?page={n}"

    title = _archive_title(settings)
    return page_templates(settings).TemplateResponse(
        request,
        "web/archive_list.html",
        {
            "archive_title": title,
            "description": f"Every issue of {_sender(settings)} so far, newest first.",
            "canonical": settings.base_url + page_url(number),
            "issues": entries,
            "page": number,
            "pages": pages,
            "newer_url": page_url(number - 1) if number > 1 else "",
            "older_url": page_url(number + 1) if number < pages else "",
            "feed_url": "/issues/feed.atom",
            "subscribe_url": "/subscribe",
        },
        headers={**PUBLIC_HEADERS, "Cache-Control": PAGE_CACHE_CONTROL},
    )


# Declared before /issues/{slug}, which would otherwise take "feed.atom" for a slug.
@router.get("/issues/feed.atom")
def issues_feed(session: SessionDep, settings: SettingsDep) -> Response:
    body = build_feed(_sent_issues(session, limit=FEED_ENTRIES), session=session, settings=settings)
    return Response(body, media_type="application/atom+xml; charset=utf-8",
                    headers={"Cache-Control": PAGE_CACHE_CONTROL})


@router.get("/issues/assets/{name}")
def issue_asset(name: str, request: Request, session: SessionDep) -> Response:
    """A published image. Served for any issue that names it, sent or not (a test send
    or a scheduled issue shows its images too); its URL is the hash of its bytes."""
    match = _ASSET_NAME.match(name)
    asset = session.scalar(select(Asset).where(Asset.digest == match.group(1))) if match else None
    if asset is None or MEDIA_TYPES.get(match.group(2)) != asset.media_type:
        raise HTTPException(status_code=404, detail="No such image")
    etag = f'"{asset.digest}"'
    headers = {"Cache-Control": ASSET_CACHE_CONTROL, "ETag": etag, "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "default-src 'none'"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.data, media_type=asset.media_type, headers=headers)


@router.get("/issues/latest", include_in_schema=False)
def latest_issue(session: SessionDep, settings: SettingsDep) -> Response:
    """The newest issue in the archive (a welcome mail's link to it: sent once, read any
    time later), or the archive itself while it is empty. Not cached: it moves."""
    latest = session.scalars(select(Issue.slug).where(Issue.status == IssueStatus.sent).order_by(*_order())).first()
    target = f"/issues/{latest}" if latest else "/issues/"
    return RedirectResponse(target, status_code=302, headers={"Cache-Control": "no-store"})


@router.get("/issues/{slug}", response_class=HTMLResponse)
def show_issue(slug: str, request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    issue = session.scalars(select(Issue).where(Issue.slug == slug, Issue.status == IssueStatus.sent)).first()
    if issue is None:  # an unsent issue is as unknown as a missing one: no drafts leak
        raise HTTPException(status_code=404, detail="No such issue")
    older, newer = _neighbours(session, issue)
    key = _cache_key(issue, older, newer, settings)
    etag = f'"{key}"'
    headers = {**PUBLIC_HEADERS, "Cache-Control": PAGE_CACHE_CONTROL, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    page = _pages.get(key)
    if page is None:
        page = render_issue_page(session, issue, older=older, newer=newer, settings=settings)
        _pages[key] = page
        while len(_pages) > CACHED_PAGES:
            _pages.popitem(last=False)
    else:
        _pages.move_to_end(key)
    return HTMLResponse(page, headers=headers)


def render_issue_page(session: Session, issue: Issue, *, older: Entry | None, newer: Entry | None,
                      settings: Settings) -> str:
    """An issue's public page: its content through the public template."""
    parsed = _parsed(session, issue, settings)
    sections = parsed.sections if parsed else ()
    list_name = (parsed.list_name if parsed else "") or _sender(settings)
    context = {
        "subject": issue.subject,
        "description": _description(issue, parsed),
        "url": f"{settings.base_url}/issues/{issue.slug}",
        "image": _first_image(parsed, settings),
        "date": issue.issue_date,
        "human_date": _human_date(issue.issue_date),
        "lang": parsed.lang if parsed else "en",
        "dir": parsed.dir if parsed else "ltr",
        "list_name": list_name,
        "archive_title": _archive_title(settings),
        "body": _body(settings, sections),
        "older": older,
        "newer": newer,
        "index_url": "/issues/",
        "feed_url": "/issues/feed.atom",
        "signup_list": _signup_list(session, issue),  # the form subscribes to the list the issue went to
    }
    template = page_templates(settings).env.get_template("web/archive_issue.html")
    return template.render(context)


def build_feed(issues: list[Issue], *, session: Session, settings: Settings) -> bytes:
    """An Atom (RFC 4287) feed of ``issues``, newest first, each with its full content."""
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
    sub(author, "name", _sender(settings))
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
        parsed = _parsed(session, issue, settings)
        if parsed is not None:
            sub(entry, "content", _body(settings, parsed.sections), type="html")
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


# -- helpers -------------------------------------------------------------------------


def _page_number(page: str) -> int:
    if not (page.isascii() and page.isdigit()) or not 0 < int(page) < 1_000_000:
        raise InvalidInput(f"page must be a whole number from 1, not {page[:20]!r}")
    return int(page)


def _order():
    return Issue.issue_date.desc(), Issue.rendered_at.desc(), Issue.id.desc()


def _entries(session: Session, *, offset: int = 0, limit: int | None = None) -> list[Entry]:
    query = (select(Issue.id, Issue.slug, Issue.subject, Issue.preheader, Issue.issue_date, Issue.rendered_at)
             .where(Issue.status == IssueStatus.sent).order_by(*_order()).offset(offset))
    if limit:
        query = query.limit(limit)
    return [Entry(id=row.id, slug=row.slug, subject=row.subject, preheader=row.preheader,
                  date=row.issue_date or (row.rendered_at.date().isoformat() if row.rendered_at else ""))
            for row in session.execute(query)]


def _neighbours(session: Session, issue: Issue) -> tuple[Entry | None, Entry | None]:
    """(the issue before it, the one after it) in the archive's order. A weekly
    newsletter has a few hundred issues: their ids, slugs and subjects are one small read."""
    entries = _entries(session)
    at = next(i for i, e in enumerate(entries) if e.id == issue.id)
    older = entries[at + 1] if at + 1 < len(entries) else None
    newer = entries[at - 1] if at > 0 else None
    return older, newer


def _cache_key(issue: Issue, older: Entry | None, newer: Entry | None, settings: Settings) -> str:
    parts = [issue.id, issue.updated_at, issue.slug, older, newer, settings.base_url, settings.from_,
             tuple(settings.template_folders)]
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()[:32]


def _parsed(session: Session, issue: Issue, settings: Settings):
    """The issue's content, its local images where they are published; None for an
    issue stored without a source that parses (nothing to show but its subject)."""
    try:
        return parse_issue(issue.source, filename=None, images=image_refs(session, issue, settings=settings))
    except InvalidInput:
        return None


def _body(settings: Settings, sections) -> str:
    template = page_templates(settings).env.get_template("web/_issue_body.html")
    return template.render(sections=sections)


def _description(issue: Issue, parsed) -> str:
    text = issue.preheader or (parsed.preheader if parsed else "") or issue.subject
    return text if len(text) <= DESCRIPTION_CHARS else text[: DESCRIPTION_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _first_image(parsed, settings: Settings) -> str:
    for image in parsed.images if parsed else ():
        url = image.published or ("" if is_local(image.src) else image.src)
        if url.startswith("https://") or url.startswith(settings.base_url):
            return url
    return ""


def _signup_list(session: Session, issue: Issue) -> str:
    """The list the issue went to (its first campaign's), for the subscribe form."""
    return session.scalar(select(MailingList.name).join(Campaign, Campaign.list_id == MailingList.id)
                          .where(Campaign.issue_id == issue.id).order_by(Campaign.id).limit(1)) or ""


def _sent_issues(session, *, limit: int | None = None) -> list[Issue]:
    query = select(Issue).where(Issue.status == IssueStatus.sent).order_by(*_order())
    if limit:
        query = query.limit(limit)
    return list(session.scalars(query))


def _sender(settings: Settings) -> str:
    return settings.from_address.display_name or settings.from_address.addr_spec


def _archive_title(settings: Settings) -> str:
    name = settings.from_address.display_name
    return f"{name}: archive" if name else "Newsletter archive"


def _human_date(iso: str) -> str:
    try:
        d = datetime.fromisoformat(iso).date()
    except ValueError:
        return iso
    return f"{d:%B} {d.day}, {d.year}"


def _updated(issue: Issue) -> datetime:
    return issue.rendered_at or issue.updated_at or issue.created_at or utcnow()


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
