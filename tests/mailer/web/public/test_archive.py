"""The public archive as a small site, against a real (migrated) SQLite database: the
index in pages, an issue's own public page (no personal wording, no subscriber links, a
subscribe form, previous/next), Open Graph, the Atom feed with full content, cached
pages, robots.txt and the published images."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from mailer.core.config import load_settings
from mailer.core.db import make_engine
from mailer.issues import load_issue
from mailer.migrate import upgrade
from mailer.models import Asset, Campaign, CampaignStatus, Issue
from mailer.render import context_from_settings, render_issue
from mailer.web.app import create_app
from mailer.web.deps import get_app_settings, get_session
from subscribers.models import MailingList
from tests.support.example import EXAMPLE, EXAMPLE_PREHEADER

ATOM = "{http://www.w3.org/2005/Atom}"
BASE = "https://news.example.com"
SLUG = "china-ai-weekly-2022-06-14"
# What belongs to one subscriber's copy of the email, never to the public page.
PERSONAL = ["Hi reader", "Hi there", "__NL_", "You are receiving this", "Manage preferences", "/u/", "/p/",
            "Unsubscribe", "View in browser"]


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
    app = create_app()

    def session():
        with Session(engine, expire_on_commit=False) as s:
            yield s

    app.dependency_overrides[get_session] = session
    app.dependency_overrides[get_app_settings] = lambda: settings
    with TestClient(app, base_url=BASE) as test_client:
        yield test_client


def store(engine, *, list_name: str | None = None, **values) -> int:
    with Session(engine) as session, session.begin():
        issue = Issue(**values)
        session.add(issue)
        session.flush()
        if list_name:
            mlist = MailingList(name=list_name)
            session.add(mlist)
            session.flush()
            session.add(Campaign(issue_id=issue.id, list_id=mlist.id, status=CampaignStatus.sent))
        return issue.id


def small_issue(subject: str, body: str = "Old news.") -> str:
    return f"---\nsubject: {subject}\n---\n{body}\n"


@pytest.fixture
def sent_example(settings, engine):
    source = load_issue(EXAMPLE)
    rendered = render_issue(source, ctx=context_from_settings(settings, list_name=source.list_name))
    store(
        engine, list_name="recode", slug=rendered.slug, subject=rendered.subject, preheader=rendered.preheader,
        source=EXAMPLE.read_text(encoding="utf-8"), html=rendered.html, text=rendered.text, status="sent",
        issue_date="2022-06-14", rendered_at=datetime(2022, 6, 14, 8, 0, tzinfo=timezone.utc),
    )
    store(engine, slug="older-issue", subject="An older issue & <friends>", preheader="Old news",
          source=small_issue('"An older issue & <friends>"'), html="<p>old</p>", status="sent",
          issue_date="2022-06-07", rendered_at=datetime(2022, 6, 7, 8, 0, tzinfo=timezone.utc))
    store(engine, slug="draft-issue", subject="A secret draft", source=small_issue("A secret draft"),
          html="<p>draft</p>", status="draft")
    store(engine, slug="ready-issue", subject="Ready, not sent", source=small_issue("Ready"), html="<p>ready</p>",
          status="ready")
    return rendered


def test_list_shows_sent_issues_newest_first(client, sent_example):
    response = client.get("/issues/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "Megvii Chief Scientist" in page and f'href="/issues/{SLUG}"' in page
    assert "An older issue &amp; &lt;friends&gt;" in page
    assert page.index("Megvii Chief Scientist") < page.index("An older issue")
    assert "A secret draft" not in page and "Ready, not sent" not in page
    assert 'type="application/atom+xml"' in page
    assert '<meta name="robots" content="index, follow">' in page
    assert f'<link rel="canonical" href="{BASE}/issues/">' in page and '<meta name="description"' in page
    assert "Page 1 of" not in page  # one page: no pager


def test_the_index_is_in_pages(client, engine):
    start = datetime(2021, 1, 4, 8, 0, tzinfo=timezone.utc)
    for n in range(25):
        day = start + timedelta(weeks=n)
        store(engine, slug=f"week-{n:02d}", subject=f"Week {n:02d}", source=small_issue(f"Week {n:02d}"),
              status="sent", issue_date=day.date().isoformat(), rendered_at=day)
    first = client.get("/issues/").text
    assert first.count('<li>') == 20 and "Week 24" in first and "Week 05" in first and "Week 04" not in first
    assert 'href="/issues/?page=2"' in first and "Page 1 of 2" in first and "Newer issues" not in first
    second = client.get("/issues/?page=2")
    assert second.status_code == 200
    assert second.text.count('<li>') == 5 and "Week 04" in second.text and "Week 00" in second.text
    assert 'href="/issues/">← Newer issues' in second.text and "Older issues" not in second.text
    assert f'<link rel="canonical" href="{BASE}/issues/?page=2">' in second.text
    assert client.get("/issues/?page=3").status_code == 404
    for bad in ("0", "-1", "two", "1.5", "9" * 30):
        response = client.get("/issues/", params={"page": bad})
        assert response.status_code == 400 and "page must be a whole number" in response.json()["detail"], bad


def test_empty_archive(client, engine):
    response = client.get("/issues/")
    assert response.status_code == 200 and "No issues have been sent yet." in response.text
    feed = ET.fromstring(client.get("/issues/feed.atom").content)
    assert feed.findall(f"{ATOM}entry") == []


def test_issue_page_is_public_with_a_subscribe_form_and_no_personal_wording(client, sent_example):
    response = client.get(f"/issues/{SLUG}")
    assert response.status_code == 200
    page = response.text
    for title in ["News of the Week", "Papers and Project", "Rising Startups", "Vision GNN: An Image is Worth Graph of Nodes"]:
        assert title in page
    for wording in PERSONAL:
        assert wording not in page, wording
    hrefs = re.findall(r'href="([^"]*)"', page)
    for href in hrefs:  # no token-bearing link of any kind
        assert not re.search(r"[A-Za-z0-9_\-.]{40,}", href.rsplit("/", 1)[-1]), href
    # The subscribe form, to the list the issue went to.
    form = re.search(r'<form method="post" action="/subscribe">(.*?)</form>', page, re.S).group(1)
    assert 'type="email"' in form and 'name="list" value="recode"' in form
    # The way around the archive.
    assert 'href="/issues/"' in page and 'href="/issues/older-issue" rel="prev"' in page
    assert "Next issue" not in page  # the newest has none
    assert "<script" not in page.lower()
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp
    assert '<meta name="robots" content="index, follow">' in page


def test_issue_page_has_open_graph_and_a_description(client, sent_example):
    page = client.get(f"/issues/{SLUG}").text
    description = EXAMPLE_PREHEADER.replace("’", "’")
    assert f'<meta name="description" content="{description}">' in page
    assert f'<meta property="og:description" content="{description}">' in page
    assert f'<meta property="og:url" content="{BASE}/issues/{SLUG}">' in page
    assert f'<link rel="canonical" href="{BASE}/issues/{SLUG}">' in page
    assert '<meta property="og:type" content="article">' in page
    assert re.search(r'<meta property="og:title" content="Megvii Chief Scientist, ResNet Creator Dies;', page)
    assert '<meta property="og:site_name" content="Recode China AI">' in page
    assert '<meta property="article:published_time" content="2022-06-14">' in page
    assert '<html lang="en" dir="ltr">' in page


def test_previous_and_next_issue(client, sent_example):
    older = client.get("/issues/older-issue").text
    assert f'href="/issues/{SLUG}" rel="next"' in older and "Previous issue" not in older
    assert "Old news." in older


def test_issue_language_and_direction_come_from_the_issue(client, engine):
    store(engine, slug="arabic", subject="نشرة", status="sent", issue_date="2022-01-01",
          source="---\nsubject: نشرة\nlang: ar\n---\nمرحبا بكم.\n")
    assert '<html lang="ar" dir="rtl">' in client.get("/issues/arabic").text


def test_unknown_or_unsent_slug_is_404(client, sent_example):
    assert client.get("/issues/no-such-issue").status_code == 404
    assert client.get("/issues/draft-issue").status_code == 404
    assert client.get("/issues/ready-issue").status_code == 404


def test_issue_stored_without_html_is_rendered_from_its_source(client, engine):
    store(engine, slug="source-only", subject="From source", source="---\nsubject: From source\n---\nBody text here.\n",
          html="", status="sent", issue_date="2022-01-01")
    page = client.get("/issues/source-only").text
    assert "Body text here." in page and "__NL_" not in page


def test_pages_are_cached_and_a_change_shows_at_once(client, engine, sent_example):
    first = client.get("/issues/older-issue")
    etag = first.headers["etag"]
    assert first.headers["cache-control"].startswith("public")
    assert client.get("/issues/older-issue", headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/issues/older-issue").text == first.text
    # The editor corrects the issue: a new key, a new page.
    with Session(engine) as s, s.begin():
        s.execute(update(Issue).where(Issue.slug == "older-issue").values(
            source=small_issue("Older", "Corrected news."), updated_at=datetime.now(timezone.utc)))
    second = client.get("/issues/older-issue", headers={"If-None-Match": etag})
    assert second.status_code == 200 and second.headers["etag"] != etag and "Corrected news." in second.text
    # A newer issue is sent: the newest page gains its "next" link.
    newest = client.get(f"/issues/{SLUG}")
    store(engine, slug="newest", subject="The newest", source=small_issue("The newest"), status="sent",
          issue_date="2022-06-21", rendered_at=datetime(2022, 6, 21, 8, 0, tzinfo=timezone.utc))
    again = client.get(f"/issues/{SLUG}", headers={"If-None-Match": newest.headers["etag"]})
    assert again.status_code == 200 and 'href="/issues/newest" rel="next"' in again.text


def test_feed_is_valid_atom_with_full_content(client, sent_example):
    response = client.get("/issues/feed.atom")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = ET.fromstring(response.content)
    assert feed.tag == f"{ATOM}feed"
    assert feed.find(f"{ATOM}id").text == f"{BASE}/issues/"
    assert feed.find(f"{ATOM}updated").text == "2022-06-14T08:00:00Z"
    entries = feed.findall(f"{ATOM}entry")
    assert [entry.find(f"{ATOM}id").text for entry in entries] == [
        f"{BASE}/issues/{SLUG}",
        f"{BASE}/issues/older-issue",
    ]
    assert entries[0].find(f"{ATOM}title").text.startswith("Megvii Chief Scientist")
    assert entries[1].find(f"{ATOM}title").text == "An older issue & <friends>"
    assert entries[0].find(f"{ATOM}link").get("href") == f"{BASE}/issues/{SLUG}"
    assert entries[0].find(f"{ATOM}summary").text == EXAMPLE_PREHEADER
    assert feed.find(f"{ATOM}author/{ATOM}name").text == "Recode China AI"
    content = entries[0].find(f"{ATOM}content")
    assert content.get("type") == "html"
    for text in ("Megvii Chief Scientist, ResNet Creator Dies at 45", "Rising Startups", "Motovis",
                 'href="https://arxiv.org/abs/1512.03385"'):
        assert text in content.text, text
    for wording in PERSONAL:
        assert wording not in content.text, wording


def test_robots_txt_invites_the_archive_and_keeps_personal_pages_out(client):
    robots = client.get("/robots.txt")
    assert robots.status_code == 200
    lines = robots.text.splitlines()
    assert "Allow: /issues/" in lines
    for path in ("/u/", "/p/", "/confirm/", "/admin", "/api/"):
        assert f"Disallow: {path}" in lines


def test_published_images_are_served_for_ever(client, engine):
    digest = "ab" * 32
    with Session(engine) as s, s.begin():
        s.add(Asset(digest=digest, media_type="image/png", width=1, height=1, data=b"\x89PNG fake"))
    response = client.get(f"/issues/assets/{digest}.png")
    assert response.status_code == 200 and response.content == b"\x89PNG fake"
    assert response.headers["content-type"] == "image/png"
    assert "immutable" in response.headers["cache-control"]
    assert client.get(f"/issues/assets/{digest}.png",
                      headers={"If-None-Match": response.headers["etag"]}).status_code == 304
    for bad in (f"{digest}.jpg", f"{'cd' * 32}.png", "../../etc/passwd", "x.png", f"{digest}.PNG"):
        assert client.get(f"/issues/assets/{bad}").status_code == 404, bad


def test_latest_sends_the_reader_on_to_the_newest_sent_issue(client, engine):
    """What a welcome mail's "latest issue" link points at: it moves with the archive."""
    empty = client.get("/issues/latest", follow_redirects=False)
    assert (empty.status_code, empty.headers["location"]) == (302, "/issues/")
    store(engine, slug="week-01", subject="Week 01", source=small_issue("Week 01"), status="sent",
          issue_date="2022-06-07", rendered_at=datetime(2022, 6, 7, 8, 0, tzinfo=timezone.utc))
    store(engine, slug="a-draft", subject="Draft", source=small_issue("Draft"), status="ready",
          issue_date="2022-06-21", rendered_at=datetime(2022, 6, 21, 8, 0, tzinfo=timezone.utc))
    assert client.get("/issues/latest", follow_redirects=False).headers["location"] == "/issues/week-01"
    store(engine, slug="week-02", subject="Week 02", source=small_issue("Week 02"), status="sent",
          issue_date="2022-06-14", rendered_at=datetime(2022, 6, 14, 8, 0, tzinfo=timezone.utc))
    moved = client.get("/issues/latest", follow_redirects=False)
    assert moved.headers["location"] == "/issues/week-02" and moved.headers["cache-control"] == "no-store"
    assert client.get("/issues/latest").status_code == 200  # followed: the issue's page
