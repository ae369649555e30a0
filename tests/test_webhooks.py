"""Outbound webhooks end to end: a real ``celery worker`` process (with beat's sweep)
posts to a real HTTP receiver on a free port, on the embedded default (SQLite +
filesystem broker) and on PostgreSQL + Redis. Every event arrives once, its signature
verified by the ``standardwebhooks`` package (not our code); a receiver that answers
500 twice gets it on the third attempt; a disabled endpoint gets nothing."""

from __future__ import annotations

import json
import os
import time

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from mailer import campaigns
from mailer.core.db import transaction
from mailer.dispatch import enqueue_campaign
from mailer.hooks import EventType
from mailer.models import Campaign, Delivery, WebhookDelivery
from mailer.operations import subscribers as subs
from mailer.operations import webhooks as ops
from subscribers.models import Subscriber
from tests.mailer.test_bounces import ARF, POSTFIX_DSN, SECRET, record, sample
from tests.support.seed import seed_issue, seed_list
from tests.support.workers import STACK_IDS, STACKS, worker_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(params=STACKS, ids=STACK_IDS)
def stack(request, monkeypatch, tmp_path, smtp_sink):
    """Environment for the worker processes: database, broker, the SMTP sink as relay,
    the signing secret of the bounce samples, fast webhook retries."""
    with worker_stack(request, monkeypatch, tmp_path, smtp_sink, *request.param, {
        "NEWSLETTER_SECRET_KEY": SECRET,
        "NEWSLETTER_SPAMASSASSIN": "off",
        "NEWSLETTER_SWEEP_SECONDS": "1",
        "NEWSLETTER_WEBHOOK_RETRY_SECONDS": "1",
        "NEWSLETTER_WEBHOOK_TIMEOUT": "2",
    }) as engine:
        yield engine


def wait_for(predicate, timeout=90.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def add_endpoint(engine, url, events, *, enabled=True) -> tuple[int, str]:
    with transaction(engine) as s:
        e = ops.add(s, url=url, events=events, enabled=enabled)
        return e.id, e.secret


def test_each_event_arrives_once_signed_retried_until_delivered_never_to_a_disabled_endpoint(
        stack, receiver, start_worker):
    engine = stack
    every, secret = add_endpoint(engine, receiver.url("/all"), ["all"])
    flaky, flaky_secret = add_endpoint(engine, receiver.url("/flaky"), ["subscribed"])
    receiver.script("/flaky", [500, 500, 200])
    off, _ = add_endpoint(engine, receiver.url("/disabled"), ["all"], enabled=False)
    start_worker(beat=True)

    with transaction(engine) as s:  # subscribed
        newcomer = subs.add(s, email="new@example.com", name="New", list_name="weekly").id
    with transaction(engine) as s:  # confirmed
        subs.edit(s, subscriber_id=newcomer, status="active")
    seed_list(engine, 2)
    issue_id = seed_issue(engine)
    with transaction(engine) as s:  # campaign started; finished comes from the worker's send path
        mlist = campaigns.find_list(s, "weekly")
        campaign, _ = campaigns.create_campaign(s, issue_id=issue_id, list_id=mlist.id)
        frozen = campaigns.start_campaign(s, campaign_id=campaign.id, batch_size=50)
        cid = campaign.id
    enqueue_campaign(cid, 1)
    wait_for(lambda: _status(engine, cid) == "sent", what="the campaign to be sent")
    rows = _sent_rows(engine, cid)
    assert len(rows) == frozen == 3
    record(engine, sample(POSTFIX_DSN, rows[1]))  # bounced
    record(engine, sample(ARF, rows[2], feedback_type="abuse", original_mail_from=""))  # complained
    with transaction(engine) as s:  # unsubscribed
        subs.unsubscribe(s, subscriber_id=newcomer, origin="admin")

    wanted = {str(t) for t in EventType}
    wait_for(lambda: {json.loads(r.body)["type"] for r in receiver.got("/all")} == wanted, what="every event")
    wait_for(lambda: len(receiver.got("/flaky")) == 3, what="the third attempt")
    time.sleep(3)  # beat's sweep runs every second meanwhile: nothing goes out twice
    got = receiver.got("/all")
    assert sorted(json.loads(r.body)["type"] for r in got) == sorted(wanted)
    assert len({r.headers["webhook-id"] for r in got}) == 7
    for r in got:
        event = Webhook(secret).verify(r.body, r.headers)  # raises unless the signature verifies
        assert event["type"] in wanted
    by_type = {json.loads(r.body)["type"]: json.loads(r.body)["data"] for r in got}
    assert by_type["subscriber.subscribed"]["subscriber"]["email"] == "new@example.com"
    assert by_type["subscriber.bounced"]["subscriber"]["email"] == rows[1][1]
    assert by_type["subscriber.complained"]["subscriber"]["email"] == rows[2][1]
    assert by_type["campaign.finished"]["campaign"]["counts"]["sent"] == 3

    flaky_got = receiver.got("/flaky")
    assert [len({r.headers["webhook-id"] for r in flaky_got}), len(flaky_got)] == [1, 3]  # one message, three tries
    # Backing off: 1 s after the first 500, then 2 s (however many tasks the sweep adds).
    assert flaky_got[1].at - flaky_got[0].at >= 0.9 and flaky_got[2].at - flaky_got[1].at >= 1.9
    Webhook(flaky_secret).verify(flaky_got[2].body, flaky_got[2].headers)
    with transaction(engine) as s:
        log = {(d.endpoint_id, d.event_type): (d.status, d.attempts, d.last_code)
               for d in s.scalars(select(WebhookDelivery))}
    assert log[(flaky, "subscriber.subscribed")] == ("delivered", 3, 200)
    assert all(v == ("delivered", 1, 200) for (eid, _), v in log.items() if eid == every)
    assert receiver.got("/disabled") == [] and not any(eid == off for eid, _ in log)


def _status(engine, cid):
    with transaction(engine) as s:
        return s.get(Campaign, cid).status


def _sent_rows(engine, cid):
    with transaction(engine) as s:
        return s.execute(select(Delivery.id, Subscriber.email, Delivery.message_id, Delivery.subscriber_id)
                         .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
                         .where(Delivery.campaign_id == cid).order_by(Delivery.id)).all()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


@pytest.mark.parametrize("stack", [("sqlite", "filesystem")], indirect=True, ids=["embedded"])
def test_newsletter_worker_sends_while_an_endpoint_hangs_and_stops_both_its_workers(
        stack, receiver, smtp_sink, monkeypatch):
    """``newsletter worker`` runs a send worker and a webhooks worker side by side: an
    endpoint that holds its request for 30 s does not hold up a campaign (one send
    process only: sharing it would wait the 30 s), and SIGTERM stops both."""
    import signal
    import subprocess
    import sys

    from tests.support.workers import REPO, worker_env

    engine = stack
    monkeypatch.setenv("NEWSLETTER_WEBHOOK_TIMEOUT", "30")
    add_endpoint(engine, receiver.url("/hang"), ["campaign.started"])
    add_endpoint(engine, receiver.url("/ok"), ["campaign.finished"])
    receiver.script("/hang", ["hang"])
    seed_list(engine, 3)
    issue_id = seed_issue(engine)
    with transaction(engine) as s:
        mlist = campaigns.find_list(s, "weekly")
        campaign, _ = campaigns.create_campaign(s, issue_id=issue_id, list_id=mlist.id)
        campaigns.start_campaign(s, campaign_id=campaign.id, batch_size=50)
        cid = campaign.id
    enqueue_campaign(cid, 1)
    proc = subprocess.Popen([sys.executable, "-m", "mailer.cli", "worker", "--concurrency", "1", "--without-gossip",
                             "--without-mingle", "--without-heartbeat"], cwd=REPO, env=worker_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: receiver.got("/hang"), timeout=60, what="the hanging endpoint to be called")
        hung_at = time.monotonic()
        wait_for(lambda: _status(engine, cid) == "sent", timeout=60, what="the campaign")
        assert time.monotonic() - hung_at < 20  # not behind the 30 s the endpoint holds a worker
        wait_for(lambda: receiver.got("/ok"), timeout=30, what="campaign.finished, past the hanging one")
        children = _children(proc.pid)
        assert len(children) == 2, children
        receiver._stop.set()  # the hanging request ends (no answer), so the webhooks worker's task does
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 143 or proc.returncode == 0
        assert not [c for c in children if _alive(c)]
    finally:
        if proc.poll() is None:
            for c in _children(proc.pid):
                os.kill(c, signal.SIGKILL)
            proc.kill()
            proc.wait(10)
