"""Enricher settings (``TAGSTREAM_ENRICHER_*``); defaults follow docs/design.md."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from services.common.settings import Settings


class EnricherSettings(Settings):
    enricher_app_id: str = Field(
        default="tagstream-enricher", description="Faust app id: consumer group and changelog topic prefix."
    )
    enricher_conflict_policy: Literal["reject", "merge"] = Field(
        default="reject",
        description="A personalize naming identities of two persons: reject (dead letter) or merge them.",
    )
    enricher_max_device_tokens: int = Field(default=5, description="Devices kept per person, oldest evicted.")
    enricher_launch_dedup_s: float = Field(default=30.0, description="App launches closer than this are one.")
    enricher_session_timeout_s: float = Field(
        default=1800.0,
        gt=0,
        description="Inactivity that ends a session: by event time when the next activity comes, "
        "else by the enricher's clock this long after the last activity was applied.",
    )
    enricher_tick_seconds: float = Field(
        default=1.0, gt=0, description="How often the timer looks for sessions to end and visits to dwell."
    )
    enricher_clock_file: Path | None = Field(
        default=None,
        description="Test only: a file holding epoch milliseconds read as the enricher's clock "
        "(services/common/clock.py); time stands still while it does not change.",
    )
    enricher_geofence_file: Path | None = Field(
        default=None, description="JSON catalogue of geofences (circles, polygons) and iBeacons."
    )
    enricher_catalogue_wait_s: float = Field(
        default=30.0,
        ge=0,
        description="At start, how long to wait for the geofences topic to be read to its end.",
    )
    enricher_dwell_s: float = Field(
        default=300.0, description="Time inside a geofence before `dwelled` (by a point, else by the clock)."
    )
    enricher_hysteresis_m: float = Field(
        default=50.0, description="Exit only this far beyond a geofence's edge (GPS jitter)."
    )
    enricher_broker_session_timeout_s: float = Field(
        default=10.0, description="Consumer group session timeout: how fast a killed instance is replaced."
    )
    enricher_commit_interval_s: float = Field(
        default=2.8,
        gt=0,
        description="How often input offsets are committed (faust's broker_commit_interval): a crash "
        "replays at most about this much input.",
    )

    enricher_replication_factor: int = Field(
        default=1, description="Replication of the changelog topics faust creates (3 on a real cluster)."
    )
    enricher_copy_window: int = Field(
        default=20_000,
        gt=0,
        description="Records of enricher.identity within which a byte-identical record is the hop's "
        "copy (skipped); read back from before the committed offset at each start or rebalance.",
    )
    enricher_readback_records: int = Field(
        default=0,
        ge=0,
        description="Records read back from the end of an enriched partition at its first replay, so "
        "outputs that already left are not re-sent; 0 (default) re-sends them all: consumers drop "
        "the copies, and the blocking read stalled the worker after some restarts (docs/design.md).",
    )
    enricher_crash_after_state_write: str = Field(
        default="",
        description="Test only: the person stage exits after this message's state write, before its outputs.",
    )

    @property
    def enricher_state_dir(self) -> Path:
        return self.data_dir / "enricher"

    @property
    def full_app_id(self) -> str:
        # The topic prefix applies to the app id too, so changelog topics and the consumer group of
        # one test (or tenant) never meet another's.
        return f"{self.topic_prefix}{self.enricher_app_id}"
