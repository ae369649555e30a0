"""``/admin/login``, ``/admin/logout`` and the dashboard's script."""

from __future__ import annotations

import ipaddress
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
# Password guessing, counted in the signups' table (no Redis needed, atomic on both
# databases): every attempt from one network, and the failed ones for one account from
# one network. Not failures per account alone: whoever guesses from one network could
# then lock the editor out from every other.
LOGIN_PER_NETWORK = signup.Limit("login-network", 30, 900)
LOGIN_FAILURES = signup.Limit("login-failures", 10, 900)


def network_of(client: str) -> str:
    """The client's /24 (IPv4) or /64 (IPv6): one household or office, one budget."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    return str(ipaddress.ip_network(f"{address}/{24 if address.version == 4 else 64}", strict=False))


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
    network = network_of(request.client.host if request.client else "")
    account = f"{email.strip().lower()} {network}"
    if not signup.hit(session, LOGIN_PER_NETWORK, network) or signup.spent(session, LOGIN_FAILURES, account):
        session.commit()
        visitor = read_visitor(request, settings)
        return render(request, settings, "login.html", who=None, status=429, csrf=visitor.csrf, email=email,
                      error="Too many sign-in attempts; try again in a few minutes.")
    session.commit()
    user = accounts.verify_password(session, email=email, password=password)
    if user is None:
        signup.hit(session, LOGIN_FAILURES, account)
        session.commit()
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
