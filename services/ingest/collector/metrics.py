"""Every Prometheus metric of the collector (one module, explicit buckets in seconds)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("collector_requests_total", "HTTP requests by route and status.", ["route", "status"])
LATENCY = Histogram(
    "collector_request_seconds", "HTTP request latency by route.", ["route"], buckets=LATENCY_BUCKETS
)
RECORDS = Counter("collector_records_total", "Records acknowledged by the broker, by topic.", ["topic"])
REJECTED = Counter(
    "collector_rejected_total", "Messages refused with a 4xx, by step and reason.", ["step", "reason"]
)
DELIVERY_FAILURES = Counter("collector_delivery_failures_total", "Requests answered 503: broker did not ack.")
TOKENS_REFUSED = Counter("collector_tokens_refused_total", "Tracking tokens refused, by reason.", ["reason"])
