"""Alerts and the dashboard watch metrics that exist: every name they use is exported by a service's
metrics module, by kafka_exporter (documented in docs/deploy.md) or by Prometheus itself."""

import importlib
import json

import yaml
from prometheus_client.metrics import MetricWrapperBase

from deploy.k8s import monitoring, render

metric_names = monitoring.metric_names


def names_from_services() -> set[str]:
    """Metric family names defined in our services' metrics modules."""
    names: set[str] = set()
    for path in sorted(monitoring.ROOT.glob("services/**/metrics.py")):
        module = importlib.import_module(".".join(path.relative_to(monitoring.ROOT).with_suffix("").parts))
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                names.update(family.name for family in value.describe())
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
        known = monitoring.known_metric_names()
        used = set().union(*(metric_names(e) for e in alert_expressions()))
        assert used and used <= known, sorted(used - known)

    def test_dashboard_only_uses_exported_metrics(self):
        """Every metric a dashboard panel plots is exported by our code, kafka_exporter or Prometheus."""
        known = monitoring.known_metric_names()
        used = set().union(*(metric_names(e) for e in dashboard_expressions()))
        assert used and used <= known, sorted(used - known)

    def test_every_service_metrics_module_is_on_the_dashboard(self):
        """No service exports metrics the dashboard ignores entirely (a new metrics module shows up)."""
        used = set().union(*(metric_names(e) for e in dashboard_expressions()))
        ours = names_from_services()
        unused = {n for n in ours if not any(u.startswith(n) for u in used)}
        # Internal gauges an operator reads on the pod rather than on the board.
        allowed = {
            "tagstream_ingest_batch_seconds",
            "tagstream_ingest_consumer_lag",
            "tagstream_ingest_dedupe_entries",
            "tagstream_ingest_transaction_aborts",
            "tagstream_ingest_declared_events",
            "collector_tokens_refused",
            "tagstream_trigger_now_seconds",  # the trigger's clock (tests drive it)
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
