"""Exactly once, proven with real ``celery worker`` processes and a real SMTP server,
on the embedded default (SQLite + filesystem broker) and on PostgreSQL + Redis."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import bindparam, text

from mailer import campaigns
from mailer.core.db import transaction
from mailer.dispatch import enqueue_campaign
from mailer.models import Campaign
from tests.support.cli import assert_one_line_error, cli
from tests.support.delivery import assert_counters_match, received
from tests.support.example import EXAMPLE
from tests.support.seed import seed_campaign, seed_list
from tests.support.workers import STACK_IDS, STACKS, worker_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(params=STACKS, ids=STACK_IDS)
def stack(request, monkeypatch, tmp_path, smtp_sink):
    """Environment for worker processes: database, broker, and the SMTP sink as relay."""
    with worker_stack(request, monkeypatch, tmp_path, smtp_sink, *request.param, {
        "NEWSLETTER_SMTP_TIMEOUT": "5",
        "NEWSLETTER_LEASE_SECONDS": "5",
        "NEWSLETTER_SWEEP_SECONDS": "1",
        "NEWSLETTER_RETRY_BASE_SECONDS": "1",
        "NEWSLETTER_BATCH_SIZE": "25",
        # Pre-flight's SpamAssassin (~2.5 s a start, at `send` and at beat's dispatch) is
        # on only where a test is about it, as in tests/conftest.py's settings.
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


def status(engine, cid):
    with transaction(engine) as s:
        return s.get(Campaign, cid).status


def held_batches(engine, cid) -> int:
    with transaction(engine) as s:
        return s.execute(text("SELECT COUNT(*) FROM batch WHERE campaign_id = :c AND status = 'claimed'"),
                         {"c": cid}).scalar()


def delivery_count(engine, cid, *states: str) -> int:
    """Deliveries in any of ``states``, counted in one statement (a worker moves them
    between queued and sending while two separate counts would run)."""
    with transaction(engine) as s:
        return s.execute(text("SELECT COUNT(*) FROM delivery WHERE campaign_id = :c AND status IN :s")
                         .bindparams(bindparam("s", expanding=True)), {"c": cid, "s": list(states)}).scalar()


def last_reply(engine, cid) -> str | None:
    with transaction(engine) as s:
        return s.execute(text("SELECT MAX(last_reply) FROM delivery WHERE campaign_id = :c"), {"c": cid}).scalar()


def start(engine, n, batch_size=25):
    cid = seed_campaign(engine, n, batch_size=batch_size)
    enqueue_campaign(cid, n // batch_size + 1)
    return cid


def test_two_workers_send_each_message_once(stack, smtp_sink, start_worker):
    engine = stack
    smtp_sink.delay = 0.002  # long enough that both workers are busy at the same time
    workers = [start_worker(name="w1"), start_worker(name="w2")]
    cid = start(engine, 400)
    wait_for(lambda: status(engine, cid) == "sent", what="campaign sent")
    got = received(smtp_sink)
    assert len(got) == 400 and set(got.values()) == {1}
    assert assert_counters_match(engine, cid) == {"sent": 400}
    for w in workers:  # both took part (the whole log: a long last batch pushes its start out of the tail)
        assert "newsletter.send_batch" in w.full_log(), w.log()
        # The campaign is 'sent' when the last batch is released, a moment before that
        # batch's task returns: wait for the task's own line.
        wait_for(lambda: "succeeded" in w.full_log(), what=f"{w.name}'s task to succeed")


def test_one_worker_sends_over_several_connections_at_once(stack, smtp_sink, start_worker):
    """NEWSLETTER_SMTP_CONNECTIONS=3: one worker process keeps three relay connections
    busy at the same time, each with batches of its own, and every message goes once."""
    engine = stack
    smtp_sink.delay = 0.01  # each message takes a while, so the connections overlap
    start_worker({"NEWSLETTER_SMTP_CONNECTIONS": "3"}, name="w1")
    cid = start(engine, 300)
    wait_for(lambda: status(engine, cid) == "sent", what="campaign sent")
    got = received(smtp_sink)
    assert len(got) == 300 and set(got.values()) == {1}
    assert smtp_sink.max_in_flight == 3 and smtp_sink.sessions >= 3, (smtp_sink.max_in_flight, smtp_sink.sessions)
    assert assert_counters_match(engine, cid) == {"sent": 300}


def test_sigkill_mid_batch_loses_nothing(stack, smtp_sink, start_worker):
    engine = stack
    smtp_sink.delay = 0.01
    connections, window = 3, 4  # at most one window of unknown fate per connection when it dies
    bound = connections * window
    victim = start_worker({"NEWSLETTER_SMTP_CONNECTIONS": str(connections), "NEWSLETTER_SEND_WINDOW": str(window)},
                          name="victim")
    cid = start(engine, 300)
    wait_for(lambda: len(smtp_sink.messages) >= 20, what="sending to begin")
    victim.kill()
    killed_at = len(smtp_sink.messages)
    assert killed_at < 300
    start_worker(name="survivor", beat=True)
    wait_for(lambda: status(engine, cid) == "sent", what="campaign sent by the survivor")
    got = received(smtp_sink)
    assert len(got) == 300, "every subscriber got the issue"
    repeated = [r for r, n in got.items() if n > 1]
    assert len(repeated) <= bound and all(got[r] == 2 for r in repeated), repeated
    with transaction(engine) as s:  # the engine knows which ones it may have sent twice
        known = set(s.execute(text("SELECT s.email FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id "
                                   "WHERE d.campaign_id = :c AND d.repeats > 0"), {"c": cid}).scalars())
    assert set(repeated) <= known and len(known) <= bound, (repeated, known)
    assert assert_counters_match(engine, cid) == {"sent": 300}


def test_pause_and_resume_send_the_rest_exactly_once(stack, smtp_sink, start_worker):
    engine = stack
    smtp_sink.delay = 0.01
    start_worker(name="w1")
    cid = start(engine, 200)
    wait_for(lambda: len(smtp_sink.messages) >= 20, what="sending to begin")
    with transaction(engine) as s:
        assert campaigns.pause_campaign(s, campaign_id=cid)
    # The worker stops at its next message and lets its batch go; a paused campaign's
    # batches cannot be claimed, so from then on nothing more can be sent.
    wait_for(lambda: not held_batches(engine, cid), what="the worker to let go of its batch")
    paused_at = len(smtp_sink.messages)
    assert paused_at == delivery_count(engine, cid, "sent") < 200
    assert status(engine, cid) == "paused"
    with transaction(engine) as s:
        assert campaigns.resume_campaign(s, campaign_id=cid)
    enqueue_campaign(cid, 8)
    wait_for(lambda: status(engine, cid) == "sent", what="campaign sent after resume")
    got = received(smtp_sink)
    assert len(got) == 200 and set(got.values()) == {1}
    assert assert_counters_match(engine, cid) == {"sent": 200}


def test_relay_down_for_a_while_then_back(stack, smtp_sink, start_worker):
    engine = stack
    smtp_sink.stop()
    start_worker(name="w1", beat=True)
    cid = start(engine, 100)
    reply = wait_for(lambda: last_reply(engine, cid), what="the failed attempt's reason to be recorded")
    assert "cannot reach SMTP relay" in reply
    # Nothing is sent, failed or lost while the relay is away (one may be on its next try).
    assert delivery_count(engine, cid, "queued", "sending") == 100
    smtp_sink.start()
    wait_for(lambda: status(engine, cid) == "sent", timeout=120, what="campaign sent once the relay is back")
    got = received(smtp_sink)
    assert len(got) == 100 and set(got.values()) == {1}
    assert assert_counters_match(engine, cid) == {"sent": 100}


def test_same_start_command_twice_sends_once(stack, smtp_sink, start_worker):
    engine = stack
    seed_list(engine, 60, list_name="china-ai-weekly")
    first = cli("send", EXAMPLE, "--list", "china-ai-weekly")
    second = cli("send", EXAMPLE, "--list", "china-ai-weekly")
    assert first.returncode == 0, first.stderr
    # The second start is refused like the API's and the dashboard's (one operation), and queues nothing.
    assert_one_line_error(second, "is already sending; nothing new was started")
    start_worker(name="w1")
    with transaction(engine) as s:
        cids = s.execute(text("SELECT id FROM campaign")).scalars().all()
    assert len(cids) == 1
    wait_for(lambda: status(engine, cids[0]) == "sent", what="campaign sent")
    got = received(smtp_sink)
    assert len(got) == 60 and set(got.values()) == {1}
    assert assert_counters_match(engine, cids[0]) == {"sent": 60}


def test_beat_starts_a_scheduled_campaign_at_its_time(stack, smtp_sink, start_worker):
    """No one runs `send`: beat's dispatcher starts the campaign when its time comes."""
    from datetime import datetime, timedelta, timezone

    from mailer import schedules
    from tests.support.seed import seed_issue

    engine = stack
    list_id = seed_list(engine, 50)
    issue_id = seed_issue(engine)
    now = datetime.now(timezone.utc)
    with transaction(engine) as s:
        cid = schedules.schedule_campaign(s, issue_id=issue_id, list_id=list_id, at=now + timedelta(seconds=3),
                                          now=now).id
    start_worker(name="w1", beat=True, extra={"NEWSLETTER_DISPATCH_SECONDS": "1"})
    wait_for(lambda: status(engine, cid) == "sent", what="the scheduled campaign sent by beat")
    with transaction(engine) as s:
        started = s.get(Campaign, cid).started_at
    assert started >= now + timedelta(seconds=3)  # not before its time
    got = received(smtp_sink)
    assert len(got) == 50 and set(got.values()) == {1}
