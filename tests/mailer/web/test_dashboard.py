"""The dashboard's pages through the real app and database (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from mailer.core.db import transaction
from mailer.models import Campaign, Issue
from subscribers import service
from subscribers.models import Subscriber
from tests.support.seed import count_rows, seed_campaign, seed_list
from tests.support.web import (
    EDITOR_EMAIL,
    EDITOR_PASSWORD,
    admin_routes,
    concrete,
    create,
    csrf_of,
    issue_source,
    sign_in,
    snapshot,
)

PUBLIC = {("GET", "/admin/login"), ("POST", "/admin/login")}


def test_every_admin_page_refuses_an_anonymous_request(anon, editor_user):
    routes = [r for r in admin_routes("/admin") if r not in PUBLIC]
    assert len(routes) >= 15
    forged = {"nl_admin": "eyJjIjoieCIsInUiOjEsImUiOjB9.forged.signature"}
    for method, path in routes:
        for cookies in ({}, forged):
            anon.cookies.clear()
            for name, value in cookies.items():
                anon.cookies.set(name, value, path="/admin")
            r = anon.request(method, concrete(path), data={"csrf_token": "x"}, follow_redirects=False)
            assert (r.status_code, r.headers.get("location")) == (303, "/admin/login"), (method, path)
            r = anon.request(method, concrete(path), headers={"Accept": "application/json"}, follow_redirects=False)
            assert r.status_code == 401, (method, path)


def test_sign_in_sets_a_strict_cookie_and_sign_out_ends_the_session(anon, editor_user, settings):
    page = anon.get("/admin/login")
    wrong = anon.post("/admin/login", data={"email": EDITOR_EMAIL, "password": "not the password",
                                           "csrf_token": csrf_of(page.text)})
    assert wrong.status_code == 400 and "Wrong email address or password." in wrong.text
    unknown = anon.post("/admin/login", data={"email": "nobody@example.com", "password": EDITOR_PASSWORD,
                                             "csrf_token": csrf_of(page.text)})
    assert unknown.status_code == 400 and "Wrong email address or password." in unknown.text

    response = sign_in(anon, EDITOR_EMAIL, EDITOR_PASSWORD)
    cookie = response.headers["set-cookie"]
    for flag in ("HttpOnly", "Path=/admin", "SameSite=lax", "Secure"):
        assert flag.lower() in cookie.lower(), flag
    home = anon.get("/admin")
    assert home.status_code == 200 and EDITOR_EMAIL in home.text

    stolen = dict(anon.cookies)
    out = anon.post("/admin/logout", data={"csrf_token": csrf_of(home.text)}, follow_redirects=False)
    assert (out.status_code, out.headers["location"]) == (303, "/admin/login?done=signed-out")
    replay = TestClient(create(), base_url=settings.base_url, cookies=stolen)
    assert replay.get("/admin", follow_redirects=False).status_code == 303  # the old cookie is dead


def test_password_guessing_is_throttled_per_account(anon, editor_user):
    page = anon.get("/admin/login")
    token = csrf_of(page.text)
    codes = [anon.post("/admin/login", data={"email": EDITOR_EMAIL, "password": f"guess {i}", "csrf_token": token}
                       ).status_code for i in range(12)]
    assert codes[:10] == [400] * 10 and codes[10:] == [429, 429]
    # Even the right password waits now: the account is throttled, not just the wrong guesses.
    right = anon.post("/admin/login", data={"email": EDITOR_EMAIL, "password": EDITOR_PASSWORD, "csrf_token": token},
                      follow_redirects=False)
    assert right.status_code == 429 and "Too many sign-in attempts" in right.text


def test_guesses_from_one_network_do_not_lock_the_editor_out_of_another(settings, editor_user):
    with TestClient(create(), base_url=settings.base_url, client=("203.0.113.9", 4000)) as attacker:
        token = csrf_of(attacker.get("/admin/login").text)
        for i in range(12):
            attacker.post("/admin/login", data={"email": EDITOR_EMAIL, "password": f"guess {i}", "csrf_token": token})
        assert attacker.post("/admin/login", data={"email": EDITOR_EMAIL, "password": EDITOR_PASSWORD,
                                                   "csrf_token": token}).status_code == 429
    with TestClient(create(), base_url=settings.base_url, client=("192.0.2.20", 4000)) as editor:
        assert sign_in(editor, EDITOR_EMAIL, EDITOR_PASSWORD).status_code == 303


def test_a_form_posted_without_its_csrf_token_is_refused(dashboard, engine):
    seed_list(engine, 1)
    home = dashboard.get("/admin")
    token = csrf_of(home.text)
    posts = [path for method, path in admin_routes("/admin") if method == "POST" and path != "/admin/login"]
    before = snapshot(engine)
    for path in posts:
        for data in ({"source": issue_source()}, {"source": issue_source(), "csrf_token": token[:-2] + "xx"}):
            r = dashboard.post(concrete(path), data=data, follow_redirects=False)
            assert r.status_code == 403, (path, r.status_code)
            assert "security token is missing or out of date" in r.text
    r = dashboard.post("/admin/preview", json={"source": issue_source()})
    assert r.status_code == 403
    assert snapshot(engine) == before
    # Sign-in itself needs the token of the anonymous visitor cookie (login CSRF).
    fresh = TestClient(create(), base_url=str(dashboard.base_url))
    r = fresh.post("/admin/login", data={"email": EDITOR_EMAIL, "password": EDITOR_PASSWORD})
    assert r.status_code == 403 and "nl_admin" not in r.headers.get("set-cookie", "")


def test_editor_saves_previews_and_refuses_to_edit_an_issue_that_is_sending(dashboard, engine):
    token = csrf_of(dashboard.get("/admin/issues/new").text)
    bad = dashboard.post("/admin/issues/new", data={"csrf_token": token, "source": "subject: no front matter"})
    assert bad.status_code == 400 and "no front matter" in bad.text and "subject: no front matter" in bad.text

    saved = dashboard.post("/admin/issues/new", data={"csrf_token": token, "source": issue_source()},
                           follow_redirects=False)
    assert saved.status_code == 303
    page = dashboard.get(saved.headers["location"])
    assert "Issue saved." in page.text and "ai-this-week" in page.text and 'srcdoc="' in page.text

    preview = dashboard.post("/admin/preview", json={"source": issue_source(subject="Live subject")},
                             headers={"X-CSRF-Token": token})
    assert preview.status_code == 200 and "Live subject" in preview.json()["html"]
    broken = dashboard.post("/admin/preview", json={"source": "---\nsubject: x\n---\n"}, headers={"X-CSRF-Token": token})
    assert broken.status_code == 400 and "no content" in broken.json()["detail"]

    issue_id = int(saved.headers["location"].split("/")[-1].split("?")[0])
    seed_list(engine, 2)
    started = dashboard.post(f"/admin/issues/{issue_id}/schedule",
                             data={"csrf_token": token, "list": "weekly", "when": "now"}, follow_redirects=False)
    assert started.status_code == 303 and started.headers["location"].startswith("/admin/campaigns/")

    before = snapshot(engine)
    edit = dashboard.post(f"/admin/issues/{issue_id}", data={"csrf_token": token, "source": issue_source(body="New")})
    assert edit.status_code == 409
    assert re.search(r'role="alert" id="error">issue &#39;ai-this-week&#39; is already sending', edit.text)
    assert snapshot(engine) == before


def test_bad_schedule_input_shows_the_reason_and_changes_nothing(dashboard, engine):
    seed_list(engine, 2)
    token = csrf_of(dashboard.get("/admin").text)
    saved = dashboard.post("/admin/issues/new", data={"csrf_token": token, "source": issue_source()},
                           follow_redirects=False)
    issue_id = int(saved.headers["location"].split("/")[-1].split("?")[0])
    future = (datetime.now(timezone.utc) + timedelta(days=9)).strftime("%Y-%m-%dT%H:%M")
    cases = [
        ({"when": "at", "at": "2021-05-04T09:00", "tz": "UTC"}, "is in the past"),
        ({"when": "at", "at": future, "tz": "Atlantis/Capital"}, "unknown time zone"),
        ({"when": "at", "at": "2031-03-30T02:30", "tz": "Europe/Berlin"}, "does not exist in Europe/Berlin"),
        ({"when": "at", "at": "", "tz": "UTC"}, "exactly one of"),
        ({"when": "next_slot", "tz": "UTC"}, "this list has no weekly schedule"),
    ]
    before = snapshot(engine)
    for fields, expected in cases:
        r = dashboard.post(f"/admin/issues/{issue_id}/schedule", data={"csrf_token": token, "list": "weekly", **fields})
        assert r.status_code == 400, (fields, r.status_code)
        assert expected in r.text, fields
    with transaction(engine) as s:  # an issue that no longer renders
        s.get(Issue, issue_id).source = "---\nsubject: Broken\n---\n"
    before = snapshot(engine)
    r = dashboard.post(f"/admin/issues/{issue_id}/schedule",
                       data={"csrf_token": token, "list": "weekly", "when": "at", "at": future, "tz": "UTC"})
    assert r.status_code == 400 and "does not render, so it cannot be scheduled" in r.text
    assert snapshot(engine) == before


def test_the_editor_shows_a_segments_size_then_sends_to_exactly_it(dashboard, engine):
    from sqlalchemy import update

    seed_list(engine, 5)
    with transaction(engine) as s:
        s.execute(update(Subscriber).where(Subscriber.id <= 3).values(tags=["founding"]))
    token = csrf_of(dashboard.get("/admin").text)
    saved = dashboard.post("/admin/issues/new", data={"csrf_token": token, "source": issue_source()},
                           follow_redirects=False)
    issue_id = int(saved.headers["location"].split("/")[-1].split("?")[0])
    form = {"csrf_token": token, "list": "weekly", "when": "now", "segment": "tag:founding"}
    before = snapshot(engine)
    counted = dashboard.post(f"/admin/issues/{issue_id}/schedule", data={**form, "check": "size"})
    assert counted.status_code == 200 and "has 3 active subscribers" in counted.text
    assert snapshot(engine) == before  # counting sends nothing
    bad = dashboard.post(f"/admin/issues/{issue_id}/schedule", data={**form, "segment": "tag:founding AND"})
    assert bad.status_code == 400 and "it ends too soon" in bad.text
    started = dashboard.post(f"/admin/issues/{issue_id}/schedule", data=form, follow_redirects=False)
    assert started.status_code == 303
    assert count_rows(engine, "delivery") == 3


def test_schedule_page_sets_a_slot_and_shows_the_coming_weeks(dashboard, engine):
    list_id = seed_list(engine, 1)
    token = csrf_of(dashboard.get("/admin/schedules").text)
    bad = dashboard.post(f"/admin/schedules/{list_id}",
                         data={"csrf_token": token, "weekday": "tuesday", "time": "09:00", "timezone": "Moon/Base"})
    assert bad.status_code == 400 and "unknown time zone" in bad.text
    ok = dashboard.post(f"/admin/schedules/{list_id}",
                        data={"csrf_token": token, "weekday": "tuesday", "time": "09:00", "timezone": "Asia/Shanghai"})
    assert ok.status_code == 200 and "Weekly slot saved." in ok.text
    assert ok.text.count('<tr class="slot">') == 6 and "Tue " in ok.text and "CST" in ok.text


def stat(html: str, key: str) -> int:
    return int(re.search(rf'id="stat-{key}">(\d+)<', html).group(1))


def test_campaign_page_numbers_equal_the_delivery_records(dashboard, engine, smtp_sink):
    from mailer.sending import drain
    from tests.support.delivery import config, transport_for

    cid = seed_campaign(engine, 9, batch_size=4)
    smtp_sink.reject["reader000003@example.com"] = (550, "5.1.1 No such user")
    smtp_sink.reject["reader000004@example.com"] = (451, "4.3.0 Try later")
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(max_attempts=1))
    with transaction(engine) as s:
        ids = s.scalars(select(Subscriber.id).order_by(Subscriber.id)).all()
        service.unsubscribe(s, subscriber_id=ids[0], campaign_id=cid, origin="one-click")
        service.record_event(s, kind="complaint", origin="fbl", subscriber_id=ids[1], campaign_id=cid)
        service.record_event(s, kind="complaint", origin="fbl", subscriber_id=ids[2], campaign_id=cid)

    page = dashboard.get(f"/admin/campaigns/{cid}")
    assert page.status_code == 200
    with transaction(engine) as s:
        counts = dict(s.execute(text("SELECT status, COUNT(*) FROM delivery WHERE campaign_id = :c GROUP BY status"),
                                {"c": cid}).all())
        events = dict(s.execute(text("SELECT kind, COUNT(*) FROM event WHERE campaign_id = :c GROUP BY kind"),
                                {"c": cid}).all())
    for key in ("sent", "failed", "bounced", "skipped"):
        assert stat(page.text, key) == counts.get(key, 0), key
    assert stat(page.text, "total") == sum(counts.values()) == 9
    assert (stat(page.text, "unsubscribed"), stat(page.text, "complaints")) == (events["unsubscribe"], 2)
    assert counts["sent"] == 7
    polled = dashboard.get(f"/admin/campaigns/{cid}/stats").json()
    assert {k: polled[k] for k in ("sent", "failed", "bounced")} == {k: counts.get(k, 0)
                                                                     for k in ("sent", "failed", "bounced")}
    listing = dashboard.get("/admin/campaigns").text
    assert f'<a href="/admin/campaigns/{cid}">{cid}</a>' in listing


def test_campaign_actions_from_the_page(dashboard, engine):
    cid = seed_campaign(engine, 3)
    token = csrf_of(dashboard.get(f"/admin/campaigns/{cid}").text)
    assert "Campaign paused." in dashboard.post(f"/admin/campaigns/{cid}/pause", data={"csrf_token": token}).text
    again = dashboard.post(f"/admin/campaigns/{cid}/pause", data={"csrf_token": token})
    assert again.status_code == 409 and f"campaign {cid} is paused; it cannot be paused" in again.text
    moved = dashboard.post(f"/admin/campaigns/{cid}/reschedule",
                           data={"csrf_token": token, "at": "2099-01-01T09:00", "tz": "UTC"})
    assert moved.status_code == 409 and "only a draft or scheduled one can be moved" in moved.text
    assert "Campaign cancelled." in dashboard.post(f"/admin/campaigns/{cid}/cancel", data={"csrf_token": token}).text
    with transaction(engine) as s:
        assert s.get(Campaign, cid).status == "cancelled"
    assert dashboard.post(f"/admin/campaigns/{cid}/explode", data={"csrf_token": token}).status_code == 404


def test_overview_chart_counts_new_subscribers_and_unsubscribes_per_week(dashboard, engine):
    seed_list(engine, 4)
    with transaction(engine) as s:
        first = s.scalars(select(Subscriber.id).order_by(Subscriber.id)).first()
        service.unsubscribe(s, subscriber_id=first, origin="page")
        total = s.scalar(select(func.count()).select_from(Subscriber))
    page = dashboard.get("/admin").text
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert "<script" not in svg and "http://" not in svg.replace("http://www.w3.org/2000/svg", "")
    values = lambda kind: [int(v) for v in re.findall(rf'class="{kind}"[^>]*data-value="(\d+)"', svg)]  # noqa: E731
    assert len(values("subscribed")) == 26 and sum(values("subscribed")) == total == 4
    assert values("subscribed")[-1] == 4 and values("unsubscribed")[-1] == sum(values("unsubscribed")) == 1


def test_unprocessed_inbound_messages_are_counted_on_the_overview(dashboard, engine, settings):
    """A message that could not be read is kept; the dashboard counts it."""
    from mailer.operations.inbound import receive

    assert re.search(r'id="unprocessed-inbound">0<', dashboard.get("/admin").text)
    receive(b"\x00 not an email at all", settings=settings)
    receive(b"From: a@example.org\r\nSubject: hi\r\n\r\nthanks!\r\n", settings=settings)
    page = dashboard.get("/admin")
    assert page.status_code == 200 and re.search(r'id="unprocessed-inbound">2<', page.text)


def test_the_complaint_rate_of_each_campaign_next_to_gmails_line(dashboard, engine, settings):
    """Complaints per message delivered, against 0.3%: 1 of 200 (0.50%) is over the line."""
    from mailer.operations.inbound import receive
    from tests.support.inbound import corpus, sent_campaign

    people = ["eve.annoyed@example.net"] + [f"reader{i}@example.org" for i in range(199)]
    sent = sent_campaign(engine, people)
    cid = sent["eve.annoyed@example.net"].campaign_id
    receive(corpus("arf-abuse"), settings=settings)
    page = dashboard.get(f"/admin/campaigns/{cid}")
    meter = re.search(r'<span class="complaint-rate( over)?" data-rate="([0-9.]+)">', page.text)
    assert meter and meter.group(1) == " over" and float(meter.group(2)) == pytest.approx(0.005)
    assert "0.50%" in page.text and "Gmail's limit: 0.3%" in page.text
    listed = dashboard.get("/admin/campaigns").text
    assert 'data-rate="0.005000"' in listed and "Complaint rate (limit 0.3%)" in listed


def test_a_campaign_held_by_preflight_at_its_time_shows_the_failed_checks(dashboard, engine, settings):
    from mailer import schedules
    from mailer.operations.schedules import dispatch_due

    seed_list(engine, 2)
    cid = seed_campaign(engine, 0, start=False)
    now = datetime(2027, 1, 5, 9, tzinfo=timezone.utc)
    with transaction(engine) as s:
        campaign = s.get(Campaign, cid)
        schedules.reschedule(s, campaign_id=cid, at=now, now=now - timedelta(days=3))
        issue = s.get(Issue, campaign.issue_id)  # since scheduled: a link that is not https
        issue.html = issue.html.replace("This week in AI.", '<a href="http://example.org/x">a story</a>')
    report = dispatch_due(settings, now=now + timedelta(seconds=30))
    assert report.held == [cid] and report.started == []
    page = dashboard.get(f"/admin/campaigns/{cid}").text
    assert 'id="held-checks"' in page and 'data-check="links"' in page
    assert "http://example.org/x: not https" in page and "pre-flight failed: links:" in page
