"""``/u/{token}``: unsubscribe, RFC 8058 one-click included."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from mailer.core.config import Settings
from mailer.operations import subscribers as ops
from mailer.web.deps import EngineDep, SettingsDep
from mailer.web.public.pages import for_link, mask, page
from subscribers.models import MAILABLE

router = APIRouter(tags=["subscribers"])


@router.get("/u/{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str, request: Request, settings: SettingsDep, engine: EngineDep) -> Response:
    """Shows one button; changes nothing (link scanners fetch this URL)."""
    return for_link(request, settings, engine, token, lambda session, subscriber, _: page(
        request, settings, "web/unsubscribe.html", mailable=subscriber.status in MAILABLE,
        masked=mask(subscriber.email), action=f"/u/{token}", preferences=f"/p/{token}"))


@router.post("/u/{token}", response_class=HTMLResponse)
async def unsubscribe_post(token: str, request: Request, settings: SettingsDep, engine: EngineDep) -> HTMLResponse:
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
    return await run_in_threadpool(_unsubscribe, token, request, settings, engine, origin)


def _unsubscribe(token: str, request: Request, settings: Settings, engine, origin: str) -> Response:
    def answer(session, subscriber, campaign_id) -> Response:
        ops.unsubscribe(session, subscriber_id=subscriber.id, campaign_id=campaign_id, origin=origin)
        return page(request, settings, "web/unsubscribe_done.html", preferences=f"/p/{token}")

    return for_link(request, settings, engine, token, answer)
