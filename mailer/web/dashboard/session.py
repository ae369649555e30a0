"""``/admin/login``, ``/admin/logout`` and the dashboard's script."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from mailer import accounts
from mailer.core.config import SHIPPED_TEMPLATES
from mailer.web.auth import (
    CheckedFormDep,
    PageRoute,
    SignedInDep,
    clear_visitor,
    login_form,
    new_visitor,
    read_visitor,
    set_visitor,
)
from mailer.web.dashboard.pages import render, see_other
from mailer.web.deps import SessionDep, SettingsDep
from subscribers import signup

router = APIRouter(route_class=PageRoute)
STATIC = SHIPPED_TEMPLATES / "web" / "admin" / "static"
# Password guessing: a few tries per network and per account, counted in the same
# database table as signups (works without Redis, atomic on both databases).
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
