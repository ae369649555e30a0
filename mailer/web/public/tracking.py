"""``/r/{token}``: a tracked link. Redirects to the link's target first, and records
the click when it can (``operations.engagement``): a link works while the database is
briefly away. Anything but a valid token of ours, alone, is a 404 and never a redirect:
no query string or extra path is read, so nobody can make us an open redirect.

``/o/{token}``: the open pixel, a 1x1 transparent GIF, never cached; the open is
recorded the same way."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from mailer.core.errors import NotFound
from mailer.core.logs import event
from mailer.operations.engagement import NOT_VALID, Tracker

router = APIRouter(tags=["tracking"])
log = logging.getLogger(__name__)


def tracker(request: Request) -> Tracker:
    return request.app.state.tracker


def _not_found(path: str, reason: str) -> Response:
    # The token is not logged: a valid one names a delivery, so its reader.
    event(log, "redirect refused" if path == "r" else "open pixel refused", reason=reason)
    return Response(NOT_VALID, status_code=404, media_type="text/plain; charset=utf-8",
                    headers={"Cache-Control": "no-store"})


@router.api_route("/r/{token}", methods=["GET", "HEAD"], include_in_schema=False)
def follow_link(token: str, request: Request) -> Response:
    if request.url.query:
        return _not_found("r", "a query string")
    try:
        target = tracker(request).click(token, method=request.method,
                                        user_agent=request.headers.get("user-agent", ""))
    except NotFound as err:
        return _not_found("r", str(err))
    # 302, not cached: every click is a click; no Referer is passed to the target.
    return RedirectResponse(target, status_code=302, headers={"Cache-Control": "no-store",
                                                              "Referrer-Policy": "no-referrer"})


# The smallest transparent GIF (43 bytes).
PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


@router.api_route("/o/{token}", methods=["GET", "HEAD"], include_in_schema=False)
def open_pixel(token: str, request: Request) -> Response:
    if request.url.query:
        return _not_found("o", "a query string")
    try:
        tracker(request).open(token, method=request.method, user_agent=request.headers.get("user-agent", ""))
    except NotFound as err:
        return _not_found("o", str(err))
    return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})
