"""Signup with double opt-in over HTTP; the confirmation mail goes through a real SMTP
server (``smtp_sink``) via the configured transport."""

from __future__ import annotations

import email
import re
from datetime import timedelta
from email import policy

import pytest
from sqlalchemy import func, select

from mailer.core.clock import utcnow
from mailer.core.config import get_settings
from mailer.core.db import transaction
from subscribers import service
from subscribers.models import Membership, Subscriber


@pytest.fixture
def smtp(smtp_sink, settings, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", f"smtp://127.0.0.1:{smtp_sink.port}")
    get_settings.cache_clear()
    return smtp_sink


def _mail_link(message) -> str:
    parsed = email.message_from_bytes(message.content, policy=policy.default)
    text = parsed.get_body(("plain",)).get_content()
    return re.search(r"https://news\.example\.com(/confirm/\S+)", text).group(1)


def _subscriber(engine, address):
    with transaction(engine) as s:
        return s.scalar(select(Subscriber).where(Subscriber.email_key == address.lower()))


def _members(engine) -> int:
    with transaction(engine) as s:
        return s.scalar(select(func.count()).select_from(Membership))


def test_signup_confirm_by_mail_then_active(client, engine, smtp):
    page = client.get("/subscribe")
    assert page.status_code == 200 and 'name="website"' in page.text
    r = client.post("/subscribe", data={"email": "New.Reader@Example.com", "name": "<b>Evil</b> Name",
                                        "website": ""})
    assert r.status_code == 200 and "Check your inbox" in r.text
    messages = smtp.wait_for(1)
    assert len(messages) == 1 and messages[0].rcpt_tos == ("New.Reader@example.com",)
    raw = messages[0].content.decode()
    assert "Evil" not in raw  # nothing the visitor typed goes into the mail
    assert _subscriber(engine, "new.reader@example.com").status == "pending"
    assert _members(engine) == 0

    link = _mail_link(messages[0])
    page = client.get(link)
    assert page.status_code == 200 and 'method="post"' in page.text
    assert _subscriber(engine, "new.reader@example.com").status == "pending"  # GET changed nothing
    done = client.post(link, follow_redirects=False)
    assert done.status_code == 200
    sub = _subscriber(engine, "new.reader@example.com")
    assert sub.status == "active" and sub.confirmed_at is not None
    assert _members(engine) == 1


def test_json_api_same_answer_for_new_and_existing(client, engine, smtp, make_subscriber):
    make_subscriber("old@example.com")
    new = client.post("/api/subscribe", json={"email": "fresh@example.com"})
    old = client.post("/api/subscribe", json={"email": "old@example.com", "name": "Changed"})
    assert new.status_code == old.status_code == 202
    assert new.json() == old.json()
    assert _subscriber(engine, "old@example.com").name == "Ann"  # an unproven signup changes nothing
    assert client.post("/api/subscribe", json={"email": "not an address"}).status_code == 400


def test_resubscribe_after_unsubscribe_needs_confirmation(client, engine, smtp, make_subscriber):
    sid = make_subscriber("back@example.com")
    with transaction(engine) as s:
        service.unsubscribe(s, subscriber_id=sid, origin="admin")
    assert client.post("/subscribe", data={"email": "back@example.com"}).status_code == 200
    assert _subscriber(engine, "back@example.com").status == "unsubscribed"
    link = _mail_link(smtp.wait_for(1)[0])
    assert client.post(link).status_code == 200
    assert _subscriber(engine, "back@example.com").status == "active"


def test_honeypot_accepts_and_does_nothing(client, engine, smtp):
    r = client.post("/subscribe", data={"email": "bot@example.com", "website": "http://spam.example"})
    assert r.status_code == 200 and "Check your inbox" in r.text
    assert _subscriber(engine, "bot@example.com") is None
    assert smtp.messages == []


@pytest.fixture
def one_window(monkeypatch):
    """The signup limits count in windows of the wall clock: a burst that runs across a
    window's end (a slow run) starts counting again, as it should. This keeps the test's
    requests inside one window."""
    from subscribers import signup

    window = signup._window
    monkeypatch.setattr(signup, "_window", lambda limit, value, now: window(limit, value, 1_800_000_000.0))


def test_burst_is_rate_limited_and_changes_nothing(client, engine, smtp, one_window):
    codes = []
    for i in range(1000):
        codes.append(client.post("/api/subscribe", json={"email": f"burst{i}@example.com"}).status_code)
    allowed = codes.index(429)
    assert 0 < allowed <= 20 and set(codes[allowed:]) == {429}
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == allowed
    assert _members(engine) == 0


def test_one_confirmation_mail_per_address_per_window(client, engine, smtp, one_window):
    for _ in range(3):
        assert client.post("/api/subscribe", json={"email": "again@example.com"}).status_code == 202
    smtp.wait_for(2, timeout=1)
    assert len(smtp.messages) == 1
    codes = [client.post("/api/subscribe", json={"email": "again@example.com"}).status_code for _ in range(5)]
    assert codes[-1] == 429


def test_suppressed_address_gets_nothing(client, engine, smtp):
    with transaction(engine) as s:
        service.suppress(s, email="gone@example.com", reason="complaint")
    assert client.post("/api/subscribe", json={"email": "gone@example.com"}).status_code == 202
    smtp.wait_for(1, timeout=1)
    assert smtp.messages == [] and _subscriber(engine, "gone@example.com") is None


def test_bad_confirmation_links(client, engine, settings):
    from mailer.core import signing

    expired = signing.confirm_token(settings.secret_key, 1, None, now=1_000_000)
    assert client.get(f"/confirm/{expired}").status_code == 404
    assert client.post(f"/confirm/{expired}").status_code == 404
    assert client.post("/confirm/abc").status_code == 404


def test_old_confirmation_link_cannot_undo_a_later_unsubscribe(client, engine, smtp):
    assert client.post("/api/subscribe", json={"email": "flip@example.com"}).status_code == 202
    link = _mail_link(smtp.wait_for(1)[0])
    assert client.post(link).status_code == 200
    sub = _subscriber(engine, "flip@example.com")
    with transaction(engine) as s:
        service.unsubscribe(s, subscriber_id=sub.id, origin="admin")
        # Confirmation tokens carry whole seconds: the unsubscribe is dated past the link's second.
        s.get(Subscriber, sub.id).unsubscribed_at = utcnow() + timedelta(seconds=2)
    again = client.post(link)
    assert again.status_code == 404 and "superseded" in again.text
    assert _subscriber(engine, "flip@example.com").status == "unsubscribed"


def test_plus_and_dot_addresses_of_one_mailbox_share_its_limits(settings, engine, smtp):
    """20 signups for victim+N@ (and v.ictim@) from 20 networks: one confirmation mail reaches
    the mailbox, however the address is written; each address is stored as typed."""
    from fastapi.testclient import TestClient

    from tests.support.web import create

    typed = [f"victim+{n}@example.net" for n in range(19)] + ["v.ictim@example.net"]
    for n, address in enumerate(typed):
        with TestClient(create(), base_url=settings.base_url, client=(f"198.51.{n}.7", 5000)) as client:
            assert client.post("/api/subscribe", json={"email": address}).status_code in (202, 429)
    assert len(smtp.messages) == 1  # background mails ran before each TestClient call returned
    with transaction(engine) as s:
        stored = set(s.scalars(select(Subscriber.email)))
    assert {"victim+0@example.net"} <= stored and all("+" in a or a == "v.ictim@example.net" for a in stored)
