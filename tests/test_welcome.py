"""The welcome mail, sent once: real ``celery worker`` processes, a real SMTP server,
the confirmation link over HTTP, on SQLite + the filesystem broker and on PostgreSQL +
Redis."""

from __future__ import annotations

import email
import threading
import time
from email import policy

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from mailer.core import signing
from mailer.core.config import get_settings
from mailer.core.db import transaction
from mailer.models import Campaign, CampaignKind
from mailer.operations import subscribers as ops
from mailer.operations import welcome
from subscribers import service
from subscribers.models import Subscriber
from tests.support.cli import assert_one_line_error, cli, cli_in_process
from tests.support.delivery import received
from tests.support.workers import STACK_IDS, STACKS, worker_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

WELCOME = """---
subject: Welcome to Weekly China AI
---

## Glad you are here

Every Tuesday: what happened in AI in China, in five minutes.
"""


@pytest.fixture(params=STACKS, ids=STACK_IDS)
def stack(request, monkeypatch, tmp_path, smtp_sink):
    """Environment for worker processes (and this process's web app and CLI runs):
    database, broker, and the SMTP sink as relay."""
    with worker_stack(request, monkeypatch, tmp_path, smtp_sink, *request.param, {
        "NEWSLETTER_SMTP_TIMEOUT": "5",
        "NEWSLETTER_LEASE_SECONDS": "5",
        "NEWSLETTER_SWEEP_SECONDS": "1",
        "NEWSLETTER_RETRY_BASE_SECONDS": "1",
        "NEWSLETTER_SPAMASSASSIN": "off",
    }) as engine:
        yield engine


def wait_for(predicate, timeout=90.0, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def add_pending(engine, address: str, name: str = "") -> tuple[int, str]:
    """A pending subscriber of 'weekly' and the confirmation link's token they were sent."""
    with transaction(engine) as s:
        sub = ops.add(s, email=address, name=name, list_name="weekly")
        list_id = service.find_list(s, "weekly").id
    return sub.id, signing.confirm_token(get_settings().secret_key, sub.id, list_id)


def welcome_rows(engine) -> dict[str, str]:
    """Address -> status of every welcome delivery."""
    with transaction(engine) as s:
        return dict(s.execute(text(
            "SELECT s.email, d.status FROM delivery d JOIN campaign c ON c.id = d.campaign_id "
            "JOIN subscriber s ON s.id = d.subscriber_id WHERE c.kind = 'welcome'")).all())


def test_confirming_twice_or_at_once_sends_one_welcome(stack, smtp_sink, start_worker, tmp_path):
    engine = stack
    template = tmp_path / "welcome.md"
    template.write_text(WELCOME)
    with transaction(engine) as s:
        service.ensure_list(s, "weekly")
    shown = cli("subscribers", "welcome", "--list", "weekly", "--file", template, "--latest-link")
    assert shown.returncode == 0, shown.stderr
    assert "welcome 'Welcome to Weekly China AI'" in shown.stdout
    # Two workers, so that the racing sends below are racing claims too.
    start_worker(name="w1")
    start_worker(name="w2")

    ann, ann_token = add_pending(engine, "ann@example.com", "Ann")
    client = TestClient(__import__("mailer.web.app", fromlist=["create_app"]).create_app())
    for _ in range(2):  # the link followed twice: the second changes nothing
        assert client.post(f"/confirm/{ann_token}").status_code == 200

    # Two confirmations of one subscriber at the same moment, each in its own transaction.
    bob, bob_token = add_pending(engine, "bob@example.com", "Bob")
    barrier, errors = threading.Barrier(2), []

    def confirm() -> None:
        barrier.wait()
        try:
            with transaction(engine) as s:
                ops.confirm(s, token=bob_token, settings=get_settings())
            welcome.wake(s, get_settings())
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=confirm) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [e for e in errors if "at the same time" not in str(e)], errors

    # The editor confirms one, then confirms again: one welcome.
    add_pending(engine, "cem@example.com")
    assert cli("subscribers", "edit", "cem@example.com", "--status", "active").stdout.endswith("welcome queued\n")
    again = cli("subscribers", "edit", "cem@example.com", "--status", "active")
    assert again.returncode == 0 and "welcome" not in again.stdout
    # A bulk import, even confirmed, greets nobody.
    people = tmp_path / "people.csv"
    people.write_text("email,name\ndan@example.com,Dan\neve@example.com,Eve\n")
    assert cli("subscribers", "import", people, "--list", "weekly", "--confirmed").returncode == 0

    wait_for(lambda: len(received(smtp_sink)) >= 3 and set(welcome_rows(engine).values()) == {"sent"},
             what="three welcomes sent")
    time.sleep(2)  # anything more would come now
    got = received(smtp_sink)
    assert got == {"ann@example.com": 1, "bob@example.com": 1, "cem@example.com": 1}, got
    assert welcome_rows(engine) == {"ann@example.com": "sent", "bob@example.com": "sent", "cem@example.com": "sent"}

    message = next(m for m in smtp_sink.messages if m.rcpt_tos == ("ann@example.com",))
    parsed = email.message_from_bytes(message.content, policy=policy.default)
    assert parsed["Subject"] == "Welcome to Weekly China AI"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "https://news.example.com/u/" in parsed["List-Unsubscribe"]
    body = parsed.get_body(("plain",)).get_content()
    assert "Hi Ann," in body and "Every Tuesday" in body and "https://news.example.com/issues/latest" in body
    # The welcome is not an issue: not in the editor's campaigns, not in the archive.
    listed = cli("campaign", "status", "--json")
    assert "no campaigns yet" in listed.stderr, listed
    assert client.get("/issues/latest", follow_redirects=False).headers["location"] == "/issues/"
    shown = cli("subscribers", "welcome", "--list", "weekly")
    assert "sent 3, queued 0" in shown.stdout, shown.stdout


def test_unsubscribing_before_it_goes_out_sends_none(stack, smtp_sink, start_worker, tmp_path):
    engine = stack
    with transaction(engine) as s:
        service.ensure_list(s, "weekly")
        welcome.set_welcome(s, list_name="weekly", source=WELCOME, settings=get_settings())
    # No worker yet: the welcome waits in its batch (and its task on the broker).
    with transaction(engine) as s:
        sub = ops.add(s, email="fay@example.com", list_name="weekly", status="active")
    assert welcome.wake(s, get_settings()) == 1
    assert welcome_rows(engine) == {"fay@example.com": "queued"}
    assert cli("subscribers", "unsubscribe", "fay@example.com").returncode == 0
    start_worker(name="w1")
    # Someone confirming afterwards is the sign that the worker is through the queue.
    with transaction(engine) as s:
        ops.add(s, email="gus@example.com", list_name="weekly", status="active")
    welcome.wake(s, get_settings())
    wait_for(lambda: welcome_rows(engine) == {"fay@example.com": "skipped", "gus@example.com": "sent"},
             what="fay skipped, gus sent")
    assert received(smtp_sink) == {"gus@example.com": 1}
    with transaction(engine) as s:
        campaign = s.scalar(select(Campaign).where(Campaign.kind == CampaignKind.welcome))
        assert (campaign.status, campaign.total, campaign.sent, campaign.skipped) == ("sending", 2, 1, 1)
        assert s.get(Subscriber, sub.id).status == "unsubscribed"


def test_welcome_template_errors_are_one_line_and_change_nothing(stack, tmp_path):
    engine = stack
    with transaction(engine) as s:
        service.ensure_list(s, "weekly")
    bad = tmp_path / "bad.md"
    bad.write_text("## no front matter\n")
    assert_one_line_error(cli("subscribers", "welcome", "--list", "weekly", "--file", bad), "front matter")
    assert_one_line_error(cli_in_process("subscribers", "welcome", "--list", "nope", "--file", bad), "nope")
    with transaction(engine) as s:
        assert s.scalar(select(Campaign.id)) is None
    # Removed: confirmations after it are not greeted.
    good = tmp_path / "good.md"
    good.write_text(WELCOME)
    assert cli("subscribers", "welcome", "--list", "weekly", "--file", good).returncode == 0
    removed = cli("subscribers", "welcome", "--list", "weekly", "--remove")
    assert removed.returncode == 0 and "no welcome mail" in removed.stdout
    with transaction(engine) as s:
        ops.add(s, email="hal@example.com", list_name="weekly", status="active")
    assert welcome_rows(engine) == {}
