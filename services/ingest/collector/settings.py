"""Collector configuration (``TAGSTREAM_COLLECTOR_*`` and ``TAGSTREAM_TRACKING_SECRET``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from services.common.settings import Settings


class CollectorSettings(Settings):
    collector_host: str = Field(default="127.0.0.1", description="Listen address.")
    collector_port: int = Field(default=8080, description="Listen port (0 picks a free one).")
    collector_write_keys: str = Field(
        default="", description="Comma-separated key=source pairs, e.g. 'wk_web=web,wk_ios=ios'."
    )
    collector_write_keys_file: Path | None = Field(
        default=None, description="A file of key=source lines (# comments allowed); adds to the above."
    )
    tracking_secret: SecretStr = Field(
        default=SecretStr(""), description="HMAC key that signs tracking tokens; required for links."
    )
    collector_rate_per_key: float = Field(
        default=2000.0, description="Messages per second each write key may send (token bucket)."
    )
    collector_burst_per_key: float = Field(
        default=10000.0, description="Bucket size: messages a key may send at once."
    )
    collector_delivery_timeout_s: float = Field(
        default=10.0, description="How long a request waits for the broker's ack before a 503."
    )
    collector_cors_origins: str = Field(default="*", description="Comma-separated allowed origins.")
    collector_read_delay_s: float = Field(
        default=10.0, description="A 'read' pixel counts once the email stayed open this long."
    )


def parse_write_keys(text: str) -> dict[str, str]:
    """``key=source`` pairs separated by commas or newlines -> {key: source}; a bare key is its own source."""
    keys: dict[str, str] = {}
    for raw in text.replace("\n", ",").split(","):
        item = raw.split("#", 1)[0].strip()
        if not item:
            continue
        key, _, source = item.partition("=")
        keys[key.strip()] = source.strip() or key.strip()
    return keys


def load_write_keys(settings: CollectorSettings) -> dict[str, str]:
    keys = parse_write_keys(settings.collector_write_keys)
    if settings.collector_write_keys_file is not None:
        keys.update(parse_write_keys(settings.collector_write_keys_file.read_text()))
    return keys
