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

    @property
    def campaigns_file(self) -> Path:
        return self.trigger_campaigns_file or self.config_dir / "campaigns.yaml"

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
