"""The welcome template through the admin API and the dashboard (the sending itself:
``tests/test_welcome.py``, with real workers)."""

from __future__ import annotations

from sqlalchemy import select, text

from mailer.core.db import transaction
from mailer.models import Campaign, CampaignKind, Issue
from tests.support.seed import seed_list
from tests.support.web import csrf_of

WELCOME = "---\nsubject: Welcome aboard\n---\n\nThank you for reading.\n"


def _welcome_deliveries(engine) -> int:
    with transaction(engine) as s:
        return s.execute(text("SELECT COUNT(*) FROM delivery d JOIN campaign c ON c.id = d.campaign_id "
                              "WHERE c.kind = 'welcome'")).scalar()


def test_api_sets_shows_and_removes_a_lists_welcome(api, engine):
    seed_list(engine, 1)
    assert api.get("/api/admin/lists/weekly/welcome").json()["enabled"] is False
    bad = api.put("/api/admin/lists/weekly/welcome", json={"source": "no front matter"})
    assert bad.status_code == 400 and "front matter" in bad.json()["detail"]
    assert api.put("/api/admin/lists/nope/welcome", json={"source": WELCOME}).status_code == 404
    with transaction(engine) as s:
        assert s.scalar(select(Campaign.id)) is None  # refused: nothing written
    put = api.put("/api/admin/lists/weekly/welcome", json={"source": WELCOME, "latest_link": True})
    assert put.status_code == 200, put.text
    assert put.json()["enabled"] and put.json()["subject"] == "Welcome aboard"
    assert "/issues/latest" in api.get("/api/admin/lists/weekly/welcome").json()["source"]
    # Not one of the editor's issues or campaigns.
    assert api.get("/api/admin/issues").json() == []
    assert api.get("/api/admin/campaigns").json() == []
    # Confirming a pending subscriber through the API queues their welcome, once.
    added = api.post("/api/admin/subscribers", json={"email": "ann@example.com", "list": "weekly"})
    assert added.status_code == 201, added.text
    added = added.json()
    assert _welcome_deliveries(engine) == 0
    for _ in range(2):
        assert api.patch(f"/api/admin/subscribers/{added['id']}", json={"status": "active"}).status_code == 200
    assert _welcome_deliveries(engine) == 1
    removed = api.put("/api/admin/lists/weekly/welcome", json={"source": ""}).json()
    assert removed["enabled"] is False
    with transaction(engine) as s:
        campaign = s.scalar(select(Campaign).where(Campaign.kind == CampaignKind.welcome))
        assert campaign.status == "cancelled"


def test_dashboard_saves_a_lists_welcome(dashboard, engine):
    seed_list(engine, 1)
    token = csrf_of(dashboard.get("/admin/subscribers").text)
    bad = dashboard.post("/admin/subscribers/welcome", data={"csrf_token": token, "list": "weekly", "source": "x"})
    assert bad.status_code == 400 and "front matter" in bad.text
    ok = dashboard.post("/admin/subscribers/welcome", data={"csrf_token": token, "list": "weekly", "source": WELCOME})
    assert ok.status_code == 200 and "welcome &#39;Welcome aboard&#39; saved" in ok.text
    assert "Lists that greet: weekly" in ok.text
    shown = dashboard.get("/admin/subscribers", params={"list": "weekly"}).text
    assert "Thank you for reading." in shown and "sent 0, queued 0" in shown  # the list's own, to change
    with transaction(engine) as s:
        assert s.scalar(select(Issue.subject).where(Issue.slug.like("welcome.%"))) == "Welcome aboard"


def test_api_edits_tags_and_attributes_and_refuses_bad_ones_with_422(api, engine):
    created = api.post("/api/admin/subscribers", json={"email": "ann@example.com", "tags": ["founding"],
                                                       "attributes": {"country": "CN"}})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    assert (created.json()["tags"], created.json()["attributes"]) == (["founding"], {"country": "CN"})
    patched = api.patch(f"/api/admin/subscribers/{sid}", json={"add_tags": ["vip"], "remove_tags": ["founding"],
                                                               "attributes": {"plan": "paid", "country": None}})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["tags"], patched.json()["attributes"]) == (["vip"], {"plan": "paid"})
    replaced = api.patch(f"/api/admin/subscribers/{sid}", json={"tags": ["a", "b"]}).json()
    assert replaced["tags"] == ["a", "b"]
    for body, fragment in [({"add_tags": ["two words"]}, "no spaces"), ({"attributes": {"email": "x"}}, "own field"),
                           ({"attributes": {"bio": "x" * 5000}}, "at most 1000"),
                           ({"tags": ["t"] * 51}, "50"), ({"name": "New", "add_tags": ["bad tag"]}, "no spaces")]:
        r = api.patch(f"/api/admin/subscribers/{sid}", json=body)
        assert r.status_code == 422 and fragment in r.text, (body, r.status_code, r.text)
    after = api.get(f"/api/admin/subscribers/{sid}").json()
    assert (after["name"], after["tags"], after["attributes"]) == ("", ["a", "b"], {"plan": "paid"})


def test_api_and_dashboard_list_named_segments(api, dashboard, engine):
    seed_list(engine, 3)
    with transaction(engine) as s:
        s.execute(text("UPDATE subscriber SET tags = '[\"vip\"]' WHERE id = 1"))
    created = api.post("/api/admin/segments", json={"name": "vip", "list": "weekly", "expression": "tag:vip"})
    assert created.status_code == 201 and created.json()["size"] == 1, created.text
    again = api.post("/api/admin/segments", json={"name": "vip", "list": "weekly", "expression": "tag:vip OR tag:x"})
    assert again.status_code == 200
    bad = api.post("/api/admin/segments", json={"name": "b", "list": "weekly", "expression": "tag:vip AND"})
    assert bad.status_code == 400 and "ends too soon" in bad.json()["detail"]
    assert [g["name"] for g in api.get("/api/admin/segments").json()] == ["vip"]
    assert api.get("/api/admin/segments/vip").json()["expression"] == "tag:vip OR tag:x"
    assert api.get("/api/admin/segments/size", params={"list": "weekly", "segment": "vip"}).json()["size"] == 1
    page = dashboard.get("/admin/subscribers")
    assert page.status_code == 200 and 'class="segment"' in page.text and "tag:vip OR tag:x" in page.text
    assert api.delete("/api/admin/segments/vip").status_code == 204
    assert api.get("/api/admin/segments/vip").status_code == 404
