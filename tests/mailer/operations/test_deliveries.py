"""Who got it and who did not (``mailer.operations.deliveries``): a campaign forced
through a real SMTP server that refuses chosen addresses, on SQLite and PostgreSQL,
listed through the operation, the CLI (a real process), the admin API and the
dashboard; the CSV has the same rows; bad input is one line."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import update

from mailer.core.db import transaction
from mailer.core.errors import InvalidInput, NotFound
from mailer.models import Delivery, DeliveryStatus
from mailer.operations import deliveries as ops
from subscribers import service
from tests.support.cli import assert_one_line_error, cli, cli_in_process
from tests.support.delivery import FORCED, REFUSED, assert_counters_match, force_campaign
from tests.support.seed import seed_campaign
from tests.support.web import csrf_of

pytestmark = pytest.mark.timeout(180)
N = 12


@pytest.fixture
def forced(engine, smtp_sink) -> int:
    cid = force_campaign(engine, smtp_sink, n=N)
    assert assert_counters_match(engine, cid) == {"sent": N - 4, "bounced": 1, "failed": 2, "skipped": 1}
    return cid


@pytest.fixture
def campaign(engine) -> int:
    """A started campaign, nothing sent: enough for the refusals."""
    return seed_campaign(engine, 2)


def listed(items) -> dict:
    return {d["email"]: (d["status"], d["last_code"], d["last_reply"]) for d in items}


def expected(*statuses: str) -> dict:
    return {e: v for e, v in FORCED.items() if v[0] in statuses}


def assert_as_forced(items, *statuses: str) -> None:
    got = listed(items)
    want = expected(*statuses)
    assert set(got) == set(want), got
    for email, (status, code, reply) in want.items():
        assert got[email][0] == status and got[email][1] == code and reply in got[email][2], (email, got[email])


def test_the_operation_lists_exactly_the_refused_addresses_with_their_replies(engine, forced, smtp_sink):
    with transaction(engine) as s:
        page = ops.list_deliveries(s, campaign_id=forced)
        assert page["status"] == "attention" and page["next_after"] is None and page["retryable"]
        assert_as_forced(page["items"], "failed", "bounced", "skipped")
        for status in ("failed", "bounced", "skipped"):
            assert_as_forced(ops.list_deliveries(s, campaign_id=forced, status=status)["items"], status)
        # The temporary refusal was tried every time before it failed; the address that left, never.
        attempts = {d["email"]: d["attempts"] for d in page["items"]}
        assert attempts["reader000008@example.com"] == 3 and attempts["reader000010@example.com"] == 0
        assert all(d["at"] for d in page["items"])
        sent = ops.list_deliveries(s, campaign_id=forced, status="sent", limit=200)["items"]
        assert {d["email"] for d in sent} == set(smtp_sink.count_by_rcpt()) and len(sent) == N - 4
        assert not set(REFUSED) & {d["email"] for d in sent}
        assert ops.list_deliveries(s, campaign_id=forced, status="queued")["items"] == []


def test_search_paging_and_repeats(engine, forced):
    with transaction(engine) as s:
        found = ops.list_deliveries(s, campaign_id=forced, q="MAILBOX full")
        assert [d["email"] for d in found["items"]] == ["reader000008@example.com"]
        found = ops.list_deliveries(s, campaign_id=forced, q="reader000003")
        assert [d["email"] for d in found["items"]] == ["reader000003@example.com"]
        # LIKE's wildcards are searched for, not obeyed.
        assert ops.list_deliveries(s, campaign_id=forced, q="%")["items"] == []
        assert ops.list_deliveries(s, campaign_id=forced, q="reader_00003")["items"] == []
        pages, after = [], 0
        while after is not None:
            page = ops.list_deliveries(s, campaign_id=forced, limit=3, after=after)
            pages.append([d["email"] for d in page["items"]])
            after = page["next_after"]
        assert [len(p) for p in pages] == [3, 1]
        assert sorted(sum(pages, [])) == sorted(FORCED)
        assert ops.list_deliveries(s, campaign_id=forced, status="repeated")["items"] == []
        one = s.query(Delivery).filter_by(campaign_id=forced, status=DeliveryStatus.sent).order_by(Delivery.id).first()
        s.execute(update(Delivery).where(Delivery.id == one.id).values(repeats=1))
    with transaction(engine) as s:
        repeated = ops.list_deliveries(s, campaign_id=forced, status="repeated")["items"]
        assert [(d["delivery_id"], d["repeats"]) for d in repeated] == [(one.id, 1)]


@pytest.mark.parametrize("kwargs, message", [
    ({"status": "lost"}, "unknown delivery status 'lost'; one of attention, failed, bounced"),
    ({"q": "x" * 321}, "search for at most 320 characters"),
    ({"after": -1}, "'after' is the id of the last delivery"),
])
def test_bad_input_is_refused_in_one_line(engine, campaign, kwargs, message):
    with transaction(engine) as s:
        with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
            ops.list_deliveries(s, campaign_id=campaign, **kwargs)
        with pytest.raises(NotFound, match="no campaign 999999"):
            ops.list_deliveries(s, campaign_id=999999)


def test_the_cli_lists_them_and_its_csv_has_the_same_rows(engine, forced):
    result = cli("campaign", "deliveries", forced, "--status", "failed")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, (email, (_, code, reply)) in zip(lines, sorted(expected("failed").items())):
        assert line.startswith(email + "\t") and f"{code} " in line and reply in line
    assert f"2 failed deliveries of campaign {forced}" in result.stderr
    assert f"newsletter campaign retry {forced}" in result.stderr

    page = json.loads(cli("campaign", "deliveries", forced, "--json").stdout)
    assert_as_forced(page["items"], "failed", "bounced", "skipped")

    exported = cli("campaign", "deliveries", forced, "--csv")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert tuple(rows[0]) == ops.CSV_HEADER
    assert [(r["email"], r["status"], r["attempts"], r["last_code"], r["last_reply"], r["at"]) for r in rows] == [
        (d["email"], d["status"], str(d["attempts"]), "" if d["last_code"] is None else str(d["last_code"]),
         d["last_reply"], d["at"]) for d in page["items"]]
    bounced = list(csv.DictReader(io.StringIO(cli("campaign", "deliveries", forced, "--csv", "--status",
                                                  "bounced").stdout)))
    assert [r["email"] for r in bounced] == ["reader000003@example.com"]


@pytest.mark.parametrize("args, message", [
    (["--status", "lost"], "unknown delivery status 'lost'"),
    (["--csv", "--status", "lost"], "unknown delivery status 'lost'"),
    (["--csv", "--json"], "give --csv or --json, not both"),
])
def test_the_cli_refuses_bad_input_in_one_line(engine, campaign, args, message):
    result = cli("campaign", "deliveries", campaign, *args)
    assert_one_line_error(result, message)
    assert result.stdout == ""  # not even a CSV header


def test_the_cli_refuses_a_missing_campaign(engine):
    assert_one_line_error(cli("campaign", "deliveries", "424242"), "no campaign 424242")
    assert_one_line_error(cli_in_process("campaign", "deliveries", "424242", "--csv"), "no campaign 424242")


def test_the_api_lists_them_and_its_csv_has_the_same_rows(engine, forced, api):
    for status in ("attention", "failed", "bounced", "skipped"):
        page = api.get(f"/api/admin/campaigns/{forced}/deliveries", params={"status": status})
        assert page.status_code == 200, page.text
        assert_as_forced(page.json()["items"], *(("failed", "bounced", "skipped") if status == "attention"
                                                  else (status,)))
    items = api.get(f"/api/admin/campaigns/{forced}/deliveries").json()["items"]
    exported = api.get(f"/api/admin/campaigns/{forced}/deliveries.csv")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert f'filename="campaign-{forced}-attention.csv"' in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["email"] for r in rows] == [d["email"] for d in items]
    assert [r["last_reply"] for r in rows] == [d["last_reply"] for d in items]
    paged = api.get(f"/api/admin/campaigns/{forced}/deliveries", params={"limit": 2}).json()
    rest = api.get(f"/api/admin/campaigns/{forced}/deliveries",
                   params={"limit": 2, "after": paged["next_after"]}).json()
    assert [d["email"] for d in paged["items"] + rest["items"]] == [d["email"] for d in items]


@pytest.mark.parametrize("path, params, status, detail", [
    ("deliveries", {"status": "lost"}, 400, "unknown delivery status 'lost'"),
    ("deliveries.csv", {"status": "lost"}, 400, "unknown delivery status 'lost'"),
    ("deliveries", {"after": "-1"}, 422, None),
    ("deliveries", {"limit": "100000"}, 422, None),
    ("deliveries", {"q": "x" * 400}, 422, None),
])
def test_the_api_refuses_bad_input(engine, campaign, api, path, params, status, detail):
    r = api.get(f"/api/admin/campaigns/{campaign}/{path}", params=params)
    assert r.status_code == status, r.text
    if detail:
        assert detail in r.json()["detail"]
    for missing in ("deliveries", "deliveries.csv"):
        r = api.get(f"/api/admin/campaigns/424242/{missing}")
        assert r.status_code == 404 and r.json()["detail"] == "no campaign 424242"


def test_the_dashboard_lists_them_and_retries_the_failed_ones(engine, forced, dashboard):
    page = dashboard.get(f"/admin/campaigns/{forced}")
    assert page.status_code == 200
    html = page.text
    for email, (status, code, reply) in FORCED.items():
        assert email in html and reply in html
    assert "reader000001@example.com" not in html  # sent: not in the default list
    assert "Retry the failed ones" in html
    failed = dashboard.get(f"/admin/campaigns/{forced}", params={"status": "failed"}).text
    assert "reader000005@example.com" in failed and "reader000003@example.com" not in failed
    bad = dashboard.get(f"/admin/campaigns/{forced}", params={"status": "lost"})
    assert bad.status_code == 400 and "unknown delivery status" in bad.text
    exported = dashboard.get(f"/admin/campaigns/{forced}/deliveries.csv", params={"status": "failed"})
    assert exported.status_code == 200, (exported.status_code, exported.text[:500])
    assert [r["email"] for r in csv.DictReader(io.StringIO(exported.text))] == sorted(expected("failed"))

    done = dashboard.post(f"/admin/campaigns/{forced}/retry", data={"csrf_token": csrf_of(html)},
                          follow_redirects=False)
    assert done.status_code == 303
    assert assert_counters_match(engine, forced) == {"sent": N - 4, "bounced": 1, "queued": 2, "skipped": 1}
    after = dashboard.get(f"/admin/campaigns/{forced}", params={"status": "queued"}).text
    assert "reader000005@example.com" in after and "reader000008@example.com" in after
    assert "Retry the failed ones" not in after


def test_a_subscribers_page_shows_every_message_and_what_happened(engine, forced, dashboard, api, smtp_sink):
    with transaction(engine) as s:
        refused = service.find_subscriber(s, "reader000005@example.com").id
        fine = service.find_subscriber(s, "reader000001@example.com").id
    history = api.get(f"/api/admin/subscribers/{refused}/deliveries").json()
    assert [(h["campaign_id"], h["issue"], h["status"], h["last_code"]) for h in history] == [
        (forced, "weekly-1", "failed", 554)]
    assert "5.7.1 Rejected by policy" in history[0]["last_reply"] and history[0]["sent_at"] is None
    page = dashboard.get(f"/admin/subscribers/{refused}").text
    assert "5.7.1 Rejected by policy" in page and "This week in AI" in page
    (ok,) = api.get(f"/api/admin/subscribers/{fine}/deliveries").json()
    assert ok["status"] == "sent" and ok["last_code"] == 250 and ok["sent_at"]
    assert api.get("/api/admin/subscribers/424242/deliveries").status_code == 404
