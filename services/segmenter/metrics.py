"""Every Prometheus metric of the segmenter (buckets in seconds)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FACTS = Counter("segmenter_facts_total", "Facts applied, by kind.", ["kind"])
RECORDS = Counter("segmenter_records_total", "Enriched records read, by outcome.", ["outcome"])
CHANGES = Counter("segmenter_changes_total", "Membership changes emitted, by change.", ["change"])
EVALUATIONS = Counter("segmenter_evaluations_total", "(person, segment) evaluations.")
TIMERS = Counter("segmenter_timers_fired_total", "Timer evaluations (time passing with no fact).")
MEMBERS = Gauge(
    "segmenter_members", "Current members per segment (partitions of this instance).", ["segment"]
)
RELOADS = Counter("segmenter_definition_reloads_total", "Definition files applied.")
RELOAD_ERRORS = Counter("segmenter_definition_reload_errors_total", "Definition files refused (old kept).")
SEEDS = Counter("segmenter_seeds_total", "Segments given initial members, by source.", ["source"])
HANDOVERS = Counter(
    "segmenter_handovers_total",
    "Merge hand-over steps (docs/segments.md, Merges): request, handed_over, folded, forwarded, duplicate.",
    ["step"],
)
DEAD_LETTERS = Counter("segmenter_dead_letters_total", "Records refused, by reason.", ["reason"])
LATENCY = Histogram(
    "segmenter_record_seconds",
    "Time to process one enriched record.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
