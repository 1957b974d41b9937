"""``tagstream run enricher``: the faust worker plus our health server (port 9103 by default).

The worker, logging and SIGTERM handling are shared by every faust service
(services/common/faust_service.py).
"""

from __future__ import annotations

import sys
from functools import partial

from services.common.faust_service import run_worker
from services.enricher.app import build_app, catalogue_file
from services.enricher.geofences import CatalogueError
from services.enricher.settings import EnricherSettings

DEFAULT_HEALTH_PORT = 9103  # /metrics /healthz /readyz unless TAGSTREAM_HEALTH_PORT is set


def run() -> int:
    settings = EnricherSettings()
    try:
        geofences = catalogue_file(settings)
    except CatalogueError as exc:  # nothing to run with: say which entry, stop
        print(f"error: TAGSTREAM_ENRICHER_GEOFENCE_FILE: {exc}", file=sys.stderr)
        return 2
    build = partial(build_app, geofences=geofences)
    return run_worker("enricher", settings, build, DEFAULT_HEALTH_PORT, settings.enricher_state_dir)
