"""Every Prometheus metric of the enricher (buckets in seconds)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("enricher_records_total", "Records processed, by stage and kind.", ["stage", "kind"])
OUTPUTS = Counter("enricher_outputs_total", "Records produced, by output.", ["output"])
DEAD_LETTERS = Counter(
    "enricher_dead_letters_total", "Records refused, by step and reason.", ["step", "reason"]
)
DUPLICATES = Counter("enricher_duplicates_total", "Replayed records skipped (already applied).", ["stage"])
REEMITTED = Counter(
    "enricher_reemitted_total", "Stored outputs sent again by a replay (not found on enriched).", ["stage"]
)
SESSIONS_ENDED = Counter(
    "enricher_sessions_ended_total",
    "Sessions ended, by what noticed the inactivity: the timer, or the next activity (by event time).",
    ["by"],
)
DWELLS = Counter(
    "enricher_gps_dwells_total", "GPS visits that dwelled, by what noticed: a point, or the timer.", ["by"]
)
TIMERS = Gauge("enricher_timers", "Persons with a session end or a dwell waiting on the clock (here).")
TICKS = Counter("enricher_ticks_total", "Timer ticks handled, by kind (rebuild, due).", ["kind"])
GEOFENCE_RECORDS = Counter(
    "enricher_geofence_records_total", "geofences topic records, by result (applied, refused).", ["result"]
)
GEOFENCES = Gauge("enricher_geofences", "Entries in the geofence catalogue in use, by kind.", ["kind"])
MERGES = Counter("enricher_merges_total", "Persons merged into another.", ["stage"])
LATENCY = Histogram(
    "enricher_record_seconds",
    "Time to process one record, by stage.",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
