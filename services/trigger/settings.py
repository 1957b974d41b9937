"""The trigger's settings (``TAGSTREAM_TRIGGER_*``) and the pieces of the core built from them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from services.common.settings import Settings
from services.trigger.definitions import CampaignSet, parse_campaigns
from services.trigger.render import LinkSigner, Tracking, hmac_signer


class TriggerSettings(Settings):
    trigger_campaigns_file: Path | None = Field(
        default=None,
        description="Campaign definitions (docs/campaigns.md); unset: <config_dir>/campaigns.yaml.",
    )
    trigger_reload_seconds: float = Field(default=10.0, description="How often the campaign file is re-read.")
    trigger_tracking_base_url: str | None = Field(
        default=None,
        description="Collector base URL for tracking links and the open pixel; unset: no tracking.",
    )
    trigger_tracking_key: SecretStr = Field(
        default=SecretStr(""), description="HMAC key for tracking tokens (shared with the collector)."
    )
    trigger_app_id: str = Field(
        default="tagstream-trigger", description="Faust app id: consumer group and changelog topic prefix."
    )
    trigger_tick_seconds: float = Field(
        default=1.0, description="How often the timer looks for due sends, timers and broadcasts."
    )
    trigger_clock_file: Path | None = Field(
        default=None,
        description="TEST ONLY: a file holding epoch milliseconds read as 'now' (unset: the wall clock).",
    )
    trigger_profile_wait_ms: int = Field(
        default=2000,
        description="How long an event waits for the profile that includes it (it arrives on another "
        "topic); 0: never wait.",
    )
    trigger_readback_records: int = Field(
        default=1000,
        description="Records read back from the end of each outbound partition when a partition is "
        "taken over, so a replay does not produce a message its previous owner already produced.",
    )
    trigger_batch_max: int = Field(
        default=100,
        ge=1,
        description="Inputs decided together: their messages are acknowledged with one round trip, "
        "then their states written; 1: one input at a time.",
    )
    trigger_batch_within_s: float = Field(
        default=0.01,
        gt=0,
        description="How long a batch waits for more inputs before it is decided (adds up to this "
        "much latency when the trigger keeps up).",
    )
    trigger_test_kill_after_message: str | None = Field(
        default=None,
        description="TEST ONLY: SIGKILL the process after this message id is acknowledged and before "
        "the person's state is written (the crash window of docs/campaigns.md).",
    )
    trigger_broker_session_timeout_s: float = Field(
        default=10.0, description="Consumer group session timeout: how fast a killed instance is replaced."
    )
    trigger_replication_factor: int = Field(
        default=1, description="Replication of the changelog topics faust creates (3 on a real cluster)."
    )

    @property
    def campaigns_file(self) -> Path:
        return self.trigger_campaigns_file or self.config_dir / "campaigns.yaml"

    @property
    def trigger_state_dir(self) -> Path:
        return self.data_dir / "trigger"

    @property
    def full_app_id(self) -> str:
        return f"{self.topic_prefix}{self.trigger_app_id}"  # one group and changelog set per prefix

    def tracking(self, link_signer: LinkSigner | None = None) -> Tracking | None:
        """Tracking links through the collector, signed by ``link_signer`` (default: HMAC with the key)."""
        if not self.trigger_tracking_base_url:
            return None
        key = self.trigger_tracking_key.get_secret_value().encode()
        if link_signer is None and not key:
            raise ValueError("TAGSTREAM_TRIGGER_TRACKING_KEY is required when tracking is on")
        return Tracking(self.trigger_tracking_base_url, link_signer or hmac_signer(key))


def default_campaigns() -> CampaignSet:
    """No campaigns: what a trigger without a campaign file runs with (it sends nothing)."""
    return parse_campaigns({})
