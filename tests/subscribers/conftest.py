"""Fixtures for the subscriber pages: the real FastAPI app over the test's database."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from mailer.db import engine_for, transaction
from mailer.models import Campaign, Issue
from mailer.web.app import create_app
from subscribers import service, tokens


@pytest.fixture
def db(settings):
    return engine_for(settings.database)


@pytest.fixture
def client(settings):

    with TestClient(create_app(), base_url=settings.base_url) as c:
        yield c


@pytest.fixture
def make_subscriber(db):
    def make(email="ann@example.com", *, status="active", name="Ann", list_name="weekly") -> int:
        with transaction(db) as s:
            return service.add_subscriber(s, email=email, name=name, status=status, list_name=list_name).id
    return make


@pytest.fixture
def make_campaign(db):
    def make(slug="weekly-1") -> int:
        with transaction(db) as s:
            issue = Issue(slug=slug, subject="This week", preheader="", source="", html="", text="", status="ready")
            s.add(issue)
            s.flush()
            mlist = service.ensure_list(s, "weekly")
            campaign = Campaign(issue_id=issue.id, list_id=mlist.id, status="sending")
            s.add(campaign)
            s.flush()
            return campaign.id
    return make


@pytest.fixture
def link(settings):
    def make(subscriber_id: int, campaign_id: int | None = None) -> str:
        return "/u/" + tokens.unsubscribe_token(settings.secret_key, subscriber_id, campaign_id)
    return make
