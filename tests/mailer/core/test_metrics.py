"""The send loop's batched metrics write what one write per message would have."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from mailer.core.metrics import LATENCY_BUCKETS, observe_many


def _samples(name: str, registry: CollectorRegistry) -> dict:
    """The histogram's samples, by suffix (_bucket, _count, _sum) and labels."""
    return {(s.name[len(name):], tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() if family.name == name for s in family.samples
            if not s.name.endswith("_created")}


def test_observe_many_equals_observing_one_by_one():
    amounts = [0.0, 0.0004, 0.001, 0.001000001, 0.0025, 0.07, 0.07, 3.0, 30.0, 31.5, 1e-9]
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    # Names of their own: the suite runs prometheus-client in multiprocess mode.
    a = Histogram("test_one_by_one", "h", buckets=LATENCY_BUCKETS, registry=one_by_one)
    b = Histogram("test_batched", "h", buckets=LATENCY_BUCKETS, registry=batched)
    for amount in amounts:
        a.observe(amount)
    observe_many(b, amounts[:4])
    observe_many(b, amounts[4:])
    observe_many(b, [])
    expected = _samples("test_one_by_one", one_by_one)
    assert expected[("_count", ())] == len(amounts)
    assert _samples("test_batched", batched) == expected


def test_observe_many_without_the_histograms_insides_observes_one_by_one():
    class Plain:  # a histogram whose internals changed: only observe() is relied on
        def __init__(self):
            self.seen = []

        def observe(self, amount):
            self.seen.append(amount)

    plain = Plain()
    observe_many(plain, [0.5, 0.1])
    assert plain.seen == [0.5, 0.1]
