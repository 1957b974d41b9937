"""The Kubernetes manifests an SRE applies: rendered from one table, complete for every service."""

import yaml

from deploy.k8s import render
from services.cli.service_registry import SERVICES
from services.common.topics import TOPIC_BY_NAME

BASE = render.BASE


def load(name):
    return [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]


class TestRendered:
    def test_committed_yaml_is_up_to_date(self):
        """The YAML in deploy/k8s/base is exactly what render.py produces from its table."""
        for name, text in render.render().items():
            committed = (BASE / name).read_text()
            assert committed.split("\n", 1)[1] == text, f"run python -m deploy.k8s.render ({name} is stale)"

    def test_every_service_is_deployed(self):
        """Each service `tagstream run` knows has manifests, and nothing else does."""
        assert {svc.name for svc in render.SERVICES} == set(SERVICES)


class TestWorkloads:
    def test_probes_resources_ports_grace(self):
        """Every workload has liveness/readiness probes on its health port, requests and limits,
        a metrics scrape annotation and a termination grace longer than a batch."""
        for svc in render.SERVICES:
            workload, service, pdb, scaler, *_ = load(f"{svc.name}.yaml")
            assert workload["kind"] == ("StatefulSet" if svc.stateful else "Deployment")
            pod = workload["spec"]["template"]
            container = pod["spec"]["containers"][0]
            assert container["args"] == ["run", svc.name]
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["ports"][0]["containerPort"] == svc.port
            assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(svc.port)
            env = {e["name"]: e for e in container["env"]}
            assert env["TAGSTREAM_HEALTH_PORT"]["value"] == str(svc.port)
            assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
            assert pod["spec"]["terminationGracePeriodSeconds"] >= 30
            assert pod["spec"]["securityContext"]["runAsUser"] != 0
            assert service["kind"] == "Service" and pdb["kind"] == "PodDisruptionBudget"
            assert scaler["kind"] == "ScaledObject"

    def test_lag_scaling_never_exceeds_partitions(self):
        """KEDA scales consumers on group lag, to at most the partitions of their input topics."""
        for svc in render.SERVICES:
            scaler = load(f"{svc.name}.yaml")[3]
            trigger = scaler["spec"]["triggers"][0]
            if svc.consumer_group is None:
                assert trigger["type"] == "cpu"
                continue
            assert trigger["type"] == "kafka"
            assert trigger["metadata"]["consumerGroup"] == svc.consumer_group
            assert trigger["metadata"]["allowIdleConsumers"] == "false"
            # A group over several topics can keep at most the largest topic's partition count busy.
            partitions = max(TOPIC_BY_NAME[t].partitions for t in svc.lag_topics)
            assert scaler["spec"]["maxReplicaCount"] <= partitions

    def test_state_survives_rescheduling(self):
        """Stateful services keep RocksDB on a volume claim per replica."""
        for svc in render.SERVICES:
            workload = load(f"{svc.name}.yaml")[0]
            if svc.stateful:
                assert workload["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
