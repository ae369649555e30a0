"""Send-rate limits, per-domain concurrency caps and backoff, against the real Redis and
real SMTP replies. Nothing here asserts wall-clock timings: limits are checked by
counting what landed in each window or how many sends were in flight at once, and
pauses by recording what a fake ``sleep`` was asked to do."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import redis

from mailer.ratelimit import (
    Backoff,
    FileDomainSlots,
    FileRateLimiter,
    LocalRateLimiter,
    NoDomainCap,
    NoLimit,
    RedisDomainSlots,
    RedisRateLimiter,
    domain_slots_for,
    limiter_for,
)
from mailer.sending import drain
from tests.support.delivery import (
    assert_counters_match,
    config,
    received,
    transport_for,
)
from tests.support.seed import seed_campaign

pytestmark = pytest.mark.timeout(120)


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def window_counts(client, prefix: str) -> dict[int, int]:
    return {int(k.decode().rsplit(":", 1)[1]): int(client.get(k)) for k in client.scan_iter(f"{prefix}:*")}


# --- the global send rate --------------------------------------------------------------


def test_local_limiter_spaces_messages_evenly():
    t = FakeTime()
    limiter = LocalRateLimiter(10, clock=t.clock, sleep=t.sleep)
    for _ in range(5):
        limiter.wait()
    assert t.sleeps == [0.1, 0.1, 0.1, 0.1]


def test_redis_limiter_with_a_fake_clock_fills_one_window_then_waits(redis_url):
    client = redis.Redis.from_url(redis_url)
    t = FakeTime(1000.25)
    limiter = RedisRateLimiter(client, 3, key="t:rate", clock=t.clock, sleep=t.sleep)
    for _ in range(7):
        limiter.wait()
    assert t.sleeps == [0.75, 1.0]  # to the start of window 1001, then of 1002
    assert window_counts(client, "t:rate") == {1000: 3, 1001: 3, 1002: 1}


def test_redis_limiter_under_one_message_per_second_uses_longer_windows(redis_url):
    client = redis.Redis.from_url(redis_url)
    t = FakeTime(1000.0)
    limiter = RedisRateLimiter(client, 0.5, key="t:slow", clock=t.clock, sleep=t.sleep)
    for _ in range(3):
        limiter.wait()
    assert t.sleeps == [2.0, 2.0]


def _acquire_many(url: str, n: int, rate: float, key: str) -> None:
    limiter = RedisRateLimiter(redis.Redis.from_url(url), rate, key=key)
    for _ in range(n):
        limiter.wait()


def test_redis_limiter_is_shared_by_two_processes(redis_url):
    """Two processes, Redis's own clock: no one-second window ever holds more than the
    rate, and every acquisition is counted in exactly one window."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_acquire_many, args=(redis_url, 30, 20, "t:shared")) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    counts = window_counts(redis.Redis.from_url(redis_url), "t:shared")
    assert sum(counts.values()) == 60
    assert max(counts.values()) <= 20
    assert len(counts) >= 3  # 60 messages at 20 per window need at least three windows


def test_limiter_for_picks_redis_for_a_redis_broker(redis_url, tmp_path):
    assert isinstance(limiter_for(0, redis_url), NoLimit)
    assert isinstance(limiter_for(5, "filesystem://"), LocalRateLimiter)
    assert isinstance(limiter_for(5, "filesystem://", tmp_path), FileRateLimiter)
    assert isinstance(limiter_for(5, redis_url, tmp_path), RedisRateLimiter)


def _reserve_many(path: str, n: int, out) -> None:
    # A clock that stands still: every reservation must get a slot of its own, so the
    # delays handed out over all processes are 0, 1, 2, ... intervals, none twice.
    limiter = FileRateLimiter(path, 10, clock=lambda: 1000.0, sleep=lambda _s: None)
    out.put([round(limiter.reserve(), 6) for _ in range(n)])


def test_file_limiter_is_shared_by_the_processes_of_one_machine(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_reserve_many, args=(str(tmp_path / "rate"), 25, out)) for _ in range(2)]
    for p in procs:
        p.start()
    delays = sorted(out.get(timeout=60) + out.get(timeout=60))
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert delays == [round(i * 0.1, 6) for i in range(50)]


def test_file_limiter_ignores_a_stale_instant(tmp_path):
    (tmp_path / "rate").write_text("99999999999.0")  # far ahead: a clock that went back, or garbage
    limiter = FileRateLimiter(tmp_path / "rate", 10, clock=lambda: 1000.0)
    assert limiter.reserve() == 0.0 and limiter.reserve() == pytest.approx(0.1)
    (tmp_path / "rate").write_text("not a number")
    assert FileRateLimiter(tmp_path / "rate", 10, clock=lambda: 1000.0).reserve() == 0.0


# --- per-domain concurrency ------------------------------------------------------------


def test_redis_domain_slots_cap_and_expire(redis_url):
    client = redis.Redis.from_url(redis_url)
    t = FakeTime()
    slots = RedisDomainSlots(client, 2, ttl=60, key="t:dom", clock=t.clock, sleep=t.sleep)
    a = slots.try_acquire("Gmail.com")
    b = slots.try_acquire("gmail.com")
    assert a and b
    assert slots.try_acquire("gmail.com") is None
    assert slots.try_acquire("yahoo.com"), "another domain has its own slots"
    slots.release("gmail.com", a)
    c = slots.try_acquire("gmail.com")
    assert c and slots.try_acquire("gmail.com") is None
    # The holders die without releasing: after the ttl their slots are free again.
    t.now += 61
    assert slots.try_acquire("gmail.com") and slots.try_acquire("gmail.com")
    assert slots.try_acquire("gmail.com") is None


def _max_in_flight(slots, threads: int = 4, rounds: int = 15) -> int:
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def work():
        for _ in range(rounds):
            with slots.hold("example.com"):
                with lock:
                    state["now"] += 1
                    state["max"] = max(state["max"], state["now"])
                time.sleep(0.002)  # hold the slot a little, so the threads overlap
                with lock:
                    state["now"] -= 1

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join(60)
    return state["max"]


def test_redis_domain_slots_hold_at_most_the_limit_at_once(redis_url):
    slots = RedisDomainSlots(redis.Redis.from_url(redis_url), 2, key="t:hold")
    assert _max_in_flight(slots) == 2
    assert redis.Redis.from_url(redis_url).zcard("t:hold:example.com") == 0, "every slot was given back"


def test_file_domain_slots_hold_at_most_the_limit_at_once(tmp_path):
    assert _max_in_flight(FileDomainSlots(tmp_path, 2)) == 2
    assert _max_in_flight(FileDomainSlots(tmp_path, 1)) == 1


def test_file_domain_slot_of_a_killed_process_frees_itself(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from mailer.ratelimit import FileDomainSlots;"
         f"fd = FileDomainSlots(Path({str(tmp_path)!r}), 1).try_acquire('example.com');"
         "print('held' if fd is not None else 'no', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        slots = FileDomainSlots(tmp_path, 1)
        assert slots.try_acquire("example.com") is None
    finally:
        holder.kill()
        holder.wait(10)
    fd = slots.try_acquire("example.com")
    assert fd is not None
    slots.release("example.com", fd)


def test_domain_slots_for_settings(tmp_path, redis_url):
    assert isinstance(domain_slots_for(0, redis_url, tmp_path), NoDomainCap)
    assert isinstance(domain_slots_for(3, redis_url, tmp_path), RedisDomainSlots)
    assert isinstance(domain_slots_for(3, "filesystem://", tmp_path), FileDomainSlots)


# --- in the engine ---------------------------------------------------------------------


def test_engine_domain_cap_is_global_across_senders(engine, tmp_path, smtp_sink):
    """One shared counter around every sender's connection: with a cap of 1, the relay
    never receives two messages for the domain at once, although three senders run."""
    cid = seed_campaign(engine, 60, batch_size=10)
    smtp_sink.delay = 0.005
    slots = FileDomainSlots(tmp_path / "slots", 1)
    threads = [threading.Thread(target=drain, args=(engine, cid),
                                kwargs=dict(transport=transport_for(smtp_sink), cfg=config(worker=f"w{i}"), slots=slots))
               for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert smtp_sink.max_in_flight == 1
    assert len(received(smtp_sink)) == 60
    assert assert_counters_match(engine, cid) == {"sent": 60}


def test_without_a_cap_senders_overlap(engine, smtp_sink):
    """The control for the test above: the same three senders without a cap do overlap."""
    cid = seed_campaign(engine, 60, batch_size=10)
    smtp_sink.delay = 0.005
    threads = [threading.Thread(target=drain, args=(engine, cid),
                                kwargs=dict(transport=transport_for(smtp_sink), cfg=config(worker=f"w{i}")))
               for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert smtp_sink.max_in_flight > 1
    assert assert_counters_match(engine, cid) == {"sent": 60}


def test_engine_respects_the_shared_rate_limit(engine, redis_url, smtp_sink):
    """With a fake clock that moves only when the engine sleeps, 25 messages at 10 per
    second land 10, 10 and 5 in three windows."""
    client = redis.Redis.from_url(redis_url)
    t = FakeTime(5000.0)
    limiter = RedisRateLimiter(client, 10, key="t:engine", clock=t.clock, sleep=t.sleep)
    cid = seed_campaign(engine, 25, batch_size=10)
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(), limiter=limiter)
    assert window_counts(client, "t:engine") == {5000: 10, 5001: 10, 5002: 5}
    assert assert_counters_match(engine, cid) == {"sent": 25}


def test_repeated_421_and_451_make_the_backoff_grow(engine, smtp_sink):
    """RFC 5321 §4.2.1: 4yz asks us to try later. Each temporary refusal in a row doubles
    the pause before the next message; an accepted one halves it."""
    for i in range(1, 6):
        code, text = (421, "4.7.0 Too many connections, slow down") if i % 2 else (451, "4.3.2 Try again later")
        smtp_sink.reject[f"reader{i:06d}@example.com"] = (code, text)
    cid = seed_campaign(engine, 8, batch_size=50)
    pauses: list[float] = []
    backoff = Backoff(floor=0.05, ceiling=10.0, sleep=pauses.append)
    drain(engine, cid, transport=transport_for(smtp_sink), cfg=config(retry_base_seconds=3600), backoff=backoff)
    # reader0 accepted (no pause), readers 1-5 refused: pauses before readers 2..6 grow,
    # then reader 6 is accepted and the pause before reader 7 is halved.
    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 0.4]
    with_reply = assert_counters_match(engine, cid)
    assert with_reply == {"sent": 3, "queued": 5}
    assert received(smtp_sink) == Counter({f"reader{i:06d}@example.com": 1 for i in (0, 6, 7)})
