"""What the public pages share: the page response, and the one answer to a bad link."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from mailer.core.config import Settings
from mailer.core.db import transaction
from mailer.core.signing import InvalidToken
from mailer.operations.subscribers import from_link
from mailer.web.templating import page_templates
from subscribers.models import Subscriber

NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


def page(request: Request, settings: Settings, template: str, /, status_code: int = 200,
         **context: Any) -> HTMLResponse:
    return page_templates(settings).TemplateResponse(request, template, context, status_code=status_code,
                                                     headers=NO_STORE)


def bad_link(request: Request, settings: Settings) -> HTMLResponse:
    # One page, one status, for tampered, truncated, foreign and unknown alike.
    return page(request, settings, "web/unsubscribe_invalid.html", status_code=404)


def for_link(request: Request, settings: Settings, engine: Engine, token: str,
             answer: Callable[[Session, Subscriber, int | None], Response]) -> Response:
    """``answer(session, subscriber, campaign_id)`` for the subscriber a link's token
    names, in one transaction; the one bad-link page for any other token."""
    with transaction(engine) as session:
        try:
            subscriber, campaign_id = from_link(session, token=token, settings=settings)
        except InvalidToken:
            return bad_link(request, settings)
        return answer(session, subscriber, campaign_id)


def client_of(request: Request) -> str:
    # Behind a proxy, run `newsletter web` with --forwarded-allow-ips so this is the visitor's address.
    return request.client.host if request.client else "unknown"


def mask(email: str) -> str:
    """``a***@example.com``: enough for people to recognise their address, not enough
    to harvest it from a forwarded newsletter."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else email
