"""The editor's week in a real browser (headless Chromium via Playwright) against a real
uvicorn server and a real SMTP server: sign in, write an issue, watch the preview follow
the typing, send a test, schedule it, find it in the schedule view."""

from __future__ import annotations

import email
import email.policy

import pytest

from mailer import campaigns, schedules
from mailer.core.db import transaction
from tests.support.browser import ARTIFACTS, live_app
from tests.support.seed import seed_list
from tests.support.services import free_port
from tests.support.web import EDITOR_EMAIL, EDITOR_PASSWORD, issue_source

pytestmark = pytest.mark.browser



@pytest.fixture
def admin_server(settings, monkeypatch, smtp_sink, editor_user):
    """uvicorn in a thread, with the test's database and the SMTP sink as relay."""
    from mailer.core.config import get_settings

    port = free_port()
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", f"smtp://127.0.0.1:{smtp_sink.port}")
    monkeypatch.setenv("NEWSLETTER_BASE_URL", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    try:
        with live_app(port) as url:
            yield url
    finally:
        get_settings.cache_clear()


def see_in_preview(page, text: str) -> None:
    """Wait until ``text`` shows in the preview frame; when it does not, the failure says
    whether the frame has it at all and how large the frame and the text's box are."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    found = page.frame_locator("#preview").locator(f"text={text}")
    try:
        found.wait_for(timeout=15_000)
    except PlaywrightTimeout:
        frame = page.eval_on_selector("#preview", "el => JSON.stringify(el.getBoundingClientRect())")
        inside = [found.first.evaluate("el => JSON.stringify([el.getBoundingClientRect(), innerWidth, innerHeight])")
                  ] if found.count() else "not in the frame's document"
        pytest.fail(f"{text!r} not visible in the preview: iframe box {frame}; text box, frame viewport {inside}; "
                    f"status {page.inner_text('#preview-status')!r}")


def sign_in(page) -> None:
    """Fill in the sign-in page the browser shows, and wait for the dashboard."""
    page.fill("#email", EDITOR_EMAIL)
    page.fill("#password", EDITOR_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:text('Overview')")


def test_write_preview_test_send_schedule_in_a_browser(admin_server, browser, engine, smtp_sink, database_url):
    seed_list(engine, 3)
    with transaction(engine) as s:
        list_id = campaigns.find_list(s, "weekly").id
        schedules.set_schedule(s, list_id=list_id, weekday="tuesday", local_time="09:00", tz="Asia/Shanghai")
    ARTIFACTS.mkdir(exist_ok=True)
    engine = "postgres" if database_url.startswith("postgresql") else "sqlite"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})

    # Anonymous: sent to the sign-in page.
    page.goto(f"{admin_server}/admin/issues/new")
    assert page.url.endswith("/admin/login")
    sign_in(page)

    # Write: the preview follows the typing.
    page.goto(f"{admin_server}/admin/issues/new")
    page.fill("#source", issue_source(subject="Browser issue", body="Written in Chromium."))
    see_in_preview(page, "Written in Chromium.")
    page.locator("#source").press("End")
    page.locator("#source").type(" One more line typed live.")
    see_in_preview(page, "One more line typed live.")
    assert page.get_attribute("#preview", "data-subject") == "Browser issue"
    page.screenshot(path=str(ARTIFACTS / f"dashboard-editor-desktop-{engine}.png"), full_page=True)
    page.click("button[data-width='375']")
    assert page.eval_on_selector("#preview", "el => el.getBoundingClientRect().width") == pytest.approx(375, abs=2)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-editor-phone-{engine}.png"), full_page=True)

    # A broken edit shows the reason instead of a preview.
    page.fill("#source", "no front matter")
    page.wait_for_selector("#preview-status.error:has-text('no front matter')", timeout=15_000)
    page.fill("#source", issue_source(subject="Browser issue", body="Written in Chromium."))
    page.wait_for_selector("#preview-status:text('Preview up to date')", timeout=15_000)

    page.click("#save")
    page.wait_for_selector("text=Issue saved.")
    assert "/admin/issues/" in page.url

    # Test send through the configured relay (the SMTP sink).
    page.fill("#test-to", "editor.inbox@example.com")
    page.click("#send-test")
    page.wait_for_selector("text=Test sent to 1 of 1 addresses.")
    (received,) = smtp_sink.wait_for(1)
    message = email.message_from_bytes(received.content, policy=email.policy.default)
    assert received.rcpt_tos == ("editor.inbox@example.com",)
    assert message["Subject"].startswith("[TEST]") and message["X-Newsletter-Test"] == "yes"

    # Schedule to the next free weekly slot; it shows up in the schedule view.
    page.select_option("#when", "next_slot")
    page.click("#schedule")
    page.wait_for_selector("text=Scheduled.")
    assert page.url.split("#")[0].endswith("/admin/schedules?done=scheduled")
    row = page.locator("#list-weekly tr.slot").first
    assert "browser-issue" in row.inner_text() and "scheduled" in row.inner_text()
    assert "Tue" in row.inner_text() and "09:00" in row.inner_text()
    page.screenshot(path=str(ARTIFACTS / f"dashboard-schedule-{engine}.png"), full_page=True)

    # A form without its CSRF token is refused, in the browser too.
    response = page.request.post(f"{admin_server}/admin/issues/new", form={"source": "x"})
    assert response.status == 403


def test_who_got_it_and_who_did_not_in_a_browser(admin_server, browser, engine, smtp_sink, database_url):
    """A campaign forced through an SMTP server that refuses chosen addresses: the
    campaign page lists exactly those, with the relay's replies; the filter, the CSV
    download and "Retry the failed ones" work in Chromium."""
    import csv

    from tests.support.delivery import FORCED, force_campaign

    cid = force_campaign(engine, smtp_sink)
    engine_name = "postgres" if database_url.startswith("postgresql") else "sqlite"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{admin_server}/admin/login")
    sign_in(page)

    page.goto(f"{admin_server}/admin/campaigns/{cid}")
    rows = page.locator("#delivery-list tr.delivery")

    def shown() -> dict:
        return {rows.nth(i).locator("td.email").inner_text(): (rows.nth(i).get_attribute("data-status"),
                                                               rows.nth(i).locator("td.reply").inner_text())
                for i in range(rows.count())}

    listed = shown()
    assert set(listed) == set(FORCED)
    for email, (status, code, reply) in FORCED.items():
        assert listed[email][0] == status and reply in listed[email][1]
        assert code is None or listed[email][1].startswith(str(code))
    page.screenshot(path=str(ARTIFACTS / f"dashboard-deliveries-{engine_name}.png"), full_page=True)

    page.select_option("#delivery-status", "failed")
    page.click("#deliveries-filter button[type=submit]")
    page.wait_for_url("**status=failed**")
    assert set(shown()) == {e for e, v in FORCED.items() if v[0] == "failed"}

    with page.expect_download() as download:
        page.click("#deliveries-csv")
    with open(download.value.path(), encoding="utf-8") as f:
        exported = list(csv.DictReader(f))
    assert {(r["email"], r["status"]) for r in exported} == {(e, v[0]) for e, v in FORCED.items() if v[0] == "failed"}

    page.click("#retry-failed button")
    page.wait_for_selector("text=Failed deliveries queued again.")
    page.select_option("#delivery-status", "queued")
    page.click("#deliveries-filter button[type=submit]")
    page.wait_for_url("**status=queued**")
    assert set(shown()) == {e for e, v in FORCED.items() if v[0] == "failed"}
    assert page.locator("#retry-failed").count() == 0


def test_preflight_checks_show_under_the_schedule_form_and_block_until_overridden(admin_server, browser, engine,
                                                                                 settings):
    from mailer.operations import issues as issue_ops

    seed_list(engine, 2)
    long = "\n\n".join(["A long paragraph about models and chips and rules. " * 40] * 60)
    with transaction(engine) as s:
        issue_id = issue_ops.create_issue(s, source=issue_source(subject="Too long", body=long),
                                          settings=settings).id
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{admin_server}/admin/login")
    page.fill("#email", EDITOR_EMAIL)
    page.fill("#password", EDITOR_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:text('Overview')")

    # The checks on their own: a table under the schedule form, nothing started.
    page.goto(f"{admin_server}/admin/issues/{issue_id}")
    page.click("#run-preflight")
    table = page.locator("#preflight")
    table.wait_for()
    assert page.locator("#preflight-title").inner_text() == "Pre-flight: failed"
    rows = {r.locator("th").inner_text(): r.locator("td").first.inner_text()
            for r in table.locator("tbody tr").all()}
    # The server runs on http://127.0.0.1 in development: its own links and one-click URL are warnings.
    assert rows == {"size": "fail", "links": "warn", "one-click": "warn", "dkim": "warn", "spamassassin": "pass",
                    "complaints": "pass"}
    assert "Gmail clips it at 102 KB" in table.locator("tr.check-fail").inner_text()
    with transaction(engine) as s:
        assert campaigns.list_campaigns(s) == []

    # Starting now is refused with the checks shown, until "Start anyway" is ticked.
    page.select_option("#when", "now")
    page.click("#schedule")
    page.locator("#preflight").wait_for()
    assert "pre-flight failed: size" in page.content()
    with transaction(engine) as s:
        assert campaigns.list_campaigns(s) == []
    page.select_option("#when", "now")
    page.check("#override-preflight")
    page.click("#schedule")
    page.wait_for_url("**/admin/campaigns/*")
    with transaction(engine) as s:
        assert [c.status for c in campaigns.list_campaigns(s)] == ["sending"]
    page.screenshot(path=str(ARTIFACTS / "dashboard-preflight.png"), full_page=True)


def test_tracking_switches_on_the_dashboard_carry_and_drop_tracked_links(admin_server, browser, engine, smtp_sink):
    """The editor ticks click and open tracking for a list in Chromium: the switches are
    the ones the CLI and API read, and the next campaign's message carries /r/ links and
    the pixel; unticked, the one after has neither."""
    from mailer.core.config import get_settings
    from mailer.operations import subscribers as subscriber_ops
    from mailer.operations.issues import save_issue
    from mailer.sending import drain
    from tests.mailer.web.public.test_tracking import html_of, issue_with_links
    from tests.support.cli import cli
    from tests.support.delivery import config, transport_for

    list_id = seed_list(engine, 1)
    settings = get_settings()

    def send(slug: str) -> str:
        with transaction(engine) as s:
            issue = save_issue(s, source=issue_with_links("https://example.com").replace("slug: links-1", f"slug: {slug}"),
                               settings=settings)
            campaign, _ = campaigns.create_campaign(s, issue_id=issue.id, list_id=list_id)
            campaigns.start_campaign(s, campaign_id=campaign.id, batch_size=10)
        before = len(smtp_sink.messages)
        drain(engine, campaign.id, transport=transport_for(smtp_sink),
              cfg=config(base_url=settings.base_url, secret_key=settings.secret_key))
        (received,) = smtp_sink.messages[before:]
        return html_of(received.content)

    page = browser.new_page()
    page.goto(f"{admin_server}/admin/login")
    sign_in(page)
    page.goto(f"{admin_server}/admin/schedules")
    assert not page.is_checked(f"#clicks-{list_id}") and not page.is_checked(f"#opens-{list_id}")
    page.check(f"#clicks-{list_id}")
    page.check(f"#opens-{list_id}")
    page.click("#tracking-weekly button[type=submit]")
    page.wait_for_selector("text=Tracking saved")
    assert page.is_checked(f"#clicks-{list_id}") and page.is_checked(f"#opens-{list_id}")
    with transaction(engine) as s:
        assert subscriber_ops.set_tracking(s, list_name="weekly") == {"list": "weekly", "clicks": True, "opens": True}
    shown = cli("subscribers", "tracking", "--list", "weekly")
    assert shown.stdout.strip() == "list weekly: click tracking on, open tracking on"
    tracked = send("tracked-1")
    assert f"{settings.base_url}/r/" in tracked and f"{settings.base_url}/o/" in tracked
    assert "https://example.com/one" not in tracked

    page.uncheck(f"#clicks-{list_id}")
    page.click("#tracking-weekly button[type=submit]")
    page.wait_for_selector("text=Tracking saved")
    assert not page.is_checked(f"#clicks-{list_id}") and page.is_checked(f"#opens-{list_id}")
    opens_only = send("tracked-2")
    assert "/r/" not in opens_only and "https://example.com/one?a=1&amp;b=2" in opens_only and "/o/" in opens_only
    page.uncheck(f"#opens-{list_id}")
    page.click("#tracking-weekly button[type=submit]")
    page.wait_for_selector("text=Tracking saved")
    untracked = send("tracked-3")
    assert "/r/" not in untracked and "/o/" not in untracked


def test_the_subscriber_page_edits_tags_in_a_browser(admin_server, browser, engine, database_url):
    """Tags typed into the subscriber page are theirs after Save (a segment finds them);
    a bad one is refused with the reason, and changes nothing."""
    from mailer.operations import subscribers as ops
    from subscribers.models import Subscriber

    with transaction(engine) as s:
        sid = ops.add(s, email="ann@example.com", name="Ann", list_name="weekly", tags=["founding"],
                      attributes={"country": "CN"}).id
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{admin_server}/admin/login")
    sign_in(page)
    page.goto(f"{admin_server}/admin/subscribers/{sid}")
    assert page.input_value("#tags") == "founding"
    assert "country = CN" in page.inner_text("#attributes")
    page.fill("#tags", "founding speaker vip")
    page.click("#edit-form button[type=submit]")
    page.wait_for_selector("#tag-list .tag:text('speaker')")
    with transaction(engine) as s:
        assert s.get(Subscriber, sid).tags == ["founding", "speaker", "vip"]
        assert ops.segment_size(s, list_name="weekly", segment="tag:speaker AND tag:vip") == 0  # pending: no audience
        assert ops.search(s, segment="tag:speaker")["items"][0]["email"] == "ann@example.com"

    page.fill("#tags", 'vip bad"tag')
    page.click("#edit-form button[type=submit]")
    page.wait_for_selector("text=no spaces or quotes")
    with transaction(engine) as s:
        assert s.get(Subscriber, sid).tags == ["founding", "speaker", "vip"]
    page.close()
