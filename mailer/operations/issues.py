"""Issues: save one from its Markdown, change it until it is sent, delete one nothing
was planned from, preview it, send a test of it.

An issue saved from a file publishes the local images its Markdown names (``folder``:
the file's folder; ``mailer.images``); saved from text alone (the API, the dashboard),
it can only use the images published with it before, found by name in
``issue_image``, or images with an https:// URL."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer import campaigns, images
from mailer.core.config import Settings
from mailer.core.errors import ConflictError, InvalidInput, NotFound
from mailer.issues import ImageRef, parse_issue
from mailer.models import STARTED, Asset, Campaign, CampaignStatus, Issue, IssueImage
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


def render_source(source: str, *, settings: Settings, filename: str | None = None,
                  images: Mapping[str, ImageRef] | None = None, strict: bool | None = None) -> RenderedIssue:
    """Markdown with front matter -> rendered issue. ``filename`` names the file it came
    from: its name is the slug when the front matter gives none. ``images``: where its
    local images are published. ``strict`` (None: ``NEWSLETTER_STRICT_RENDER``): every
    warning refuses the issue."""
    parsed = _parse(source, filename=filename, images=images)
    return render_issue(parsed, ctx=context_from_settings(settings, list_name=parsed.list_name, strict=strict))


def _parse(source: str, *, filename: str | None = None, images: Mapping[str, ImageRef] | None = None):
    if not isinstance(source, str) or not source.strip():
        raise InvalidInput("the issue is empty: start with '---', 'subject: ...', '---', then the content")
    return parse_issue(source, filename=filename, images=images)


def local_image_names(source: str, *, filename: str | None = None) -> list[str]:
    """The local images an issue names (files next to it), each once."""
    return images.local_names(_parse(source, filename=filename))


def read_local_images(source: str, *, folder: Path, filename: str | None = None) -> list[images.LocalImage]:
    """The local images an issue file names, read from its folder (nothing stored):
    for a preview. A missing or unreadable image is an ``InvalidInput`` naming it."""
    return images.read_images(folder, local_image_names(source, filename=filename))


def publish_images(session: Session, *, source: str, settings: Settings, folder: Path | None = None,
                   issue: Issue | None = None, filename: str | None = None) -> dict[str, Asset]:
    """The local images ``source`` names, published: read from ``folder`` when the
    issue comes from a file (and stored as assets), else the ones published with
    ``issue`` before. A name that is neither is an ``InvalidInput`` naming it."""
    names = local_image_names(source, filename=filename)
    known = _published_with(session, issue) if issue is not None else {}
    found: dict[str, Asset] = {}
    for name in names:
        if folder is not None:
            found[name] = _store_asset(session, images.read_image(folder, name))
        elif name in known:
            found[name] = known[name]
        else:
            raise InvalidInput(
                f"image {name!r}: no such file was published with this issue; save the issue from its file "
                "(newsletter issue create FILE, or issue update ID FILE) to publish the images next to it, "
                "or give the image an https:// URL")
    return found


def image_refs(session: Session, issue: Issue, *, settings: Settings) -> dict[str, ImageRef]:
    """Where the local images of a saved issue are published."""
    return _refs(_published_with(session, issue), settings)


def image_ref(asset: Asset, *, settings: Settings) -> ImageRef:
    return images.published_ref(settings.base_url, digest=asset.digest, media_type=asset.media_type,
                                width=asset.width, height=asset.height)


def _refs(assets: Mapping[str, Asset], settings: Settings) -> dict[str, ImageRef]:
    return {name: image_ref(asset, settings=settings) for name, asset in assets.items()}


def _published_with(session: Session, issue: Issue) -> dict[str, Asset]:
    rows = session.execute(select(IssueImage.name, Asset).join(Asset, Asset.id == IssueImage.asset_id)
                           .where(IssueImage.issue_id == issue.id)).all()
    return {name: asset for name, asset in rows}


def _store_asset(session: Session, image: images.LocalImage) -> Asset:
    """The asset row of ``image``, added when new. Content-addressed, so two saves of the
    same file (even at once) end with one row: the loser of the race finds the winner's."""
    found = session.scalar(select(Asset).where(Asset.digest == image.digest))
    if found is not None:
        return found
    try:
        with session.begin_nested():
            asset = Asset(digest=image.digest, media_type=image.media_type, width=image.width,
                          height=image.height, data=image.data)
            session.add(asset)
    except IntegrityError:
        return session.scalars(select(Asset).where(Asset.digest == image.digest)).one()
    return asset


def _link_images(session: Session, issue: Issue, assets: Mapping[str, Asset]) -> None:
    """Make ``issue_image`` say exactly which published images the issue names now."""
    session.execute(delete(IssueImage).where(IssueImage.issue_id == issue.id))
    session.add_all(IssueImage(issue_id=issue.id, name=name, asset_id=asset.id) for name, asset in assets.items())
    session.flush()


def preview(source: str, *, settings: Settings, images: Mapping[str, ImageRef] | None = None) -> dict:
    """Render Markdown without saving it: subject, slug, the HTML and text with sample
    values in place of each subscriber's, and the warnings."""
    rendered = render_source(source, settings=settings, images=images)
    return {"slug": rendered.slug, "subject": rendered.subject, "preheader": rendered.preheader,
            "html": preview_html(rendered), "text": preview_text(rendered), "warnings": list(rendered.warnings)}


def get_issue(session: Session, issue_id: int) -> Issue:
    issue = session.get(Issue, issue_id)
    if issue is None:
        raise NotFound(f"no issue {issue_id}")
    return issue


# The slugs of the lists' welcome issues (``operations.welcome``), which are not the
# editor's to list, send or delete; no slug of theirs has a dot.
WELCOME_PREFIX = "welcome."


def find_issue(session: Session, ref: int | str) -> Issue:
    """An issue by id (a number) or by slug."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit()):
        found = session.get(Issue, int(ref))
        if found is not None and not found.slug.startswith(WELCOME_PREFIX):
            return found
    found = session.scalar(select(Issue).where(Issue.slug == str(ref)))
    if found is None or found.slug.startswith(WELCOME_PREFIX):  # a list's welcome: ``operations.welcome``
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


def create_issue(session: Session, *, source: str, settings: Settings, filename: str | None = None,
                 folder: Path | None = None) -> Issue:
    """A new issue. Refused when its slug is taken (edit that one, or give another).
    ``folder``: where the issue file is, for its local images."""
    assets = publish_images(session, source=source, settings=settings, folder=folder, filename=filename)
    rendered = render_source(source, settings=settings, filename=filename, images=_refs(assets, settings))
    if session.scalar(select(Issue.id).where(Issue.slug == rendered.slug)) is not None:
        raise ConflictError(f"there is already an issue {rendered.slug!r}; edit that one, "
                            "or give this one another 'slug:' in its front matter")
    return _store(session, rendered, source, assets)


def update_issue(session: Session, *, issue_id: int, source: str, settings: Settings,
                 folder: Path | None = None) -> Issue:
    """Replace an issue's source. Refused once a campaign of it started: subscribers
    already got the stored copy. The slug follows the source (its ``slug:`` or subject).
    Without ``folder``, local images are the ones published with the issue before."""
    issue = get_issue(session, issue_id)
    refuse_if_started(session, issue)
    assets = publish_images(session, source=source, settings=settings, folder=folder, issue=issue)
    rendered = render_source(source, settings=settings, images=_refs(assets, settings))
    if rendered.slug != issue.slug:
        if session.scalar(select(Issue.id).where(Issue.slug == rendered.slug, Issue.id != issue.id)) is not None:
            raise ConflictError(f"another issue already has the slug {rendered.slug!r}")
        issue.slug = rendered.slug
        session.flush()
    return _store(session, rendered, source, assets)


def save_issue(session: Session, *, source: str, settings: Settings, filename: str | None = None,
               folder: Path | None = None) -> Issue:
    """Create the issue, or update the one with its slug (what ``newsletter send FILE``
    does, so that sending a file twice finds the same issue). Once sent, an issue with
    a changed source is refused; the same source again is fine."""
    slug = _parse(source, filename=filename).slug
    existing = session.scalar(select(Issue).where(Issue.slug == slug))
    assets = publish_images(session, source=source, settings=settings, folder=folder, issue=existing,
                            filename=filename)
    rendered = render_source(source, settings=settings, filename=filename, images=_refs(assets, settings))
    return _store(session, rendered, source, assets)


def render_again(session: Session, issue: Issue, *, settings: Settings) -> Issue:
    """A stored issue rendered again with today's templates and settings, as a copy
    that is not stored. An issue that no longer renders is refused."""
    try:
        rendered = render_source(issue.source, settings=settings, images=image_refs(session, issue, settings=settings))
    except InvalidInput as err:
        raise InvalidInput(f"issue {issue.slug!r} does not render, so it cannot be scheduled: {err}") from err
    return Issue(id=issue.id, slug=issue.slug, subject=rendered.subject, preheader=rendered.preheader,
                 source=issue.source, html=rendered.html, text=rendered.text, issue_date=issue.issue_date,
                 links=list(rendered.links))


def rerender(session: Session, issue: Issue, *, settings: Settings) -> Issue:
    """Render a stored issue again before it is scheduled (templates or settings may
    have changed since it was saved), and store it. An issue that no longer renders is
    refused."""
    rendered = render_again(session, issue, settings=settings)
    return campaigns.store_issue(session, slug=issue.slug, subject=rendered.subject, preheader=rendered.preheader,
                                 source=issue.source, html=rendered.html, text_part=rendered.text,
                                 issue_date=issue.issue_date, links=list(rendered.links))


def _store(session: Session, rendered: RenderedIssue, source: str, assets: Mapping[str, Asset]) -> Issue:
    issue = campaigns.store_issue(session, slug=rendered.slug, subject=rendered.subject,
                                  preheader=rendered.preheader, source=source, html=rendered.html,
                                  text_part=rendered.text, issue_date=rendered.date, links=list(rendered.links))
    if not any(c.status in STARTED for c in issue_campaigns(session, issue.id)):
        _link_images(session, issue, assets)  # a sent issue keeps the images it was sent with
    return issue


def delete_issue(session: Session, *, issue_id: int) -> None:
    """Delete an issue nothing was ever planned from (a campaign keeps its issue)."""
    issue = get_issue(session, issue_id)
    planned = issue_campaigns(session, issue.id)
    if planned:
        raise ConflictError(f"issue {issue.slug!r} has campaign {planned[0].id} ({planned[0].status}); "
                            "only an issue with no campaign can be deleted")
    session.delete(issue)
    session.flush()


def send_test(*, source: str, to: list[str], settings: Settings,
              images: Mapping[str, ImageRef] | None = None) -> list[TestResult]:
    """The real message of an issue, marked [TEST], to a few addresses, outside any
    campaign. Takes the source (and where its images are published: ``image_refs``,
    ``publish_images``), not a session: no database lock is held while the relay is
    talked to."""
    return _send_test(render_source(source, settings=settings, images=images), to, settings)


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
    return [describe(session, i) for i in session.scalars(
        select(Issue).where(Issue.slug.not_like(f"{WELCOME_PREFIX}%")).order_by(Issue.id.desc()))]


def _iso(value) -> str | None:
    return value.isoformat() if value else None
