"""Fixtures for the admin API and the dashboard: the real app over the test's database
(SQLite and PostgreSQL, via the root ``settings`` fixture), an API token, a signed-in
dashboard client. Named admin_* / editor_* so nothing here shadows a root fixture."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

import mailer.accounts  # noqa: F401  (maps admin_user and api_token)
from mailer import accounts
from mailer.db import engine_for, transaction

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


@pytest.fixture
def admin_db(settings):
    return engine_for(settings.database)


@pytest.fixture
def admin_token(admin_db) -> str:
    with transaction(admin_db) as s:
        return accounts.create_token(s, name="tests").plaintext


@pytest.fixture
def anon(settings):
    with TestClient(create(), base_url=settings.base_url) as client:
        yield client


@pytest.fixture
def api(settings, admin_token):
    with TestClient(create(), base_url=settings.base_url,
                    headers={"Authorization": f"Bearer {admin_token}"}) as client:
        yield client


@pytest.fixture
def editor_user(admin_db) -> tuple[str, str]:
    with transaction(admin_db) as s:
        accounts.create_user(s, email=EDITOR_EMAIL, password=EDITOR_PASSWORD)
    return EDITOR_EMAIL, EDITOR_PASSWORD


@pytest.fixture
def dashboard(settings, editor_user):
    """A TestClient signed in to the dashboard."""
    with TestClient(create(), base_url=settings.base_url) as client:
        sign_in(client, *editor_user)
        yield client


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
