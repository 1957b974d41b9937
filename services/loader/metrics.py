"""Every Prometheus metric of the loader (one module, explicit buckets in seconds)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter(
    "tagstream_loader_records_total", "Records processed in committed batches, by topic.", ["topic"]
)
ROWS = Counter("tagstream_loader_rows_total", "Rows acknowledged by ClickHouse, by table.", ["table"])
REJECTED = Counter(
    "tagstream_loader_rejected_total", "Records sent to dead letters, by step and reason.", ["step", "reason"]
)
COPIES = Counter(
    "tagstream_loader_copies_dropped_total",
    "Byte-identical copies of a recent record (an upstream replay) not loaded again, by topic.",
    ["topic"],
)
BATCHES = Counter("tagstream_loader_batches_total", "Batches committed, by table.", ["table"])
SINK_RETRIES = Counter("tagstream_loader_sink_retries_total", "Batches retried because ClickHouse was away.")
BUFFERED = Gauge("tagstream_loader_buffered_records", "Records consumed and not yet committed.")
FLUSH_SECONDS = Histogram(
    "tagstream_loader_flush_seconds",
    "Time to convert, insert and commit one batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
QUERY_SECONDS = Histogram(
    "tagstream_loader_query_seconds",
    "Analytics queries served over HTTP.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
