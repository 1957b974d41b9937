"""Segmenter settings (``TAGSTREAM_SEGMENTER_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from services.common.settings import Settings


class SegmenterSettings(Settings):
    segmenter_app_id: str = Field(
        default="tagstream-segmenter", description="Faust app id: consumer group and changelog topic prefix."
    )
    segmenter_definitions_file: Path | None = Field(
        default=None,
        description="Segment definitions, a file or a directory (docs/segments.md); unset: "
        "<config_dir>/segments.yaml, or <config_dir>/segments.example.yaml when that does not exist.",
    )
    segmenter_reload_seconds: float = Field(
        default=5.0, description="How often the definitions are checked for changes."
    )
    segmenter_tick_seconds: float = Field(
        default=1.0, description="How often time advances without facts (window exits fire on ticks)."
    )
    segmenter_clock_file: Path | None = Field(
        default=None,
        description="TEST ONLY: a file holding epoch milliseconds read as 'now' (unset: the wall clock).",
    )
    segmenter_broker_session_timeout_s: float = Field(
        default=10.0, description="Consumer group session timeout: how fast a killed instance is replaced."
    )
    segmenter_replication_factor: int = Field(
        default=1, description="Replication of the changelog topic faust creates (3 on a real cluster)."
    )
    segmenter_clickhouse_database: str | None = Field(
        default="segment_facts",  # services/loader/ddl.py SEGMENT_FACTS_DATABASE
        description="Database with the oracle's tables (docs/segments.md) for seeding new segments from "
        "history: the loader's views over its loaded tables.",
    )

    @property
    def definitions_path(self) -> Path:
        if self.segmenter_definitions_file is not None:
            return self.segmenter_definitions_file
        default = self.config_dir / "segments.yaml"
        return default if default.exists() else self.config_dir / "segments.example.yaml"

    @property
    def segmenter_state_dir(self) -> Path:
        return self.data_dir / "segmenter"

    @property
    def full_app_id(self) -> str:
        # The topic prefix applies to the app id too (changelog topics, consumer group), as in the enricher.
        return f"{self.topic_prefix}{self.segmenter_app_id}"
