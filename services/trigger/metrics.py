"""Every Prometheus metric of the trigger service, in one place.

Counters are labelled by step and reason (never by person); campaign ids are bounded by the
definition file, so they are a safe label. Histogram buckets are in seconds, set explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from services.trigger.core import Action, Emit, Reject, Scheduled, Skip

MESSAGES = Counter(
    "tagstream_trigger_messages_total", "Messages produced onto outbound topics.", ["campaign", "channel"]
)
SKIPPED = Counter(
    "tagstream_trigger_skipped_total", "Sends that rightly did not happen, by reason.", ["campaign", "reason"]
)
REJECTED = Counter(
    "tagstream_trigger_rejected_total", "Messages dead-lettered, by step and reason.", ["step", "reason"]
)
SCHEDULED = Counter(
    "tagstream_trigger_scheduled_total", "Sends queued for a delay or held for quiet hours.", ["reason"]
)
SEND_LAG = Histogram(
    "tagstream_trigger_send_lag_seconds",
    "From the triggering event's time to the decision to send (includes configured delays).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
)
INPUTS = Counter(
    "tagstream_trigger_inputs_total",
    "Input records applied, by input (profile, segment, enriched, enriched_ignored).",
    ["input"],
)
DUPLICATES = Counter(
    "tagstream_trigger_duplicates_total",
    "Replayed inputs skipped and messages not produced again, by what (input, message, ...).",
    ["what"],
)
PARKED = Counter(
    "tagstream_trigger_parked_total",
    "Events held for the person's profile (parked), and released by its arrival or by the timeout.",
    ["released"],
)
HANDOVERS = Counter(
    "tagstream_trigger_handovers_total",
    "Merge hand-over steps (docs/campaigns.md, Merges): request, handed_over, folded, refolded "
    "(a fold read again that brought more), forwarded, duplicate, dropped.",
    ["step"],
)
TICKS = Counter("tagstream_trigger_ticks_total", "Ticks handled, by kind (due, rebuild).", ["kind"])
NOW_SECONDS = Gauge(
    "tagstream_trigger_now_seconds", "The time the timer last read as now (the test clock when set)."
)
DUE_PERSONS = Gauge("tagstream_trigger_due_persons", "Persons with a pending send or timer (this instance).")
DECISION_SECONDS = Histogram(
    "tagstream_trigger_decision_seconds",
    "Time for one decision (state in, core, encode).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
BATCH_INPUTS = Histogram(
    "tagstream_trigger_batch_inputs",
    "Inputs decided per batch (their outputs acknowledged together, then their states written).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)


def count(actions: Iterable[Action]) -> None:
    """Record one outcome's actions."""
    for action in actions:
        if isinstance(action, Emit):
            message = action.message
            MESSAGES.labels(message["campaign_id"], message["channel"]).inc()
            SEND_LAG.observe(max(0, message["created_time"] - message["trigger_time"]) / 1000)
        elif isinstance(action, Skip):
            SKIPPED.labels(action.campaign_id, action.reason).inc()
        elif isinstance(action, Reject):
            REJECTED.labels(action.rejection.step or "trigger", action.rejection.reason).inc()
        elif isinstance(action, Scheduled):
            SCHEDULED.labels(action.reason).inc()
