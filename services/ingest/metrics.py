"""ingest's Prometheus metrics (all in one place; latency buckets in seconds)."""

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

RECORDS_IN = Counter("tagstream_ingest_records_in_total", "Raw records consumed", ["topic"])
RECORDS_OUT = Counter("tagstream_ingest_records_out_total", "Validated records produced", ["topic"])
DEDUPLICATED = Counter("tagstream_ingest_deduplicated_total", "Records dropped as duplicates", ["topic"])
DEAD_LETTERS = Counter("tagstream_ingest_dead_letters_total", "Records dead-lettered", ["step", "reason"])
BATCH_SECONDS = Histogram(
    "tagstream_ingest_batch_seconds",
    "Time to process, produce and commit one batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RECORD_LATENCY = Histogram(
    "tagstream_ingest_record_latency_seconds",
    "From a record's Kafka timestamp to its batch's commit",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
CONSUMER_LAG = Gauge(
    "tagstream_ingest_consumer_lag", "Records behind the high watermark", ["topic", "partition"]
)
DEDUPE_ENTRIES = Gauge("tagstream_ingest_dedupe_entries", "message_ids held for deduplication")
TRANSACTION_ABORTS = Counter("tagstream_ingest_transaction_aborts_total", "Batches aborted and retried")
DECLARED_EVENTS = Gauge(
    "tagstream_ingest_declared_events", "Custom events declared in the loaded definitions file"
)


@dataclass
class BatchCounts:
    """A batch's record counts, published once its transaction committed: one labelled ``inc``
    per batch instead of one per record (each takes a lock), and an aborted, replayed batch is
    not counted twice."""

    records_in: Tally[str] = field(default_factory=Tally)
    records_out: Tally[str] = field(default_factory=Tally)
    deduplicated: Tally[str] = field(default_factory=Tally)
    dead_letters: Tally[tuple[str, str]] = field(default_factory=Tally)

    def publish(self) -> None:
        for topic, n in self.records_in.items():
            RECORDS_IN.labels(topic).inc(n)
        for topic, n in self.records_out.items():
            RECORDS_OUT.labels(topic).inc(n)
        for topic, n in self.deduplicated.items():
            DEDUPLICATED.labels(topic).inc(n)
        for (step, reason), n in self.dead_letters.items():
            DEAD_LETTERS.labels(step, reason).inc(n)


def observe_many(histogram: Histogram, amounts: Iterable[float]) -> None:
    """``histogram.observe(a)`` for each amount (an unlabelled histogram): one ``inc`` per bucket
    touched instead of two locked ``inc`` per amount, a batch's record latencies at once. Falls
    back to ``observe`` if prometheus_client's histogram is not laid out as in 0.2x."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for amount in amounts:
            histogram.observe(amount)
        return
    # observe() puts an amount in the first bucket whose bound is >= it: bisect_left
    per_bucket: Tally[int] = Tally()
    added = 0.0
    for amount in amounts:
        per_bucket[bisect_left(bounds, amount)] += 1
        added += amount
    if per_bucket:
        total.inc(added)
    for index, n in per_bucket.items():
        buckets[index].inc(n)
