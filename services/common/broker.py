"""A single-node Apache Kafka broker in KRaft mode (broker + controller in one JVM), run locally.

Jars come from Maven Central through ``deploy/kafka/pom.xml``; storage is formatted once with
the KRaft storage tool; data lives under ``<data_dir>/kafka``. ``TAGSTREAM_KAFKA_BOOTSTRAP``
points everything at an existing cluster instead, and then nothing here runs.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.common.kafka import cluster_reachable
from services.common.localproc import LocalProcess, LocalProcessError, resolve_jars
from services.common.settings import REPO_ROOT, Settings

KAFKA_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
KAFKA_VERSION = "4.1.1"

LOG4J2 = """\
status = warn
appender.file.type = Console
appender.file.name = STDOUT
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class BrokerError(LocalProcessError):
    pass


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    external: bool = False


def kafka_jars(settings: Settings) -> Path:
    return resolve_jars(KAFKA_POM, settings.cache_dir / f"kafka-{KAFKA_VERSION}")


@dataclass(frozen=True)
class SaslListener:
    """An extra SASL_PLAINTEXT listener with the PLAIN mechanism, for testing client credentials."""

    port: int
    users: dict[str, str]  # username -> password

    def properties(self) -> list[str]:
        users = " ".join(f'user_{name}="{password}"' for name, password in self.users.items())
        return [
            "sasl.enabled.mechanisms=PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config="
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};",
        ]


class LocalBroker:
    def __init__(self, settings: Settings, heap: str = "512m", sasl: SaslListener | None = None) -> None:
        self.settings = settings
        self.dir = settings.data_dir / "kafka"
        self.process = LocalProcess("broker", self.dir)
        self.heap = heap
        self.sasl = sasl

    def _server_properties(self) -> str:
        s = self.settings
        # PLAINTEXT stays the inter-broker listener and the one readiness is checked on.
        listeners = [f"PLAINTEXT://127.0.0.1:{s.kafka_port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if self.sasl:
            listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl.port}")
            protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}",
                f"listeners={','.join(listeners)},CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
                f"advertised.listeners={','.join(listeners)}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                f"listener.security.protocol.map={','.join(protocols)}",
                *(self.sasl.properties() if self.sasl else []),
                f"log.dirs={(self.dir / 'data').resolve()}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "log.retention.check.interval.ms=60000",
                "",
            ]
        )

    def status(self) -> BrokerStatus:
        pid = self.process.pid()
        return BrokerStatus(pid is not None, pid, self.settings.bootstrap_servers, self.dir)

    def start(self, deadline_s: float = 90.0) -> BrokerStatus:
        """Start unless running; return once a metadata request succeeds."""
        if self.process.pid() is not None:
            self.process.wait_ready(lambda: cluster_reachable(self.settings), deadline_s, "Kafka broker")
            return self.status()
        jars = kafka_jars(self.settings)
        self.dir.mkdir(parents=True, exist_ok=True)
        properties = self.dir / "server.properties"
        properties.write_text(self._server_properties())
        (self.dir / "log4j2.properties").write_text(LOG4J2)
        java = ["java", f"-Dlog4j2.configurationFile={(self.dir / 'log4j2.properties').resolve()}"]
        classpath = ["-cp", f"{jars}/*"]
        if not (self.dir / "data" / "meta.properties").exists():
            result = subprocess.run(
                [
                    *java,
                    *classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    # One token: an id starting with "-" (1 in 64) would parse as an option.
                    f"--cluster-id={_cluster_id()}",
                    "-c",
                    str(properties),
                ],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise BrokerError(f"formatting KRaft storage failed:\n{result.stdout}{result.stderr}")
        self.process.spawn(
            [
                *java,
                f"-Xmx{self.heap}",
                f"-Xms{self.heap}",
                "-XX:+UseG1GC",
                *classpath,
                "kafka.Kafka",
                str(properties),
            ]
        )
        try:
            self.process.wait_ready(
                lambda: cluster_reachable(self.settings, timeout=1.0), deadline_s, "Kafka broker"
            )
        except LocalProcessError as exc:
            raise BrokerError(str(exc)) from None
        return self.status()

    def stop(self) -> bool:
        return self.process.stop(timeout_s=60.0)


def _cluster_id() -> str:
    # KRaft wants a base64url-encoded 16-byte uuid (what `kafka-storage random-uuid` prints).
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
