"""Scrape config, alert rules and the Grafana dashboard, built from the metrics the services export.

Rendered by ``deploy/k8s/render.py`` into ``deploy/k8s/base/monitoring.yaml`` (a prometheus-operator
PodMonitor and PrometheusRule) and ``deploy/grafana/tagstream.json``. ``tests/unit/test_monitoring.py``
checks every metric named here exists in a ``services/**/metrics.py`` module, or comes from
kafka_exporter (danielqsj/kafka_exporter, which Strimzi runs with ``spec.kafkaExporter`` on the
Kafka resource) or from Prometheus itself (``up``).

Labels: the PodMonitor sets ``job="tagstream"`` and ``service=<component>`` on every series a pod
exports, so one rule can say which service is unhealthy.

Panels and rules are written here for every service, including metrics still being built on
other branches (segmenter, trigger timers); a target or rule whose metrics the code does not export
yet is left out of the rendered output. After a service gains metrics, re-render: the new panels
appear, and the up-to-date tests say so until you do.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

APP = "tagstream"
JOB = 'job="tagstream"'
# kafka_exporter: kafka_consumergroup_lag{consumergroup, topic, partition} (records behind).
LAG = 'kafka_consumergroup_lag{consumergroup=~"tagstream-.*"}'
EXPORTER_METRICS = frozenset({"kafka_consumergroup_lag", "kafka_consumergroup_current_offset"})
PROMETHEUS_METRICS = frozenset({"up"})
ROOT = Path(__file__).resolve().parents[2]

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
}
_KEYWORDS = {"and", "or", "unless", "offset", "bool"}


def metric_families() -> list:
    """The registry's families after importing every ``services/**/metrics.py`` (so a service that
    gains a metrics module is covered automatically)."""
    for path in sorted(ROOT.glob("services/**/metrics.py")):
        importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return list(REGISTRY.collect())


@cache
def exported_metric_names() -> frozenset[str]:
    """Every sample name the services can expose (counters as _total, histograms as _bucket...)."""
    names = {f.name + suffix for f in metric_families() for suffix in _SUFFIXES.get(f.type, ("",))}
    return frozenset(names)


def known_metric_names() -> frozenset[str]:
    return exported_metric_names() | EXPORTER_METRICS | PROMETHEUS_METRICS


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside strings, label matchers, ranges and
    grouping clauses that are not function calls, keywords or numbers."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    # An identifier glued to a digit or dot is part of a number or duration (1h, 1e3), not a name.
    for match in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def _exported(expr: str) -> bool:
    return metric_names(expr) <= known_metric_names()


@dataclass(frozen=True)
class ServiceMetrics:
    """What the dashboard and the alerts read from one service."""

    name: str
    throughput: str  # counter of records (or requests) the service got done
    dead_letters: str | None  # counter labelled by step and reason
    dead_letter_rate: float = 0.1  # per second, sustained 15 min: an alert


SERVICE_METRICS: tuple[ServiceMetrics, ...] = (
    # The collector refuses bad input with a 4xx (the sender sees it); it writes no dead letters.
    ServiceMetrics("collector", "collector_records_total", None),
    ServiceMetrics("ingest", "tagstream_ingest_records_out_total", "tagstream_ingest_dead_letters_total"),
    ServiceMetrics("enricher", "enricher_outputs_total", "enricher_dead_letters_total"),
    ServiceMetrics("segmenter", "segmenter_records_total", "segmenter_dead_letters_total"),
    ServiceMetrics("trigger", "tagstream_trigger_messages_total", "tagstream_trigger_rejected_total"),
    ServiceMetrics("loader", "tagstream_loader_rows_total", "tagstream_loader_rejected_total"),
)
SERVICES = ("collector", "ingest", "enricher", "segmenter", "trigger", "webhook", "loader")


def _alert(name: str, expr: str, minutes: int, severity: str, summary: str, description: str) -> dict:
    return {
        "alert": name,
        "expr": expr,
        "for": f"{minutes}m",
        "labels": {"severity": severity, "app": APP},
        "annotations": {"summary": summary, "description": description},
    }


def alert_groups() -> list[dict]:
    availability = [
        _alert(
            "TagstreamServiceDown",
            f'absent(up{{{JOB}, service="{svc}"}} == 1)',
            5,
            "critical",
            f"No {svc} replica is up",
            f"Prometheus has scraped no healthy {svc} pod for 5 minutes; its input is piling up.",
        )
        for svc in SERVICES
    ]
    availability.append(
        _alert(
            "TagstreamPodDown",
            f"up{{{JOB}}} == 0",
            5,
            "warning",
            "A tagstream pod does not answer /metrics",
            "{{ $labels.service }} pod {{ $labels.pod }} has been unreachable for 5 minutes.",
        )
    )
    lag = [
        _alert(
            "TagstreamConsumerLagGrowing",
            f"sum by (consumergroup) ({LAG}) > 10000 and sum by (consumergroup) (delta({LAG}[15m])) > 0",
            15,
            "warning",
            "{{ $labels.consumergroup }} is falling behind",
            "Lag above 10000 records and still growing for 15 minutes: add replicas (up to the "
            "partition count) or look for a slow sink. See docs/deploy.md, scaling guide.",
        )
    ]
    dead = [
        _alert(
            "TagstreamIngestDeadLettersHigh",
            "sum(rate(tagstream_ingest_dead_letters_total[10m]))"
            " / sum(rate(tagstream_ingest_records_in_total[10m])) > 0.05",
            15,
            "warning",
            "More than 5% of incoming records are dead-lettered",
            "A sender is producing bad data or a definitions file changed; "
            "`tagstream dlq summary` groups the dead letters by reason.",
        )
    ]
    dead += [
        _alert(
            f"Tagstream{svc.name.capitalize()}DeadLettersRising",
            f"sum by (step, reason) (rate({svc.dead_letters}[10m])) > {svc.dead_letter_rate}",
            15,
            "warning",
            f"{svc.name} dead-letters {{{{ $labels.reason }}}} records",
            f"Records reaching {svc.name} were already validated upstream: a sustained dead-letter "
            "rate here means a bug, a schema change or a configuration mismatch.",
        )
        for svc in SERVICE_METRICS
        if svc.dead_letters and svc.name != "ingest"
    ]
    dead.append(
        _alert(
            "TagstreamSegmenterDefinitionsRefused",
            "sum(increase(segmenter_definition_reload_errors_total[15m])) > 0",
            1,
            "warning",
            "A segment definitions file was refused",
            "The segmenter keeps the previous definitions; its log names every offending field.",
        )
    )
    loader = [
        _alert(
            "TagstreamLoaderInsertsFailing",
            "sum(rate(tagstream_loader_sink_retries_total[5m])) > 0",
            5,
            "critical",
            "The loader cannot insert into ClickHouse",
            "Batches are being retried: ClickHouse is unreachable or refusing inserts. Nothing is "
            "lost (offsets are committed after the insert) but the warehouse is going stale.",
        ),
        _alert(
            "TagstreamLoaderStalled",
            "sum(tagstream_loader_buffered_records) > 0"
            " and sum(rate(tagstream_loader_batches_total[15m])) == 0",
            10,
            "critical",
            "The loader holds records but commits no batches",
            "No batch committed for 15 minutes while records are buffered (flush window 60 s).",
        ),
        _alert(
            "TagstreamLoaderSlowInserts",
            "histogram_quantile(0.95, sum by (le) (rate(tagstream_loader_flush_seconds_bucket[10m]))) > 30",
            15,
            "warning",
            "Loader batches take over 30 s (p95)",
            "ClickHouse is slow to acknowledge inserts; check merges and parts per partition.",
        ),
    ]
    latency = [
        _alert(
            "TagstreamTriggerSlow",
            "histogram_quantile(0.5,"
            " sum by (le) (rate(tagstream_trigger_send_lag_seconds_bucket[10m]))) > 120",
            15,
            "warning",
            "Median time from event to send decision above 2 minutes",
            "The send lag includes configured campaign delays; if most campaigns are delayed, raise "
            "this threshold above the typical delay. Otherwise the trigger is behind its input.",
        ),
        _alert(
            "TagstreamCollectorDeliveryFailures",
            "sum(rate(collector_delivery_failures_total[5m])) > 0",
            5,
            "critical",
            "The collector answers 503: Kafka does not acknowledge",
            "Senders retry, but events are being refused at the edge until the broker acknowledges.",
        ),
    ]
    groups = {
        "tagstream.availability": availability,
        "tagstream.lag": lag,
        "tagstream.dead-letters": dead,
        "tagstream.loader": loader,
        "tagstream.latency": latency,
    }
    return [
        {"name": name, "rules": [r for r in rules if _exported(r["expr"])]} for name, rules in groups.items()
    ]


def manifests() -> str:
    """PodMonitor (scrape every tagstream pod, label it by service) and the PrometheusRule."""
    labels = {"app.kubernetes.io/name": APP}
    pod_monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": APP, "labels": labels},
        "spec": {
            "selector": {"matchLabels": dict(labels)},
            "podMetricsEndpoints": [
                {
                    "port": "http",
                    "path": "/metrics",
                    "interval": "30s",
                    "relabelings": [
                        {"targetLabel": "job", "replacement": APP},
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
                            "targetLabel": "service",
                        },
                    ],
                }
            ],
        },
    }
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": APP, "labels": labels},
        "spec": {"groups": alert_groups()},
    }
    return "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in (pod_monitor, rule))


# --- Grafana -------------------------------------------------------------------------------------

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(title: str, targets: list[tuple[str, str]], unit: str = "short", width: int = 12) -> dict:
    return {
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "gridPos": {"w": width, "h": 8},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def _available(panel: dict) -> dict | None:
    """The panel with only the targets whose metrics are exported; None if none are."""
    targets = [t for t in panel["targets"] if _exported(t["expr"])]
    for i, target in enumerate(targets):
        target["refId"] = chr(ord("A") + i)
    return {**panel, "targets": targets} if targets else None


def _row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"w": 24, "h": 1}, "panels": []}


def _quantiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    group = f"{by}, le" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [
        (f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[5m])))", f"{prefix}p{int(q * 100)}")
        for q in (0.5, 0.95, 0.99)
    ]


def panels() -> list[dict]:
    overview = [
        _panel(
            "Throughput per service",
            [(f"sum(rate({s.throughput}[5m]))", s.name) for s in SERVICE_METRICS],
            "ops",
        ),
        _panel(
            "Dead letters by service and reason",
            [
                (f"sum by (reason) (rate({s.dead_letters}[5m]))", f"{s.name} {{{{reason}}}}")
                for s in SERVICE_METRICS
                if s.dead_letters
            ]
            + [("sum by (reason) (rate(collector_rejected_total[5m]))", "collector refused {{reason}}")],
            "ops",
        ),
        _panel("Consumer lag by group", [(f"sum by (consumergroup) ({LAG})", "{{consumergroup}}")]),
        _panel(
            "Consumer lag by topic",
            [(f"sum by (consumergroup, topic) ({LAG})", "{{consumergroup}} {{topic}}")],
        ),
        _panel("Replicas up", [(f"sum by (service) (up{{{JOB}}})", "{{service}}")]),
    ]
    collector_ingest = [
        _panel(
            "Collector requests by route and status",
            [("sum by (route, status) (rate(collector_requests_total[5m]))", "{{route}} {{status}}")],
            "reqps",
        ),
        _panel(
            "Collector records acknowledged and delivery failures (503)",
            [
                ("sum by (topic) (rate(collector_records_total[5m]))", "{{topic}}"),
                ("sum(rate(collector_delivery_failures_total[5m]))", "delivery failures"),
            ],
            "ops",
        ),
        _panel("Collector request latency", _quantiles("collector_request_seconds"), "s"),
        _panel(
            "Ingest records in / out / deduplicated",
            [
                ("sum by (topic) (rate(tagstream_ingest_records_in_total[5m]))", "in {{topic}}"),
                ("sum by (topic) (rate(tagstream_ingest_records_out_total[5m]))", "out {{topic}}"),
                ("sum by (topic) (rate(tagstream_ingest_deduplicated_total[5m]))", "dup {{topic}}"),
            ],
            "ops",
        ),
        _panel(
            "Ingest batches: time to process, produce and commit; aborted transactions",
            [
                *_quantiles("tagstream_ingest_batch_seconds"),
                ("sum(rate(tagstream_ingest_transaction_aborts_total[5m]))", "aborts/s"),
            ],
            "s",
        ),
        _panel(
            "Ingest dedupe window and declared events",
            [
                ("sum(tagstream_ingest_dedupe_entries)", "message ids held"),
                ("max(tagstream_ingest_declared_events)", "declared custom events"),
            ],
        ),
        _panel(
            "Collector tracking tokens refused",
            [("sum by (reason) (rate(collector_tokens_refused_total[5m]))", "{{reason}}")],
            "ops",
        ),
        _panel(
            "Ingest record latency (Kafka time to commit)",
            _quantiles("tagstream_ingest_record_latency_seconds"),
            "s",
        ),
    ]
    enricher = [
        _panel(
            "Enricher records by stage and kind",
            [("sum by (stage, kind) (rate(enricher_records_total[5m]))", "{{stage}} {{kind}}")],
            "ops",
        ),
        _panel(
            "Enricher outputs, merges, duplicates",
            [
                ("sum by (output) (rate(enricher_outputs_total[5m]))", "{{output}}"),
                ("sum(rate(enricher_merges_total[5m]))", "merges"),
                ("sum(rate(enricher_duplicates_total[5m]))", "replays skipped"),
                ("sum(rate(enricher_reemitted_total[5m]))", "replays re-emitted"),
            ],
            "ops",
        ),
        _panel("Enricher time per record", _quantiles("enricher_record_seconds", "stage"), "s"),
        _panel(
            "Enricher sessions and dwells",
            [
                ("sum by (by) (rate(enricher_sessions_ended_total[5m]))", "sessions ended by {{by}}"),
                ("sum by (by) (rate(enricher_gps_dwells_total[5m]))", "dwells by {{by}}"),
                ("sum(enricher_timers)", "persons waiting on the clock"),
                ("sum by (kind) (rate(enricher_ticks_total[5m]))", "ticks {{kind}}"),
            ],
            "short",
        ),
        _panel(
            "Enricher geofence catalogue",
            [
                ("max by (kind) (enricher_geofences)", "{{kind}} entries"),
                ("sum by (result) (rate(enricher_geofence_records_total[5m]))", "topic records {{result}}"),
            ],
            "short",
        ),
    ]
    trigger = [
        _panel(
            "Trigger messages by channel",
            [("sum by (channel) (rate(tagstream_trigger_messages_total[5m]))", "{{channel}}")],
            "ops",
        ),
        _panel(
            "Trigger skipped and scheduled",
            [
                ("sum by (reason) (rate(tagstream_trigger_skipped_total[5m]))", "skipped {{reason}}"),
                ("sum by (reason) (rate(tagstream_trigger_scheduled_total[5m]))", "scheduled {{reason}}"),
            ],
            "ops",
        ),
        _panel(
            "Trigger send lag (includes configured delays)",
            _quantiles("tagstream_trigger_send_lag_seconds"),
            "s",
        ),
        _panel(
            "Trigger inputs, replays skipped, ticks",
            [
                ("sum by (input) (rate(tagstream_trigger_inputs_total[5m]))", "input {{input}}"),
                ("sum by (what) (rate(tagstream_trigger_duplicates_total[5m]))", "replay skipped {{what}}"),
                ("sum by (kind) (rate(tagstream_trigger_ticks_total[5m]))", "tick {{kind}}"),
                (
                    "sum by (released) (rate(tagstream_trigger_parked_total[5m]))",
                    "waited for profile {{released}}",
                ),
                ("sum by (step) (rate(tagstream_trigger_handovers_total[5m]))", "merge hand-over {{step}}"),
            ],
            "ops",
        ),
        _panel(
            "Trigger persons with a pending send or timer", [("sum(tagstream_trigger_due_persons)", "due")]
        ),
        _panel("Trigger time per decision", _quantiles("tagstream_trigger_decision_seconds"), "s"),
        _panel("Trigger inputs per batch", _quantiles("tagstream_trigger_batch_inputs")),
    ]
    segmenter = [
        _panel(
            "Segmenter records by outcome, facts by kind",
            [
                ("sum by (outcome) (rate(segmenter_records_total[5m]))", "{{outcome}}"),
                ("sum by (kind) (rate(segmenter_facts_total[5m]))", "fact {{kind}}"),
            ],
            "ops",
        ),
        _panel(
            "Segmenter membership changes and evaluations",
            [
                ("sum by (change) (rate(segmenter_changes_total[5m]))", "{{change}}"),
                ("sum(rate(segmenter_evaluations_total[5m]))", "evaluations"),
                ("sum(rate(segmenter_timers_fired_total[5m]))", "timers fired"),
                ("sum by (source) (rate(segmenter_seeds_total[5m]))", "seeded from {{source}}"),
                ("sum by (step) (rate(segmenter_handovers_total[5m]))", "merge hand-over {{step}}"),
            ],
            "ops",
        ),
        _panel("Segment members", [("sum by (segment) (segmenter_members)", "{{segment}}")]),
        _panel("Segmenter time per record", _quantiles("segmenter_record_seconds"), "s"),
        _panel(
            "Segment definition reloads",
            [
                ("sum(increase(segmenter_definition_reloads_total[1h]))", "applied"),
                ("sum(increase(segmenter_definition_reload_errors_total[1h]))", "refused"),
            ],
        ),
    ]
    loader = [
        _panel(
            "Loader records by topic, rows and batches by table",
            [
                ("sum by (topic) (rate(tagstream_loader_records_total[5m]))", "records {{topic}}"),
                ("sum by (table) (rate(tagstream_loader_rows_total[5m]))", "rows {{table}}"),
                ("sum by (table) (rate(tagstream_loader_batches_total[5m]))", "batches {{table}}"),
            ],
            "ops",
        ),
        _panel("Loader batch insert+commit latency", _quantiles("tagstream_loader_flush_seconds"), "s"),
        _panel(
            "Loader buffered records and insert retries",
            [
                ("sum(tagstream_loader_buffered_records)", "buffered"),
                ("sum(rate(tagstream_loader_sink_retries_total[5m]))", "retries/s"),
                (
                    "sum by (topic) (rate(tagstream_loader_copies_dropped_total[5m]))",
                    "copies dropped {{topic}}",
                ),
            ],
        ),
        _panel("Analytics query latency", _quantiles("tagstream_loader_query_seconds", "kind"), "s"),
    ]
    sections = [
        ("Overview", overview),
        ("Collector and ingest", collector_ingest),
        ("Enricher", enricher),
        ("Segmenter", segmenter),
        ("Trigger", trigger),
        ("Loader", loader),
    ]
    out: list[dict] = []
    y = 0
    for title, all_panels in sections:
        section = [p for p in map(_available, all_panels) if p is not None]
        if not section:
            continue
        row = _row(title)
        row["gridPos"].update(x=0, y=y)
        out.append(row)
        y += 1
        for i, panel in enumerate(section):
            panel["gridPos"].update(x=(i % 2) * 12, y=y + (i // 2) * 8)
        y += ((len(section) + 1) // 2) * 8
        out += section
    for i, panel in enumerate(out, start=1):
        panel["id"] = i
    return out


def dashboard() -> str:
    board = {
        "uid": "tagstream",
        "title": "tagstream",
        "tags": [APP],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
            ]
        },
        "panels": panels(),
    }
    return json.dumps(board, indent=2) + "\n"
