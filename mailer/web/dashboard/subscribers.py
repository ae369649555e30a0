"""``/admin/subscribers``: search and page through subscribers, add one, edit one
(rename, confirm a pending one, unsubscribe), import a CSV file, export one."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from mailer.core.config import Settings
from mailer.core.errors import InvalidInput
from mailer.operations import commit
from mailer.operations import deliveries as delivery_ops
from mailer.operations import segments as segment_ops
from mailer.operations import subscribers as ops
from mailer.operations import welcome
from mailer.operations.schedules import all_lists
from mailer.web.auth import CheckedFormDep, PageRoute, SignedIn, SignedInDep
from mailer.web.dashboard.pages import render, see_other
from mailer.web.deps import EngineDep, Id, SessionDep, SettingsDep, csv_response, status_of
from subscribers import service
from subscribers.models import SubscriberStatus

router = APIRouter(route_class=PageRoute)
PAGE = 50


def list_page(request: Request, settings: Settings, session: Session, who: SignedIn, *, status: int = 200,
              error: str | None = None, added: dict | None = None, report: dict | None = None,
              welcome_done: str = "") -> HTMLResponse:
    query = {k: request.query_params.get(k, "") for k in ("q", "status", "list")}
    after = request.query_params.get("after", "0")
    try:
        found = ops.search(session, q=query["q"], status=query["status"] or None, list_name=query["list"] or None,
                           after=int(after) if after.isascii() and after.isdigit() else 0, limit=PAGE)
    except InvalidInput as err:
        found, error, status = {"items": [], "next_after": None}, str(err), status_of(err)
    # The list being looked at: its welcome is the one the form shows, to change.
    current = welcome.Welcome(list=query["list"])
    if query["list"]:
        try:
            current = welcome.show_welcome(session, list_name=query["list"])
        except InvalidInput:
            pass  # an unknown list: the search above says so
    return render(request, settings, "subscribers.html", who=who, section="subscribers", title="Subscribers",
                  found=found, query=query, statuses=list(SubscriberStatus), lists=all_lists(session),
                  added=added or {"email": "", "name": "", "list": query["list"]}, report=report, status=status,
                  error=error, welcome_done=welcome_done, segments=segment_ops.list_all(session),
                  welcomes=sorted(welcome.lists_with_welcome(session).values()), current_welcome=current)


@router.get("/subscribers", response_class=HTMLResponse)
def subscribers_page(request: Request, who: SignedInDep, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    return list_page(request, settings, session, who)


@router.post("/subscribers", response_class=HTMLResponse)
def add_subscriber(request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
                   settings: SettingsDep):
    added = {k: str(form.get(k) or "") for k in ("email", "name", "list")}
    status = SubscriberStatus.active if form.get("confirmed") == "yes" else SubscriberStatus.pending
    try:
        sub = ops.add(session, email=added["email"], name=added["name"], list_name=added["list"] or None,
                      status=status)
        session.commit()
        welcome.wake(session, settings)
    except InvalidInput as err:
        session.rollback()
        return list_page(request, settings, session, who, status=status_of(err), error=str(err), added=added)
    return see_other(f"/admin/subscribers/{sub.id}?done=added")


@router.post("/subscribers/import", response_class=HTMLResponse)
def import_subscribers(request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
                       engine: EngineDep, settings: SettingsDep):
    upload = form.get("file")
    session.rollback()  # the import writes in transactions of its own
    try:
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise InvalidInput("choose a CSV file to import")
        report = ops.import_csv(engine, upload.file, list_name=str(form.get("list") or ""),
                                confirmed=form.get("confirmed") == "yes", origin="admin-import",
                                file_name=upload.filename or "", dry_run=form.get("dry_run") == "yes",
                                format=str(form.get("format") or "csv"))
    except InvalidInput as err:
        return list_page(request, settings, session, who, status=status_of(err), error=str(err))
    return list_page(request, settings, session, who, report=report.as_dict(errors=50))


@router.get("/subscribers/export")
def export_subscribers(who: SignedInDep, session: SessionDep, engine: EngineDep, list: str = "") -> StreamingResponse:  # noqa: A002
    """CSV of subscribers (of one list), streamed."""
    if list:
        service.find_list(session, list)  # 404 now, not half-way through a download
    session.rollback()
    return csv_response(ops.export_chunks(engine, list_name=list or None), f"subscribers-{list or 'all'}.csv")


def subscriber_page(request: Request, settings: Settings, session: Session, who: SignedIn, subscriber_id: int, *,
                    status: int = 200, error: str | None = None) -> HTMLResponse:
    sub = service.get_subscriber(session, subscriber_id)
    return render(request, settings, "subscriber.html", who=who, section="subscribers", title=sub.email,
                  s=ops.describe(sub), status=status, error=error, data=ops.my_data(session, subscriber_id=sub.id),
                  messages=delivery_ops.subscriber_history(session, subscriber_id=sub.id))


@router.post("/subscribers/welcome", response_class=HTMLResponse)
def set_welcome(request: Request, who: SignedInDep, form: CheckedFormDep, session: SessionDep,
                settings: SettingsDep):
    """A list's welcome mail: saved (rendered now, like an issue) or, empty, removed."""
    try:
        shown = welcome.set_welcome(session, list_name=str(form.get("list") or ""),
                                    source=str(form.get("source") or "") or None, settings=settings,
                                    latest_link=form.get("latest_link") == "yes")
        commit(session, shown, settings=settings)
    except InvalidInput as err:
        session.rollback()
        return list_page(request, settings, session, who, status=status_of(err), error=str(err))
    done = (f"List {shown.list}: welcome {shown.subject!r} saved." if shown.enabled
            else f"List {shown.list}: no welcome mail.")
    return list_page(request, settings, session, who, welcome_done=done)


@router.get("/subscribers/{subscriber_id}", response_class=HTMLResponse)
def show_subscriber(subscriber_id: Id, request: Request, who: SignedInDep, session: SessionDep,
                    settings: SettingsDep) -> HTMLResponse:
    return subscriber_page(request, settings, session, who, subscriber_id)


@router.post("/subscribers/{subscriber_id}", response_class=HTMLResponse)
def edit_subscriber(subscriber_id: Id, request: Request, who: SignedInDep, form: CheckedFormDep,
                    session: SessionDep, settings: SettingsDep):
    try:
        tags = str(form.get("tags") or "").split()
        # Only a changed field changes them: an imported tag with a space in it (the
        # platform's) would not survive being split and joined again.
        shown = " ".join(service.get_subscriber(session, subscriber_id).tags or []).split()
        ops.edit(session, subscriber_id=subscriber_id, name=str(form.get("name") or ""),
                 status=str(form.get("status") or "") or None,
                 replace_tags=tags if "tags" in form and tags != shown else None)
        session.commit()
        welcome.wake(session, settings)
    except InvalidInput as err:
        session.rollback()
        return subscriber_page(request, settings, session, who, subscriber_id, status=status_of(err), error=str(err))
    return see_other(f"/admin/subscribers/{subscriber_id}?done=saved")
