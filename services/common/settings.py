"""Configuration shared by every process, read from ``TAGSTREAM_*`` environment variables.

Services subclass :class:`Settings` to add their own fields (same prefix), so one variable means
the same thing everywhere. Settings are frozen: a running service never changes configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAGSTREAM_", frozen=True, extra="ignore")

    data_dir: Path = Field(
        default=REPO_ROOT / ".tagstream", description="Broker data, chDB data, logs, pids."
    )
    cache_dir: Path = Field(default=REPO_ROOT / ".cache", description="Downloaded jars (Kafka, Apicurio).")
    kafka_bootstrap: str | None = Field(
        default=None, description="An existing Kafka cluster; unset means the local broker."
    )
    kafka_port: int = Field(default=9092, description="Client port of the local broker.")
    kafka_controller_port: int = Field(default=9093, description="KRaft controller port of the local broker.")
    # Kafka security, passed to every client (services/common/security.py): librdkafka and faust.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How clients talk to the brokers."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism (required with SASL_*)."
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = Field(
        default=None, description="PEM CA bundle that signed the brokers' certificates (SSL, SASL_SSL)."
    )
    kafka_ssl_certificate_location: Path | None = Field(
        default=None, description="Client certificate (mTLS)."
    )
    kafka_ssl_key_location: Path | None = Field(default=None, description="Client private key (mTLS).")
    kafka_security: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka client settings as JSON, applied last (confluent-kafka clients only; "
        "faust reads only the typed fields above).",
    )
    topic_prefix: str = Field(default="", description="Prepended to every topic name (tests, tenants).")
    schema_registry_url: str | None = Field(
        default=None, description="Confluent-compatible registry; set means Confluent framing."
    )
    registry_port: int = Field(
        default=8081, description="Port of the local Apicurio registry (`tagstream registry start`)."
    )
    clickhouse_url: str | None = Field(
        default=None, description="http://host:8123 for a server; unset means embedded chDB in data_dir."
    )
    clickhouse_cluster: str | None = Field(
        default=None,
        description="ClickHouse cluster name: ReplicatedMergeTree ON CLUSTER + Distributed tables "
        "(docs/deploy.md); unset means one server, plain MergeTree.",
    )
    log_level: str = "INFO"
    instance_id: str | None = Field(
        default=None,
        description="Stable id of this replica (pod name): transactional id, static group membership.",
    )
    health_host: str = Field(default="127.0.0.1", description="Bind address of /metrics, /healthz, /readyz.")
    health_port: int | None = Field(
        default=None,
        description="Port of /metrics, /healthz, /readyz; unset: the service's default, 0: any free port.",
    )
    config_dir: Path = Field(
        default=REPO_ROOT / "config",
        description="Definition files: event definitions, geofences, segments, campaigns.",
    )

    def health_port_or(self, default: int) -> int:
        return default if self.health_port is None else self.health_port

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def uses_local_broker(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse_url or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"


def load_settings() -> Settings:
    return Settings()
