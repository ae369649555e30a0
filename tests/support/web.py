"""Helpers for the web tests: the app, an issue's source, the dashboard's sign-in and
CSRF token, the admin routes, and a snapshot of what scheduling could change."""

from __future__ import annotations

import re

from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from mailer.core.db import transaction
from mailer.models import Campaign, Delivery, Issue

EDITOR_EMAIL, EDITOR_PASSWORD = "editor@example.com", "correct horse battery staple"
ISSUE = """---
subject: AI this week
preheader: Models, chips and rules
---

## Top stories

### A new model

Something happened this week. [Read more](https://example.com/a)
"""


def issue_source(subject: str = "AI this week", body: str = "Something happened this week.") -> str:
    return ISSUE.replace("AI this week", subject).replace("Something happened this week.", body)


def create():
    from mailer.web.app import create_app

    return create_app()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html) or re.search(
        r'<meta name="csrf-token" content="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def sign_in(client: TestClient, email: str, password: str):
    page = client.get("/admin/login")
    assert page.status_code == 200
    response = client.post("/admin/login", data={"email": email, "password": password,
                                                 "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return response


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def admin_routes(prefix: str):
    """(method, path) of every route under ``prefix``."""
    for route in iter_route_contexts(create().routes):
        if (route.path or "").startswith(prefix):
            for method in sorted(route.methods or ()):
                yield method, route.path


def snapshot(engine) -> dict:
    """What scheduling could change: campaigns, deliveries, and the stored issues."""
    with transaction(engine) as s:
        return {
            "campaigns": s.execute(select(Campaign.id, Campaign.status, Campaign.scheduled_at)).all(),
            "deliveries": s.scalar(select(func.count()).select_from(Delivery)),
            "issues": s.execute(select(Issue.id, Issue.slug, Issue.source, Issue.html, Issue.rendered_at)).all(),
        }
