"""Pre-flight: each check on real messages (compiled, personalised and DKIM-signed as the
workers mail them), and the gate in front of every start: a message over Gmail's clip
or without one-click unsubscribe is refused and nothing starts; a clean one goes; an
explicit override lets a failed one through."""

from __future__ import annotations

import re
import shutil

import pytest
from sqlalchemy import func, select

from mailer.core.config import get_settings
from mailer.core.db import transaction
from mailer.models import Campaign, Delivery
from mailer.models import CampaignStatus as C
from mailer.operations import campaigns as ops
from mailer.operations import issues as issue_ops
from mailer.operations import preflight
from mailer.operations.preflight import Gate, PreflightFailed
from subscribers.models import Event, EventKind
from tests.support.dns import rsa_pem
from tests.support.seed import seed_list
from tests.support.web import issue_source

SPAMMY = ("Dear friend, you have been selected! 100% GUARANTEED. Buy Viagra and Cialis online, no prescription "
          "needed. Lose weight fast, risk free. Earn MILLIONS OF DOLLARS working from home. No credit check. "
          "This is not spam. Act now, limited time offer! ") * 3


@pytest.fixture
def dkim_on(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("NEWSLETTER_DKIM_SELECTOR", "s2026")
    monkeypatch.setenv("NEWSLETTER_DKIM_DOMAIN", "example.com")
    monkeypatch.setenv("NEWSLETTER_DKIM_PRIVATE_KEY", rsa_pem(tmp_path / "dkim.pem"))
    get_settings.cache_clear()
    return get_settings()


def _issue(engine, settings, body: str = "Something happened this week.") -> int:
    with transaction(engine) as s:
        return issue_ops.create_issue(s, source=issue_source(body=body), settings=settings).id


def _check(engine, settings, issue_id: int) -> preflight.Preflight:
    with transaction(engine) as s:
        return ops.preflight_issue(s, issue_ref=issue_id, list_name="weekly", settings=settings)


def _states(found: preflight.Preflight) -> dict[str, str]:
    return {c.name: c.state for c in found.checks}


def _started(engine) -> tuple[int, int]:
    with transaction(engine) as s:
        return (s.scalar(select(func.count()).select_from(Campaign).where(Campaign.status == C.sending)),
                s.scalar(select(func.count()).select_from(Delivery)))


def test_a_clean_signed_issue_passes_every_check_and_starts(engine, dkim_on, monkeypatch):
    if not shutil.which("spamassassin"):
        pytest.skip("spamassassin is not installed")  # the rest of the checks are covered below
    monkeypatch.setenv("NEWSLETTER_SPAMASSASSIN", "on")
    get_settings.cache_clear()
    settings = get_settings()
    issue_id = _issue(engine, settings)
    seed_list(engine, 3)
    found = _check(engine, settings, issue_id)
    assert _states(found) == dict.fromkeys(("size", "links", "one-click", "dkim", "spamassassin", "complaints"),
                                           "pass"), found.as_dict()
    assert "both DKIM-signed" in {c.name: c.detail for c in found.checks}["one-click"]
    with transaction(engine) as s:
        done = ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly", when="now", settings=settings)
    assert done.started == 3 and done.preflight.passed and not done.preflight.overridden
    assert _started(engine) == (1, 3)


def test_spamassassin_blocks_a_spammy_issue_and_shows_its_rules(engine, settings, monkeypatch):
    if not shutil.which("spamassassin"):
        pytest.skip("spamassassin is not installed")
    monkeypatch.setenv("NEWSLETTER_SPAMASSASSIN", "on")
    get_settings.cache_clear()
    settings = get_settings()
    issue_id = _issue(engine, settings, body=SPAMMY)
    seed_list(engine, 2)
    spam = {c.name: c for c in _check(engine, settings, issue_id).checks}["spamassassin"]
    assert spam.state == "fail" and spam.detail.startswith("score ")
    assert spam.lines and len(set(spam.lines)) == len(spam.lines)  # each rule that fired, once
    assert all(re.fullmatch(r"-?\d+\.\d+ [A-Z0-9_]+ .+", line) for line in spam.lines), spam.lines
    with transaction(engine) as s, pytest.raises(PreflightFailed, match="spamassassin: score "):
        ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly", when="now", settings=settings)
    assert _started(engine) == (0, 0)


def test_an_issue_over_gmails_clip_is_refused_and_nothing_starts(engine, settings):
    paragraph = "A long paragraph about models and chips and rules. " * 40
    issue_id = _issue(engine, settings, body="\n\n".join([paragraph] * 60))
    seed_list(engine, 3)
    with transaction(engine) as s, pytest.raises(PreflightFailed) as refused:
        ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly", when="now", settings=settings)
    line = str(refused.value)
    assert line.startswith("pre-flight failed: size: the HTML is ") and "102 KB" in line
    assert "\n" not in line and line.endswith("(override it to start anyway)")
    assert _states(refused.value.preflight)["size"] == "fail"
    assert _started(engine) == (0, 0)

    with transaction(engine) as s:
        done = ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly", when="now", settings=settings,
                                  gate=Gate(override=True))
    assert done.started == 3 and done.preflight.overridden and not done.preflight.passed
    assert _started(engine) == (1, 3)


def test_scheduling_for_later_is_checked_too(engine, settings):
    from datetime import datetime, timedelta, timezone

    issue_id = _issue(engine, settings, body="\n\n".join(["Words about chips and models. " * 40] * 100))
    seed_list(engine, 1)
    with transaction(engine) as s, pytest.raises(PreflightFailed, match="size"):
        ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly",
                           when=datetime.now(timezone.utc) + timedelta(days=1), settings=settings)


def test_production_without_https_one_click_links_or_dkim_is_refused(engine, settings, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_ENV", "production")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "a-real-secret-for-this-test")
    monkeypatch.setenv("NEWSLETTER_BASE_URL", "http://news.example.com")
    get_settings.cache_clear()
    production = get_settings()
    issue_id = _issue(engine, production)
    seed_list(engine, 2)
    with transaction(engine) as s, pytest.raises(PreflightFailed) as refused:
        ops.schedule_issue(s, issue_ref=issue_id, list_name="weekly", when="now", settings=production)
    states = _states(refused.value.preflight)
    assert states["one-click"] == states["links"] == states["dkim"] == "fail"
    assert "one-click: List-Unsubscribe has no https URL" in str(refused.value)
    assert _started(engine) == (0, 0)

    # The same in development: warnings, and the start goes ahead.
    monkeypatch.setenv("NEWSLETTER_ENV", "development")
    get_settings.cache_clear()
    development = get_settings()
    found = _check(engine, development, issue_id)
    assert found.passed and _states(found)["links"] == _states(found)["dkim"] == "warn"


def test_a_list_over_the_complaint_line_is_refused(engine, settings):
    seed_list(engine, 2)
    earlier = _issue(engine, settings)
    with transaction(engine) as s:
        done = ops.schedule_issue(s, issue_ref=earlier, list_name="weekly", when="now", settings=settings)
        campaign = s.get(Campaign, done.campaign_id)
        campaign.sent = 300
        s.add(Event(kind=EventKind.complaint, origin="arf", subscriber_id=None, campaign_id=campaign.id))
    with transaction(engine) as s:
        later = issue_ops.create_issue(s, source=issue_source(subject="Next week"), settings=settings).id
    found = _check(engine, settings, later)
    complaints = {c.name: c for c in found.checks}["complaints"]
    assert complaints.state == "fail" and "1 complaint(s) per 300 delivered" in complaints.detail
    assert "0.33%" in complaints.detail


# --- each check on its own: the bad inputs a sender's message could have ----------------

@pytest.mark.parametrize("href, problem", [
    ("http://example.com/a", "not https"),
    ("https://exa mple.com/a", "not a well-formed URL"),
    ("https://", "not a well-formed URL"),
    ("https://example.com:99999/", "not a well-formed URL"),
    ("javascript:alert(1)", "not an https link (javascript)"),
    ("/relative/path", "not an https link (relative)"),
])
def test_a_link_that_is_not_well_formed_https_fails(href, problem):
    found = preflight.check_links(f'<p><a href="https://example.com/ok">ok</a> <a href="{href}">x</a></p>',
                                  base_url="https://news.example.com", production=False)
    assert found.state == "fail" and found.lines == (f"{href}: {problem}",)


def test_mailto_and_https_links_pass():
    found = preflight.check_links('<a href="https://example.com/a">a</a><a href="mailto:me@example.com">m</a>',
                                  base_url="https://news.example.com", production=True)
    assert found.state == "pass"


MESSAGE = (b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n"
           b"List-Unsubscribe: <https://news.example.com/u/t>, <mailto:u@example.com>\r\n"
           b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nbody\r\n")


@pytest.mark.parametrize("drop, expected", [
    (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", "List-Unsubscribe-Post is None"),
    (b"List-Unsubscribe: <https://news.example.com/u/t>, <mailto:u@example.com>\r\n", "no List-Unsubscribe header"),
])
def test_a_message_without_one_click_headers_fails(drop, expected):
    found = preflight.check_one_click(MESSAGE.replace(drop, b""), production=False)
    assert found.state == "fail" and expected in found.detail
    assert preflight.check_one_click(MESSAGE, production=False).state == "pass"


def test_one_click_headers_outside_the_dkim_signature_fail():
    signed = (b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; h=from:to:subject; bh=x; b=y\r\n" + MESSAGE)
    found = preflight.check_one_click(signed, production=True)
    assert found.state == "fail" and "not both DKIM-signed" in found.detail


def test_a_signature_from_another_key_does_not_verify(engine, dkim_on, tmp_path):
    from mailer.dkim import DkimSigner, load_private_key

    other = DkimSigner("s2026", "example.com", load_private_key(rsa_pem(tmp_path / "other.pem")))
    signed = other.sign(MESSAGE)
    mine = DkimSigner("s2026", "example.com", load_private_key(dkim_on.dkim_private_key))
    found = preflight.check_dkim(signed, {mine.record_name: mine.dns_record}, production=True)
    assert found.state == "fail" and "does not verify against the configured key" in found.detail
    assert preflight.check_dkim(signed, {other.record_name: other.dns_record}, production=True).state == "pass"
    assert preflight.check_dkim(MESSAGE, {mine.record_name: mine.dns_record}, production=True).state == "fail"


def test_the_size_line_is_gmails_102_kb():
    assert preflight.check_size("x" * (102 * 1024)).state == "pass"
    assert preflight.check_size("x" * (102 * 1024 + 1)).state == "fail"
