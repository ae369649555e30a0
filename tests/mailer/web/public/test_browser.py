"""A real browser (headless Chromium via Playwright) against a real uvicorn server:
sign up through the form, then unsubscribe with the page's button."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from mailer.core import signing
from mailer.core.db import transaction
from subscribers.models import Event, Subscriber
from tests.support.browser import live_app

pytestmark = pytest.mark.browser

@pytest.fixture
def server(settings):
    with live_app() as url:
        yield url


def test_signup_and_unsubscribe_in_a_browser(server, browser, settings, engine, make_subscriber):
    page = browser.new_page()
    page.goto(f"{server}/subscribe")
    page.fill("#email", "browser.reader@example.com")
    page.fill("#name", "Browser Reader")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Check your inbox")
    with transaction(engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email_key == "browser.reader@example.com"))
        assert sub is not None and sub.status == "pending"
    deadline = time.monotonic() + 10
    while not list(settings.outbox_dir.glob("*.eml")):  # the confirmation, sent after the response
        assert time.monotonic() < deadline, "no confirmation mail in the outbox"
        time.sleep(0.05)

    sid = make_subscriber("leaving@example.com")
    page.goto(f"{server}/u/{signing.unsubscribe_token(settings.secret_key, sid, None)}")
    page.wait_for_selector("text=Unsubscribe?")
    with transaction(engine) as s:
        assert s.get(Subscriber, sid).status == "active"  # opening the page changed nothing
    page.click("button[type=submit]")
    page.wait_for_selector("text=You are unsubscribed")
    with transaction(engine) as s:
        assert s.get(Subscriber, sid).status == "unsubscribed"
        assert s.scalars(select(Event.origin).where(Event.subscriber_id == sid, Event.kind == "unsubscribe")).all() \
            == ["page"]
