"""How fast, and how many at once: send-rate limits, per-domain concurrency caps, backoff.

- A global send rate (``NEWSLETTER_RATE_LIMIT`` messages per second over every worker):
  fixed windows counted in Redis, so every worker on every machine shares one budget;
  without Redis (the embedded setup, one machine) a ``flock``-ed file that the worker
  processes of the machine share.
- A per-recipient-domain concurrency cap (``NEWSLETTER_DOMAIN_CONCURRENCY``): at most N
  messages to one domain in flight at once, over every worker. In Redis a sorted set
  per domain whose members expire, so the slot of a worker killed mid-send frees itself;
  in the embedded setup ``flock``-ed slot files, which the kernel unlocks when the
  holding process dies.
- ``Backoff`` slows a worker down when the relay answers 421/4xx, instead of hammering
  it (double the pause on a temporary refusal, halve it on success).

Redis work is done in Lua scripts: each acquisition is one atomic round trip, and the
time is the Redis server's (``TIME``), so workers whose clocks disagree still share
one window.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol


class RateLimiter(Protocol):
    def wait(self) -> None: ...


class NoLimit:
    def wait(self) -> None:
        return None


class LocalRateLimiter:
    """At most ``rate`` messages per second in this process."""

    def __init__(self, rate: float, clock=time.monotonic, sleep=time.sleep):
        self.interval = 1.0 / rate
        self.clock, self.sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            if self._next > now:
                self.sleep(self._next - now)
                now = self._next
            self._next = max(self._next, now) + self.interval


class FileRateLimiter:
    """At most ``rate`` messages per second over every worker process of this machine
    (the embedded setup has no Redis): the next free instant is kept in one file that
    each process updates under an exclusive ``flock``, so the budget is shared, not
    multiplied by the number of workers."""

    # A stored instant this far ahead cannot come from waiting workers: the wall clock
    # went back (or the file is stale); start afresh instead of sleeping that long.
    STALE_AFTER = 60.0

    def __init__(self, path: Path, rate: float, clock=time.time, sleep=time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.path, self.interval, self.clock, self.sleep = Path(path), 1.0 / rate, clock, sleep
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def reserve(self) -> float:
        """Take the next free instant; returns how long to wait for it (0.0: go now)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 64, 0)
            now = self.clock()
            try:
                free = float(raw or b"0")
            except ValueError:
                free = 0.0
            if free - now > self.STALE_AFTER:
                free = now
            slot = max(free, now)
            data = repr(slot + self.interval).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            return slot - now
        finally:
            os.close(fd)  # drops the lock

    def wait(self) -> None:
        delay = self.reserve()
        if delay > 0:
            self.sleep(delay)


# KEYS[1] key prefix; ARGV: capacity, window length (ms), now (ms, or -1: Redis's clock).
# Returns 0 when granted, else the milliseconds until the next window. A refused call
# does not count, so a window's key holds exactly the messages sent in it (and a test
# can check the limit by reading the keys).
_RATE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local now_ms = tonumber(ARGV[3])
if now_ms < 0 then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window = math.floor(now_ms / window_ms)
local key = KEYS[1] .. ':' .. window
local used = tonumber(redis.call('GET', key) or '0')
if used < capacity then
  redis.call('INCR', key)
  redis.call('PEXPIRE', key, window_ms * 5)
  return 0
end
return (window + 1) * window_ms - now_ms
"""


class RedisRateLimiter:
    """At most ``rate`` messages per second over every worker sharing the Redis server.

    Fixed windows of one second holding ``floor(rate)`` messages (a rate under 1 gets
    longer windows of one message). Up to twice the rate can pass around a window's
    edge; relays state their limits per minute or hour, where that averages out. The
    window keys expire by themselves. ``clock`` (seconds) replaces Redis's clock in tests.
    """

    def __init__(self, client, rate: float, key: str = "newsletter:rate", sleep=time.sleep,
                 clock: Callable[[], float] | None = None):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.client, self.key, self.sleep, self.clock = client, key, sleep, clock
        if rate >= 1:
            self.capacity, self.window_ms = int(rate), 1000
        else:
            self.capacity, self.window_ms = 1, int(math.ceil(1000 / rate))
        self._script = client.register_script(_RATE_SCRIPT)

    def try_acquire(self) -> float:
        """0.0 when this message may go now, else the seconds to wait before asking again."""
        now_ms = -1 if self.clock is None else int(self.clock() * 1000)
        wait_ms = int(self._script(keys=[self.key], args=[self.capacity, self.window_ms, now_ms]))
        return wait_ms / 1000.0

    def wait(self) -> None:
        while True:
            delay = self.try_acquire()
            if not delay:
                return
            self.sleep(delay)


# --- per-domain concurrency ------------------------------------------------------------


class DomainSlots(Protocol):
    def hold(self, domain: str) -> contextlib.AbstractContextManager[None]:
        """Wait for one of the domain's slots, hold it for the ``with`` block."""


class NoDomainCap:
    # A nullcontext can be entered again and again: no generator made per message.
    _NOTHING = contextlib.nullcontext()

    def hold(self, domain: str) -> contextlib.AbstractContextManager[None]:
        return self._NOTHING


# KEYS[1] the domain's sorted set (member: holder, score: expiry in ms).
# ARGV: limit, ttl (ms), holder, now (ms, or -1: Redis's clock). Returns 1 when taken.
_SLOT_ACQUIRE = """
local now_ms = tonumber(ARGV[4])
if now_ms < 0 then
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"""


class _PolledSlots:
    """Waits for a slot by asking again, with a growing pause: ``try_acquire`` gives a
    holder (or None when every slot is taken), ``release`` gives it back."""

    poll: float
    sleep: Callable[[float], None]

    @contextlib.contextmanager
    def hold(self, domain: str) -> Iterator[None]:
        delay = self.poll
        while (holder := self.try_acquire(domain)) is None:
            self.sleep(delay)
            delay = min(delay * 2, 0.5)
        try:
            yield
        finally:
            self.release(domain, holder)


class RedisDomainSlots(_PolledSlots):
    """At most ``limit`` messages in flight to one recipient domain over every worker.

    A slot carries an expiry (``ttl``, longer than any one SMTP transaction can take),
    so a slot whose worker was killed mid-send is free again after ``ttl`` without
    anyone cleaning up. ``clock`` (seconds) replaces Redis's clock in tests."""

    def __init__(self, client, limit: int, *, ttl: float = 120.0, key: str = "newsletter:domain",
                 poll: float = 0.02, sleep=time.sleep, clock: Callable[[], float] | None = None):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.client, self.limit, self.ttl_ms, self.key = client, limit, int(ttl * 1000), key
        self.poll, self.sleep, self.clock = poll, sleep, clock
        self._acquire = client.register_script(_SLOT_ACQUIRE)

    def _key(self, domain: str) -> str:
        return f"{self.key}:{domain.lower()}"

    def try_acquire(self, domain: str) -> str | None:
        """A holder id when a slot was free, else None."""
        holder = uuid.uuid4().hex
        now_ms = -1 if self.clock is None else int(self.clock() * 1000)
        taken = self._acquire(keys=[self._key(domain)], args=[self.limit, self.ttl_ms, holder, now_ms])
        return holder if int(taken) else None

    def release(self, domain: str, holder: str) -> None:
        self.client.zrem(self._key(domain), holder)


class FileDomainSlots(_PolledSlots):
    """The embedded setup's cap, shared by the worker processes of one machine: slot
    ``i`` of a domain is an exclusive ``flock`` on ``folder/<domain hash>.<i>``. The
    kernel drops the lock of a process that dies, so a killed worker's slot frees
    itself at once. ``flock`` locks belong to an open file, so threads of one process
    exclude each other too."""

    def __init__(self, folder: Path, limit: int, *, poll: float = 0.02, sleep=time.sleep):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.folder, self.limit, self.poll, self.sleep = Path(folder), limit, poll, sleep
        self.folder.mkdir(parents=True, exist_ok=True)

    def try_acquire(self, domain: str) -> int | None:
        """An open, locked file descriptor when a slot was free, else None."""
        stem = hashlib.sha256(domain.lower().encode("utf-8")).hexdigest()[:24]
        for i in range(self.limit):
            fd = os.open(self.folder / f"{stem}.{i}", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        return None

    @staticmethod
    def release(domain: str, fd: int) -> None:
        os.close(fd)  # closing the last descriptor of the open file drops the lock


# --- backoff ---------------------------------------------------------------------------


class Backoff:
    """A pause between messages that grows on temporary refusals and shrinks on success."""

    def __init__(self, floor: float = 0.05, ceiling: float = 10.0, sleep=time.sleep):
        self.floor, self.ceiling, self.sleep = floor, ceiling, sleep
        self.delay = 0.0

    def refused(self) -> None:
        self.delay = min(self.ceiling, max(self.floor, self.delay * 2))

    def accepted(self) -> None:
        self.delay = self.delay / 2 if self.delay > self.floor else 0.0

    def pause(self) -> None:
        if self.delay:
            self.sleep(self.delay)


# --- from settings ---------------------------------------------------------------------


def _is_redis(broker_url: str) -> bool:
    return broker_url.startswith(("redis://", "rediss://"))


def limiter_for(rate: float, broker_url: str, folder: Path | None = None) -> RateLimiter:
    """Redis-shared when the broker is Redis (production, several machines); otherwise
    shared by the processes of this machine through a file under ``folder``, or, with
    no folder, this process only."""
    if rate <= 0:
        return NoLimit()
    if _is_redis(broker_url):
        import redis

        return RedisRateLimiter(redis.Redis.from_url(broker_url), rate)
    if folder is not None:
        return FileRateLimiter(Path(folder) / "send-rate", rate)
    return LocalRateLimiter(rate)


def domain_slots_for(limit: int, broker_url: str, folder: Path, *, ttl: float = 120.0) -> DomainSlots:
    """Redis-shared when the broker is Redis, slot files under ``folder`` otherwise."""
    if limit <= 0:
        return NoDomainCap()
    if _is_redis(broker_url):
        import redis

        return RedisDomainSlots(redis.Redis.from_url(broker_url), limit, ttl=ttl)
    return FileDomainSlots(folder, limit)
