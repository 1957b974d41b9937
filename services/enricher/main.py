"""``tagstream run enricher``: the faust worker plus our health server (port 9103 by default).

The worker, logging and SIGTERM handling are shared by every faust service
(services/common/faust_service.py).
"""

from __future__ import annotations

from services.common.faust_service import run_worker
from services.enricher.app import build_app
from services.enricher.settings import EnricherSettings

DEFAULT_HEALTH_PORT = 9103  # /metrics /healthz /readyz unless TAGSTREAM_HEALTH_PORT is set


def run() -> int:
    settings = EnricherSettings()
    return run_worker("enricher", settings, build_app, DEFAULT_HEALTH_PORT, settings.enricher_state_dir)
