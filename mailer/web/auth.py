"""Who may use the admin API and the dashboard.

API: ``Authorization: Bearer <token>`` (RFC 6750), checked against the SHA-256 kept by
``mailer.accounts``; anything else is 401 with ``WWW-Authenticate: Bearer``.

Dashboard: a session cookie signed with ``NEWSLETTER_SECRET_KEY`` (itsdangerous, so
old keys in ``NEWSLETTER_OLD_SECRET_KEYS`` still verify during a rotation), HttpOnly,
SameSite=Lax, Secure when the site is served over https, scoped to ``/admin``. It holds
the user id, the user's ``session_epoch`` (signing out raises it, which ends every
cookie issued before: a stateless cookie cannot be revoked any other way) and a random
CSRF token. Every form carries that token and every state-changing request must send it
back (a form field, or the ``X-CSRF-Token`` header for the editor's fetches): the
"synchronizer token" of the OWASP CSRF cheat sheet, bound to the session. SameSite=Lax
alone is not enough: it still sends the cookie on top-level cross-site GETs, and on POSTs
from a sibling subdomain.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from itsdangerous import BadSignature, URLSafeTimedSerializer
from markupsafe import escape
from starlette.datastructures import FormData

from mailer.accounts import check_token
from mailer.core import signing
from mailer.core.config import Settings
from mailer.models import AdminUser, ApiToken
from mailer.web.deps import SessionDep, SettingsDep

COOKIE = "nl_admin"
COOKIE_PATH = "/admin"
SESSION_MAX_AGE = 12 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_URL = "/admin/login"
CSRF_MESSAGE = "This form was not accepted: its security token is missing or out of date. Reload the page and try again."

bearer = HTTPBearer(auto_error=False, scheme_name="ApiToken",
                    description="An API token made with `newsletter admin create-token NAME`.")


# --- API tokens -------------------------------------------------------------------------

def api_token(session: SessionDep,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> ApiToken:
    token = check_token(session, credentials.credentials if credentials else None)
    if token is None:
        raise HTTPException(401, "missing or invalid API token: send 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    session.commit()  # last_used_at is kept even when the request itself fails later
    return token


ApiTokenDep = Annotated[ApiToken, Depends(api_token)]


# --- dashboard session cookie -----------------------------------------------------------

class LoginRequired(Exception):
    """No valid session: dashboard pages answer with a redirect to the sign-in page."""


class CsrfRejected(Exception):
    """A state-changing request without the session's CSRF token."""


@dataclass(frozen=True)
class Visitor:
    csrf: str
    user_id: int | None = None
    epoch: int = 0


@dataclass(frozen=True)
class SignedIn:
    user: AdminUser
    csrf: str


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return signing.session_serializer(settings.signing_keys, salt="newsletter.admin-session")


def read_visitor(request: Request, settings: Settings) -> Visitor | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = _serializer(settings).loads(raw, max_age=SESSION_MAX_AGE)
        return Visitor(csrf=str(data["c"]), user_id=data.get("u"), epoch=int(data.get("e", 0)))
    except (BadSignature, KeyError, TypeError, ValueError):
        return None


def new_visitor(user: AdminUser | None = None) -> Visitor:
    """A fresh CSRF token (also on sign-in, so a token planted before it is useless)."""
    return Visitor(csrf=secrets.token_urlsafe(32), user_id=user.id if user else None,
                   epoch=user.session_epoch if user else 0)


def set_visitor(response: Response, settings: Settings, visitor: Visitor) -> None:
    payload = {"c": visitor.csrf}
    if visitor.user_id is not None:
        payload |= {"u": visitor.user_id, "e": visitor.epoch}
    response.set_cookie(COOKIE, _serializer(settings).dumps(payload), max_age=SESSION_MAX_AGE, path=COOKIE_PATH,
                        httponly=True, samesite="lax", secure=settings.base_url.startswith("https://"))


def clear_visitor(response: Response, settings: Settings) -> None:
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax",
                           secure=settings.base_url.startswith("https://"))


def signed_in(request: Request, session: SessionDep, settings: SettingsDep) -> SignedIn:
    visitor = read_visitor(request, settings)
    if visitor is None or visitor.user_id is None:
        raise LoginRequired()
    user = session.get(AdminUser, visitor.user_id)
    if user is None or user.session_epoch != visitor.epoch:
        raise LoginRequired()
    return SignedIn(user, visitor.csrf)


SignedInDep = Annotated[SignedIn, Depends(signed_in)]


async def checked_form(request: Request, who: SignedInDep) -> FormData:
    """The posted form, once its CSRF token matched the session's."""
    form = await request.form()
    if not signing.same(form.get(CSRF_FIELD), who.csrf):
        raise CsrfRejected()
    return form


def checked_header(request: Request, who: SignedInDep) -> SignedIn:
    """For the editor's fetch() calls: the token comes in a header."""
    if not signing.same(request.headers.get(CSRF_HEADER), who.csrf):
        raise CsrfRejected()
    return who


async def login_form(request: Request, settings: SettingsDep) -> FormData:
    """The sign-in form: no user yet, but the token of the anonymous visitor cookie
    (login CSRF: otherwise a site could sign a victim in as the attacker)."""
    visitor = read_visitor(request, settings)
    form = await request.form()
    if visitor is None or not signing.same(form.get(CSRF_FIELD), visitor.csrf):
        raise CsrfRejected()
    return form


CheckedFormDep = Annotated[FormData, Depends(checked_form)]
CheckedHeaderDep = Annotated[SignedIn, Depends(checked_header)]


# --- route classes: turn these into responses without touching the app ------------------

def one_line(err: RequestValidationError) -> str:
    first = (err.errors() or [{}])[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
    return f"{where}: {first.get('msg', 'invalid value')}"


def _route_class(on_login_required: Callable[[Request], Response]) -> type[APIRoute]:
    class GuardedRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    return await handler(request)
                except LoginRequired:
                    return on_login_required(request)
                except CsrfRejected:
                    if _wants_json(request):
                        return JSONResponse({"detail": CSRF_MESSAGE}, status_code=403)
                    return HTMLResponse(_csrf_page(), status_code=403)
                except RequestValidationError as err:
                    # A one-line detail like every other error here, not FastAPI's list.
                    return JSONResponse({"detail": one_line(err)}, status_code=422)

            return guarded

    return GuardedRoute


def _wants_json(request: Request) -> bool:
    return CSRF_HEADER.lower() in request.headers or "application/json" in request.headers.get("accept", "")


def _to_login(request: Request) -> Response:
    if _wants_json(request):  # the editor's fetch() calls and polling
        return JSONResponse({"detail": "sign in first"}, status_code=401)
    return RedirectResponse(LOGIN_URL, status_code=303)


def _csrf_page() -> str:
    return (f"<!doctype html><meta charset=utf-8><title>Refused</title><h1>Refused (403)</h1>"
            f"<p>{escape(CSRF_MESSAGE)}</p><p><a href=\"/admin\">Back to the dashboard</a></p>")


PageRoute = _route_class(_to_login)
ApiRoute = _route_class(lambda request: JSONResponse({"detail": "unauthorised"}, status_code=401))
