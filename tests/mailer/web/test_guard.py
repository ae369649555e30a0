"""The edge of the web app (``mailer.web.guard``): no control characters anywhere in a
request, a small body limit for what anyone may post, security headers on every page."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from mailer.core.db import transaction
from subscribers.models import MailingList
from tests.support.seed import count_rows
from tests.support.web import create


@pytest.mark.parametrize("method, path, kw", [
    ("GET", "/issues/x%00", {}),
    ("GET", "/u/abc%01def", {}),
    ("POST", "/subscribe", {"data": {"email": "ann@example.com", "list": "week\x00ly"}}),
    ("POST", "/api/subscribe", {"json": {"email": "ann@example.com", "name": "A\u0000nn"}}),
    ("POST", "/p/sometoken", {"data": {"action": "name", "name": "x\x07y"}}),
])
def test_control_characters_are_refused_before_any_route(anon, engine, method, path, kw):
    r = anon.request(method, path, **kw)
    assert r.status_code == 400 and "control characters" in r.json()["detail"]
    assert count_rows(engine, "subscriber") == 0


def test_nul_in_an_admin_query_is_400_not_500(api):
    r = api.get("/api/admin/subscribers", params={"q": "\x00"})
    assert r.status_code == 400 and "control characters" in r.json()["detail"]


def test_text_areas_keep_their_line_breaks_and_tabs(dashboard):
    token = dashboard.get("/admin/issues/new").text.split('name="csrf_token" value="')[1].split('"')[0]
    source = "---\r\nsubject: Tabs and lines\r\n---\r\n\r\nA\tparagraph\r\nover two lines.\r\n"
    r = dashboard.post("/admin/issues/new", data={"csrf_token": token, "source": source}, follow_redirects=False)
    assert r.status_code == 303


def test_a_public_body_over_the_limit_is_refused_unread(anon, settings, engine):
    big = b'{"email": "ann@example.com", "name": "' + b"x" * (settings.max_public_body + 1) + b'"}'
    r = anon.post("/api/subscribe", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and str(settings.max_public_body) in r.json()["detail"]

    def streamed():  # no Content-Length: counted as it arrives
        yield b'{"email": "ann@example.com", "name": "'
        for _ in range(settings.max_public_body // 1024 + 2):
            yield b"x" * 1024
        yield b'"}'

    r = anon.post("/api/subscribe", content=streamed(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert count_rows(engine, "subscriber") == 0


def test_the_editor_may_post_larger_bodies(api, settings):
    source = "---\nsubject: Long\n---\n\n" + ("A long paragraph of the week. " * 4000) + "\n"
    assert len(source) > settings.max_public_body
    assert api.post("/api/admin/issues", json={"source": source}).status_code == 201


@pytest.mark.parametrize("path", ["/subscribe", "/admin/login", "/issues/", "/u/not-a-token", "/api/subscribe"])
def test_every_page_sends_the_security_headers(anon, path):
    r = anon.get(path) if path != "/api/subscribe" else anon.post(path, json={"email": "x"})
    policy = dict(
        (d.split(" ", 1) + [""])[:2] for d in (part.strip() for part in r.headers["content-security-policy"].split(";")) if d
    )
    # Scripts may come from our own origin at most (the archive allows none at all); never inline.
    assert policy.get("script-src", policy.get("default-src")) in ("'self'", "'none'")
    assert policy["frame-ancestors"] == "'none'"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"]


def test_a_page_with_its_own_policy_keeps_it(anon, engine, settings):
    from mailer.models import Issue, IssueStatus

    with transaction(engine) as s:
        s.add(Issue(slug="sent", subject="Sent", source="", html="<p>hi</p>", status=IssueStatus.sent))
    r = anon.get("/issues/sent")
    assert r.status_code == 200 and r.headers["content-security-policy"].startswith("default-src 'none'")


def test_public_signup_does_not_tell_which_lists_exist(anon, engine):
    with transaction(engine) as s:
        s.add(MailingList(name="secret-list", description=""))
    known = anon.post("/api/subscribe", json={"email": "ann@example.com", "list": "secret-list"})
    unknown = anon.post("/api/subscribe", json={"email": "bob@example.com", "list": "no-such-list"})
    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
    page_known = anon.post("/subscribe", data={"email": "cy@example.com", "list": "secret-list"})
    page_unknown = anon.post("/subscribe", data={"email": "di@example.com", "list": "no-such-list"})
    assert page_known.status_code == page_unknown.status_code == 200
    assert page_known.text == page_unknown.text
    with transaction(engine) as s:
        assert s.query(MailingList).filter_by(name="no-such-list").count() == 0


def test_the_guard_runs_in_front_of_every_app(settings):
    with TestClient(create()) as client:
        assert client.get("/issues/%00").status_code == 400


def test_digits_that_are_not_ascii_are_not_numbers(anon, api):
    """'²'.isdigit() is true and int('²') fails: found by the fuzz test on /issues/?page=."""
    page = anon.get("/issues/?page=%C2%B2")
    assert page.status_code == 400 and "whole number" in page.json()["detail"], page.text
    assert api.get("/dashboard/subscribers?after=%C2%B2").status_code != 500
