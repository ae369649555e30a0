"""RFC 8058 one-click unsubscribe and the unsubscribe page, over HTTP against the real app."""

from __future__ import annotations

from sqlalchemy import select

from mailer.core import signing
from mailer.core.db import transaction
from subscribers.models import Event, Subscriber

GMAIL_HEADERS = {"content-type": "application/x-www-form-urlencoded"}


def _status(engine, sid) -> str:
    with transaction(engine) as s:
        return s.get(Subscriber, sid).status


def _events(engine, sid) -> list[tuple[str, str, int | None]]:
    with transaction(engine) as s:
        return [tuple(r) for r in s.execute(
            select(Event.kind, Event.origin, Event.campaign_id).where(Event.subscriber_id == sid,
                                                                      Event.kind == "unsubscribe"))]


def test_one_click_post_as_gmail_sends_it(client, engine, make_subscriber, make_campaign, link):
    sid, cid = make_subscriber(), make_campaign()
    url = link(sid, cid)
    assert not client.cookies
    response = client.post(url, content=b"List-Unsubscribe=One-Click", headers=GMAIL_HEADERS,
                           follow_redirects=False)
    assert response.status_code == 200
    assert "location" not in response.headers
    assert _status(engine, sid) == "unsubscribed"
    assert _events(engine, sid) == [("unsubscribe", "one-click", cid)]
    # Repeating it is harmless: 200 again, no second event.
    again = client.post(url, content=b"List-Unsubscribe=One-Click", headers=GMAIL_HEADERS, follow_redirects=False)
    assert again.status_code == 200
    assert len(_events(engine, sid)) == 1


def test_one_click_post_multipart(client, engine, make_subscriber, make_campaign, link):
    sid, cid = make_subscriber(), make_campaign()
    response = client.post(link(sid, cid), files={"List-Unsubscribe": (None, "One-Click")}, follow_redirects=False)
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 200 and "location" not in response.headers
    assert _events(engine, sid) == [("unsubscribe", "one-click", cid)]


def test_get_changes_nothing_and_offers_a_button(client, engine, make_subscriber, link):
    sid = make_subscriber()
    url = link(sid)
    for _ in range(3):
        page = client.get(url)
        assert page.status_code == 200
    assert _status(engine, sid) == "active" and _events(engine, sid) == []
    assert f'action="{url}"' in page.text and 'method="post"' in page.text
    assert "ann@example.com" not in page.text  # masked: a***@example.com
    # The page's button posts its own field: origin "page", no campaign.
    done = client.post(url, data={"source": "page"}, follow_redirects=False)
    assert done.status_code == 200
    assert _events(engine, sid) == [("unsubscribe", "page", None)]


def test_bad_tokens_get_the_same_answer_as_unknown_subscribers(client, engine, make_subscriber, settings, link):
    sid = make_subscriber()
    good = link(sid)
    token = good.removeprefix("/u/")
    flipped = token[:-3] + ("a" if token[-3] != "a" else "b") + token[-2:]
    bad_urls = [
        "/u/" + token[:-4],  # truncated
        "/u/" + flipped,  # tampered
        "/u/" + signing.unsubscribe_token("some other secret", sid, None),  # foreign
        "/u/" + "x" * 39,
        "/u/" + signing.unsubscribe_token(settings.secret_key, 999_999, None),  # valid, no such subscriber
    ]
    answers = set()
    for url in bad_urls:
        for method in ("get", "post"):
            r = getattr(client, method)(url, **({"content": b"List-Unsubscribe=One-Click", "headers": GMAIL_HEADERS}
                                                if method == "post" else {}))
            assert 400 <= r.status_code < 500
            answers.add((method, r.status_code, r.text))
    assert len(answers) == 2  # one for GET, one for POST: the same whatever was wrong
    assert _status(engine, sid) == "active"


def test_key_rotation_old_links_keep_working(client, engine, make_subscriber, settings, monkeypatch):
    from mailer.core.config import get_settings

    sid = make_subscriber()
    old_link = "/u/" + signing.unsubscribe_token("the old secret", sid, None)
    assert client.get(old_link).status_code == 404
    monkeypatch.setenv("NEWSLETTER_OLD_SECRET_KEYS", "retired, the old secret")
    get_settings.cache_clear()
    assert client.get(old_link).status_code == 200
    assert client.post(old_link, content=b"List-Unsubscribe=One-Click", headers=GMAIL_HEADERS).status_code == 200
    assert _status(engine, sid) == "unsubscribed"


def test_inbound_mailto_unsubscribe(settings, engine, make_subscriber, make_campaign):
    from mailer.operations.inbound import receive

    def inbound_command(raw: bytes, environ: dict) -> str:
        return receive(raw, environ=environ, settings=settings).line

    sid, cid = make_subscriber(), make_campaign()
    token = signing.unsubscribe_token(settings.secret_key, sid, cid)
    raw = (
        "Return-Path: <ann@example.com>\r\n"
        f"Delivered-To: unsubscribe+{token.upper()}@news.example.com\r\n"
        "From: Ann <ann@example.com>\r\n"
        f"To: unsubscribe+{token}@news.example.com\r\n"
        "Subject: unsubscribe\r\n\r\nPlease remove me.\r\n"
    ).encode()
    assert inbound_command(raw, {}) == "unsubscribed"
    assert _status(engine, sid) == "unsubscribed"
    assert _events(engine, sid) == [("unsubscribe", "mailto", cid)]
    # A token that does not verify, or no token: nothing changes, and the message is kept.
    refused = inbound_command(raw.replace(token.encode(), token[:-2].encode())
                              .replace(token.upper().encode(), token[:-2].encode()), {})
    assert refused.startswith("refused, kept as unprocessed #") and "not valid" in refused
    assert inbound_command(b"To: someone@example.com\r\n\r\nhi\r\n", {}).startswith("kept as unprocessed #")
    assert _events(engine, sid) == [("unsubscribe", "mailto", cid)]
