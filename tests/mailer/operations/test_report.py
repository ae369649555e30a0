"""The campaign report (``mailer.operations.report``) end to end, on SQLite and on
PostgreSQL: two issues sent to a list by a real ``celery worker`` process through a real
SMTP server (which refuses one address), tracking on; a scripted scanner burst right after
delivery, then people who open and click hours later (time moved forward by moving every
recorded time back), a soft bounce and a complaint read from real inbound reports, an
unsubscribe. The report's numbers are exactly those, the same in the operation, the CLI
(a real process), the API and the dashboard (headless Chromium), and unchanged after the
retention roll-up."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import bindparam, text

from mailer import campaigns, dispatch
from mailer.core.clock import as_utc, utcnow
from mailer.core.config import get_settings
from mailer.core.db import UtcDateTime, transaction
from mailer.core.errors import InvalidInput
from mailer.dispatch import enqueue_campaign
from mailer.operations import inbound
from mailer.operations import report as ops
from mailer.operations import subscribers as subscriber_ops
from mailer.operations.issues import save_issue
from subscribers import service
from tests.mailer.web.public.test_tracking import APPLE_PROXY, BROWSER, SCANNER, hrefs, html_of, issue_with_links
from tests.support.browser import live_app
from tests.support.cli import assert_one_line_error, cli, cli_in_process
from tests.support.services import free_port
from tests.support.web import EDITOR_EMAIL, EDITOR_PASSWORD, create

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
N = 6
# Refused for good at RCPT: a hard bounce in the first campaign (then suppressed, so not
# in the second's audience), and another in the second.
BOUNCED = ("reader000004@example.com", "reader000005@example.com")


def wait_for(predicate, timeout=90.0, what="condition"):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


_AT = bindparam("at", type_=UtcDateTime())


def later(engine, delta: timedelta) -> None:
    """Time passes: the campaigns' starts and ends, the deliveries and every event
    recorded so far move ``delta`` back (the redirect's clock is the real one; the rows
    can move)."""
    with transaction(engine) as s:
        for table, column in (("campaign", "started_at"), ("campaign", "finished_at"), ("delivery", "sent_at"),
                              ("engagement_event", "created_at")):
            for rid, at in s.execute(text(f"SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL")).all():
                s.execute(text(f"UPDATE {table} SET {column} = :at WHERE id = :id").bindparams(_AT),
                          {"at": as_utc(at) - delta, "id": rid})


def just_delivered(engine, cid: int) -> None:
    with transaction(engine) as s:
        s.execute(text("UPDATE delivery SET sent_at = :at WHERE campaign_id = :cid AND sent_at IS NOT NULL")
                  .bindparams(_AT), {"at": utcnow(), "cid": cid})


def dsn(verp: str, rcpt: str, status: str, reply: str) -> bytes:
    return (f"From: MAILER-DAEMON@mx.example.org\nTo: {verp}\nSubject: Delivery Status Notification\n"
            "MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
            "--b\nContent-Type: text/plain\n\nIt did not arrive.\n\n--b\nContent-Type: message/delivery-status\n\n"
            f"Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; {rcpt}\nAction: delayed\n"
            f"Status: {status}\nDiagnostic-Code: smtp; {reply}\n\n--b--\n").encode()


def arf(verp: str, rcpt: str) -> bytes:
    return (f"From: fbl@isp.example.org\nTo: {verp}\nSubject: complaint\nMIME-Version: 1.0\n"
            "Content-Type: multipart/report; report-type=feedback-report; boundary=b\n\n"
            "--b\nContent-Type: text/plain\n\nA complaint.\n\n--b\nContent-Type: message/feedback-report\n\n"
            f"Feedback-Type: abuse\nUser-Agent: isp/1.0\nVersion: 1\nOriginal-Rcpt-To: {rcpt}\n\n--b--\n").encode()


@pytest.fixture
def sent(settings, engine, smtp_sink, start_worker, monkeypatch, request, database_url):
    """Two issues sent to the list (the first an hour before the second) by a real
    worker; the second's messages, by recipient."""
    broker = request.getfixturevalue("redis_url") if database_url.startswith("postgresql") else "filesystem://"
    monkeypatch.setenv("NEWSLETTER_BROKER_URL", broker)
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", f"smtp://127.0.0.1:{smtp_sink.port}")
    monkeypatch.setenv("NEWSLETTER_SMTP_TIMEOUT", "5")
    get_settings.cache_clear()
    conf = get_settings()
    from tests.support.seed import seed_list

    seed_list(engine, N)
    with transaction(engine) as s:
        subscriber_ops.set_tracking(s, list_name="weekly", clicks=True, opens=True)
    start_worker(name="w1")
    ids = []
    for n, slug in enumerate(("links-0", "links-1")):
        smtp_sink.reject[BOUNCED[n]] = (550, "5.1.1 User unknown")
        source = issue_with_links("https://example.com").replace("slug: links-1", f"slug: {slug}")
        with transaction(engine) as s:
            issue = save_issue(s, source=source, settings=conf)
            campaign, _ = campaigns.create_campaign(s, issue_id=issue.id, list_id=campaigns.find_list(s, "weekly").id)
            campaigns.start_campaign(s, campaign_id=campaign.id, batch_size=2)
        enqueue_campaign(campaign.id, 3, conf)
        ids.append(campaign.id)

        def done(cid=campaign.id):
            with transaction(engine) as s:
                return campaigns.get_campaign(s, cid).status == "sent"

        wait_for(done, what=f"campaign {campaign.id} sent")
        if n == 0:
            later(engine, timedelta(hours=1))
    by_campaign = [{m.rcpt_tos[0]: m for m in smtp_sink.messages[:N - 1]},
                   {m.rcpt_tos[0]: m for m in smtp_sink.messages[N - 1:]}]
    assert [len(got) for got in by_campaign] == [N - 1, N - 2]
    return ids, by_campaign, conf


def test_the_report_counts_people_apart_from_machines_in_every_adapter_and_after_the_roll_up(
        engine, sent, browser, monkeypatch, editor_user, api):
    (first, cid), (earlier, messages), conf = sent
    a, b, c, d = (messages[f"reader00000{i}@example.com"] for i in range(4))
    base = conf.base_url

    def tracked(m):
        return list(dict.fromkeys(u.removeprefix(base) for u in hrefs(html_of(m.content)) if "/r/" in u))

    def pixel(m):
        return re.search(r'src="[^"]*(/o/[a-z0-9]+)"', html_of(m.content)).group(1)

    with TestClient(create(), base_url=base) as client:
        recorder = client.app.state.tracker.recorder

        def visit(path, agent=BROWSER, method="GET"):
            r = client.request(method, path, headers={"User-Agent": agent}, follow_redirects=False)
            assert r.status_code in (200, 302), (path, r.status_code)
            recorder.flush()

        # The first campaign: one person opens it (it went out an hour before the second).
        visit(pixel(earlier["reader000003@example.com"]))
        just_delivered(engine, cid)
        # Right after delivery: a scanner fetches every link of A's message at once,
        # HEADs one, a gateway agent fetches another, Apple's proxy fetches the pixel.
        for path in tracked(a):
            visit(path)
        visit(tracked(a)[0], method="HEAD")
        visit(tracked(a)[1], agent=SCANNER)
        visit(pixel(a), agent=APPLE_PROXY)
        visit(pixel(b), agent=APPLE_PROXY)
        later(engine, timedelta(hours=3, minutes=5))
        visit(pixel(a))  # hour 3: A opens, clicks the first link, and opens again 10 minutes later
        visit(tracked(a)[0])
        later(engine, timedelta(minutes=10))
        visit(pixel(a))
        later(engine, timedelta(hours=2))
        visit(pixel(c))  # hour 5: C opens and clicks the second link
        visit(tracked(c)[1])
        later(engine, timedelta(minutes=30))

    # A soft bounce (a delay notice about B's message), a complaint about D's, and C unsubscribes.
    soft = inbound.receive(dsn(b.mail_from, b.rcpt_tos[0], "4.2.2", "452 4.2.2 Mailbox full"), settings=conf,
                           envelope_to=[b.mail_from])
    complained = inbound.receive(arf(d.mail_from, d.rcpt_tos[0]), settings=conf, envelope_to=[d.mail_from])
    assert "soft" in soft.line and "complaint" in complained.line, (soft.line, complained.line)
    with transaction(engine) as s:
        service.unsubscribe(s, subscriber_id=service.find_subscriber(s, c.rcpt_tos[0]).id, campaign_id=cid,
                            origin="page")

    with transaction(engine) as s:
        r = ops.report(s, campaign_id=cid)
    delivered = N - 2  # the first campaign's bounce is not in this audience, this one's bounced
    assert (r["total"], r["delivered"], r["bounced"], r["failed"], r["skipped"], r["queued"]) == (
        N - 1, delivered, {"hard": 1, "soft": 1}, 0, 0, 0)
    assert (r["complaints"], r["unsubscribes"]) == (1, 1)
    assert r["opens"] == {"people": 2, "total": 3, "rate": 0.5}
    assert r["clicks"] == {"people": 2, "total": 2, "rate": 0.5, "of_opened": 1.0}
    assert r["rates"] == {"open_rate": 0.5, "click_rate": 0.5, "click_to_open_rate": 1.0, "unsubscribe_rate": 0.25,
                          "complaint_rate": 0.25, "bounce_rate": 0.2}
    assert [(k["url"], k["clicks"], k["readers"], k["machine_clicks"]) for k in r["links"]] == [
        ("https://example.com/one?a=1&b=2", 1, 1, 2), ("https://example.com/two", 1, 1, 2)]
    assert r["machines"] == {"opens": 2, "clicks": 4, "reasons": {
        "image proxy: Apple Mail Privacy Protection": 2, "within 10 s of delivery": 2,
        "HEAD request: a link checker": 1, "security gateway: Mimecast": 1}}
    assert len(r["hours"]) == ops.HOURS == 72
    busy = {h["hour"]: (h["opens"], h["clicks"], h["machine_opens"], h["machine_clicks"])
            for h in r["hours"] if any(v for k, v in h.items() if k != "hour")}
    assert busy == {0: (0, 0, 2, 4), 3: (2, 1, 0, 0), 5: (1, 1, 0, 0)}
    assert [row["campaign_id"] for row in r["compared"]] == [cid, first]
    this, before = r["compared"]
    assert (this["open_rate"], this["click_rate"], this["delivered"]) == (0.5, 0.5, delivered)
    assert (before["open_rate"], before["click_rate"], before["delivered"], before["bounce_rate"]) == (
        0.2, 0.0, N - 1, 0.1667)

    # The CLI (a real process) and the API say exactly the same.
    shown = cli("campaign", "report", cid, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == r
    table = cli("campaign", "report", cid)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert re.search(r"^  opened \(people\) +2  50\.0%$", table.stdout, re.M), table.stdout
    assert re.search(r"^  clicked \(people\) +2  50\.0%$", table.stdout, re.M)
    assert re.search(r"^  bounced hard +1  20\.0%$", table.stdout, re.M)
    assert re.search(r"^  bounced soft +1$", table.stdout, re.M)
    assert any(line.strip().startswith("1.") and "https://example.com/one?a=1&b=2" in line
               and line.split()[1:4] == ["1", "1", "2"] for line in lines), lines
    assert any(re.match(rf"^ \*\s*{cid} links-1 +{delivered} +50\.0% +50\.0%", line) for line in lines), lines
    got = api.get(f"/api/admin/campaigns/{cid}/report")
    assert got.status_code == 200, got.text
    assert got.json() == r

    # The dashboard, in Chromium: the same numbers, the table and both charts.
    port = free_port()
    monkeypatch.setenv("NEWSLETTER_BASE_URL", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    with live_app(port) as url:
        page = browser.new_page()
        page.goto(f"{url}/admin/login")
        page.fill("#email", EDITOR_EMAIL)
        page.fill("#password", EDITOR_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("h1:text('Overview')")
        page.goto(f"{url}/admin/campaigns/{cid}")
        page.click("#report-link")
        page.wait_for_selector("#report-numbers")
        num = lambda sel: page.inner_text(sel).strip()  # noqa: E731
        assert (num("#report-delivered"), num("#report-bounced-hard"), num("#report-bounced-soft")) == ("4", "1", "1")
        assert (num("#report-opened"), num("#report-opens"), num("#report-open-rate")) == ("2", "3", "50.0%")
        assert (num("#report-clicked"), num("#report-clicks"), num("#report-click-rate")) == ("2", "2", "50.0%")
        assert (num("#report-complaints"), num("#report-unsubscribes"), num("#report-machines")) == ("1", "1", "6")
        rows = page.eval_on_selector_all("#link-table tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.innerText))")
        assert rows == [["1", "https://example.com/one?a=1&b=2", "1", "1", "2"], ["2", "https://example.com/two", "1", "1", "2"]]
        bars = page.eval_on_selector_all("#link-chart rect.clicks, #link-chart rect.machine_clicks",
                                         "rs => rs.map(r => [r.getAttribute('class'), r.dataset.link, r.dataset.value])")
        assert sorted(bars) == sorted([["clicks", "0", "1"], ["machine_clicks", "0", "2"],
                                       ["clicks", "1", "1"], ["machine_clicks", "1", "2"]])
        assert page.eval_on_selector("#link-chart", "e => e.getBoundingClientRect().width") > 300
        points = page.eval_on_selector_all("#hours-chart circle",
                                           "cs => cs.map(c => [c.getAttribute('class'), c.dataset.hour, c.dataset.value])")
        assert sorted(points) == sorted([["opens", "3", "2"], ["clicks", "3", "1"], ["opens", "5", "1"],
                                         ["clicks", "5", "1"]])
        compared = page.eval_on_selector_all("#compare-table tbody tr", "rs => rs.map(r => r.dataset.campaign)")
        assert compared == [str(cid), str(first)]
        assert page.inner_text(f"#compare-table tr[data-campaign='{cid}'] .open-rate") == "50.0%"

    # Past the retention window: the events become counts, and the report is the same.
    later(engine, timedelta(days=conf.tracking_days, hours=1))
    with transaction(engine) as s:
        before_roll_up = ops.report(s, campaign_id=cid)
    assert dispatch.roll_up_engagement(conf) == 12  # 11 of this campaign, 1 of the first
    with transaction(engine) as s:
        assert s.execute(text("SELECT COUNT(*) FROM engagement_event")).scalar_one() == 0
        after = ops.report(s, campaign_id=cid)
    assert after == before_roll_up
    assert {k: v for k, v in after.items() if k not in ("started_at", "finished_at", "compared")} == {
        k: v for k, v in r.items() if k not in ("started_at", "finished_at", "compared")}


def test_an_unknown_or_malformed_campaign_is_refused_in_one_line(engine, api, dashboard):
    assert_one_line_error(cli("campaign", "report", "424242"), "no campaign 424242")
    # The same command's other refusals in this process (cli_in_process: the same main).
    assert_one_line_error(cli_in_process("campaign", "report", "424242", "--json"), "no campaign 424242")
    assert_one_line_error(cli_in_process("campaign", "report", "abc"), "'campaign_id': Input should be a valid integer")
    missing = api.get("/api/admin/campaigns/424242/report")
    assert missing.status_code == 404 and missing.json()["detail"] == "no campaign 424242"
    assert api.get("/api/admin/campaigns/abc/report").status_code == 422
    assert api.get("/api/admin/campaigns/1/report", params={"compare": "-1"}).status_code == 422
    page = dashboard.get("/admin/campaigns/424242/report")
    assert page.status_code == 404 and "no campaign 424242" in page.text


def test_a_campaign_not_started_has_a_report_of_zeros(engine, api, dashboard):
    from tests.support.seed import seed_campaign

    cid = seed_campaign(engine, 3, start=False)
    with transaction(engine) as s:
        r = ops.report(s, campaign_id=cid)
        with pytest.raises(InvalidInput, match="compare with 0 to 50 campaigns, not 51"):
            ops.report(s, campaign_id=cid, compare=51)
    assert (r["status"], r["total"], r["delivered"], r["started_at"], r["compared"]) == ("draft", 0, 0, None, [])
    assert r["opens"] == {"people": 0, "total": 0, "rate": 0.0} and r["rates"]["bounce_rate"] == 0.0
    assert len(r["hours"]) == 72 and not any(h["opens"] or h["clicks"] for h in r["hours"])
    assert api.get(f"/api/admin/campaigns/{cid}/report").json() == r
    page = dashboard.get(f"/admin/campaigns/{cid}/report")
    assert page.status_code == 200 and "Not started yet: nothing to compare." in page.text
    assert 'id="hours-chart"' in page.text and "This issue has no links to count." in page.text
