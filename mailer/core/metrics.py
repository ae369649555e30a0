"""The service's Prometheus metrics, in prometheus-client's multiprocess mode: every
process (the web app, each forked Celery worker child, the inbound listener) writes its
own values into files under one folder, and a scrape of ``/metrics`` adds them up. That
is how a worker's sends show on the web app without a port per worker.

The folder is ``PROMETHEUS_MULTIPROC_DIR`` when set, else ``NEWSLETTER_METRICS_DIR``
(``var/metrics`` by default). prometheus-client picks its storage when it is first
imported, so it is imported here, lazily, after the variable is set; nothing else in the
service may import it first. Counters of processes that ended stay in their files (a
restarted worker does not lose what it sent); empty the folder when the whole deployment
starts, never while processes run.

Each value written goes through a lock, a check of the process id and a write into the
memory-mapped file: five of them per message (a counter and two histograms) were a
seventh of a send worker's CPU (py-spy, bench/send.py). The send loop therefore counts
into a ``Tally`` of its own and writes it once per window: a handful of writes for a
window of messages, the same totals."""

from __future__ import annotations

import bisect
import os
import threading
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds: an SMTP transaction on loopback takes a millisecond, a slow relay seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def directory() -> Path:
    """The folder this process writes its metrics into (made if missing)."""
    folder = os.environ.get(ENV)
    if not folder:
        from mailer.core.config import get_settings

        folder = str(get_settings().metrics_folder.resolve())
        os.environ[ENV] = folder  # before prometheus_client is imported: see the module docstring
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder)


@dataclass(frozen=True)
class _Metrics:
    messages: object
    batch_claim: object
    smtp: object
    rate_wait: object
    inbound: object
    web_requests: object


_made: list[_Metrics] = []
_making = threading.Lock()


def _metrics() -> _Metrics:
    """The metrics, made once per process. A send task's connection threads all reach
    here at their first message: made under a lock, as a second registration of the
    same names would raise."""
    if not _made:
        with _making:
            if not _made:
                _made.append(_make())
    return _made[0]


def _make() -> _Metrics:
    directory()
    from prometheus_client import Counter, Histogram, values

    if not getattr(values.ValueClass, "_multiprocess", False):
        # Imported before the folder was set: this process's values would stay in memory,
        # invisible to the scrape. Said loudly rather than lost quietly.
        warnings.warn("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set: "
                      "this process's metrics will not be scraped", RuntimeWarning, stacklevel=2)

    return _Metrics(
        messages=Counter("newsletter_messages", "Messages handed to the relay, by what became of them "
                         "(sent, failed, bounced, retry) and the class of the relay's reply",
                         ["outcome", "reply_class"]),
        batch_claim=Histogram("newsletter_batch_claim_seconds", "Time to claim a batch and read its recipients",
                              buckets=LATENCY_BUCKETS),
        smtp=Histogram("newsletter_smtp_seconds", "Time the relay took to take one message (SMTP transaction)",
                       buckets=LATENCY_BUCKETS),
        rate_wait=Histogram("newsletter_rate_limit_wait_seconds",
                            "Time a message waited for the send-rate budget and the backoff after 4xx replies",
                            buckets=(0, *LATENCY_BUCKETS)),
        inbound=Counter("newsletter_inbound_events", "Inbound messages and provider events handled, by kind, "
                        "channel and result", ["kind", "channel", "result"]),
        web_requests=Counter("newsletter_web_requests", "Web requests answered, by route and status",
                             ["route", "method", "status"]),
    )


# --- what the service records -------------------------------------------------------

def message(outcome: str, reply_class: str) -> None:
    """One message's fate: ``outcome`` a delivery status (or "retry"), ``reply_class``
    what the relay's reply was (accepted, bad_address, policy, permanent, transient,
    unreachable, invalid_message)."""
    _metrics().messages.labels(outcome, reply_class).inc()


@contextmanager
def timed(which: str):
    """Observe the time the block took on one histogram: "batch_claim", "smtp" or
    "rate_wait"."""
    started = time.perf_counter()
    try:
        yield
    finally:
        getattr(_metrics(), which).observe(time.perf_counter() - started)


class Tally:
    """What ``message`` and ``timed`` record, counted in memory by the one thread that
    owns it and written to the shared files by ``flush``: per window in the send loop,
    so the figures on /metrics lag by one window at most."""

    def __init__(self) -> None:
        self.messages: Counter[tuple[str, str]] = Counter()
        self.observed: dict[str, list[float]] = {}

    def message(self, outcome: str, reply_class: str) -> None:
        self.messages[(str(outcome), reply_class)] += 1

    def timed(self, which: str) -> "_Timed":
        return _Timed(self.observed.setdefault(which, []))

    def flush(self) -> None:
        if not self.messages and not self.observed:
            return
        made = _metrics()
        for (outcome, reply_class), n in self.messages.items():
            made.messages.labels(outcome, reply_class).inc(n)
        for which, amounts in self.observed.items():
            observe_many(getattr(made, which), amounts)
        self.messages.clear()
        self.observed.clear()


class _Timed:
    """``Tally.timed``'s block: a class, not a generator, as it runs twice per message."""

    __slots__ = ("amounts", "since")

    def __init__(self, amounts: list[float]):
        self.amounts = amounts

    def __enter__(self) -> None:
        self.since = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.amounts.append(time.perf_counter() - self.since)


def observe_many(histogram, amounts: list[float]) -> None:
    """``histogram.observe`` of each amount, with one write per bucket touched and one
    for the sum instead of two per amount. Reaches into prometheus-client's Histogram
    (``_upper_bounds``, ``_buckets``, ``_sum``, as ``observe`` itself uses them); without
    those it observes one by one (tests/mailer/core/test_metrics.py compares the two)."""
    bounds, buckets, total = (getattr(histogram, name, None) for name in ("_upper_bounds", "_buckets", "_sum"))
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:
            histogram.observe(amount)
        return
    counts = Counter(bisect.bisect_left(bounds, amount) for amount in amounts)  # the first bound >= amount
    for i, n in counts.items():
        buckets[i].inc(n)
    total.inc(sum(amounts))


def inbound(kind: str, channel: str, result: str) -> None:
    _metrics().inbound.labels(kind, channel, result).inc()


def web_request(route: str, method: str, status: int) -> None:
    _metrics().web_requests.labels(route, method, str(status)).inc()


# --- the scrape ---------------------------------------------------------------------

def exposition(*collectors) -> tuple[bytes, str]:
    """(body, content type) of a scrape: every process's values from the folder, and
    the given collectors' (values read at scrape time, e.g. from the database)."""
    folder = directory()
    _metrics()
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def gauge_family(name: str, documentation: str, labels: list[str], samples: list[tuple[list[str], float]]):
    """A gauge family for a scrape-time collector."""
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family
