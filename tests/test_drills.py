"""Fault drills: real worker processes, a real SMTP server counting what arrives, and a
fault in the middle of a campaign. On PostgreSQL + Redis (a private cluster and server,
so they can be restarted) and, where it applies, on the embedded default. Each drill's
figures (delivered, duplicates, seconds) are printed at the end of the run."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import text

from mailer.core.clock import utcnow
from mailer.core.config import get_settings
from mailer.core.db import make_engine, transaction
from mailer.dispatch import enqueue_campaign
from mailer.migrate import upgrade
from mailer.models import Campaign
from tests.support.cli import cli, start_cli
from tests.support.delivery import assert_counters_match, received
from tests.support.drills import PostgresCluster, report
from tests.support.example import EXAMPLE
from tests.support.seed import seed_campaign, seed_issue, seed_list

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster():
    found = PostgresCluster.create()
    try:
        yield found
    finally:
        found.drop()


class Stack:
    """What the worker processes of one drill talk to."""

    def __init__(self, kind: str, url: str, broker: str, monkeypatch, tmp_path, sink, **settings: str):
        self.kind, self.url, self.sink = kind, url, sink
        upgrade(url)
        for key in list(os.environ):
            if key.startswith("NEWSLETTER_"):
                monkeypatch.delenv(key)
        env = {"VAR_DIR": str(tmp_path / "var"), "DATABASE_URL": url, "BROKER_URL": broker,
               "SMTP_URL": f"smtp://127.0.0.1:{sink.port}", "SMTP_TIMEOUT": "5",
               "FROM": "Weekly China AI <news@example.com>", "BASE_URL": "https://news.example.com",
               "LEASE_SECONDS": "5", "SWEEP_SECONDS": "1", "RETRY_BASE_SECONDS": "1", "BATCH_SIZE": "25",
               "SMTP_CONNECTIONS": "4",
               **{k.upper(): v for k, v in settings.items()}}
        for k, v in env.items():
            monkeypatch.setenv(f"NEWSLETTER_{k}", v)
        get_settings.cache_clear()
        self.engine = make_engine(url)
        self.lease = float(env["LEASE_SECONDS"])
        self.connections = int(env["SMTP_CONNECTIONS"])
        self.window = get_settings().send_window  # the default unless a drill sets SEND_WINDOW

    def start(self, n: int) -> int:
        cid = seed_campaign(self.engine, n, batch_size=25)
        enqueue_campaign(cid, n // 25 + 1)
        return cid

    def status(self, cid: int) -> str:
        with transaction(self.engine) as s:
            return s.get(Campaign, cid).status

    def wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def sent(self, cid: int, timeout: float) -> None:
        self.wait(lambda: self.status(cid) == "sent", timeout, f"campaign {cid} sent ({self.kind})")

    def check(self, drill: str, cid: int, n: int, t0: float, *, max_duplicates: int = 0) -> Counter:
        got = received(self.sink)
        duplicates = sum(c - 1 for c in got.values())
        report(drill, stack=self.kind, subscribers=n, delivered=len(got), duplicates=duplicates,
               seconds=round(time.monotonic() - t0, 1))
        assert len(got) == n, "every subscriber got the issue"
        assert duplicates <= max_duplicates and all(c <= 2 for c in got.values()), got.most_common(3)
        assert duplicates <= self.repeats(cid), "every message sent twice is one the engine counts as a repeat"
        counts = assert_counters_match(self.engine, cid)
        assert counts == {"sent": n}
        return got

    def repeats(self, cid: int) -> int:
        with transaction(self.engine) as s:
            return s.execute(text("SELECT COALESCE(SUM(repeats), 0) FROM delivery WHERE campaign_id = :c"),
                             {"c": cid}).scalar()

    def close(self) -> None:
        self.engine.dispose()
        get_settings.cache_clear()


@pytest.fixture(params=["embedded", "postgres+redis"])
def stack(request, monkeypatch, tmp_path, smtp_sink):
    """The embedded default, or a private PostgreSQL cluster and Redis server (the
    drills that restart them need their own)."""
    if request.param == "embedded":
        url, broker = request.getfixturevalue("sqlite_url"), "filesystem://"
    else:
        url, broker = request.getfixturevalue("cluster").new_database(), request.getfixturevalue("private_redis").url
    made = Stack(request.param, url, broker, monkeypatch, tmp_path, smtp_sink)
    yield made
    made.close()


@pytest.fixture
def pg_stack(monkeypatch, tmp_path, smtp_sink, cluster, private_redis):
    def make(**settings):
        return Stack("postgres+redis", cluster.new_database(), private_redis.url, monkeypatch, tmp_path, smtp_sink,
                     **settings)
    return make


def test_sigkill_of_one_of_two_workers_without_beat(stack, smtp_sink, start_worker):
    """No beat: the surviving worker takes over the dead one's batch when its lease runs
    out. At most one window (NEWSLETTER_SEND_WINDOW, the default here) per killed
    connection is sent twice: the victim had NEWSLETTER_SMTP_CONNECTIONS of them."""
    smtp_sink.delay = 0.01
    victim = start_worker(name="victim")
    start_worker(name="survivor")
    n = 300
    t0 = time.monotonic()
    cid = stack.start(n)
    stack.wait(lambda: len(smtp_sink.messages) >= 40, 60, "sending to begin")
    victim.kill()
    killed_at = time.monotonic()
    stack.sent(cid, timeout=stack.lease + 30 + n * smtp_sink.delay * 2)
    report("sigkill: seconds from the kill to the end", stack=stack.kind, seconds=round(time.monotonic() - killed_at, 1))
    stack.check("two workers, one SIGKILLed, no beat", cid, n, t0, max_duplicates=stack.connections * stack.window)


def test_relay_down_for_a_minute_then_back(pg_stack, smtp_sink, start_worker):
    """No beat here either: the worker keeps trying on its own; the campaign's status shows
    the outage while it lasts; every try is recorded; nobody is lost or sent twice."""
    stack = pg_stack()
    smtp_sink.stop()
    start_worker(name="w1")
    n = 100
    t0 = time.monotonic()
    cid = stack.start(n)
    down = stack.wait(lambda: _status_json(cid)["relay_down_since"], 30, "the outage to show in the status")
    outage = _status_json(cid)
    assert "cannot reach SMTP relay" in outage["relay_error"] and outage["eta_seconds"] is None
    time.sleep(max(0.0, 60 - (time.monotonic() - t0)))  # the relay stays away for a minute
    with transaction(stack.engine) as s:
        tries = s.execute(text("SELECT COUNT(*) FROM delivery WHERE campaign_id = :c AND last_reply LIKE "
                               "'%cannot reach SMTP relay%'"), {"c": cid}).scalar()
    assert tries >= 1 and down
    smtp_sink.start()
    stack.sent(cid, timeout=90)
    stack.check("relay down 60 s, then back", cid, n, t0)
    assert _status_json(cid)["relay_down_since"] is None


def test_redis_restarted_mid_campaign(pg_stack, private_redis, smtp_sink, start_worker):
    """Redis keeps nothing: every queued task is gone. Workers reconnect, the task in
    flight goes on, the next one is handed over when Redis is back; beat's sweep is the
    second net."""
    stack = pg_stack()
    smtp_sink.delay = 0.01
    start_worker(name="w1", beat=True)
    start_worker(name="w2")
    n = 400
    t0 = time.monotonic()
    cid = stack.start(n)
    stack.wait(lambda: len(smtp_sink.messages) >= 80, 60, "sending to begin")
    private_redis.restart()
    stack.sent(cid, timeout=180)
    stack.check("Redis restarted mid-campaign", cid, n, t0)


def test_postgresql_restarted_mid_campaign(pg_stack, cluster, smtp_sink, start_worker):
    """Every connection is cut: the outcome of each message already at the relay is
    written once the database is back, before the next message goes out."""
    stack = pg_stack(lease_seconds="30")
    smtp_sink.delay = 0.01
    start_worker(name="w1", beat=True)
    start_worker(name="w2")
    n = 400
    t0 = time.monotonic()
    cid = stack.start(n)
    stack.wait(lambda: len(smtp_sink.messages) >= 80, 60, "sending to begin")
    cluster.restart()
    stack.sent(cid, timeout=180)
    stack.check("PostgreSQL restarted mid-campaign", cid, n, t0)
    with transaction(stack.engine) as s:
        assert s.execute(text("SELECT COUNT(*) FROM delivery WHERE campaign_id = :c AND repeats > 0"),
                         {"c": cid}).scalar() == 0


def test_one_campaign_started_twice_at_once_with_two_beats(stack, smtp_sink, start_worker):
    """Two `newsletter send` of one issue at the same moment, and two beats dispatching a
    scheduled one: one campaign each, each subscriber gets each issue once."""
    start_worker(name="w1", beat=True, extra={"NEWSLETTER_DISPATCH_SECONDS": "1"})
    start_worker(name="w2", beat=True, extra={"NEWSLETTER_DISPATCH_SECONDS": "1"})
    n = 60
    t0 = time.monotonic()
    list_id = seed_list(stack.engine, n, list_name="china-ai-weekly")
    sends = [start_cli("send", EXAMPLE, "--list", "china-ai-weekly") for _ in range(2)]
    codes = sorted(p.wait(60) for p in sends)
    assert codes == [0, 2], [p.communicate() for p in sends]
    from mailer import schedules

    issue_id = seed_issue(stack.engine, slug="scheduled")
    with transaction(stack.engine) as s:
        scheduled = schedules.schedule_campaign(s, issue_id=issue_id, list_id=list_id,
                                                at=utcnow() + timedelta(seconds=3), now=utcnow()).id
    with transaction(stack.engine) as s:
        cids = s.execute(text("SELECT id FROM campaign ORDER BY id")).scalars().all()
    assert len(cids) == 2
    for cid in cids:
        stack.sent(cid, timeout=120)
    got = received(smtp_sink)
    report("started twice at once, two beats", stack=stack.kind, subscribers=n, delivered=sum(got.values()),
           duplicates=sum(c - 2 for c in got.values()), seconds=round(time.monotonic() - t0, 1))
    assert len(got) == n and set(got.values()) == {2}  # two issues, each once
    for cid in cids:
        assert assert_counters_match(stack.engine, cid) == {"sent": n}
    assert scheduled in cids


def test_a_relay_answering_421_for_a_while(stack, smtp_sink, start_worker):
    """The relay throttles (421) for a few seconds: the worker backs off (the pause
    between its tries grows), then recovers; every delivery ends sent, nobody is
    suppressed or failed."""
    smtp_sink.refuse_all = (421, "4.7.0 Try again later")
    start_worker(name="w1", extra={"NEWSLETTER_MAX_ATTEMPTS": "20"})
    n = 50
    t0 = time.monotonic()
    cid = stack.start(n)
    stack.wait(lambda: len(smtp_sink.rcpt_times) >= 8, 60, "tries against the throttling relay")
    time.sleep(max(0.0, 8 - (time.monotonic() - t0)))  # the throttling lasts a few seconds
    refused = list(smtp_sink.rcpt_times)
    smtp_sink.refuse_all = None
    stack.sent(cid, timeout=120)
    gaps = [b - a for a, b in zip(refused, refused[1:])]
    assert max(gaps[len(gaps) // 2:]) > 2 * max(min(gaps[:3]), 0.01), gaps  # it slowed down
    stack.check("relay answering 421 for a while", cid, n, t0)
    with transaction(stack.engine) as s:
        statuses = set(s.execute(text("SELECT status FROM subscriber")).scalars())
    assert statuses == {"active"}


def _status_json(cid: int) -> dict:
    result = cli("campaign", "status", cid, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
