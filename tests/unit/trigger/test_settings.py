"""The trigger's settings: campaign file location and tracking."""

import pytest

from services.trigger.settings import TriggerSettings, default_campaigns


class TestTriggerSettings:
    def test_campaign_file_defaults_to_the_config_dir(self, tmp_path):
        """Without an explicit file the trigger reads campaigns.yaml in the config directory."""
        assert TriggerSettings(config_dir=tmp_path).campaigns_file == tmp_path / "campaigns.yaml"

    def test_environment_sets_the_file(self, monkeypatch, tmp_path):
        """TAGSTREAM_TRIGGER_CAMPAIGNS_FILE points at another file."""
        monkeypatch.setenv("TAGSTREAM_TRIGGER_CAMPAIGNS_FILE", str(tmp_path / "c.yaml"))
        assert TriggerSettings().campaigns_file == tmp_path / "c.yaml"

    def test_tracking_is_off_without_a_base_url(self):
        """No collector URL means messages carry no tracking."""
        assert TriggerSettings().tracking() is None

    def test_tracking_needs_a_key_or_a_signer(self):
        """Tracking with neither a key nor a plugged-in signer is a configuration error."""
        settings = TriggerSettings(trigger_tracking_base_url="https://t.example.com")
        with pytest.raises(ValueError, match="TRACKING_KEY"):
            settings.tracking()
        assert settings.tracking(lambda claims: "tok").token({"m": "x"}) == "tok"

    def test_key_is_not_shown(self):
        """The signing key never appears in the settings' text form."""
        settings = TriggerSettings(trigger_tracking_key="s3cret-value")
        assert "s3cret-value" not in repr(settings)

    def test_no_campaign_file_means_no_campaigns(self):
        """The empty default set has no campaigns."""
        assert default_campaigns().campaigns == {}
