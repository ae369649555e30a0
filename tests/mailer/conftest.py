"""Fixtures for the web app: the real app over the test's database (SQLite and
PostgreSQL, through the root ``settings`` and ``engine`` fixtures), an anonymous
client, an API token and a client using it, a signed-in dashboard client, and the
subscribers and campaigns the public pages act on."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from mailer import accounts
from mailer.core import signing
from mailer.core.db import transaction
from mailer.models import Campaign, CampaignStatus, Issue, IssueStatus
from subscribers import service
from tests.support.web import EDITOR_EMAIL, EDITOR_PASSWORD, create, sign_in


@pytest.fixture
def admin_token(engine) -> str:
    with transaction(engine) as s:
        return accounts.create_token(s, name="tests").plaintext


@pytest.fixture
def anon(settings):
    with TestClient(create(), base_url=settings.base_url) as client:
        yield client


@pytest.fixture
def client(anon):
    return anon


@pytest.fixture
def api(settings, admin_token):
    with TestClient(create(), base_url=settings.base_url,
                    headers={"Authorization": f"Bearer {admin_token}"}) as client:
        yield client


@pytest.fixture
def editor_user(engine) -> tuple[str, str]:
    with transaction(engine) as s:
        accounts.create_user(s, email=EDITOR_EMAIL, password=EDITOR_PASSWORD)
    return EDITOR_EMAIL, EDITOR_PASSWORD


@pytest.fixture
def dashboard(settings, editor_user):
    """A TestClient signed in to the dashboard."""
    with TestClient(create(), base_url=settings.base_url) as client:
        sign_in(client, *editor_user)
        yield client


@pytest.fixture
def make_subscriber(engine):
    def make(email="ann@example.com", *, status="active", name="Ann", list_name="weekly") -> int:
        with transaction(engine) as s:
            return service.add_subscriber(s, email=email, name=name, status=status, list_name=list_name).id
    return make


@pytest.fixture
def make_campaign(engine):
    def make(slug="weekly-1") -> int:
        with transaction(engine) as s:
            issue = Issue(slug=slug, subject="This week", preheader="", source="", html="", text="",
                          status=IssueStatus.ready)
            s.add(issue)
            s.flush()
            mlist = service.ensure_list(s, "weekly")
            campaign = Campaign(issue_id=issue.id, list_id=mlist.id, status=CampaignStatus.sending)
            s.add(campaign)
            s.flush()
            return campaign.id
    return make


@pytest.fixture
def link(settings):
    def make(subscriber_id: int, campaign_id: int | None = None) -> str:
        return "/u/" + signing.unsubscribe_token(settings.secret_key, subscriber_id, campaign_id)
    return make
