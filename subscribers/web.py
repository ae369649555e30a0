"""Public subscriber pages: one-click unsubscribe (RFC 8058), signup with double opt-in,
confirmation, and preferences (name, pause, resubscribe, download or delete my data).

Every link carries an opaque signed token (``subscribers.tokens``); no page needs a
cookie or a login, and the token is what authorises the action, so there is no
separate CSRF token. GET never changes anything: mail security scanners fetch every
link in a message, and would otherwise unsubscribe or confirm people on their own.
A link that is not valid gets the same 404 page whether or not the subscriber exists.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from mailer.config import Settings
from mailer.db import engine_for, transaction
from mailer.errors import ConflictError, InvalidInput, NotFound
from mailer.web.deps import SettingsDep
from subscribers import service, signup, tokens
from subscribers.models import MailingList, Subscriber
from subscribers.templating import web_templates

router = APIRouter(tags=["subscribers"])

NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


def _page(request: Request, template: str, /, status_code: int = 200, **context: Any) -> HTMLResponse:
    return web_templates().TemplateResponse(request, template, context, status_code=status_code, headers=NO_STORE)


def _engine(settings: Settings):
    return engine_for(settings.database)


def _secrets(settings: Settings) -> list[str]:
    return tokens.secrets_from_settings(settings)


def _client(request: Request) -> str:
    # Behind a proxy, run uvicorn with --proxy-headers so this is the visitor's address.
    return request.client.host if request.client else "unknown"


def mask(email: str) -> str:
    """``a***@example.com``: enough for people to recognise their address, not enough
    to harvest it from a forwarded newsletter."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else email


class _BadLink(Exception):
    pass


def _subscriber_for(session, settings: Settings, token: str) -> tuple[Subscriber, int | None]:
    try:
        subscriber_id, campaign_id = tokens.read_unsubscribe_token(_secrets(settings), token)
    except tokens.InvalidToken as err:
        raise _BadLink from err
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise _BadLink
    return subscriber, campaign_id


def _bad_link(request: Request) -> HTMLResponse:
    # One page, one status, for tampered, truncated, foreign and unknown alike.
    return _page(request, "web/unsubscribe_invalid.html", status_code=404)


# --- Unsubscribe (RFC 8058) ---------------------------------------------------------------

@router.get("/u/{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str, request: Request, settings: SettingsDep) -> HTMLResponse:
    """Shows one button; changes nothing (link scanners fetch this URL)."""
    with transaction(_engine(settings)) as session:
        try:
            subscriber, _ = _subscriber_for(session, settings, token)
        except _BadLink:
            return _bad_link(request)
        return _page(request, "web/unsubscribe.html", status=subscriber.status, masked=mask(subscriber.email),
                     action=f"/u/{token}", preferences=f"/p/{token}")


@router.post("/u/{token}", response_class=HTMLResponse)
async def unsubscribe_post(token: str, request: Request, settings: SettingsDep) -> HTMLResponse:
    """RFC 8058 one-click: the mailbox provider POSTs ``List-Unsubscribe=One-Click``
    (urlencoded or multipart) without cookies; the answer is 200, never a redirect, and
    repeating it is harmless. The page's own button posts ``source=page`` instead.
    Any POST to a valid link unsubscribes: scanners do not POST, people and providers do.
    """
    try:
        form = await request.form()
        one_click = form.get("List-Unsubscribe") == "One-Click"
    except Exception:  # an unreadable body still is an explicit POST to the link
        one_click = False
    origin = "one-click" if one_click else "page"
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_unsubscribe, token, request, settings, origin)


def _unsubscribe(token: str, request: Request, settings: Settings, origin: str) -> HTMLResponse:
    with transaction(_engine(settings)) as session:
        try:
            subscriber, campaign_id = _subscriber_for(session, settings, token)
        except _BadLink:
            return _bad_link(request)
        service.unsubscribe(session, subscriber_id=subscriber.id, campaign_id=campaign_id, origin=origin)
    return _page(request, "web/unsubscribe_done.html", preferences=f"/p/{token}")


# --- Signup and confirmation --------------------------------------------------------------

@router.get("/subscribe", response_class=HTMLResponse)
def subscribe_page(request: Request, list: str = "") -> HTMLResponse:  # noqa: A002
    return _page(request, "web/subscribe.html", error="", email="", name="", list_name=list)


class SignupRequest(BaseModel):
    email: str
    name: str = ""
    list: str | None = None
    # The honeypot, as in the HTML form; a script that fills every field fills this.
    website: str = ""


def _signup(settings: Settings, background: BackgroundTasks, *, client: str, email: str, name: str,
            list_name: str | None, honeypot: str) -> None:
    """Counts, checks and records one signup; queues the confirmation mail. Raises
    ``RateLimited`` or ``InvalidInput``; otherwise the answer is the same for every
    address."""
    engine = _engine(settings)
    with transaction(engine) as session:
        over = None
        try:
            signup.check_client(session, client)
        except signup.RateLimited as err:
            over = err
    if over:  # the counter is committed; then refuse
        raise over
    if honeypot.strip():
        return  # a robot: accept silently, do nothing
    address = service.normalise_email(email)
    with transaction(engine) as session:
        over = None
        try:
            signup.check_address(session, service.email_key(address))
        except signup.RateLimited as err:
            over = err
    if over:
        raise over
    with transaction(engine) as session:
        pending = signup.request_subscription(session, email=address, name=name, list_name=list_name,
                                              client=client)
        list_name = session.get(MailingList, pending.list_id).name if pending else ""
    if pending is not None:
        # After the response: its timing then says nothing about the address.
        background.add_task(signup.send_confirmation, settings, pending, list_name=list_name)


@router.post("/subscribe", response_class=HTMLResponse)
async def subscribe_form(request: Request, background: BackgroundTasks, settings: SettingsDep) -> HTMLResponse:
    form = await request.form()
    field = lambda k: str(form.get(k) or "")  # noqa: E731
    from starlette.concurrency import run_in_threadpool

    try:
        await run_in_threadpool(_signup, settings, background, client=_client(request), email=field("email"),
                                name=field("name"), list_name=field("list") or None, honeypot=field("website"))
    except signup.RateLimited as err:
        return _page(request, "web/subscribe_limited.html", status_code=429, message=str(err))
    except InvalidInput as err:
        return _page(request, "web/subscribe.html", status_code=404 if isinstance(err, NotFound) else 400,
                     error=str(err), email=field("email"), name=field("name"), list_name=field("list"))
    return _page(request, "web/subscribe_done.html")


@router.post("/api/subscribe", status_code=202)
def subscribe_api(body: SignupRequest, request: Request, background: BackgroundTasks,
                  settings: SettingsDep) -> JSONResponse:
    try:
        _signup(settings, background, client=_client(request), email=body.email, name=body.name,
                list_name=body.list, honeypot=body.website)
    except signup.RateLimited as err:
        return JSONResponse({"detail": str(err)}, status_code=429, headers={"Retry-After": "600"})
    return JSONResponse(
        {"detail": "If the address can receive our mail, a confirmation link is on its way."}, status_code=202
    )


def _confirm_invalid(request: Request, message: str) -> HTMLResponse:
    return _page(request, "web/confirm_invalid.html", status_code=404, message=message)


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(token: str, request: Request, settings: SettingsDep) -> HTMLResponse:
    """A page with a button; confirming on GET would let link scanners confirm."""
    try:
        tokens.read_confirm_token(_secrets(settings), token)
    except tokens.InvalidToken as err:
        return _confirm_invalid(request, str(err))
    return _page(request, "web/confirm.html", action=f"/confirm/{token}")


@router.post("/confirm/{token}", response_class=HTMLResponse)
def confirm_post(token: str, request: Request, settings: SettingsDep) -> HTMLResponse:
    try:
        with transaction(_engine(settings)) as session:
            signup.confirm(session, secrets=_secrets(settings), token=token)
    except tokens.InvalidToken as err:
        return _confirm_invalid(request, str(err))
    except ConflictError as err:
        return _confirm_invalid(request, str(err))
    return _page(request, "web/confirm_done.html")


# --- Preferences --------------------------------------------------------------------------

def _preferences(request: Request, token: str, subscriber: Subscriber, status_code: int = 200,
                 **extra: Any) -> HTMLResponse:
    context = dict(action=f"/p/{token}", masked=mask(subscriber.email), name=subscriber.name,
                   status=subscriber.status, erased=subscriber.email == service.placeholder_email(subscriber.id),
                   notice="", error="")
    context.update(extra)
    return _page(request, "web/preferences.html", status_code=status_code, **context)


@router.get("/p/{token}", response_class=HTMLResponse)
def preferences_page(token: str, request: Request, settings: SettingsDep) -> HTMLResponse:
    with transaction(_engine(settings)) as session:
        try:
            subscriber, _ = _subscriber_for(session, settings, token)
        except _BadLink:
            return _bad_link(request)
        return _preferences(request, token, subscriber)


@router.post("/p/{token}")
async def preferences_post(token: str, request: Request, background: BackgroundTasks,
                           settings: SettingsDep) -> Response:
    form = await request.form()
    fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_preferences_action, token, request, background, settings, fields)


def _preferences_action(token: str, request: Request, background: BackgroundTasks, settings: Settings,
                        fields: dict[str, str]) -> Response:
    action = fields.get("action", "")
    pending = None
    with transaction(_engine(settings)) as session:
        try:
            subscriber, campaign_id = _subscriber_for(session, settings, token)
        except _BadLink:
            return _bad_link(request)
        if subscriber.email == service.placeholder_email(subscriber.id):
            return _preferences(request, token, subscriber)  # erased: nothing left to change
        notice = ""
        try:
            if action == "name":
                service.change_name(session, subscriber_id=subscriber.id, name=fields.get("name", ""))
                notice = "Saved."
            elif action == "unsubscribe":
                service.unsubscribe(session, subscriber_id=subscriber.id, campaign_id=campaign_id,
                                    origin="preferences")
                notice = "You are unsubscribed."
            elif action == "resubscribe":
                if subscriber.status == "active":
                    notice = "You are subscribed."
                elif signup.hit(session, signup.CONFIRMATION_MAIL, subscriber.email_key) and not \
                        service.is_suppressed(session, subscriber.email):
                    pending = signup.PendingConfirmation(subscriber.id, 0, subscriber.email)
                    notice = "We sent you a confirmation link. Follow it to subscribe again."
                else:
                    notice = "A confirmation link was sent a short while ago; please look for it in your inbox."
            elif action == "export":
                data = service.export_subscriber_data(session, subscriber.id)
                return Response(
                    json.dumps(data, ensure_ascii=False, indent=2), media_type="application/json",
                    headers={**NO_STORE, "Content-Disposition": 'attachment; filename="my-newsletter-data.json"'},
                )
            elif action == "erase":
                if fields.get("sure") != "yes":
                    raise InvalidInput("tick the box to confirm that your data should be deleted")
                service.erase(session, subscriber_id=subscriber.id)
                notice = "Your data has been deleted."
            else:
                raise InvalidInput("unknown action")
        except InvalidInput as err:
            # Every action checks its input before it changes anything.
            return _preferences(request, token, subscriber, status_code=400, error=str(err))
        session.flush()
        session.refresh(subscriber)
        response = _preferences(request, token, subscriber, notice=notice)
    if pending is not None:
        background.add_task(signup.send_confirmation, settings, pending, list_name="")
    return response
