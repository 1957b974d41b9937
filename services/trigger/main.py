"""``tagstream run trigger``: the faust worker plus our health server (port 9105 by default).

The worker, logging and SIGTERM handling are shared by every faust service
(services/common/faust_service.py).
"""

from __future__ import annotations

from services.common.faust_service import run_worker
from services.trigger.app import build_app
from services.trigger.settings import TriggerSettings

DEFAULT_HEALTH_PORT = 9105  # /metrics /healthz /readyz unless TAGSTREAM_HEALTH_PORT is set


def run() -> int:
    settings = TriggerSettings()
    return run_worker("trigger", settings, build_app, DEFAULT_HEALTH_PORT, settings.trigger_state_dir)
