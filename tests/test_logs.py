"""Logs of a real ``celery worker`` sending a real campaign to an SMTP server: one line
per event, every line a JSON object with NEWSLETTER_LOG_FORMAT=json (plain text by
default), the ids on each, and no recipient's address or the message's body at INFO."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from mailer.core.db import transaction
from mailer.dispatch import enqueue_campaign
from mailer.models import Campaign, Delivery
from subscribers.models import Subscriber
from tests.support.delivery import received
from tests.support.seed import seed_campaign
from tests.support.workers import worker_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

N = 30
BODY = "This week in AI"  # the seeded issue's text (tests/support/seed.py), and its subject


@pytest.fixture
def stack(request, monkeypatch, tmp_path, smtp_sink):
    with worker_stack(request, monkeypatch, tmp_path, smtp_sink, "postgres", "redis", {
        "NEWSLETTER_SMTP_TIMEOUT": "5",
        "NEWSLETTER_BATCH_SIZE": "10",
        "NEWSLETTER_MAX_ATTEMPTS": "1",
    }) as engine:
        yield engine


def _send(engine, smtp_sink, start_worker, extra: dict[str, str]):
    """A campaign of N, one recipient refused for good; the worker's log once it is done."""
    smtp_sink.reject["reader000003@example.com"] = (550, "5.1.1 <reader000003@example.com>: no such user")
    worker = start_worker(extra)
    cid = seed_campaign(engine, N, batch_size=10)
    enqueue_campaign(cid, 3)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with transaction(engine) as s:
            if s.get(Campaign, cid).status == "sent":
                break
        time.sleep(0.2)
    else:
        raise AssertionError(f"campaign not sent:\n{worker.log()}")
    time.sleep(0.5)  # the task's last lines (released, succeeded) are written after the commit
    worker.stop()
    assert len(received(smtp_sink)) == N - 1
    with transaction(engine) as s:
        deliveries = dict(s.execute(select(Delivery.id, Subscriber.email).join(
            Subscriber, Subscriber.id == Delivery.subscriber_id).where(Delivery.campaign_id == cid)).all())
    return cid, deliveries, worker.log_path.read_text()


def test_json_logs_one_object_a_line_one_event_a_delivery_no_address_no_body(stack, smtp_sink, start_worker):
    cid, deliveries, log = _send(stack, smtp_sink, start_worker, {"NEWSLETTER_LOG_FORMAT": "json"})
    lines = log.splitlines()
    assert lines
    records = []
    for line in lines:  # every line, Celery's own included: no banner, no plain text
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)

    per_delivery = [r for r in records if r["message"] in ("message sent", "message bounced", "message failed")]
    assert sorted(r["delivery_id"] for r in per_delivery) == sorted(deliveries)  # one line per delivery
    assert all(r["campaign_id"] == cid and r["batch_id"] for r in per_delivery)
    refused = [r for r in per_delivery if r["message"] == "message bounced"]
    assert len(refused) == 1 and refused[0]["recipient"] == "r***@example.com" and refused[0]["code"] == 550
    claimed = [r for r in records if r["message"] == "batch claimed"]
    released = [r for r in records if r["message"] == "batch released"]
    assert len(claimed) == len(released) == N // 10
    assert {r["batch_id"] for r in claimed} == {r["batch_id"] for r in released} == {r["batch_id"] for r in per_delivery}
    assert sum(r["sent"] for r in released) == N - 1
    assert [r["campaign_id"] for r in records if r["message"] == "campaign finished"] == [cid]
    assert any(r["logger"].startswith("celery") and "succeeded" in r["message"] for r in records)

    # At INFO: no recipient's full address (the relay's reply quoting one included), no body.
    for address in deliveries.values():
        assert address not in log
    assert BODY not in log and "Reader 1" not in log


def test_text_logs_by_default(stack, smtp_sink, start_worker):
    cid, deliveries, log = _send(stack, smtp_sink, start_worker, {})
    sent = [line for line in log.splitlines() if " INFO mailer.sending: message sent " in line]
    assert len(sent) == N - 1
    for line in sent:
        assert line.split(" ", 2)[2].startswith("INFO ") and f"campaign_id={cid} " in line and "delivery_id=" in line
        with pytest.raises(ValueError):
            json.loads(line)
    for address in deliveries.values():
        assert address not in log


def test_debug_logs_the_full_address(stack, smtp_sink, start_worker):
    _, deliveries, log = _send(stack, smtp_sink, start_worker,
                               {"NEWSLETTER_LOG_FORMAT": "json", "NEWSLETTER_LOG_LEVEL": "debug"})
    found = [json.loads(line) for line in log.splitlines()]
    full = {r["address"] for r in found if r["message"] in ("message sent", "message bounced") and "address" in r}
    assert full == set(deliveries.values())
