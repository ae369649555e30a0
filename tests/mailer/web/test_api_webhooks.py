"""``/api/admin/webhooks`` and the dashboard's webhooks page, against the real app and
database: endpoints added (the secret shown once), listed, turned off, rotated,
removed; the delivery log; bad input a 422 naming the field, changing nothing."""

from __future__ import annotations

import json

import pytest

from mailer.core.db import transaction
from mailer.operations import subscribers as subs
from tests.support.seed import count_rows
from tests.support.web import csrf_of


def test_endpoints_through_the_api(api, engine):
    r = api.post("/api/admin/webhooks", json={"url": "https://crm.example.com/in", "events": ["subscribed", "all"]})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("whsec_") and len(created["events"]) == 7
    eid = created["id"]
    assert "secret" not in api.get(f"/api/admin/webhooks/{eid}").json()
    with transaction(engine) as s:
        subs.add(s, email="ann@example.com", list_name="weekly")
    log = api.get("/api/admin/webhooks/deliveries", params={"payload": True}).json()
    assert [(d["event"], d["status"], d["endpoint_id"]) for d in log["items"]] == [
        ("subscriber.subscribed", "pending", eid)]
    assert json.loads(log["items"][0]["payload"])["type"] == "subscriber.subscribed"
    assert api.patch(f"/api/admin/webhooks/{eid}", json={"enabled": False}).json()["enabled"] is False
    rotated = api.post(f"/api/admin/webhooks/{eid}/rotate-secret", json={"grace_hours": 1}).json()
    assert rotated["secret"] != created["secret"] and rotated["previous_secret_valid_until"]
    (pending,) = log["items"]
    r = api.post(f"/api/admin/webhooks/deliveries/{pending['id']}/redeliver")
    assert r.status_code == 409 and "only a failed or skipped one" in r.json()["detail"]
    assert api.delete(f"/api/admin/webhooks/{eid}").status_code == 204
    assert api.get("/api/admin/webhooks").json() == []
    assert api.get(f"/api/admin/webhooks/{eid}").status_code == 404


@pytest.mark.parametrize("body, fragment", [
    ({"url": "ftp://crm.example.com/in", "events": ["subscribed"]}, "url: "),
    ({"url": "https://crm.example.com/in", "events": ["opened"]}, "unknown event type 'opened'"),
    ({"url": "https://crm.example.com/in", "events": []}, "at least one event type"),
    ({"events": ["subscribed"]}, "url: "),
])
def test_bad_input_is_a_422_naming_it_and_changes_nothing(api, engine, body, fragment):
    r = api.post("/api/admin/webhooks", json=body)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]
    assert count_rows(engine, "webhook_endpoint") == 0


def test_the_dashboard_shows_endpoints_and_the_log_and_adds_one(dashboard, engine):
    page = dashboard.get("/admin/webhooks")
    assert page.status_code == 200 and "No endpoints yet" in page.text
    bad = dashboard.post("/admin/webhooks", data={"csrf_token": csrf_of(page.text), "url": "ftp://x/y",
                                                  "events": ["subscriber.subscribed"]})
    assert bad.status_code == 400 and "http:// or https://" in bad.text
    added = dashboard.post("/admin/webhooks", data={
        "csrf_token": csrf_of(page.text), "url": "https://crm.example.com/in",
        "events": ["subscriber.subscribed", "campaign.started"]})
    assert added.status_code == 201 and 'id="new-secret"' in added.text and "whsec_" in added.text
    with transaction(engine) as s:
        subs.add(s, email="bo@example.com", list_name="weekly")
    shown = dashboard.get("/admin/webhooks").text
    assert "https://crm.example.com/in" in shown and "subscriber.subscribed, campaign.started" in shown
    assert 'class="delivery" data-status="pending"' in shown and "whsec_" not in shown
    rotated = dashboard.post("/admin/webhooks/1/rotate-secret", data={"csrf_token": csrf_of(shown)})
    assert rotated.status_code == 200 and "new signing secret" in rotated.text and "signs too until" in rotated.text
    off = dashboard.post("/admin/webhooks/1/enabled", data={"csrf_token": csrf_of(shown), "enabled": "false"},
                         follow_redirects=False)
    assert off.status_code == 303
    assert "disabled" in dashboard.get("/admin/webhooks").text
    gone = dashboard.post("/admin/webhooks/1/remove", data={"csrf_token": csrf_of(shown)}, follow_redirects=False)
    assert gone.status_code == 303 and "No endpoints yet" in dashboard.get("/admin/webhooks").text
    assert count_rows(engine, "webhook_delivery") == 0
