"""``/metrics``: a campaign sent by a real Celery worker with forked children moves the
exported counters by exactly what its deliveries record; the token; web requests by
route; inbound events by kind; the campaigns in flight read at scrape time."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from mailer.core.config import get_settings
from mailer.core.db import transaction
from mailer.core.metrics import ENV
from mailer.dispatch import enqueue_campaign
from mailer.models import Campaign, Delivery
from mailer.operations import inbound
from tests.support.inbound import CORPUS
from tests.support.seed import seed_campaign
from tests.support.web import create

TOKEN = "metrics-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def samples(text: str) -> Counter:
    """{(sample name, sorted labels): value} of one scrape."""
    found: Counter = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] += s.value
    return found


def total(scrape: Counter, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in scrape.items() if n == name and set(labels.items()) <= set(ls))


@pytest.fixture
def scrape(settings, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_METRICS_TOKEN", TOKEN)
    get_settings.cache_clear()
    with TestClient(create()) as client:
        def _scrape() -> Counter:
            r = client.get("/metrics", headers=AUTH)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/plain")
            return samples(r.text)
        _scrape.client = client
        yield _scrape


def test_metrics_needs_the_token(settings, monkeypatch):
    with TestClient(create()) as client:
        off = client.get("/metrics", headers=AUTH)
        assert off.status_code == 404 and "NEWSLETTER_METRICS_TOKEN" in off.json()["detail"]
        monkeypatch.setenv("NEWSLETTER_METRICS_TOKEN", TOKEN)
        get_settings.cache_clear()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": TOKEN}):
            r = client.get("/metrics", headers=headers)
            assert r.status_code == 401, headers
            assert r.headers["www-authenticate"] == "Bearer"
            assert "newsletter_" not in r.text
        assert client.get("/metrics", headers=AUTH).status_code == 200


def test_web_requests_are_counted_by_route_template_and_status(scrape):
    before = scrape()
    client = scrape.client
    for _ in range(2):
        assert client.get("/healthz").status_code == 200
    assert client.get("/issues/no-such-issue").status_code == 404
    assert client.get("/no/such/page").status_code == 404
    after = scrape()
    name = "newsletter_web_requests_total"
    moved = {labels: after[(n, labels)] - before[(n, labels)] for (n, labels) in after if n == name}
    assert moved[(("method", "GET"), ("route", "/healthz"), ("status", "200"))] == 2
    assert moved[(("method", "GET"), ("route", "/issues/{slug}"), ("status", "404"))] == 1
    assert moved[(("method", "GET"), ("route", "unmatched"), ("status", "404"))] == 1


def test_inbound_events_are_counted_by_kind_channel_and_result(scrape, settings, engine):
    before = scrape()
    done = [inbound.receive((CORPUS / name).read_bytes(), settings=settings, engine=engine)
            for name in ("garbage.eml", "postfix-dsn-user-unknown.eml", "out-of-office.eml")]
    after = scrape()
    for received in done:
        labels = {"kind": str(received.kind), "channel": "pipe", "result": str(received.stored_as or "recorded")}
        expected = sum(1 for r in done if (str(r.kind), str(r.stored_as or "recorded"))
                       == (labels["kind"], labels["result"]))
        name = "newsletter_inbound_events_total"
        assert total(after, name, **labels) - total(before, name, **labels) == expected, labels


def _counts(engine, cid) -> dict[str, int]:
    with transaction(engine) as s:
        return dict(s.execute(select(Delivery.status, func.count()).where(Delivery.campaign_id == cid)
                              .group_by(Delivery.status)).all())


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.add(int(entry))
    return found


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_campaign_sent_by_forked_workers_moves_the_counters_by_what_was_recorded(
        scrape, settings, engine, monkeypatch, smtp_sink, start_worker, tmp_path):
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_sink.url)
    monkeypatch.setenv("NEWSLETTER_BATCH_SIZE", "10")
    monkeypatch.setenv("NEWSLETTER_SMTP_CONNECTIONS", "1")
    get_settings.cache_clear()
    smtp_sink.reject = {"reader000003@example.com": (550, "5.1.1 No such user"),
                        "reader000007@example.com": (554, "5.7.1 Message refused by policy")}
    before = scrape()
    cid = seed_campaign(engine, 30, batch_size=10)
    enqueue_campaign(cid, 3)
    worker = start_worker(forks=2)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with transaction(engine) as s:
            if s.get(Campaign, cid).status == "sent":
                break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the campaign did not finish:\n{worker.log()}")
    after = scrape()

    recorded = _counts(engine, cid)
    assert recorded == {"sent": 28, "bounced": 1, "failed": 1}
    name = "newsletter_messages_total"
    moved = {outcome: total(after, name, outcome=outcome) - total(before, name, outcome=outcome)
             for outcome in ("sent", "bounced", "failed", "retry")}
    assert moved == {"sent": 28, "bounced": 1, "failed": 1, "retry": 0}
    assert total(after, name, outcome="bounced", reply_class="bad_address") - total(
        before, name, outcome="bounced", reply_class="bad_address") == 1
    assert total(after, name, outcome="failed", reply_class="policy") - total(
        before, name, outcome="failed", reply_class="policy") == 1
    smtp = "newsletter_smtp_seconds_count"
    assert total(after, smtp) - total(before, smtp) == 30
    claims = "newsletter_batch_claim_seconds_count"
    assert total(after, claims) - total(before, claims) >= 3

    # The sends were counted in the worker's forked children, not in this process nor
    # in the worker's main process: their files alone hold all 30.
    children = _children(worker.proc.pid)
    assert children, worker.log()
    theirs = tmp_path / "children-metrics"
    theirs.mkdir()
    folder = Path(os.environ[ENV])
    for path in folder.glob("counter_*.db"):
        if int(path.stem.rsplit("_", 1)[1]) in children:
            shutil.copy(path, theirs / path.name)
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(theirs))
    from_children = samples(generate_latest(registry).decode())
    assert sum(total(from_children, name, outcome=o) for o in ("sent", "bounced", "failed")) == 30


def test_campaigns_in_flight_are_read_at_scrape_time(scrape, engine):
    cid = seed_campaign(engine, 12, batch_size=5)
    found = scrape()
    assert total(found, "newsletter_campaign_deliveries", campaign=str(cid), state="waiting") == 12
    assert total(found, "newsletter_campaign_progress_ratio", campaign=str(cid)) == 0
    assert total(found, "newsletter_deliveries_waiting") == 12
    assert total(found, "newsletter_up", service="database") == 1
    assert total(found, "newsletter_up", service="broker") == 1
    assert ("newsletter_broker_queue_length", ()) in found


def test_the_metrics_are_made_once_when_many_threads_reach_them_at_once(monkeypatch):
    """A send task's SMTP connection threads count their first messages at the same time."""
    import threading

    from mailer.core import metrics

    monkeypatch.setattr(metrics, "_made", [])
    from prometheus_client import REGISTRY

    # Made afresh, as in a new process: this process's earlier ones leave the registry.
    for collector in {c for n, c in REGISTRY._names_to_collectors.items() if n.startswith("newsletter_")}:
        REGISTRY.unregister(collector)
    errors, start = [], threading.Barrier(8)

    def count():
        start.wait()
        try:
            metrics.message("sent", "accepted")
        except Exception as err:  # noqa: BLE001 - what the test looks for
            errors.append(err)

    threads = [threading.Thread(target=count) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(metrics._made) == 1


def test_the_webhook_backlog_is_read_at_scrape_time(scrape, engine):
    """An endpoint that is down shows as deliveries waiting and an oldest age that grows,
    long before they give up."""
    from datetime import timedelta

    from mailer.core.clock import utcnow
    from mailer.models import WebhookDelivery
    from mailer.operations import webhooks

    assert total(scrape(), "newsletter_webhook_deliveries", state="waiting") == 0
    with transaction(engine) as s:
        endpoint = webhooks.add(s, url="https://hooks.example.com/in", events=["subscriber.unsubscribed"])
        now = utcnow()
        for n, (status, age) in enumerate([("pending", 600), ("pending", 5), ("failed", 9000), ("delivered", 9000)]):
            s.add(WebhookDelivery(endpoint_id=endpoint.id, event_id=f"e{n}", message_id=f"m{n}",
                                  event_type="subscriber.unsubscribed", body="{}", status=status,
                                  created_at=now - timedelta(seconds=age), next_attempt_at=now))
    found = scrape()
    assert total(found, "newsletter_webhook_deliveries", state="waiting") == 2
    assert total(found, "newsletter_webhook_deliveries", state="failed") == 1
    assert 600 <= total(found, "newsletter_webhook_oldest_waiting_seconds") < 900
