"""Render the kustomize base for every tagstream service from one table.

Run ``python -m deploy.k8s.render`` (from the repository root) after changing the table;
``tests/unit/test_deploy.py`` fails when the committed YAML is out of date. One table keeps six
services' manifests consistent: probes, resources, ports, termination grace, PodDisruptionBudget,
lag-based KEDA scaling. Monitoring (PodMonitor, PrometheusRule, Grafana dashboard) comes from
``deploy/k8s/monitoring.py``.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from deploy.k8s import monitoring

BASE = Path(__file__).parent / "base"
DASHBOARD = Path(__file__).parents[1] / "grafana" / "tagstream.json"
IMAGE = "ghcr.io/tagstream/tagstream:latest"
APP = "tagstream"


@dataclass(frozen=True)
class ServiceDeploy:
    name: str
    port: int  # health + metrics (and HTTP API where the service has one)
    consumer_group: str | None  # Kafka consumer group scaled on; None: scale on CPU
    lag_topics: tuple[str, ...] = ()  # topics the group consumes (lag is summed over them)
    max_replicas: int = 6  # never above the partitions of its input topics
    stateful: bool = False  # RocksDB state: StatefulSet with a volume per replica
    cpu: str = "500m"
    memory: str = "512Mi"
    grace_seconds: int = 90  # > the longest batch: the loader's 60 s window plus the insert
    settings: str = "services.common.settings:Settings"  # the class that reads this service's env
    config_files: tuple[str, ...] = ()  # files from the ConfigMap mounted at /etc/tagstream
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)  # VAR -> (secret, key)


# SASL credentials from a Secret (Strimzi: a KafkaUser's secret, see docs/deploy.md); protocol,
# mechanism and CA path are not secret and come from the overlay's common ConfigMap.
KAFKA_SECRET_ENV = {
    "TAGSTREAM_KAFKA_SASL_USERNAME": ("tagstream-kafka", "username"),
    "TAGSTREAM_KAFKA_SASL_PASSWORD": ("tagstream-kafka", "password"),
}
KAFKA_TLS_DIR = "/etc/tagstream-kafka"  # the optional Secret tagstream-kafka-tls: ca.crt, user.crt, user.key
CLICKHOUSE_SECRET_ENV = {"TAGSTREAM_CLICKHOUSE_URL": ("tagstream-clickhouse", "url")}
CONFIG_DIR = "/etc/tagstream"
CHANGELOG_REPLICATION = "3"
# What the ConfigMaps hold until an SRE replaces them: valid, empty definitions (no custom events,
# no geofences, no segments, no campaigns), so a fresh install starts and does nothing surprising.
CONFIG_DEFAULTS = {
    "event-definitions.yaml": "# Declared custom events (docs/ingest.md).\nevents: []\n",
    "geofences.json": '{"geofences": [], "beacons": []}\n',
    "segments.yaml": "# Segment definitions (docs/segments.md).\nsegments: []\n",
    "campaigns.yaml": "# Campaign definitions (docs/campaigns.md).\ncampaigns: []\n",
}

SERVICES: tuple[ServiceDeploy, ...] = (
    ServiceDeploy(
        "collector",
        8080,
        None,
        max_replicas=10,
        settings="services.ingest.collector.settings:CollectorSettings",
        env={"TAGSTREAM_COLLECTOR_HOST": "0.0.0.0", "TAGSTREAM_COLLECTOR_PORT": "8080"},
        secret_env={
            "TAGSTREAM_COLLECTOR_WRITE_KEYS": ("tagstream-collector", "write-keys"),
            "TAGSTREAM_TRACKING_SECRET": ("tagstream-tracking", "signing-key"),
        },
        grace_seconds=30,
    ),
    ServiceDeploy(
        "ingest",
        9101,
        "tagstream-ingest",
        ("tags", "events", "locations", "delivery-receipts", "profile-updates"),
        settings="services.ingest.settings:IngestSettings",
        config_files=("event-definitions.yaml",),
        grace_seconds=60,
    ),
    ServiceDeploy(
        "enricher",
        9103,
        "tagstream-enricher",
        ("tags.valid", "events.valid", "locations.valid", "delivery-receipts.valid", "profile-updates.valid"),
        stateful=True,
        memory="1Gi",
        settings="services.enricher.settings:EnricherSettings",
        config_files=("geofences.json",),
        env={"TAGSTREAM_ENRICHER_GEOFENCE_FILE": f"{CONFIG_DIR}/geofences.json"},
    ),
    ServiceDeploy(
        "segmenter",
        9104,
        "tagstream-segmenter",
        ("enriched",),
        stateful=True,
        memory="1Gi",
        settings="services.segmenter.settings:SegmenterSettings",
        config_files=("segments.yaml",),
        secret_env=CLICKHOUSE_SECRET_ENV,  # seeds new segments from the loaded history
    ),
    ServiceDeploy(
        "trigger",
        9105,
        "tagstream-trigger",
        ("enriched", "segment-membership", "profiles", "trigger.ticks", "trigger.merges"),
        stateful=True,
        settings="services.trigger.settings:TriggerSettings",
        config_files=("campaigns.yaml",),
        # The same key signs tracking links here and verifies them in the collector.
        secret_env={"TAGSTREAM_TRIGGER_TRACKING_KEY": ("tagstream-tracking", "signing-key")},
    ),
    ServiceDeploy(
        "webhook",
        9107,
        "tagstream-webhook",
        ("outbound.webhook",),
        memory="256Mi",
        settings="services.trigger.webhook:WebhookSettings",
        grace_seconds=30,  # a stop interrupts a retry's backoff; one request lasts at most its timeout
    ),
    ServiceDeploy(
        "loader",
        9106,
        "tagstream-loader",
        ("enriched", "profiles", "dead-letters", "segment-membership"),
        memory="1Gi",
        settings="services.loader.settings:LoaderSettings",
        # The loader serves /metrics, /healthz, /readyz and its analytics API on its own port.
        env={"TAGSTREAM_LOADER_HOST": "0.0.0.0", "TAGSTREAM_LOADER_PORT": "9106"},
        secret_env=CLICKHOUSE_SECRET_ENV,
        grace_seconds=120,
    ),
)


def _settings_fields(svc: ServiceDeploy) -> set[str]:
    module, name = svc.settings.split(":")
    try:
        return set(getattr(importlib.import_module(module), name).model_fields)
    except ModuleNotFoundError:  # a service still being built elsewhere
        return set()


def _env(svc: ServiceDeploy) -> dict[str, str]:
    env = dict(svc.env)
    replication = f"{svc.name}_replication_factor"
    if svc.stateful and replication in _settings_fields(svc):
        # faust's changelog topics hold the tables: as durable as the data topics. Rendered once
        # the service's settings have the field (re-render after merging a service).
        env[f"TAGSTREAM_{replication.upper()}"] = CHANGELOG_REPLICATION
    return env


def _labels(svc: ServiceDeploy) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": svc.name}


def _container(svc: ServiceDeploy) -> dict:
    env = [{"name": "TAGSTREAM_HEALTH_PORT", "value": str(svc.port)}]
    env += [{"name": k, "value": v} for k, v in sorted(_env(svc).items())]
    secrets = {**KAFKA_SECRET_ENV, **svc.secret_env}
    env += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": s, "key": key, "optional": True}}}
        for k, (s, key) in sorted(secrets.items())
    ]
    mounts = [
        {"name": "data", "mountPath": "/var/lib/tagstream"},
        {"name": "kafka-tls", "mountPath": KAFKA_TLS_DIR, "readOnly": True},
    ]
    if svc.config_files:
        mounts.append({"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "failureThreshold": 3}
    return {
        "name": svc.name,
        "image": IMAGE,
        "args": ["run", svc.name],
        "ports": [{"name": "http", "containerPort": svc.port}],
        "envFrom": [{"configMapRef": {"name": "tagstream-common"}}],
        "env": env,
        "resources": {
            "requests": {"cpu": svc.cpu, "memory": svc.memory},
            "limits": {"memory": svc.memory},
        },
        "livenessProbe": probe,
        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "startupProbe": {**probe, "failureThreshold": 30},
        "volumeMounts": mounts,
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _workload(svc: ServiceDeploy) -> dict:
    volumes: list[dict] = [
        {"name": "kafka-tls", "secret": {"secretName": "tagstream-kafka-tls", "optional": True}}
    ]
    if svc.config_files:
        volumes.append({"name": "config", "configMap": {"name": f"tagstream-{svc.name}"}})
    if not svc.stateful:
        volumes.append({"name": "data", "emptyDir": {}})
    spec: dict = {
        "replicas": 1,
        "selector": {"matchLabels": _labels(svc)},
        "template": {
            "metadata": {
                "labels": _labels(svc),
                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(svc.port)},
            },
            "spec": {
                "terminationGracePeriodSeconds": svc.grace_seconds,
                "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
                "containers": [_container(svc)],
                "volumes": volumes,
            },
        },
    }
    kind = "Deployment"
    if svc.stateful:
        kind = "StatefulSet"
        spec["serviceName"] = f"tagstream-{svc.name}"
        spec["volumeClaimTemplates"] = [
            {
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": f"tagstream-{svc.name}", "labels": _labels(svc)},
        "spec": spec,
    }


def _service(svc: ServiceDeploy) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"tagstream-{svc.name}", "labels": _labels(svc)},
        "spec": {
            "selector": _labels(svc),
            "ports": [{"name": "http", "port": svc.port, "targetPort": "http"}],
        },
    }


def _pdb(svc: ServiceDeploy) -> dict:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"tagstream-{svc.name}", "labels": _labels(svc)},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _labels(svc)}},
    }


def _scaler(svc: ServiceDeploy, kind: str) -> dict:
    if svc.consumer_group:
        triggers = [
            {
                "type": "kafka",
                "metadata": {
                    "bootstrapServersFromEnv": "TAGSTREAM_KAFKA_BOOTSTRAP",
                    "consumerGroup": svc.consumer_group,
                    "lagThreshold": "1000",
                    "allowIdleConsumers": "false",  # never more consumers than partitions
                },
                "authenticationRef": {"name": "tagstream-kafka"},
            }
        ]
    else:
        triggers = [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": f"tagstream-{svc.name}", "labels": _labels(svc)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": f"tagstream-{svc.name}"},
            "minReplicaCount": 1,
            "maxReplicaCount": svc.max_replicas,
            "triggers": triggers,
        },
    }


def _configmap(svc: ServiceDeploy) -> dict | None:
    if not svc.config_files:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"tagstream-{svc.name}", "labels": _labels(svc)},
        "data": {name: CONFIG_DEFAULTS[name] for name in svc.config_files},
    }


def _common() -> str:
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "tagstream-common", "labels": {"app.kubernetes.io/name": APP}},
        "data": {
            "TAGSTREAM_KAFKA_BOOTSTRAP": "tagstream-kafka-bootstrap:9092",
            "TAGSTREAM_DATA_DIR": "/var/lib/tagstream",
            "TAGSTREAM_CONFIG_DIR": CONFIG_DIR,
            "TAGSTREAM_LOG_LEVEL": "INFO",
            "TAGSTREAM_HEALTH_HOST": "0.0.0.0",  # probes and scrapes come from outside the pod
        },
    }
    # KEDA reads the consumer-group lag with the same SASL/TLS credentials as the services.
    auth = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "tagstream-kafka", "labels": {"app.kubernetes.io/name": APP}},
        "spec": {
            "secretTargetRef": [
                {"parameter": p, "name": "tagstream-kafka-keda", "key": p}
                for p in ("sasl", "username", "password", "tls", "ca")
            ]
        },
    }
    return _dump([config, auth])


class _Dumper(yaml.SafeDumper):
    """No &anchors/*aliases for dicts shared between documents: plain YAML for every tool."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _dump(docs: list[dict]) -> str:
    return "---\n".join(yaml.dump(d, Dumper=_Dumper, sort_keys=False) for d in docs if d)


def render() -> dict[str, str]:
    files: dict[str, str] = {"common.yaml": _common(), "monitoring.yaml": monitoring.manifests()}
    for svc in SERVICES:
        workload = _workload(svc)
        docs = [workload, _service(svc), _pdb(svc), _scaler(svc, workload["kind"]), _configmap(svc)]
        files[f"{svc.name}.yaml"] = _dump(docs)
    files["kustomization.yaml"] = yaml.safe_dump(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": ["common.yaml", "monitoring.yaml", *(f"{svc.name}.yaml" for svc in SERVICES)],
        },
        sort_keys=False,
    )
    return files


def main() -> int:
    BASE.mkdir(exist_ok=True)
    for name, text in render().items():
        (BASE / name).write_text(f"# Generated by deploy/k8s/render.py; edit the table there.\n{text}")
    DASHBOARD.parent.mkdir(exist_ok=True)
    DASHBOARD.write_text(monitoring.dashboard())
    return 0


if __name__ == "__main__":
    sys.exit(main())
