"""What the public pages share: the page response, and the one answer to a bad link."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from mailer.core.config import Settings
from mailer.web.templating import page_templates

NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


def page(request: Request, settings: Settings, template: str, /, status_code: int = 200,
         **context: Any) -> HTMLResponse:
    return page_templates(settings).TemplateResponse(request, template, context, status_code=status_code,
                                                     headers=NO_STORE)


def bad_link(request: Request, settings: Settings) -> HTMLResponse:
    # One page, one status, for tampered, truncated, foreign and unknown alike.
    return page(request, settings, "web/unsubscribe_invalid.html", status_code=404)


def client_of(request: Request) -> str:
    # Behind a proxy, run `newsletter web` with --forwarded-allow-ips so this is the visitor's address.
    return request.client.host if request.client else "unknown"


def mask(email: str) -> str:
    """``a***@example.com``: enough for people to recognise their address, not enough
    to harvest it from a forwarded newsletter."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else email
