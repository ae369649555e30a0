"""The public archive against a real (migrated) SQLite database."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from mailer.core.config import load_settings
from mailer.core.db import make_engine
from mailer.issues import load_issue
from mailer.migrate import upgrade
from mailer.models import Issue
from mailer.render import context_from_settings, render_issue
from mailer.web.deps import get_app_settings, get_session
from mailer.web.public import archive
from tests.support.example import ROOT

EXAMPLE = ROOT / "examples" / "china-ai-weekly-2022-06-14.md"
ATOM = "{http://www.w3.org/2005/Atom}"
BASE = "https://news.example.com"


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray .env
    return load_settings(
        base_url=BASE,
        database_url=f"sqlite:///{tmp_path / 'archive.db'}",
        NEWSLETTER_FROM="Recode China AI <news@example.com>",
    )


@pytest.fixture
def engine(settings):
    upgrade(settings.database)
    engine = make_engine(settings.database)
    yield engine
    engine.dispose()


@pytest.fixture
def client(settings, engine):
    app = FastAPI()
    app.include_router(archive.router)

    def session():
        with Session(engine, expire_on_commit=False) as s:
            yield s

    app.dependency_overrides[get_session] = session
    app.dependency_overrides[get_app_settings] = lambda: settings
    with TestClient(app) as test_client:
        yield test_client


def store(engine, **values) -> None:
    with Session(engine) as session, session.begin():
        session.add(Issue(**values))


@pytest.fixture
def sent_example(settings, engine):
    source = load_issue(EXAMPLE)
    rendered = render_issue(source, ctx=context_from_settings(settings, list_name=source.list_name))
    store(
        engine,
        slug=rendered.slug,
        subject=rendered.subject,
        preheader=rendered.preheader,
        source=EXAMPLE.read_text(encoding="utf-8"),
        html=rendered.html,
        text=rendered.text,
        status="sent",
        issue_date="2022-06-14",
        rendered_at=datetime(2022, 6, 14, 8, 0, tzinfo=timezone.utc),
    )
    store(engine, slug="older-issue", subject="An older issue & <friends>", preheader="Old news", source="", html="<p>old</p>",
          status="sent", issue_date="2022-06-07", rendered_at=datetime(2022, 6, 7, 8, 0, tzinfo=timezone.utc))
    store(engine, slug="draft-issue", subject="A secret draft", source="", html="<p>draft</p>", status="draft")
    store(engine, slug="ready-issue", subject="Ready, not sent", source="", html="<p>ready</p>", status="ready")
    return rendered


def test_list_shows_sent_issues_newest_first(client, sent_example):
    response = client.get("/issues/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "Megvii Chief Scientist" in page and 'href="/issues/china-ai-weekly-2022-06-14"' in page
    assert "An older issue &amp; &lt;friends&gt;" in page
    assert page.index("Megvii Chief Scientist") < page.index("An older issue")
    assert "A secret draft" not in page and "Ready, not sent" not in page
    assert 'type="application/atom+xml"' in page


def test_empty_archive(client, engine):
    response = client.get("/issues/")
    assert response.status_code == 200 and "No issues have been sent yet." in response.text
    feed = ET.fromstring(client.get("/issues/feed.atom").content)
    assert feed.findall(f"{ATOM}entry") == []


def test_issue_page_is_the_web_version_without_personal_links(client, sent_example):
    response = client.get("/issues/china-ai-weekly-2022-06-14")
    assert response.status_code == 200
    page = response.text
    for title in ["News of the Week", "Papers and Project", "Rising Startups", "Vision GNN: An Image is Worth Graph of Nodes"]:
        assert title in page
    assert "__NL_" not in page
    assert "Hi reader," in page
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert f"{BASE}/subscribe" in hrefs
    # No token-bearing personal links: nothing under /unsubscribe/ or /preferences/, no long opaque strings.
    for href in hrefs:
        assert "/unsubscribe" not in href and "/preferences" not in href, href
        assert not re.search(r"[A-Za-z0-9_\-.]{40,}", href.rsplit("/", 1)[-1]), href
    assert "<script" not in page.lower()
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_unknown_or_unsent_slug_is_404(client, sent_example):
    assert client.get("/issues/no-such-issue").status_code == 404
    assert client.get("/issues/draft-issue").status_code == 404
    assert client.get("/issues/ready-issue").status_code == 404


def test_issue_stored_without_html_is_rendered_from_its_source(client, engine):
    store(engine, slug="source-only", subject="From source", source="---\nsubject: From source\n---\nBody text here.\n",
          html="", status="sent", issue_date="2022-01-01")
    page = client.get("/issues/source-only").text
    assert "Body text here." in page and "__NL_" not in page


def test_feed_is_valid_atom_with_entries(client, sent_example):
    response = client.get("/issues/feed.atom")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = ET.fromstring(response.content)
    assert feed.tag == f"{ATOM}feed"
    assert feed.find(f"{ATOM}id").text == f"{BASE}/issues/"
    assert feed.find(f"{ATOM}updated").text == "2022-06-14T08:00:00Z"
    entries = feed.findall(f"{ATOM}entry")
    assert [entry.find(f"{ATOM}id").text for entry in entries] == [
        f"{BASE}/issues/china-ai-weekly-2022-06-14",
        f"{BASE}/issues/older-issue",
    ]
    assert entries[0].find(f"{ATOM}title").text.startswith("Megvii Chief Scientist")
    assert entries[1].find(f"{ATOM}title").text == "An older issue & <friends>"
    assert entries[0].find(f"{ATOM}link").get("href") == f"{BASE}/issues/china-ai-weekly-2022-06-14"
    assert entries[0].find(f"{ATOM}summary").text == "Weekly China AI News from June 6 to June 12"
    assert feed.find(f"{ATOM}author/{ATOM}name").text == "Recode China AI"
