"""The admin API against the real app and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text

from mailer.core.db import transaction
from mailer.models import Issue, Schedule
from subscribers import service
from subscribers.models import Event, Subscriber
from tests.support.seed import seed_campaign, seed_list
from tests.support.web import admin_routes, concrete, issue_source, snapshot

FUTURE = (datetime.now(timezone.utc) + timedelta(days=30)).replace(second=0, microsecond=0)






def test_every_admin_api_route_refuses_an_anonymous_or_forged_request(anon):
    routes = list(admin_routes("/api/admin"))
    assert len(routes) >= 20
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer nl_not-a-real-token"}, {"Authorization": "Basic eDp5"}):
            r = anon.request(method, concrete(path), headers=headers, json={})
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert r.headers.get("www-authenticate") == "Bearer"
            assert "token" in r.json()["detail"]


def test_openapi_schema_is_served_with_the_admin_routes_and_their_auth(anon):
    schema = anon.get("/openapi.json").json()
    assert "/api/admin/issues" in schema["paths"] and "/api/admin/campaigns/{campaign_id}/pause" in schema["paths"]
    assert schema["components"]["securitySchemes"]["ApiToken"] == {
        "type": "http", "scheme": "bearer", "description": "An API token made with `newsletter admin create-token NAME`."}
    assert not any(p.startswith("/admin") for p in schema["paths"])  # dashboard pages are not API


def test_a_token_is_stored_only_as_its_hash_and_records_its_use(api, admin_token, engine):
    assert api.get("/api/admin/issues").status_code == 200
    with transaction(engine) as s:
        row = s.execute(text("SELECT token_hash, last_used_at FROM api_token")).one()
    assert admin_token not in row[0] and len(row[0]) == 64 and row[1] is not None


def test_issue_create_read_update_preview_delete(api):
    created = api.post("/api/admin/issues", json={"source": issue_source()})
    assert created.status_code == 201, created.text
    issue = created.json()
    assert (issue["slug"], issue["subject"], issue["status"]) == ("ai-this-week", "AI this week", "ready")

    again = api.post("/api/admin/issues", json={"source": issue_source()})
    assert again.status_code == 409 and "already an issue 'ai-this-week'" in again.json()["detail"]

    assert [i["slug"] for i in api.get("/api/admin/issues").json()] == ["ai-this-week"]
    assert api.get(f"/api/admin/issues/{issue['id']}").json()["source"] == issue_source()

    changed = api.put(f"/api/admin/issues/{issue['id']}", json={"source": issue_source(body="Revised text.")})
    assert changed.status_code == 200 and "Revised text." in changed.json()["source"]

    preview = api.post("/api/admin/issues/preview", json={"source": issue_source(subject="Draft subject")}).json()
    assert preview["subject"] == "Draft subject" and "Draft subject" in preview["html"]
    assert "__NL_" not in preview["html"]  # markers filled with sample values

    bad = api.post("/api/admin/issues", json={"source": "no front matter here"})
    assert bad.status_code == 400 and "\n" not in bad.json()["detail"] and "front matter" in bad.json()["detail"]
    assert api.post("/api/admin/issues", json={"src": "x"}).json() == {"detail": "source: Field required"}

    assert api.delete(f"/api/admin/issues/{issue['id']}").status_code == 204
    assert api.get(f"/api/admin/issues/{issue['id']}").status_code == 404




@pytest.fixture
def weekly(engine, api) -> int:
    list_id = seed_list(engine, 3)
    assert api.put("/api/admin/schedules/weekly",
                   json={"weekday": "tuesday", "time": "09:00", "timezone": "Asia/Shanghai"}).status_code == 200
    return list_id


@pytest.mark.parametrize("body, expected", [
    ({"at": "2020-01-07T09:00", "tz": "Asia/Shanghai"}, "is in the past"),
    ({"at": (FUTURE).strftime("%Y-%m-%dT%H:%M"), "tz": "Mars/Olympus_Mons"}, "unknown time zone 'Mars/Olympus_Mons'"),
    ({"at": "2031-03-09T02:30", "tz": "America/New_York"}, "does not exist in America/New_York"),
    ({"at": "next tuesday"}, "not a time"),
    ({"at": FUTURE.isoformat(), "next_slot": True}, "exactly one of"),
    ({}, "exactly one of"),
])
def test_bad_times_are_refused_and_nothing_is_scheduled(api, engine, weekly, body, expected):
    issue = api.post("/api/admin/issues", json={"source": issue_source()}).json()
    before = snapshot(engine)
    r = api.post("/api/admin/campaigns", json={"issue": issue["slug"], "list": "weekly", **body})
    assert r.status_code == 400, r.text
    assert expected in r.json()["detail"] and "\n" not in r.json()["detail"]
    assert snapshot(engine) == before


def test_an_issue_that_does_not_render_is_not_scheduled(api, engine, weekly):
    with transaction(engine) as s:  # stored by an older version: no content after the front matter
        s.add(Issue(slug="broken", subject="Broken", preheader="", source="---\nsubject: Broken\n---\n", html="",
                    text="", status="ready"))
    before = snapshot(engine)
    for when in ({"next_slot": True}, {"now": True}, {"at": FUTURE.isoformat()}):
        r = api.post("/api/admin/campaigns", json={"issue": "broken", "list": "weekly", **when})
        assert r.status_code == 400
        assert r.json()["detail"].startswith("issue 'broken' does not render, so it cannot be scheduled")
    assert snapshot(engine) == before


def test_unknown_issue_or_list_is_404_and_changes_nothing(api, engine, weekly):
    api.post("/api/admin/issues", json={"source": issue_source()})
    before = snapshot(engine)
    assert api.post("/api/admin/campaigns", json={"issue": "nope", "list": "weekly", "now": True}).status_code == 404
    r = api.post("/api/admin/campaigns", json={"issue": "ai-this-week", "list": "nope", "next_slot": True})
    assert r.status_code == 404 and r.json()["detail"] == "no list named 'nope'"
    assert snapshot(engine) == before
    r = api.post("/api/admin/campaigns", json={"issue": "ai-this-week", "list": "weekly", "now": True,
                                               "segment": "tag:vip AND"})
    assert r.status_code == 400 and "segment: it ends too soon" in r.json()["detail"]
    assert snapshot(engine) == before
    r = api.post("/api/admin/campaigns", json={"issue": "ai-this-week", "list": "weekly", "now": True,
                                               "segment": 'email = "nobody@example.com"'})
    assert r.status_code == 400 and "no active subscribers in segment" in r.json()["detail"]


def test_next_slot_schedule_view_reschedule_and_cancel(api, engine, weekly):
    issue = api.post("/api/admin/issues", json={"source": issue_source()}).json()
    r = api.post("/api/admin/campaigns", json={"issue": issue["id"], "list": "weekly", "next_slot": True})
    assert r.status_code == 201, r.text
    campaign = r.json()
    assert campaign["status"] == "scheduled"
    slot = datetime.fromisoformat(campaign["scheduled_at"])
    local = slot.astimezone(ZoneInfo("Asia/Shanghai"))
    assert (local.weekday(), local.hour, local.minute) == (1, 9, 0)

    view = api.get("/api/admin/schedules/weekly").json()
    assert view["schedule"] == {"weekday": "tuesday", "local_time": "09:00", "timezone": "Asia/Shanghai",
                                "active": True}
    assert view["upcoming"][0]["issue"] == "ai-this-week" and view["upcoming"][0]["status"] == "scheduled"
    assert view["upcoming"][1]["issue"] is None and len(view["upcoming"]) == 6

    moved = api.post(f"/api/admin/campaigns/{campaign['id']}/reschedule",
                     json={"at": FUTURE.strftime("%Y-%m-%dT%H:%M"), "tz": "Europe/Berlin"})
    assert moved.status_code == 200, moved.text
    assert datetime.fromisoformat(moved.json()["scheduled_at"]) == FUTURE.replace(
        tzinfo=ZoneInfo("Europe/Berlin")).astimezone(timezone.utc)
    past = api.post(f"/api/admin/campaigns/{campaign['id']}/reschedule", json={"at": "2001-01-01T00:00Z"})
    assert past.status_code == 400 and "in the past" in past.json()["detail"]

    assert api.post(f"/api/admin/campaigns/{campaign['id']}/pause").status_code == 409
    assert api.post(f"/api/admin/campaigns/{campaign['id']}/cancel").json()["status"] == "cancelled"
    again = api.post(f"/api/admin/campaigns/{campaign['id']}/cancel")
    assert again.status_code == 409 and again.json()["detail"] == (
        f"campaign {campaign['id']} is cancelled; it cannot be cancelled")
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(Schedule)) == 1


def test_send_now_then_editing_the_sending_issue_is_refused(api, engine, weekly):
    issue = api.post("/api/admin/issues", json={"source": issue_source()}).json()
    r = api.post("/api/admin/campaigns", json={"issue": "ai-this-week", "list": "weekly", "now": True})
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["total"], r.json()["queued"]) == ("sending", 3, 3)

    before = snapshot(engine)
    edit = api.put(f"/api/admin/issues/{issue['id']}", json={"source": issue_source(body="Changed.")})
    assert edit.status_code == 409
    assert "is already sending" in edit.json()["detail"] and "\n" not in edit.json()["detail"]
    assert api.delete(f"/api/admin/issues/{issue['id']}").status_code == 409
    twice = api.post("/api/admin/campaigns", json={"issue": "ai-this-week", "list": "weekly", "now": True})
    assert twice.status_code == 409 and "already sending" in twice.json()["detail"]
    assert snapshot(engine) == before

    cid = r.json()["id"]
    assert api.post(f"/api/admin/campaigns/{cid}/pause").json()["status"] == "paused"
    assert api.post(f"/api/admin/campaigns/{cid}/resume").json()["status"] == "sending"


def test_campaign_numbers_equal_the_delivery_records(api, engine, smtp_sink):
    from mailer.sending import drain
    from tests.support.delivery import config, transport_for

    cid = seed_campaign(engine, 12, batch_size=5)
    smtp_sink.reject["reader000001@example.com"] = (550, "5.1.1 No such user")
    smtp_sink.reject["reader000002@example.com"] = (554, "5.7.1 Rejected")
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config())
    with transaction(engine) as s:
        readers = s.scalars(select(Subscriber.id).order_by(Subscriber.id)).all()
        service.unsubscribe(s, subscriber_id=readers[5], campaign_id=cid, origin="one-click")
        service.unsubscribe(s, subscriber_id=readers[6], campaign_id=cid, origin="page")
        service.record_event(s, kind="complaint", origin="fbl", subscriber_id=readers[7], campaign_id=cid)
        service.unsubscribe(s, subscriber_id=readers[8], origin="page")  # not from this campaign

    stats = api.get(f"/api/admin/campaigns/{cid}").json()
    with transaction(engine) as s:
        counts = dict(s.execute(text("SELECT status, COUNT(*) FROM delivery WHERE campaign_id = :c GROUP BY status"),
                                {"c": cid}).all())
        events = dict(s.execute(text("SELECT kind, COUNT(*) FROM event WHERE campaign_id = :c GROUP BY kind"),
                                {"c": cid}).all())
    assert counts.get("sent") == 10 and counts.get("bounced", 0) + counts.get("failed", 0) == 2
    for status in ("sent", "failed", "bounced", "skipped"):
        assert stats[status] == counts.get(status, 0), status
    assert stats["total"] == sum(counts.values()) == 12
    assert (stats["unsubscribed"], stats["complaints"]) == (events["unsubscribe"], events["complaint"]) == (2, 1)
    assert stats["status"] == "sent" and stats["progress"] == 1.0
    assert api.get("/api/admin/campaigns").json()[0] == stats


def test_test_send_goes_through_the_configured_transport(api, settings, smtp_sink, monkeypatch):
    from mailer.core.config import get_settings

    monkeypatch.setenv("NEWSLETTER_SMTP_URL", f"smtp://127.0.0.1:{smtp_sink.port}")
    get_settings.cache_clear()
    issue = api.post("/api/admin/issues", json={"source": issue_source()}).json()
    r = api.post(f"/api/admin/issues/{issue['id']}/test", json={"to": ["me@example.com"]})
    assert r.status_code == 200 and r.json()[0]["ok"], r.text
    (message,) = smtp_sink.wait_for(1)
    assert message.rcpt_tos == ("me@example.com",) and b"Subject: [TEST] AI this week" in message.content
    assert re.search(rb"\r\nFeedback-ID: test:0:newsletter:nl[0-9a-f]{10}\r\n", message.content)
    bad = api.post(f"/api/admin/issues/{issue['id']}/test", json={"to": ["not an address"]})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("not an address")


def test_schedule_settings_are_validated(api, engine):
    seed_list(engine, 1)
    for body, expected in (({"weekday": "someday", "time": "09:00", "timezone": "UTC"}, "not a weekday"),
                           ({"weekday": "monday", "time": "25:00", "timezone": "UTC"}, "not a time of day"),
                           ({"weekday": "monday", "time": "09:00", "timezone": "Nowhere/City"}, "unknown time zone")):
        r = api.put("/api/admin/schedules/weekly", json=body)
        assert r.status_code == 400 and expected in r.json()["detail"]
    assert api.get("/api/admin/schedules/weekly").json()["schedule"] is None
    assert api.get("/api/admin/schedules").json()[0]["list"] == "weekly"


def test_subscribers_search_add_edit_import_export(api, engine):
    for i in range(5):
        assert api.post("/api/admin/subscribers", json={"email": f"Person{i}@Example.com", "name": f"Person {i}",
                                                        "list": "weekly", "status": "active"}).status_code == 201
    first = api.get("/api/admin/subscribers", params={"q": "person", "limit": 2}).json()
    assert [s["email"] for s in first["items"]] == ["Person0@example.com", "Person1@example.com"]
    second = api.get("/api/admin/subscribers", params={"q": "person", "limit": 2, "after": first["next_after"]}).json()
    assert [s["name"] for s in second["items"]] == ["Person 2", "Person 3"]
    assert api.get("/api/admin/subscribers", params={"q": "100%_"}).json() == {"items": [], "next_after": None}

    sid = first["items"][0]["id"]
    edited = api.patch(f"/api/admin/subscribers/{sid}", json={"name": "Ada", "status": "unsubscribed"}).json()
    assert (edited["name"], edited["status"]) == ("Ada", "unsubscribed")
    back = api.patch(f"/api/admin/subscribers/{sid}", json={"status": "active"})
    assert back.status_code == 409 and "only their own confirmation" in back.json()["detail"]
    assert api.post("/api/admin/subscribers", json={"email": "not-an-email"}).status_code == 400

    data = "email,name,city\nnew1@example.com,New One,Berlin\nbroken-row,x,y\nnew2@example.com,New Two,Paris\n"
    report = api.post("/api/admin/subscribers/import", data={"list": "weekly", "confirmed": "true"},
                      files={"file": ("people.csv", data.encode(), "text/csv")}).json()
    assert (report["imported"], report["error_count"], report["errors"][0]["line"]) == (2, 1, 3)

    listmonk = "uuid,email,name,attributes,status,created_at,updated_at\nu1,lm@example.com,Lm,{},enabled,2023-01-02,\n"
    dry = api.post("/api/admin/subscribers/import", data={"list": "lm", "format": "listmonk", "dry_run": "true"},
                   files={"file": ("subscribers.csv", listmonk.encode(), "text/csv")}).json()
    assert (dry["imported"], dry["dry_run"], dry["batch_id"]) == (1, True, None)
    done = api.post("/api/admin/subscribers/import", data={"list": "lm", "format": "listmonk"},
                    files={"file": ("subscribers.csv", listmonk.encode(), "text/csv")}).json()
    assert done["imported"] == 1 and done["batch_id"]
    size = api.get("/api/admin/segments/size", params={"list": "lm", "segment": 'name = "Lm"'})
    assert size.status_code == 200 and size.json()["size"] == 1
    assert api.get("/api/admin/subscribers", params={"segment": 'name = "Lm"'}).json()["items"][0]["email"] == (
        "lm@example.com")
    bad = api.get("/api/admin/segments/size", params={"list": "lm", "segment": 'shoe = "x"'})
    assert bad.status_code == 400 and "unknown attribute 'shoe' at position 1" in bad.json()["detail"]
    unknown = api.post("/api/admin/subscribers/import", data={"list": "weekly", "format": "ghost"},
                       files={"file": ("x.csv", b"email\na@example.com\n", "text/csv")})
    assert unknown.status_code == 400 and "unknown format 'ghost'" in unknown.json()["detail"]

    with transaction(engine) as s:
        before = s.scalar(select(func.count()).select_from(Subscriber))
    refused = api.post("/api/admin/subscribers/import", data={"list": "other"},
                       files={"file": ("x.csv", b"name,city\nA,B\n", "text/csv")})
    assert refused.status_code == 400 and "no email column" in refused.json()["detail"]
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(Subscriber)) == before

    export = api.get("/api/admin/subscribers/export", params={"list": "weekly"})
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 7 and {"new1@example.com", "Person4@example.com"} <= {r["email"] for r in rows}
    assert api.get("/api/admin/subscribers/export", params={"list": "nope"}).status_code == 404


def test_events_of_other_kinds_do_not_count(api, engine):
    cid = seed_campaign(engine, 2, start=False)
    with transaction(engine) as s:
        s.add(Event(kind="open", origin="pixel", campaign_id=cid))
    stats = api.get(f"/api/admin/campaigns/{cid}").json()
    assert (stats["status"], stats["unsubscribed"], stats["complaints"], stats["total"]) == ("draft", 0, 0, 0)


LONG = "\n\n".join(["A long paragraph about models and chips and rules. " * 40] * 60)


def test_preflight_refuses_a_start_over_gmails_clip_with_the_checks_and_the_override_starts_it(api, engine, weekly):
    issue = api.post("/api/admin/issues", json={"source": issue_source(subject="Too long", body=LONG)}).json()
    checked = api.post("/api/admin/campaigns/preflight", json={"issue": issue["slug"], "list": "weekly"})
    assert checked.status_code == 200
    assert checked.json()["passed"] is False
    assert {c["name"]: c["state"] for c in checked.json()["checks"]}["size"] == "fail"

    before = snapshot(engine)
    refused = api.post("/api/admin/campaigns", json={"issue": issue["slug"], "list": "weekly", "now": True})
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("pre-flight failed: size: ")
    assert refused.json()["detail"].endswith('(send "override_preflight": true to start anyway)')
    assert refused.json()["preflight"]["passed"] is False
    assert snapshot(engine) == before

    started = api.post("/api/admin/campaigns", json={"issue": issue["slug"], "list": "weekly", "now": True,
                                                     "override_preflight": True})
    assert started.status_code == 201, started.text
    assert started.json()["status"] == "sending" and started.json()["preflight"]["overridden"] is True


def test_a_clean_issue_starts_with_its_passed_checks(api, weekly):
    issue = api.post("/api/admin/issues", json={"source": issue_source()}).json()
    started = api.post("/api/admin/campaigns", json={"issue": issue["slug"], "list": "weekly", "now": True})
    assert started.status_code == 201, started.text
    assert started.json()["preflight"]["passed"] is True
    assert {c["state"] for c in started.json()["preflight"]["checks"]} <= {"pass", "warn"}


def test_preflight_of_an_unknown_issue_or_list_is_404(api, weekly):
    assert api.post("/api/admin/campaigns/preflight", json={"issue": "nope", "list": "weekly"}).status_code == 404
    issue = api.post("/api/admin/issues", json={"source": issue_source()}).json()
    r = api.post("/api/admin/campaigns/preflight", json={"issue": issue["slug"], "list": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
