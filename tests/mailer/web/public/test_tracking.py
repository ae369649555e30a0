"""Click tracking end to end, on SQLite and PostgreSQL: an issue saved and rendered for
real, a list that tracks clicks, a campaign sent through a real SMTP server, and the
redirect of the real app. Tracking off leaves the message bytes untouched."""

from __future__ import annotations

import email
import email.policy
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

import mailer.message
from mailer import campaigns, sending
from mailer.core import signing
from mailer.core.db import transaction
from mailer.models import EngagementEvent, Issue
from mailer.operations import subscribers as subscriber_ops
from mailer.operations.issues import save_issue
from mailer.sending import drain
from tests.support.delivery import config, transport_for
from tests.support.seed import seed_list
from tests.support.web import create

pytestmark = pytest.mark.timeout(120)


def issue_with_links(target: str) -> str:
    return ("---\nsubject: Links this week\npreheader: Three stories\nslug: links-1\n---\n\n## Top stories\n\n"
            f"### One\n\nFirst. [Read one]({target}/one?a=1&b=2)\n\n"
            f"### Two\n\nSecond. [Read two]({target}/two) and [one again]({target}/one?a=1&b=2)\n")


def send_issue(engine, settings, sink, *, clicks: bool, opens: bool = False, target="https://example.com",
               n: int = 2) -> int:
    seed_list(engine, n)
    with transaction(engine) as s:
        subscriber_ops.set_tracking(s, list_name="weekly", clicks=clicks, opens=opens)
        issue = save_issue(s, source=issue_with_links(target), settings=settings)
        campaign, _ = campaigns.create_campaign(s, issue_id=issue.id, list_id=campaigns.find_list(s, "weekly").id)
        campaigns.start_campaign(s, campaign_id=campaign.id, batch_size=50)
    drain(engine, campaign.id, transport=transport_for(sink),
          cfg=config(base_url=settings.base_url, secret_key=settings.secret_key))
    return campaign.id


def html_of(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    return message.get_body(("html",)).get_content()


def text_of(raw: bytes) -> str:
    return email.message_from_bytes(raw, policy=email.policy.default).get_body(("plain",)).get_content()


def hrefs(html: str) -> list[str]:
    import html as h
    return [h.unescape(u) for u in re.findall(r'<a\b[^>]*\shref="([^"]*)"', html)]


def test_tracking_off_sends_the_bytes_of_the_untracked_render(engine, settings, smtp_sink, monkeypatch):
    """The template a campaign without tracking compiles is byte for byte the one the
    stored HTML compiles to without any tracking code, and nothing in what arrived
    points at /r/ or /o/."""
    compiled = []
    real = sending.compile_message

    def spy(**kwargs):
        compiled.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(sending, "compile_message", spy)
    monkeypatch.setattr(mailer.message.secrets, "token_hex", lambda n: "0" * (2 * n))  # one MIME boundary
    send_issue(engine, settings, smtp_sink, clicks=False, opens=False)
    (kwargs,) = compiled
    with transaction(engine) as s:
        issue = s.scalar(select(Issue))
        assert issue.links == ["https://example.com/one?a=1&b=2", "https://example.com/two"]
        stored_html = issue.html
    untracked = {k: v for k, v in kwargs.items() if k != "html_markers"}
    assert untracked["html"] == stored_html and kwargs["html_markers"] == ()
    got = sorted(smtp_sink.messages, key=lambda m: m.rcpt_tos)
    for received in got:
        date = re.search(rb"^Date: .*$", received.content, re.M).group()
        message_id = re.search(rb"^Message-ID: (<[^>]+>)", received.content, re.M).group(1).decode()
        fields = dict(re.findall(r'/(u|p)/([a-z0-9]+)"', html_of(received.content)))
        recipient = mailer.message.Recipient(
            email=received.rcpt_tos[0], name=f"Reader {int(received.rcpt_tos[0][6:12])}", message_id=message_id,
            unsubscribe_url=f"{settings.base_url}/u/{fields['u']}",
            unsubscribe_mailto=f"mailto:unsubscribe+{fields['u']}@example.com",
            preferences_url=f"{settings.base_url}/p/{fields['p']}", date=date[6:].decode())
        expected = real(**untracked).assemble(recipient)
        assert received.content.replace(b"\r\n", b"\n") == expected.replace(b"\r\n", b"\n")
        assert b"/r/" not in received.content and b"/o/" not in received.content


def test_tracking_on_rewrites_every_content_link_and_only_those(engine, settings, smtp_sink, client):
    cid = send_issue(engine, settings, smtp_sink, clicks=True)
    base = settings.base_url
    for received in smtp_sink.messages:
        html = html_of(received.content)
        links = hrefs(html)
        tracked = [u for u in links if u.startswith(f"{base}/r/")]
        assert len(tracked) == 3 and len(set(tracked)) == 2  # the same target twice: the same token
        kept = [u for u in links if not u.startswith(f"{base}/r/")]
        assert kept and all(u.startswith((f"{base}/u/", f"{base}/p/", f"{base}/issues/", "mailto:")) for u in kept)
        assert any(u.startswith(f"{base}/issues/") for u in kept) and any(u.startswith(f"{base}/u/") for u in kept)
        assert "example.com/one" not in html and "example.com/two" not in html
        assert "/r/" not in text_of(received.content)  # the plain-text part is never tracked
        assert "https://example.com/one?a=1&b=2" in text_of(received.content)
        targets = []
        for url in dict.fromkeys(tracked):
            r = client.get(url.removeprefix(base), follow_redirects=False)
            assert r.status_code == 302 and r.headers["cache-control"] == "no-store"
            targets.append(r.headers["location"])
        assert targets == ["https://example.com/one?a=1&b=2", "https://example.com/two"]
    client.app.state.tracker.recorder.flush()
    with transaction(engine) as s:
        rows = s.execute(select(EngagementEvent.campaign_id, EngagementEvent.kind, EngagementEvent.link_index,
                                EngagementEvent.subscriber_id)).all()
    assert sorted((c, k, i) for c, k, i, _ in rows) == [(cid, "click", 0), (cid, "click", 0),
                                                        (cid, "click", 1), (cid, "click", 1)]
    assert all(sid is not None for *_, sid in rows)


def _flip(token: str, at: int) -> str:
    return token[:at] + ("b" if token[at] != "b" else "c") + token[at + 1:]


def test_no_wrong_token_ever_redirects(engine, settings, smtp_sink, client):
    cid = send_issue(engine, settings, smtp_sink, clicks=True)
    base = settings.base_url
    token = next(u for u in hrefs(html_of(smtp_sink.messages[0].content)) if "/r/" in u).rsplit("/", 1)[1]
    with transaction(engine) as s:
        delivery = s.execute(text("SELECT id FROM delivery ORDER BY id LIMIT 1")).scalar_one()
    beyond = signing.click_tokens(settings.secret_key, cid, delivery, 5)[4]  # link 4 of an issue with 2
    other_campaign = signing.click_tokens(settings.secret_key, cid + 100, delivery, 1)[0]
    foreign = signing.click_tokens("not our secret key at all", cid, delivery, 1)[0]
    for path in (f"/r/{_flip(token, 4)}", f"/r/{_flip(token, 45)}", f"/r/{token[:-1]}", f"/r/{token[:39]}",
                 f"/r/{foreign}", f"/r/{beyond}", f"/r/{other_campaign}",
                 f"/r/{token}?url=https://evil.example", f"/r/{token}?next=%2F%2Fevil.example",
                 f"/r/{token}/https://evil.example", "/r/https%3A%2F%2Fevil.example", "/r/"):
        for method in ("GET", "HEAD"):
            r = client.request(method, path, follow_redirects=False)
            assert r.status_code == 404, (path, r.status_code)
            assert "location" not in r.headers
    client.app.state.tracker.recorder.flush()
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(EngagementEvent)) == 0


def test_the_redirect_answers_while_the_database_is_away_and_records_later(engine, settings, smtp_sink,
                                                                           database_url):
    send_issue(engine, settings, smtp_sink, clicks=True)
    base = settings.base_url
    tracked = [u for u in hrefs(html_of(smtp_sink.messages[0].content)) if "/r/" in u]
    with TestClient(create(), base_url=base) as client:
        assert client.get(tracked[0].removeprefix(base), follow_redirects=False).status_code == 302
        client.app.state.tracker.recorder.flush()
        # Another connection holds the events table (PostgreSQL) or the database's write
        # lock (SQLite): every write of an event waits, or fails and is tried again.
        locker = engine.connect()
        held = locker.begin()
        if database_url.startswith("postgresql"):
            locker.exec_driver_sql("LOCK TABLE engagement_event IN ACCESS EXCLUSIVE MODE")
        try:
            for url in tracked * 3:
                r = client.get(url.removeprefix(base), follow_redirects=False)
                assert r.status_code == 302 and r.headers["location"].startswith("https://example.com/")
            # Answered, and not one of those clicks could be written yet.
            assert locker.exec_driver_sql("SELECT COUNT(*) FROM engagement_event").scalar_one() == 1
        finally:
            held.rollback()
            locker.close()
        expected = 1 + 3 * len(tracked)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and recorded(engine) < expected:
            time.sleep(0.2)
        assert recorded(engine) == expected


def recorded(engine) -> int:
    with transaction(engine) as s:
        return s.scalar(select(func.count()).select_from(EngagementEvent))


GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


def test_the_open_pixel_is_at_the_end_of_the_html_only_and_records_an_open(engine, settings, smtp_sink, client):
    cid = send_issue(engine, settings, smtp_sink, clicks=False, opens=True)
    base = settings.base_url
    for received in smtp_sink.messages:
        html = html_of(received.content)
        pixels = re.findall(rf'<img src="{re.escape(base)}/o/([a-z0-9]+)" width="1" height="1"', html)
        assert len(pixels) == 1
        assert html.rstrip().endswith("</html>") and html.rindex("/o/") > html.rindex("Unsubscribe")
        assert "/o/" not in text_of(received.content) and "/r/" not in html  # opens only: no link rewritten
        r = client.get(f"/o/{pixels[0]}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif" and r.content == GIF
        assert r.headers["cache-control"] == "no-store"
        assert client.get(f"/o/{_flip(pixels[0], 3)}").status_code == 404
    client.app.state.tracker.recorder.flush()
    with transaction(engine) as s:
        rows = s.execute(select(EngagementEvent.campaign_id, EngagementEvent.kind)).all()
    assert rows == [(cid, "open"), (cid, "open")]


def test_tracking_is_off_until_turned_on_per_list_and_each_on_its_own(engine, api):
    from tests.support.cli import assert_one_line_error, cli

    seed_list(engine, 1)
    seed_list(engine, 1, list_name="other", start=10)
    shown = cli("subscribers", "tracking", "--list", "weekly")
    assert shown.returncode == 0 and shown.stdout.strip() == "list weekly: click tracking off, open tracking off"
    on = cli("subscribers", "tracking", "--list", "weekly", "--clicks")
    assert on.stdout.strip() == "list weekly: click tracking on, open tracking off"
    assert api.put("/api/admin/lists/weekly/tracking", json={"opens": True}).json() == {
        "list": "weekly", "clicks": True, "opens": True}
    assert api.put("/api/admin/lists/weekly/tracking", json={"clicks": False}).json()["clicks"] is False
    assert api.get("/api/admin/lists/other/tracking").json() == {"list": "other", "clicks": False, "opens": False}
    assert_one_line_error(cli("subscribers", "tracking", "--list", "nope", "--clicks"), "nope")
    missing = api.put("/api/admin/lists/nope/tracking", json={"clicks": True})
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert api.put("/api/admin/lists/weekly/tracking", json={"clicks": "maybe"}).status_code == 422


APPLE_PROXY = "Mozilla/5.0"
SCANNER = "Mozilla/5.0 (compatible; Mimecast Link Scanner)"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


def test_a_scanner_burst_is_counted_as_machine_and_a_later_person_as_human(engine, settings, smtp_sink, client,
                                                                         dashboard):
    """A scripted scanner: every link fetched within 2 s of delivery, a known scanner
    agent, HEAD requests, Apple's proxy on the pixel. Then, minutes later (the rows moved
    back in time), a person clicks once and another reader opens: the human counts are
    exactly those."""
    from datetime import timedelta

    from mailer import engagement
    from mailer.core.clock import utcnow
    from mailer.models import Delivery

    cid = send_issue(engine, settings, smtp_sink, clicks=True, opens=True)
    base = settings.base_url
    first, second = sorted(smtp_sink.messages, key=lambda m: m.rcpt_tos)
    links = list(dict.fromkeys(u for u in hrefs(html_of(first.content)) if "/r/" in u))
    pixel = re.search(r'src="[^"]*(/o/[a-z0-9]+)"', html_of(first.content)).group(1)
    with transaction(engine) as s:  # just delivered
        for d in s.query(Delivery).filter_by(campaign_id=cid):
            d.sent_at = utcnow()
    for url in links:  # every link at once, as a browser would (the agent gives nothing away)
        client.get(url.removeprefix(base), headers={"User-Agent": BROWSER}, follow_redirects=False)
    client.head(links[0].removeprefix(base), headers={"User-Agent": BROWSER})
    client.get(links[1].removeprefix(base), headers={"User-Agent": SCANNER}, follow_redirects=False)
    client.get(pixel, headers={"User-Agent": APPLE_PROXY})
    recorder = client.app.state.tracker.recorder
    recorder.flush()
    # Minutes pass: the deliveries and what was recorded so far move 15 minutes back.
    with transaction(engine) as s:
        for d in s.query(Delivery).filter_by(campaign_id=cid):
            d.sent_at = d.sent_at - timedelta(minutes=15)
        for e in s.query(EngagementEvent):
            e.created_at = e.created_at - timedelta(minutes=15)
    client.get(links[0].removeprefix(base), headers={"User-Agent": BROWSER}, follow_redirects=False)
    other_pixel = re.search(r'src="[^"]*(/o/[a-z0-9]+)"', html_of(second.content)).group(1)
    client.get(other_pixel, headers={"User-Agent": BROWSER})
    recorder.flush()
    with transaction(engine) as s:
        judged = s.execute(select(EngagementEvent.kind, EngagementEvent.method, EngagementEvent.machine,
                                  EngagementEvent.reason).order_by(EngagementEvent.id)).all()
        counts = engagement.counts(s, campaign_id=cid)
    assert [tuple(j) for j in judged] == [
        ("click", "GET", True, "within 10 s of delivery"),
        ("click", "GET", True, "within 10 s of delivery"),
        ("click", "HEAD", True, "HEAD request: a link checker"),
        ("click", "GET", True, "security gateway: Mimecast"),
        ("open", "GET", True, "image proxy: Apple Mail Privacy Protection"),
        ("click", "GET", False, "a person: no sign of a machine"),
        ("open", "GET", False, "a person: no sign of a machine"),
    ]
    assert counts == {"human_opens": 1, "human_clicks": 1, "unique_opens": 1, "unique_clicks": 1,
                      "machine_opens": 1, "machine_clicks": 4,
                      "machine_reasons": {"within 10 s of delivery": 2, "HEAD request: a link checker": 1,
                                          "security gateway: Mimecast": 1,
                                          "image proxy: Apple Mail Privacy Protection": 1}}
    # The campaign's stats (API, dashboard) carry the same counts, and rates of the delivered.
    with transaction(engine) as s:
        from mailer.operations import campaigns as campaign_ops

        stats = campaign_ops.stats(s, cid)
    assert {k: v for k, v in stats["engagement"].items() if k not in ("open_rate", "click_rate", "links")} == counts
    assert [(link["clicks"], link["machine_clicks"]) for link in stats["engagement"]["links"]] == [(1, 2), (0, 2)]
    assert (stats["engagement"]["open_rate"], stats["engagement"]["click_rate"]) == (0.5, 0.5)
    page = dashboard.get(f"/admin/campaigns/{cid}").text
    assert re.search(r'id="stat-unique-clicks">1<', page) and re.search(r'id="stat-machine">5<', page)
    assert "1 × security gateway: Mimecast" in page and "50.0% · 1 clicks" in page


def _clicked_minutes_later(engine, settings, smtp_sink, client, clicks=(0, 1, 0)) -> tuple[int, list[str], list[str]]:
    """A campaign with clicks and opens tracked, delivered an hour ago; the first reader
    clicks these links (by default both, one twice) and opens; the second opens."""
    from datetime import timedelta

    from mailer.core.clock import utcnow
    from mailer.models import Delivery

    cid = send_issue(engine, settings, smtp_sink, clicks=True, opens=True)
    with transaction(engine) as s:
        for d in s.query(Delivery).filter_by(campaign_id=cid):
            d.sent_at = utcnow() - timedelta(hours=1)
    base = settings.base_url
    first, second = sorted(smtp_sink.messages, key=lambda m: m.rcpt_tos)
    links = list(dict.fromkeys(u for u in hrefs(html_of(first.content)) if "/r/" in u))
    pixels = [re.search(r'src="[^"]*(/o/[a-z0-9]+)"', html_of(m.content)).group(1) for m in (first, second)]
    for url in (links[i] for i in clicks):
        client.get(url.removeprefix(base), headers={"User-Agent": BROWSER}, follow_redirects=False)
    for pixel in pixels:
        client.get(pixel, headers={"User-Agent": BROWSER})
    client.app.state.tracker.recorder.flush()
    # A person's clicks are minutes apart (these came within a second: a burst), and
    # each delivery is judged again as it would be on its next event.
    from mailer import engagement

    with transaction(engine) as s:
        events = s.query(EngagementEvent).order_by(EngagementEvent.id).all()
        for n, e in enumerate(events):
            e.created_at = e.created_at - timedelta(minutes=50 - 5 * n)
        deliveries = {e.delivery_id for e in events}
    with engine.begin() as conn:
        engagement.rejudge(conn, deliveries)
    return cid, links, [m.rcpt_tos[0] for m in (first, second)]


def test_after_the_window_no_event_names_a_reader_and_every_count_stays(engine, settings, smtp_sink, client):
    from datetime import timedelta

    from mailer import dispatch
    from mailer.operations import campaigns as campaign_ops

    cid, links, _ = _clicked_minutes_later(engine, settings, smtp_sink, client)
    with transaction(engine) as s:
        for e in s.query(EngagementEvent).order_by(EngagementEvent.id).all()[:-1]:  # all but the last open
            e.created_at = e.created_at - timedelta(days=settings.tracking_days, hours=1)
    with transaction(engine) as s:
        before = campaign_ops.stats(s, cid)["engagement"]
    assert (before["human_clicks"], before["unique_clicks"], before["human_opens"], before["unique_opens"]) == (3, 1, 2, 2)
    assert [(link["clicks"], link["readers"]) for link in before["links"]] == [(2, 1), (1, 1)]
    from mailer.celeryapp import make_celery

    assert make_celery(settings).conf.beat_schedule["roll_up"]["task"] == "newsletter.roll_up"  # beat, hourly
    assert dispatch.roll_up_engagement(settings) == 4
    assert dispatch.roll_up_engagement(settings) == 0  # again: nothing more, nothing counted twice
    with transaction(engine) as s:
        kept = s.execute(select(EngagementEvent.kind, EngagementEvent.created_at)).all()
        after = campaign_ops.stats(s, cid)["engagement"]
    assert [k for k, _ in kept] == ["open"]  # only the one inside the window still names its delivery
    assert after == before


def test_strict_mode_keeps_only_the_counts(engine, settings, smtp_sink, monkeypatch):
    from mailer.core.config import get_settings
    from mailer.operations import campaigns as campaign_ops

    monkeypatch.setenv("NEWSLETTER_TRACKING_STRICT", "true")
    get_settings.cache_clear()
    strict = get_settings()
    with TestClient(create(), base_url=strict.base_url) as client:
        # One link twice: a burst needs two links, and strict mode judges each batch of
        # writes alone (it keeps nothing to judge a later click against).
        cid, _, _ = _clicked_minutes_later(engine, strict, smtp_sink, client, clicks=(0, 0))
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(EngagementEvent)) == 0
        seen = campaign_ops.stats(s, cid)["engagement"]
    assert (seen["human_clicks"], seen["human_opens"], seen["machine_clicks"]) == (2, 2, 0)
    assert [link["clicks"] for link in seen["links"]] == [2, 0]


def test_a_subscribers_export_has_their_events_and_erasure_removes_them(engine, settings, smtp_sink, client):
    from mailer.operations import campaigns as campaign_ops
    from subscribers import service

    cid, _, (reader, other) = _clicked_minutes_later(engine, settings, smtp_sink, client)
    with transaction(engine) as s:
        sid = service.find_subscriber(s, reader).id
        mine = subscriber_ops.my_data(s, subscriber_id=sid)["engagement"]
        assert sorted((e["kind"], e["link_index"]) for e in mine) == [
            ("click", 0), ("click", 0), ("click", 1), ("open", None)]
        assert all(e["campaign_id"] == cid and e["machine"] is False and e["at"] for e in mine)
        subscriber_ops.erase(s, subscriber_id=sid)
    with transaction(engine) as s:
        assert subscriber_ops.my_data(s, subscriber_id=sid)["engagement"] == []
        left = s.execute(select(EngagementEvent.subscriber_id)).scalars().all()
        assert left == [service.find_subscriber(s, other).id]
        assert campaign_ops.stats(s, cid)["engagement"]["human_opens"] == 1
