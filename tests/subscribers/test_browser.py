"""A real browser (headless Chromium via Playwright) against a real uvicorn server:
sign up through the form, then unsubscribe with the page's button."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from mailer.db import transaction
from subscribers import tokens
from subscribers.models import Event, Subscriber
from tests.support.services import chromium_path, free_port

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]


@pytest.fixture
def server(settings):
    import uvicorn

    from mailer.web.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def browser():
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_signup_and_unsubscribe_in_a_browser(server, browser, settings, db, make_subscriber):
    page = browser.new_page()
    page.goto(f"{server}/subscribe")
    page.fill("#email", "browser.reader@example.com")
    page.fill("#name", "Browser Reader")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Check your inbox")
    with transaction(db) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email_key == "browser.reader@example.com"))
        assert sub is not None and sub.status == "pending"
    deadline = time.monotonic() + 10
    while not list(settings.outbox_dir.glob("*.eml")):  # the confirmation, sent after the response
        assert time.monotonic() < deadline, "no confirmation mail in the outbox"
        time.sleep(0.05)

    sid = make_subscriber("leaving@example.com")
    page.goto(f"{server}/u/{tokens.unsubscribe_token(settings.secret_key, sid, None)}")
    page.wait_for_selector("text=Unsubscribe?")
    with transaction(db) as s:
        assert s.get(Subscriber, sid).status == "active"  # opening the page changed nothing
    page.click("button[type=submit]")
    page.wait_for_selector("text=You are unsubscribed")
    with transaction(db) as s:
        assert s.get(Subscriber, sid).status == "unsubscribed"
        assert s.scalars(select(Event.origin).where(Event.subscriber_id == sid, Event.kind == "unsubscribe")).all() \
            == ["page"]
