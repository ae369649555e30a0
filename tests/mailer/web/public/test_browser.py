"""A real browser (headless Chromium via Playwright) against a real uvicorn server and a
real SMTP server: sign up through the form, unsubscribe with the page's button, the
archive as a reader sees it (both colour schemes, a phone and a desktop), subscribing
from an archived issue end to end, the preferences page by keyboard alone, axe-core on
every public page, and an issue's local images in the email and the archive."""

from __future__ import annotations

import email
import email.policy
import re
import struct
import time
import zlib

import pytest
from sqlalchemy import select

from mailer import campaigns
from mailer.core import signing
from mailer.core.db import transaction
from mailer.models import Issue
from mailer.operations import issues as issue_ops
from mailer.render import RenderedIssue, preview_html
from subscribers.models import Event, Membership, Subscriber
from tests.support.browser import live_app
from tests.support.example import EXAMPLE
from tests.support.reader import SCHEMES, WIDTHS, contrast, horizontal_overflow, screenshot, serious_violations
from tests.support.seed import seed_list
from tests.support.services import free_port

pytestmark = pytest.mark.browser

SLUG = "china-ai-weekly-2022-06-14"


@pytest.fixture
def server(settings, monkeypatch, smtp_sink):
    """uvicorn in a thread over the test's database; its own URL is the base URL (so the
    published images load from it), the SMTP sink is the relay."""
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


def send_issue(engine, text: str, *, folder=None, filename: str | None = None, list_name: str = "weekly") -> Issue:
    """Save an issue as the CLI does (from a file: its images published) and start its
    campaign, which puts it in the archive."""
    from mailer.core.config import get_settings

    settings = get_settings()
    list_id = seed_list(engine, 2, list_name=list_name, start=100)
    with transaction(engine) as s:
        issue = issue_ops.create_issue(s, source=text, settings=settings, filename=filename, folder=folder)
        campaign, _ = campaigns.create_campaign(s, issue_id=issue.id, list_id=list_id)
        campaigns.start_campaign(s, campaign_id=campaign.id, batch_size=10)
        s.expunge(issue)
        return issue


@pytest.fixture
def archived(server, engine):
    return send_issue(engine, EXAMPLE.read_text(encoding="utf-8"), filename=EXAMPLE.name)


def test_signup_and_unsubscribe_in_a_browser(server, browser, settings, engine, make_subscriber):
    page = browser.new_page()
    page.goto(f"{server}/subscribe")
    page.fill("#email", "browser.reader@example.com")
    page.fill("#name", "Browser Reader")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Check your inbox")
    with transaction(engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email_key == "browser.reader@example.com"))
        assert sub is not None and sub.status == "pending"

    sid = make_subscriber("leaving@example.com")
    page.goto(f"{server}/u/{signing.unsubscribe_token(settings.secret_key, sid, None)}")
    page.wait_for_selector("text=Unsubscribe?")
    with transaction(engine) as s:
        assert s.get(Subscriber, sid).status == "active"  # opening the page changed nothing
    page.click("button[type=submit]")
    page.wait_for_selector("text=You are unsubscribed")
    with transaction(engine) as s:
        assert s.get(Subscriber, sid).status == "unsubscribed"
        assert s.scalars(select(Event.origin).where(Event.subscriber_id == sid, Event.kind == "unsubscribe")).all() \
            == ["page"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_no_public_page_has_a_serious_accessibility_violation(server, browser, settings, archived, make_subscriber,
                                                              scheme):
    sid = make_subscriber("reader.axe@example.com")
    token = signing.unsubscribe_token(settings.secret_key, sid, None)
    # The archive's CSP forbids scripts, axe-core's too: the test's browser looks past it.
    page = browser.new_context(bypass_csp=True, viewport={"width": 800, "height": 900}).new_page()
    page.emulate_media(color_scheme=scheme)
    found = {}
    for path in ("/issues/", f"/issues/{SLUG}", "/subscribe", f"/u/{token}", f"/p/{token}"):
        assert page.goto(server + path).status == 200, path
        found[path.split("/")[1] or path] = serious_violations(page)
    assert found == {name: [] for name in found}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS)
def test_an_archived_issue_reads_like_a_site(server, browser, archived, width, scheme):
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.emulate_media(color_scheme=scheme)
    page.goto(f"{server}/issues/{SLUG}")
    screenshot(page, f"archive-{width}-{scheme}")
    assert horizontal_overflow(page) == 0
    title = contrast(page, ".masthead-title")
    assert title["ratio"] >= 4.5, title
    for selector in ("h1", ".story p", ".section-title", ".subscribe .muted", ".pager a"):
        found = contrast(page, selector)
        assert found["ratio"] >= 4.5, (selector, found)
    if scheme == "dark":
        assert contrast(page, ".story p")["backgroundLuminance"] < 0.05
    text = page.inner_text("main")
    assert "Megvii Chief Scientist, ResNet Creator Dies at 45" in text
    for wording in ("Hi ", "You are receiving this", "Unsubscribe", "Manage preferences"):
        assert wording not in text, wording


def test_subscribing_from_an_archived_issue_sends_the_confirmation(server, browser, engine, archived, smtp_sink):
    page = browser.new_page()
    page.goto(f"{server}/issues/{SLUG}")
    page.fill(".subscribe #email", "archive.reader@example.com")
    page.click(".subscribe button[type=submit]")
    page.wait_for_selector("text=Check your inbox")
    deadline = time.monotonic() + 15
    while not [m for m in smtp_sink.messages if "archive.reader@example.com" in m.rcpt_tos]:
        assert time.monotonic() < deadline, "no confirmation mail at the SMTP server"
        time.sleep(0.05)
    message = next(m for m in smtp_sink.messages if "archive.reader@example.com" in m.rcpt_tos)
    parsed = email.message_from_bytes(message.content, policy=email.policy.default)
    link = re.search(r"http://127\.0\.0\.1:\d+/confirm/\S+", parsed.get_body(("plain",)).get_content()).group(0)
    page.goto(link)
    page.click("button[type=submit]")
    page.wait_for_selector("text=You are subscribed")
    with transaction(engine) as s:
        sub = s.scalar(select(Subscriber).where(Subscriber.email_key == "archive.reader@example.com"))
        assert sub.status == "active"
        lists = s.scalars(select(Membership.list_id).where(Membership.subscriber_id == sub.id)).all()
        assert lists == [campaigns.find_list(s, "weekly").id]  # the list the issue went to


def test_the_preferences_page_works_by_keyboard_alone(server, browser, settings, engine, make_subscriber):
    sid = make_subscriber("keys@example.com")
    page = browser.new_page()
    page.goto(f"{server}/p/{signing.unsubscribe_token(settings.secret_key, sid, None)}")
    text = page.inner_text("main")
    assert "Pause" not in text  # no button promises what it does not do
    assert "Unsubscribe: no more issues are sent to this address" in text
    buttons = page.eval_on_selector_all("button", "bs => bs.map(b => b.textContent.trim())")
    assert buttons == ["Save my name", "Unsubscribe", "Download my data", "Delete my data"]
    for _ in range(20):  # Tab to the button, then Enter: no mouse
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Unsubscribe":
            break
    else:
        pytest.fail("the Unsubscribe button cannot be reached with Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # where the focus is shows
    page.keyboard.press("Enter")
    page.wait_for_selector("text=You are unsubscribed.")
    with transaction(engine) as s:
        assert s.get(Subscriber, sid).status == "unsubscribed"


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    raw = zlib.compress((b"\x00" + bytes(rgb) * width) * height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


IMAGES_ISSUE = """---
subject: Two pictures
preheader: A chart and a map
slug: two-pictures
---

### The chart

![A red bar chart of the week's funding rounds](images/chart.png)

### The map

![A blue map of the new data centres](map.png)
"""


def test_local_images_show_in_the_email_and_the_archive_from_their_published_urls(server, browser, engine,
                                                                                  tmp_path):
    folder = tmp_path / "issue"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "chart.png").write_bytes(png(2000, 1000, (200, 40, 40)))  # too wide: scaled down
    (folder / "map.png").write_bytes(png(300, 200, (40, 40, 200)))
    (folder / "two-pictures.md").write_text(IMAGES_ISSUE, encoding="utf-8")
    issue = send_issue(engine, IMAGES_ISSUE, folder=folder, filename="two-pictures.md")
    published = re.findall(rf'<img src="({re.escape(server)}/issues/assets/[0-9a-f]{{64}}\.png)"', issue.html)
    assert len(published) == 2 and "chart.png" not in issue.html and "map.png" not in issue.html

    # The page the browser opens is this test's own: the SQLite and PostgreSQL runs go side by side
    # (pytest -n), each with its own server's URLs in it.
    mail = tmp_path / "two-pictures-email.html"
    mail.write_text(preview_html(RenderedIssue(slug=issue.slug, subject=issue.subject, preheader="", html=issue.html,
                                               text=issue.text, mjml="", base_url=server)), encoding="utf-8")
    page = browser.new_page(viewport={"width": 375, "height": 900})
    for where in (mail.as_uri(), f"{server}/issues/two-pictures"):
        page.goto(where)
        page.wait_for_function("[...document.images].every(i => i.complete)")
        shown = page.eval_on_selector_all("img", """imgs => imgs.map(i => ({src: i.currentSrc, alt: i.alt,
            natural: [i.naturalWidth, i.naturalHeight], attrs: [i.getAttribute('width'), i.getAttribute('height')],
            box: i.getBoundingClientRect().width}))""")
        assert [i["src"] for i in shown] == published, where
        assert [i["alt"] for i in shown] == ["A red bar chart of the week's funding rounds",
                                             "A blue map of the new data centres"]
        assert [i["natural"] for i in shown] == [[1200, 600], [300, 200]], where  # loaded, the chart scaled down
        assert [i["attrs"] for i in shown] == [["552", "276"], ["300", "200"]]  # no layout jump
        assert all(0 < i["box"] <= 375 for i in shown)
        assert horizontal_overflow(page) == 0
        screenshot(page, "two-pictures-" + ("email" if where.startswith("file:") else "archive"))
