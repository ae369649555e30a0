"""``/admin/issues``: the issue list, the editor with its live preview, test sends, and
giving an issue to a list."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Body, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.orm import Session

from mailer import schedules
from mailer.core.clock import utcnow
from mailer.core.config import Settings
from mailer.core.errors import ConflictError, InvalidInput
from mailer.models import Issue
from mailer.operations import campaigns as campaign_ops
from mailer.operations import commit
from mailer.operations import issues as ops
from mailer.operations.preflight import Gate
from mailer.operations import subscribers as subscriber_ops
from mailer.operations.schedules import all_lists
from mailer.render import RenderedIssue, preview_html
from mailer.web.auth import (
    CheckedFormDep,
    CheckedHeaderDep,
    PageRoute,
    SignedIn,
    SignedInDep,
)
from mailer.web.dashboard.pages import render, see_other, zones
from mailer.web.deps import Id, SessionDep, SettingsDep, status_of

router = APIRouter(route_class=PageRoute)

NEW_ISSUE = """---
subject: This week
preheader: One line that shows after the subject in the inbox
---

## Top stories

### A headline

A paragraph or two. [Read more](https://example.com/story)
"""


@router.get("/issues", response_class=HTMLResponse)
def issue_list(request: Request, who: SignedInDep, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    return render(request, settings, "issues.html", who=who, section="issues", title="Issues",
                  issues=ops.list_issues(session))


def editor(request: Request, settings: Settings, session: Session, who: SignedIn, *, issue: Issue | None,
           source: str | None = None, status: int = 200, error: str | None = None, **extra) -> HTMLResponse:
    detail = ops.describe(session, issue) if issue else None
    locked = None
    if issue is not None:
        try:
            ops.refuse_if_started(session, issue)
        except ConflictError as err:
            locked = str(err)
    shown = source if source is not None else (issue.source if issue else NEW_ISSUE)
    saved_preview = ""
    if issue is not None and issue.html and source is None:
        saved_preview = preview_html(RenderedIssue(slug=issue.slug, subject=issue.subject, preheader=issue.preheader,
                                                   html=issue.html, text=issue.text, mjml="",
                                                   base_url=settings.base_url))
    lists = all_lists(session)
    default_tz = "UTC"
    if lists:
        sch = schedules.schedule_for(session, lists[0].id)
        default_tz = sch.timezone if sch else "UTC"
    form = {"list": lists[0].name if lists else "", "when": "next_slot", "at": "", "tz": default_tz, "segment": "",
            **extra.pop("form", {})}
    return render(request, settings, "editor.html", who=who, section="issues", status=status, error=error,
                  title=issue.slug if issue else "New issue", issue=detail, source=shown, locked=locked,
                  preview_html=saved_preview, lists=lists, zones=zones(), form=form,
                  campaigns=detail["campaigns"] if detail else [], test_to=extra.pop("test_to", who.user.email),
                  **extra)


@router.get("/issues/new", response_class=HTMLResponse)
def new_issue(request: Request, who: SignedInDep, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    return editor(request, settings, session, who, issue=None)


@router.post("/issues/new", response_class=HTMLResponse)
def create_issue(request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
                 settings: SettingsDep):
    source = str(form.get("source") or "")
    try:
        issue = ops.create_issue(session, source=source, settings=settings)
        session.commit()
    except InvalidInput as err:
        session.rollback()
        return editor(request, settings, session, who, issue=None, source=source, status=status_of(err),
                      error=str(err))
    return see_other(f"/admin/issues/{issue.id}?done=created")


@router.get("/issues/{issue_id}", response_class=HTMLResponse)
def show_issue(issue_id: Id, request: Request, who: SignedInDep, session: SessionDep,
               settings: SettingsDep) -> HTMLResponse:
    return editor(request, settings, session, who, issue=ops.get_issue(session, issue_id))


@router.post("/issues/{issue_id}", response_class=HTMLResponse)
def save_issue(issue_id: Id, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
               settings: SettingsDep):
    source = str(form.get("source") or "")
    try:
        ops.update_issue(session, issue_id=issue_id, source=source, settings=settings)
        session.commit()
    except InvalidInput as err:
        session.rollback()
        return editor(request, settings, session, who, issue=ops.get_issue(session, issue_id), source=source,
                      status=status_of(err), error=str(err))
    return see_other(f"/admin/issues/{issue_id}?done=saved")


@router.post("/issues/{issue_id}/delete")
def delete_issue(issue_id: Id, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
                 settings: SettingsDep):
    try:
        ops.delete_issue(session, issue_id=issue_id)
        session.commit()
    except InvalidInput as err:
        session.rollback()
        return editor(request, settings, session, who, issue=ops.get_issue(session, issue_id),
                      status=status_of(err), error=str(err))
    return see_other("/admin/issues?done=deleted")


@router.post("/issues/{issue_id}/test", response_class=HTMLResponse)
def send_test(issue_id: Id, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
              settings: SettingsDep) -> HTMLResponse:
    issue = ops.get_issue(session, issue_id)
    to = str(form.get("to") or "")
    addresses = [a.strip() for a in to.replace(";", ",").split(",") if a.strip()]
    source, images = issue.source, ops.image_refs(session, issue, settings=settings)
    session.rollback()  # hold no database lock (SQLite: the write lock) while talking SMTP
    try:
        results = ops.send_test(source=source, to=addresses, settings=settings, images=images)
    except InvalidInput as err:
        return editor(request, settings, session, who, issue=issue, status=status_of(err), error=str(err),
                      test_to=to)
    sent = sum(r.ok for r in results)
    notice = f"Test sent to {sent} of {len(results)} addresses." if sent else None
    error = None if sent == len(results) else "Some test messages were refused: see below."
    return editor(request, settings, session, who, issue=issue, error=error, notice=notice, test_results=results,
                  test_to=to, status=200 if sent == len(results) else 502)


@router.post("/issues/{issue_id}/schedule", response_class=HTMLResponse)
def schedule_issue(issue_id: Id, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
                   settings: SettingsDep):
    fields = {k: str(form.get(k) or "") for k in ("list", "when", "at", "tz", "segment")}
    now = utcnow()
    if form.get("check") == "size":
        # The segment's size before anything is sent: the audience a start now would freeze.
        try:
            size = subscriber_ops.segment_size(session, list_name=fields["list"], segment=fields["segment"])
        except InvalidInput as err:
            return editor(request, settings, session, who, issue=ops.get_issue(session, issue_id),
                          status=status_of(err), error=str(err), form=fields)
        what = f"segment {fields['segment']!r} of {fields['list']!r}" if fields["segment"].strip() else (
            f"list {fields['list']!r}")
        return editor(request, settings, session, who, issue=ops.get_issue(session, issue_id), form=fields,
                      notice=f"The {what} has {size} active subscribers: a campaign now would go to them.")
    try:
        when = campaign_ops.parse_when(at=fields["at"] if fields["when"] == "at" else None, tz=fields["tz"] or None,
                                       next_slot=fields["when"] == "next_slot", now_flag=fields["when"] == "now",
                                       now=now)
        done = campaign_ops.schedule_issue(session, issue_ref=issue_id, list_name=fields["list"], when=when,
                                           settings=settings, now=now, segment=fields["segment"],
                                           gate=Gate(bool(form.get("override_preflight")),
                                                     "tick \"Start anyway\" below the checks to start it"))
        commit(session, done, settings=settings)
    except InvalidInput as err:
        session.rollback()
        return editor(request, settings, session, who, issue=ops.get_issue(session, issue_id), status=status_of(err),
                      error=str(err), form=fields, preflight=getattr(err, "preflight", None))
    if done.started:
        return see_other(f"/admin/campaigns/{done.campaign_id}?done={done.status}")
    return see_other(f"/admin/schedules?done={done.status}#list-{quote(fields['list'])}")


@router.post("/issues/{issue_id}/preflight", response_class=HTMLResponse)
def run_preflight(issue_id: Id, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
                  settings: SettingsDep) -> HTMLResponse:
    """The checks a start runs, shown under the schedule form; nothing changes."""
    fields = {k: str(form.get(k) or "") for k in ("list", "when", "at", "tz")}
    found = campaign_ops.preflight_issue(session, issue_ref=issue_id, list_name=fields["list"], settings=settings)
    session.rollback()
    return editor(request, settings, session, who, issue=ops.get_issue(session, issue_id), form=fields,
                  preflight=found)


@router.post("/preview")
def preview(who: CheckedHeaderDep, session: SessionDep, settings: SettingsDep,
            body: Annotated[dict, Body(examples=[{"source": "---\nsubject: Hi\n---\nText"}])]) -> JSONResponse:
    """The editor's live preview: unsaved Markdown in, the email's HTML out (with the
    images published with the saved issue ``issue_id``, when given)."""
    source = body.get("source") if isinstance(body, dict) else None
    if not isinstance(source, str):
        raise InvalidInput("send {\"source\": \"...\"}")
    issue_id = str(body.get("issue_id") or "")
    images = ops.image_refs(session, ops.get_issue(session, int(issue_id)), settings=settings) \
        if issue_id.isascii() and issue_id.isdigit() else None
    session.rollback()  # rendering takes ~0.1 s: hold no database lock meanwhile
    shown = ops.preview(source, settings=settings, images=images)
    return JSONResponse({k: shown[k] for k in ("subject", "slug", "html", "warnings")})
