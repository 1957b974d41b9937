"""ingest configuration (``TAGSTREAM_INGEST_*`` plus the common ``TAGSTREAM_*`` settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from services.common.settings import Settings

DEFAULT_HEALTH_PORT = 9101


class IngestSettings(Settings):
    ingest_group_id: str = "tagstream-ingest"
    ingest_batch_size: int = Field(default=1000, description="Records per consume/produce/commit cycle.")
    ingest_batch_timeout_s: float = Field(
        default=0.05,
        description="Longest wait for a batch to fill: every record of a batch that is not full waits "
        "this long before its transaction commits (latency); full batches never wait.",
    )
    ingest_future_tolerance_s: int = Field(default=600, description="How far event_time may be ahead of now.")
    ingest_horizon_days: int = Field(default=30, description="Oldest event_time accepted unless backfill.")
    ingest_backfill_horizon_days: int = Field(
        default=3650, description="Oldest event_time for backfill records."
    )
    ingest_dedupe_window_s: int = Field(
        default=24 * 3600, description="A message_id seen within this passes once."
    )
    ingest_max_record_bytes: int = Field(
        default=256 * 1024, description="Larger records are refused (oversized)."
    )
    ingest_max_properties_bytes: int = 32 * 1024
    ingest_max_properties_keys: int = 200
    ingest_max_properties_depth: int = 5
    ingest_max_tag_name: int = 128
    ingest_max_string_value: int = 4096
    ingest_definitions_file: Path | None = Field(
        default=None,
        description="Declared custom events (YAML); default <config_dir>/event-definitions.yaml.",
    )
    ingest_definitions_reload_s: float = 10.0

    @property
    def definitions_path(self) -> Path:
        return self.ingest_definitions_file or self.config_dir / "event-definitions.yaml"
