"""The dashboard under ``/admin``: server-rendered pages from ``templates/web/admin/``.

Every route but the sign-in page needs a session (``auth.signed_in``); every POST needs
the session's CSRF token (``auth.checked_form``, or ``auth.checked_header`` for the
editor's preview fetch). A refused action re-renders its page with the one-line reason
and a 4xx status; a successful one redirects (303), so a reload never posts twice.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Annotated
from urllib.parse import quote
from zoneinfo import available_timezones

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy import select

from mailer import accounts, campaigns, schedules
from mailer.config import PROJECT_ROOT, Settings
from mailer.errors import ConflictError, InvalidInput, NotFound
from mailer.models import Issue
from mailer.render import preview_html
from mailer.web import admin_service as ops
from mailer.web.admin_chart import growth_chart
from mailer.web.auth import (
    CheckedFormDep,
    CheckedHeaderDep,
    PageRoute,
    SignedIn,
    SignedInDep,
    clear_visitor,
    login_form,
    new_visitor,
    read_visitor,
    set_visitor,
)
from mailer.web.deps import SessionDep, SettingsDep
from mailer.web.templating import page_templates
from subscribers import signup

router = APIRouter(prefix="/admin", route_class=PageRoute, include_in_schema=False)

STATIC = PROJECT_ROOT / "templates" / "web" / "admin" / "static"
NEW_ISSUE = """---
subject: This week
preheader: One line that shows after the subject in the inbox
---

## Top stories

### A headline

A paragraph or two. [Read more](https://example.com/story)
"""
NOTICES = {
    "saved": "Saved.",
    "created": "Issue saved. Send yourself a test, then schedule it.",
    "deleted": "Issue deleted.",
    "scheduled": "Scheduled.",
    "started": "Sending started.",
    "slot": "Weekly slot saved.",
    "pause": "Campaign paused.",
    "resume": "Campaign resumed.",
    "cancel": "Campaign cancelled.",
    "retry": "Failed deliveries queued again.",
    "reschedule": "Campaign moved.",
    "signed-out": "You are signed out.",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)



@functools.lru_cache(maxsize=1)
def _zones() -> tuple[str, ...]:
    return tuple(sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))))


def render(request: Request, settings: Settings, name: str, *, who: SignedIn | None, status: int = 200,
           **context) -> HTMLResponse:
    notice = NOTICES.get(request.query_params.get("done", ""))
    values = {"who": who, "csrf": who.csrf if who else "", "notice": notice, "error": None, **context}
    return page_templates(settings).TemplateResponse(
        request, f"web/admin/{name}", values, status_code=status)


def status_of(err: InvalidInput) -> int:
    return 404 if isinstance(err, NotFound) else 409 if isinstance(err, ConflictError) else 400


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# --- sign-in ----------------------------------------------------------------------------

LOGIN_PER_CLIENT = signup.Limit("login-client", 30, 900)
LOGIN_PER_ACCOUNT = signup.Limit("login-account", 10, 900)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    visitor = read_visitor(request, settings)
    fresh = visitor is None or visitor.user_id is not None
    visitor = new_visitor() if fresh else visitor
    response = render(request, settings, "login.html", who=None, csrf=visitor.csrf, email="")
    if fresh:
        set_visitor(response, settings, visitor)
    return response


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, session: SessionDep, settings: SettingsDep,
          form: Annotated[object, Depends(login_form)]) -> HTMLResponse:
    email, password = str(form.get("email") or ""), str(form.get("password") or "")
    client = request.client.host if request.client else ""
    # Password guessing: a few tries per network and per account, counted in the same
    # database table as signups (works without Redis, atomic on both databases).
    if not (signup.hit(session, LOGIN_PER_CLIENT, client) & signup.hit(session, LOGIN_PER_ACCOUNT, email.lower())):
        session.commit()
        visitor = read_visitor(request, settings)
        return render(request, settings, "login.html", who=None, status=429, csrf=visitor.csrf, email=email,
                      error="Too many sign-in attempts; try again in a few minutes.")
    session.commit()
    user = accounts.verify_password(session, email=email, password=password)
    if user is None:
        visitor = read_visitor(request, settings)
        return render(request, settings, "login.html", who=None, status=400, csrf=visitor.csrf, email=email,
                      error="Wrong email address or password.")
    session.commit()
    response = see_other("/admin")
    set_visitor(response, settings, new_visitor(user))  # a new CSRF token: nothing planted before survives
    return response


@router.post("/logout")
def logout(who: SignedInDep, form: CheckedFormDep, session: SessionDep, settings: SettingsDep) -> RedirectResponse:
    accounts.end_sessions(session, user_id=who.user.id)
    session.commit()
    response = see_other("/admin/login?done=signed-out")
    clear_visitor(response, settings)
    return response


@router.get("/static/admin.js")
def script(who: SignedInDep) -> FileResponse:
    return FileResponse(STATIC / "admin.js", media_type="text/javascript; charset=utf-8",
                        headers={"Cache-Control": "private, max-age=300"})


# --- overview -----------------------------------------------------------------------------

@router.get("", response_class=HTMLResponse)
def overview(request: Request, who: SignedInDep, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    recent = [ops.campaign_stats(session, c.id) for c in campaigns.list_campaigns(session)[:10]]
    return render(request, settings, "overview.html", who=who, section="home", title="Overview",
                  totals=ops.subscriber_totals(session), campaigns=recent,
                  chart=growth_chart(ops.weekly_growth(session, now=utcnow())))


# --- issues and the editor ----------------------------------------------------------------

@router.get("/issues", response_class=HTMLResponse)
def issue_list(request: Request, who: SignedInDep, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    from mailer.web.admin_api import issue_dict

    issues = [issue_dict(session, i) for i in session.scalars(select(Issue).order_by(Issue.id.desc()))]
    return render(request, settings, "issues.html", who=who, section="issues", title="Issues", issues=issues)


def editor(request: Request, settings: Settings, session, who: SignedIn, *, issue: Issue | None,
           source: str | None = None, status: int = 200, error: str | None = None, **extra) -> HTMLResponse:
    from mailer.web.admin_api import issue_dict

    detail = issue_dict(session, issue) if issue else None
    locked = None
    if issue is not None:
        try:
            ops.refuse_if_started(session, issue)
        except ConflictError as err:
            locked = str(err)
    shown = source if source is not None else (issue.source if issue else NEW_ISSUE)
    saved_preview = ""
    if issue is not None and issue.html and source is None:
        saved_preview = preview_html(_as_rendered(issue))
    lists = ops.all_lists(session)
    default_tz = "UTC"
    if lists:
        sch = schedules.schedule_for(session, lists[0].id)
        default_tz = sch.timezone if sch else "UTC"
    form = {"list": lists[0].name if lists else "", "when": "next_slot", "at": "", "tz": default_tz,
            **extra.pop("form", {})}
    return render(request, settings, "editor.html", who=who, section="issues", status=status, error=error,
                  title=issue.slug if issue else "New issue", issue=detail, source=shown, locked=locked,
                  preview_html=saved_preview, lists=lists, zones=_zones(), form=form,
                  campaigns=detail["campaigns"] if detail else [], test_to=extra.pop("test_to", who.user.email),
                  **extra)


def _as_rendered(issue: Issue):
    from mailer.render import RenderedIssue

    return RenderedIssue(slug=issue.slug, subject=issue.subject, preheader=issue.preheader, html=issue.html,
                         text=issue.text, mjml="")


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
def show_issue(issue_id: int, request: Request, who: SignedInDep, session: SessionDep,
               settings: SettingsDep) -> HTMLResponse:
    return editor(request, settings, session, who, issue=ops.get_issue(session, issue_id))


@router.post("/issues/{issue_id}", response_class=HTMLResponse)
def save_issue(issue_id: int, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
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
def delete_issue(issue_id: int, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
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
def send_test(issue_id: int, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
              settings: SettingsDep) -> HTMLResponse:
    from mailer.testsend import send_test as send

    issue = ops.get_issue(session, issue_id)
    to = str(form.get("to") or "")
    addresses = [a.strip() for a in to.replace(";", ",").split(",") if a.strip()]
    session.rollback()  # hold no database lock (SQLite: the write lock) while talking SMTP
    try:
        results = send(ops.render_source(issue.source, settings), addresses, settings)
    except InvalidInput as err:
        return editor(request, settings, session, who, issue=issue, status=status_of(err), error=str(err),
                      test_to=to)
    sent = sum(r.ok for r in results)
    notice = f"Test sent to {sent} of {len(results)} addresses." if sent else None
    error = None if sent == len(results) else "Some test messages were refused: see below."
    return editor(request, settings, session, who, issue=issue, error=error, notice=notice, test_results=results,
                  test_to=to, status=200 if sent == len(results) else 502)


@router.post("/issues/{issue_id}/schedule", response_class=HTMLResponse)
def schedule_issue(issue_id: int, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
                   settings: SettingsDep):
    fields = {k: str(form.get(k) or "") for k in ("list", "when", "at", "tz")}
    now = utcnow()
    try:
        when = ops.parse_when(at=fields["at"] if fields["when"] == "at" else None, tz=fields["tz"] or None,
                              next_slot=fields["when"] == "next_slot", now_flag=fields["when"] == "now", now=now)
        if fields["when"] == "at" and not fields["at"]:
            raise InvalidInput("give a time, or choose the next free slot")
        done = ops.schedule_issue(session, issue_ref=issue_id, list_name=fields["list"], when=when,
                                  settings=settings, now=now)
        session.commit()
    except InvalidInput as err:
        session.rollback()
        return editor(request, settings, session, who, issue=ops.get_issue(session, issue_id), status=status_of(err),
                      error=str(err), form=fields)
    ops.enqueue_started(done.campaign_id, done.started, settings)
    if done.started:
        return see_other(f"/admin/campaigns/{done.campaign_id}?done=started")
    return see_other(f"/admin/schedules?done=scheduled#list-{quote(fields['list'])}")


@router.post("/preview")
def preview(who: CheckedHeaderDep, session: SessionDep, settings: SettingsDep,
            body: Annotated[dict, Body(examples=[{"source": "---\nsubject: Hi\n---\nText"}])]) -> JSONResponse:
    """The editor's live preview: unsaved Markdown in, the email's HTML out."""
    session.rollback()  # rendering takes ~0.1 s: hold no database lock meanwhile
    source = body.get("source") if isinstance(body, dict) else None
    if not isinstance(source, str):
        raise InvalidInput("send {\"source\": \"...\"}")
    rendered = ops.render_source(source, settings)
    return JSONResponse({"subject": rendered.subject, "slug": rendered.slug, "html": preview_html(rendered),
                         "warnings": list(rendered.warnings)})


# --- schedules ----------------------------------------------------------------------------

def schedules_page(request: Request, settings: Settings, session, who: SignedIn, *, status: int = 200,
                   error: str | None = None) -> HTMLResponse:
    now = utcnow()
    views = [ops.schedule_view(session, m, now=now) | {"id": m.id} for m in ops.all_lists(session)]
    return render(request, settings, "schedules.html", who=who, section="schedules", title="Schedules",
                  views=views, weekdays=schedules.WEEKDAYS, zones=_zones(), status=status, error=error)


@router.get("/schedules", response_class=HTMLResponse)
def schedule_overview(request: Request, who: SignedInDep, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    return schedules_page(request, settings, session, who)


@router.post("/schedules/{list_id}", response_class=HTMLResponse)
def set_slot(list_id: int, request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
             settings: SettingsDep):
    from mailer.models import MailingList

    try:
        if session.get(MailingList, list_id) is None:
            raise NotFound(f"no list {list_id}")
        schedules.set_schedule(session, list_id=list_id, weekday=str(form.get("weekday") or ""),
                               local_time=str(form.get("time") or ""), tz=str(form.get("timezone") or "").strip(),
                               now=utcnow())
        session.commit()
    except InvalidInput as err:
        session.rollback()
        return schedules_page(request, settings, session, who, status=status_of(err), error=str(err))
    return see_other("/admin/schedules?done=slot")


# --- campaigns ----------------------------------------------------------------------------

@router.get("/campaigns", response_class=HTMLResponse)
def campaign_list(request: Request, who: SignedInDep, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    rows = [ops.campaign_stats(session, c.id) for c in campaigns.list_campaigns(session)]
    return render(request, settings, "campaigns.html", who=who, section="campaigns", title="Campaigns", campaigns=rows)


def campaign_page(request: Request, settings: Settings, session, who: SignedIn, campaign_id: int, *,
                  status: int = 200, error: str | None = None, form: dict | None = None) -> HTMLResponse:
    stats = ops.campaign_stats(session, campaign_id)
    return render(request, settings, "campaign.html", who=who, section="campaigns", title=f"Campaign {campaign_id}",
                  c=stats, status=status, error=error, form=form or {})


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
def show_campaign(campaign_id: int, request: Request, who: SignedInDep, session: SessionDep,
                  settings: SettingsDep) -> HTMLResponse:
    return campaign_page(request, settings, session, who, campaign_id)


@router.get("/campaigns/{campaign_id}/stats")
def campaign_stats(campaign_id: int, who: SignedInDep, session: SessionDep) -> JSONResponse:
    """What the campaign page polls while sending."""
    return JSONResponse(ops.campaign_stats(session, campaign_id), headers={"Cache-Control": "no-store"})


@router.post("/campaigns/{campaign_id}/{action}", response_class=HTMLResponse)
def change_campaign(campaign_id: int, action: str, request: Request, who: SignedInDep, form: CheckedFormDep,
                    session: SessionDep, settings: SettingsDep):
    fields = {"at": str(form.get("at") or ""), "tz": str(form.get("tz") or "")}
    try:
        if action == "reschedule":
            now = utcnow()
            when = ops.parse_when(at=fields["at"], tz=fields["tz"] or None, next_slot=False, now_flag=False, now=now)
            schedules.reschedule(session, campaign_id=campaign_id, at=when, now=now)
            changed = 0
        elif action in ("pause", "resume", "cancel", "retry"):
            changed = ops.change_campaign(session, campaign_id=campaign_id, action=action)
        else:
            raise NotFound(f"no campaign action {action!r}")
        session.commit()
    except InvalidInput as err:
        session.rollback()
        return campaign_page(request, settings, session, who, campaign_id, status=status_of(err), error=str(err),
                             form=fields)
    if action == "resume" or (action == "retry" and changed):
        from mailer.dispatch import enqueue_campaign

        enqueue_campaign(campaign_id, max(changed, 1), settings)
    return see_other(f"/admin/campaigns/{campaign_id}?done={action}")
