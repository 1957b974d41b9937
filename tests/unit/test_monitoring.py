"""Alerts and the dashboard watch metrics that exist: every name they use is exported by a service's
metrics module, by kafka_exporter (documented in docs/deploy.md) or by Prometheus itself."""

import importlib
import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

from deploy.k8s import monitoring, render

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
}
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
}


def metric_families() -> list:
    """The registry's metric families after importing every ``services/**/metrics.py`` (so a
    service that gains a metrics module is covered automatically)."""
    for path in sorted(ROOT.glob("services/**/metrics.py")):
        importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return list(REGISTRY.collect())


def exported_metric_names() -> set[str]:
    """Every sample name the services can expose (counters as _total, histograms as _bucket...)."""
    names: set[str] = set()
    for family in metric_families():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


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
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def alert_expressions() -> list[str]:
    docs = list(yaml.safe_load_all((render.BASE / "monitoring.yaml").read_text()))
    rule = next(d for d in docs if d and d["kind"] == "PrometheusRule")
    return [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_expressions() -> list[str]:
    board = json.loads(render.DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


class TestPromqlNames:
    def test_extracts_metrics_not_functions_labels_or_ranges(self):
        """The parser finds the metric names and nothing else in a typical expression."""
        expr = (
            'histogram_quantile(0.95, sum by (le, stage) (rate(a_bucket{job="x", le!="1"}[5m])))'
            " / on (stage) sum(b_total offset 1h) > 0 and absent(up == 1)"
        )
        assert metric_names(expr) == {"a_bucket", "b_total", "up"}


class TestMetricsExist:
    def test_dashboard_is_up_to_date(self):
        """The committed dashboard JSON is what monitoring.py renders."""
        assert render.DASHBOARD.read_text() == monitoring.dashboard(), "run python -m deploy.k8s.render"

    def test_alerts_only_use_exported_metrics(self):
        """Every metric an alert reads is exported by our code, kafka_exporter or Prometheus."""
        known = exported_metric_names() | monitoring.EXPORTER_METRICS | monitoring.PROMETHEUS_METRICS
        used = set().union(*(metric_names(e) for e in alert_expressions()))
        assert used and used <= known, sorted(used - known)

    def test_dashboard_only_uses_exported_metrics(self):
        """Every metric a dashboard panel plots is exported by our code, kafka_exporter or Prometheus."""
        known = exported_metric_names() | monitoring.EXPORTER_METRICS | monitoring.PROMETHEUS_METRICS
        used = set().union(*(metric_names(e) for e in dashboard_expressions()))
        assert used and used <= known, sorted(used - known)

    def test_every_service_metrics_module_is_on_the_dashboard(self):
        """No service exports metrics the dashboard ignores entirely (a new metrics module shows up)."""
        used = set().union(*(metric_names(e) for e in dashboard_expressions()))
        exported = {f.name for f in metric_families()}
        ours = {n for n in exported if n.startswith(("tagstream_", "enricher_", "collector_"))}
        unused = {n for n in ours if not any(u.startswith(n) for u in used)}
        # Internal gauges an operator reads on the pod rather than on the board.
        allowed = {
            "tagstream_ingest_batch_seconds",
            "tagstream_ingest_consumer_lag",
            "tagstream_ingest_dedupe_entries",
            "tagstream_ingest_transaction_aborts",
            "tagstream_ingest_declared_events",
            "collector_tokens_refused",
        }
        assert unused <= allowed, sorted(unused - allowed)


class TestAlerts:
    def test_alerts_cover_lag_dead_letters_loader_latency_and_availability(self):
        """The rules an SRE expects are there, each with a severity, a duration and a summary."""
        docs = list(yaml.safe_load_all((render.BASE / "monitoring.yaml").read_text()))
        rule = next(d for d in docs if d and d["kind"] == "PrometheusRule")
        rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
        names = {r["alert"] for r in rules}
        for expected in (
            "TagstreamConsumerLagGrowing",
            "TagstreamIngestDeadLettersHigh",
            "TagstreamLoaderInsertsFailing",
            "TagstreamTriggerSlow",
            "TagstreamServiceDown",
        ):
            assert expected in names
        for r in rules:
            assert r["labels"]["severity"] in {"warning", "critical"}
            assert r["for"].endswith("m") and r["annotations"]["summary"]
        down = {r["expr"] for r in rules if r["alert"] == "TagstreamServiceDown"}
        assert len(down) == len(render.SERVICES)

    def test_scrape_labels_services(self):
        """The PodMonitor scrapes every tagstream pod's http port and labels series by service,
        the label the alerts group by."""
        docs = list(yaml.safe_load_all((render.BASE / "monitoring.yaml").read_text()))
        monitor = next(d for d in docs if d and d["kind"] == "PodMonitor")
        endpoint = monitor["spec"]["podMetricsEndpoints"][0]
        assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
        assert {r["targetLabel"] for r in endpoint["relabelings"]} == {"job", "service"}
