"""Send-rate limits: one shared by every worker through Redis, or a local one.

Both are fixed one-second windows: cheap (one INCR per message), and exact enough
for "N messages per second" as relays state their limits. ``Backoff`` slows a worker
down when the relay answers 421/4xx, instead of hammering it (AIMD: double the pause
on a temporary refusal, halve it on success).
"""

from __future__ import annotations

import threading
import time
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


class RedisRateLimiter:
    """At most ``rate`` messages per second over every worker sharing the Redis server.
    The window key expires by itself, so nothing needs cleaning up."""

    def __init__(self, client, rate: float, key: str = "newsletter:rate", sleep=time.sleep, clock=time.time):
        self.client, self.rate, self.key = client, max(1, int(rate)), key
        self.sleep, self.clock = sleep, clock

    def wait(self) -> None:
        while True:
            now = self.clock()
            window = int(now)
            key = f"{self.key}:{window}"
            pipe = self.client.pipeline()
            pipe.incr(key)
            pipe.expire(key, 5)
            count = pipe.execute()[0]
            if count <= self.rate:
                return
            self.sleep(max(0.0, window + 1 - now))


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


def limiter_for(rate: float, broker_url: str) -> RateLimiter:
    """Redis-shared when the broker is Redis (production, several machines), local otherwise."""
    if rate <= 0:
        return NoLimit()
    if broker_url.startswith(("redis://", "rediss://")):
        import redis

        return RedisRateLimiter(redis.Redis.from_url(broker_url), rate)
    return LocalRateLimiter(rate)
