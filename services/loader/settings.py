"""Loader configuration (``TAGSTREAM_LOADER_*``), on top of the shared settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from services.common.settings import Settings


class LoaderSettings(Settings):
    loader_flush_seconds: float = Field(
        default=60.0, gt=0, description="Flush a partition's batch this long after its first record."
    )
    loader_flush_rows: int = Field(
        default=50_000, gt=0, description="Flush a partition's batch at this size."
    )
    loader_source: Literal["enriched", "valid"] = Field(
        default="enriched",
        description="enriched: load the enricher's person-attributed `enriched` topic; valid: load "
        "ingest's five *.valid topics (person_id stays NULL), for a pipeline without the enricher. "
        "Never both: every input record would load twice.",
    )
    loader_group_id: str = Field(default="tagstream-loader", description="Kafka consumer group.")
    loader_session_timeout_ms: int = Field(
        default=45_000,
        ge=6_000,
        description="Kafka group session timeout: how soon a dead loader's "
        "partitions move to another (or a restarted) loader.",
    )
    loader_fetch_partition_bytes: int = Field(
        default=8 << 20,
        ge=1 << 20,
        description="librdkafka max.partition.fetch.bytes of the loader's consumer: at the 1 MiB "
        "default a bare consumer of our batches read 8x fewer records/s.",
    )
    loader_host: str = Field(default="127.0.0.1", description="Bind address of the health/analytics port.")
    loader_port: int = Field(default=9106, description="/metrics /healthz /readyz /reports /query; 0: free.")
    loader_ttl_days: int = Field(
        default=0, ge=0, description="Drop rows older than this many days (event time); 0 keeps everything."
    )
    loader_copy_window: int = Field(
        default=20_000,
        ge=0,
        description="A record whose bytes equal one of the previous N offsets of its partition is an "
        "upstream replay's copy and is not loaded (services/loader/copies.py); 0 loads everything.",
    )
    loader_test_kill_after_insert: bool = Field(
        default=False,
        description="TESTS ONLY: SIGKILL this process right after the first acknowledged insert, before "
        "the offset commit, to prove a replay loads nothing twice.",
    )
    # Fault injection for `make chaos` (services/loader/faults.py); never set in production.
    loader_test_clickhouse_down_file: Path | None = Field(
        default=None,
        description="TESTS ONLY: while this file exists, every ClickHouse call fails as if the server "
        "were unreachable (a ClickHouse outage for the embedded chDB).",
    )
    loader_test_unsafe_commit_first: bool = Field(
        default=False,
        description="TESTS ONLY, negative control: commit offsets BEFORE inserting, so a crash loses the "
        "batch; the chaos check must fail with it.",
    )
