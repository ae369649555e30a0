"""``/subscribe``, ``/api/subscribe`` and ``/confirm/{token}``: signup with double opt-in."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from mailer.core import signing
from mailer.core.config import Settings
from mailer.core.db import transaction
from mailer.core.errors import ConflictError, InvalidInput
from mailer.operations import subscribers as ops
from mailer.operations import welcome
from mailer.web.deps import EngineDep, SettingsDep, status_of
from mailer.web.public.pages import client_of, page
from subscribers.signup import RateLimited

router = APIRouter(tags=["subscribers"])


class SignupRequest(BaseModel):
    email: str
    name: str = ""
    list: str | None = None
    # The honeypot, as in the HTML form; a script that fills every field fills this.
    website: str = ""


def _sign_up(settings: Settings, engine, background: BackgroundTasks, **fields) -> None:
    found = ops.sign_up(engine, **fields)
    if found is not None:
        pending, list_name = found
        # After the response: its timing then says nothing about the address.
        background.add_task(ops.send_confirmation, settings, pending, list_name=list_name)


@router.get("/subscribe", response_class=HTMLResponse)
def subscribe_page(request: Request, settings: SettingsDep, list: str = "") -> HTMLResponse:  # noqa: A002
    return page(request, settings, "web/subscribe.html", error="", email="", name="", list_name=list)


@router.post("/subscribe", response_class=HTMLResponse)
async def subscribe_form(request: Request, background: BackgroundTasks, settings: SettingsDep,
                         engine: EngineDep) -> HTMLResponse:
    form = await request.form()
    field = lambda k: str(form.get(k) or "")  # noqa: E731
    try:
        await run_in_threadpool(_sign_up, settings, engine, background, client=client_of(request),
                                email=field("email"), name=field("name"), list_name=field("list") or None,
                                honeypot=field("website"))
    except RateLimited as err:
        return page(request, settings, "web/subscribe_limited.html", status_code=429, message=str(err))
    except InvalidInput as err:
        return page(request, settings, "web/subscribe.html", status_code=status_of(err), error=str(err),
                    email=field("email"), name=field("name"), list_name=field("list"))
    return page(request, settings, "web/subscribe_done.html")


@router.post("/api/subscribe", status_code=202)
def subscribe_api(body: SignupRequest, request: Request, background: BackgroundTasks, settings: SettingsDep,
                  engine: EngineDep) -> JSONResponse:
    try:
        _sign_up(settings, engine, background, client=client_of(request), email=body.email, name=body.name,
                 list_name=body.list, honeypot=body.website)
    except RateLimited as err:
        return JSONResponse({"detail": str(err)}, status_code=429, headers={"Retry-After": "600"})
    return JSONResponse(
        {"detail": "If the address can receive our mail, a confirmation link is on its way."}, status_code=202
    )


def _confirm_invalid(request: Request, settings: Settings, message: str) -> HTMLResponse:
    return page(request, settings, "web/confirm_invalid.html", status_code=404, message=message)


@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(token: str, request: Request, settings: SettingsDep) -> HTMLResponse:
    """A page with a button; confirming on GET would let link scanners confirm."""
    try:
        signing.read_confirm_token(settings.signing_keys, token)
    except signing.InvalidToken as err:
        return _confirm_invalid(request, settings, str(err))
    return page(request, settings, "web/confirm.html", action=f"/confirm/{token}")


@router.post("/confirm/{token}", response_class=HTMLResponse)
def confirm_post(token: str, request: Request, settings: SettingsDep, engine: EngineDep) -> HTMLResponse:
    try:
        with transaction(engine) as session:
            ops.confirm(session, token=token, settings=settings)
    except (signing.InvalidToken, ConflictError) as err:
        return _confirm_invalid(request, settings, str(err))
    welcome.wake(session, settings)
    return page(request, settings, "web/confirm_done.html")
