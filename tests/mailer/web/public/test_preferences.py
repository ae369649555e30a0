"""The preferences page: name, leave, resubscribe, download and delete my data."""

from __future__ import annotations

from sqlalchemy import select

from mailer.core import signing
from mailer.core.config import get_settings
from mailer.core.db import transaction
from subscribers import service
from subscribers.models import Subscriber, Suppression


def _prefs(settings, sid, cid=None) -> str:
    return "/p/" + signing.unsubscribe_token(settings.secret_key, sid, cid)


def _get(engine, sid) -> Subscriber:
    with transaction(engine) as s:
        return s.get(Subscriber, sid)


def test_change_name_and_leave(client, engine, settings, make_subscriber):
    sid = make_subscriber()
    url = _prefs(settings, sid)
    page = client.get(url)
    assert page.status_code == 200 and "a***@example.com" in page.text
    assert client.post(url, data={"action": "name", "name": "Ann <Lee>"}).status_code == 200
    assert _get(engine, sid).name == "Ann <Lee>"
    assert "Ann &lt;Lee&gt;" in client.get(url).text
    assert client.post(url, data={"action": "name", "name": "two\nlines"}).status_code == 400
    assert _get(engine, sid).name == "Ann <Lee>"
    assert client.post(url, data={"action": "leave"}).status_code == 200
    assert _get(engine, sid).status == "unsubscribed"


def test_resubscribe_sends_confirmation(client, engine, settings, make_subscriber, smtp_sink, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", f"smtp://127.0.0.1:{smtp_sink.port}")
    get_settings.cache_clear()
    sid = make_subscriber()
    with transaction(engine) as s:
        service.unsubscribe(s, subscriber_id=sid, origin="admin")
    url = _prefs(settings, sid)
    assert client.post(url, data={"action": "resubscribe"}).status_code == 200
    assert len(smtp_sink.wait_for(1)) == 1
    assert _get(engine, sid).status == "unsubscribed"  # until the link is followed


def test_download_and_delete_my_data(client, engine, settings, make_subscriber):
    sid = make_subscriber("Ann@Example.com")
    url = _prefs(settings, sid)
    data = client.post(url, data={"action": "export"})
    assert data.status_code == 200 and data.headers["content-type"].startswith("application/json")
    assert data.json()["email"] == "Ann@example.com" and data.json()["lists"] == ["weekly"]
    assert client.post(url, data={"action": "erase"}).status_code == 400  # the box not ticked
    assert _get(engine, sid).email == "Ann@example.com"
    gone = client.post(url, data={"action": "erase", "sure": "yes"})
    assert gone.status_code == 200 and "Ann@example.com" not in gone.text
    sub = _get(engine, sid)
    assert (sub.email, sub.name, sub.status) == (f"erased-{sid}@invalid", "", "unsubscribed")
    with transaction(engine) as s:
        assert s.scalars(select(Suppression.reason)).all() == ["erased"]
    # The link still answers (the same page), with nothing left to show.
    assert client.get(url).status_code == 200
    assert client.post(url, data={"action": "export"}).status_code == 200


def test_bad_preferences_link(client, settings):
    assert client.get("/p/nonsense").status_code == 404
    assert client.post("/p/nonsense", data={"action": "erase", "sure": "yes"}).status_code == 404


def test_the_page_says_what_is_tracked_for_each_list(client, engine, settings, make_subscriber, monkeypatch):
    import re

    from mailer.operations import subscribers as subscriber_ops

    sid = make_subscriber()
    url = _prefs(settings, sid)

    def said() -> str:
        text = re.sub(r"\s+", " ", client.get(url).text)
        return re.search(r'<p class="tracked" data-list="weekly">(.*?)</p>', text).group(1)

    assert said() == "weekly: nothing: no link goes through our site and there is no tracking image."
    with transaction(engine) as s:
        subscriber_ops.set_tracking(s, list_name="weekly", clicks=True)
    assert said().startswith("weekly: which links you click") and "Opening it is not tracked." in said()
    with transaction(engine) as s:
        subscriber_ops.set_tracking(s, list_name="weekly", clicks=False, opens=True)
    assert said().startswith("weekly: when you open it") and "Links are not tracked." in said()
    with transaction(engine) as s:
        subscriber_ops.set_tracking(s, list_name="weekly", clicks=True)
    assert "which links you click" in said() and "when you open it" in said()
    page = client.get(url).text
    assert "kept with your address for 30 days" in re.sub(r"\s+", " ", page)
    monkeypatch.setenv("NEWSLETTER_TRACKING_STRICT", "true")
    get_settings.cache_clear()
    from fastapi.testclient import TestClient

    from tests.support.web import create

    with TestClient(create(), base_url=settings.base_url) as strict:
        page = re.sub(r"\s+", " ", strict.get(url).text)
    assert "only counted, never kept with your address" in page and "30 days" not in page
