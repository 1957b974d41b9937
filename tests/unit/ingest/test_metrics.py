"""ingest's batched histogram observations expose exactly what one observe per value would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from services.ingest.metrics import observe_many

BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
AMOUNTS = [0.0, 0.01, 0.0100001, 0.05, 0.3, 0.3, 1.0, 59.9, 60.0, 61.0, 1e9, 0.02]


def exposition(observe) -> list[tuple[str, dict, float]]:
    registry = CollectorRegistry()
    histogram = Histogram("latency_seconds", "latency", buckets=BUCKETS, registry=registry)
    observe(histogram)
    samples = [s for m in registry.collect() for s in m.samples]
    return [(s.name, s.labels, s.value) for s in samples if "created" not in s.name]


def test_observe_many_equals_observe_per_value():
    """Same bucket counts (bounds inclusive, +Inf included), count and sum."""
    one_by_one = exposition(lambda h: [h.observe(a) for a in AMOUNTS])
    batched = exposition(lambda h: observe_many(h, AMOUNTS))
    assert batched == one_by_one
    assert ("latency_seconds_count", {}, len(AMOUNTS)) in batched


def test_nothing_observed_changes_nothing():
    """An empty batch leaves count and sum at zero."""
    assert exposition(lambda h: observe_many(h, [])) == exposition(lambda h: None)
