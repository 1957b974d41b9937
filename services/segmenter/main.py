"""``tagstream run segmenter``: the faust worker plus our health server (port 9104 by default).

The worker, logging and SIGTERM handling are shared by every faust service
(services/common/faust_service.py).
"""

from __future__ import annotations

from services.common.faust_service import run_worker
from services.segmenter.app import build_app
from services.segmenter.settings import SegmenterSettings

DEFAULT_HEALTH_PORT = 9104  # /metrics /healthz /readyz unless TAGSTREAM_HEALTH_PORT is set


def run() -> int:
    settings = SegmenterSettings()
    return run_worker("segmenter", settings, build_app, DEFAULT_HEALTH_PORT, settings.segmenter_state_dir)
