"""The services ``tagstream run`` and ``tagstream stack`` know: name -> ``module:function``.

A service's entry function takes no arguments, reads its settings from the environment, runs
until SIGTERM and returns the process exit code. A service is *available* once its module exists.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

SERVICES: dict[str, str] = {
    "collector": "services.ingest.collector.main:run",
    "ingest": "services.ingest.main:run",
    "enricher": "services.enricher.main:run",
    "segmenter": "services.segmenter.main:run",
    "trigger": "services.trigger.main:run",
    "webhook": "services.trigger.webhook:run",
    "loader": "services.loader.main:run",
}

# Order matters for `stack up`: upstream first.
STACK_ORDER = ("collector", "ingest", "enricher", "segmenter", "trigger", "webhook", "loader")


def _exists(target: str) -> bool:
    try:
        return importlib.util.find_spec(target.split(":")[0]) is not None
    except ModuleNotFoundError:
        return False


def entry_point(name: str) -> Callable[[], int]:
    if name not in SERVICES or not _exists(SERVICES[name]):
        known = ", ".join(available()) or "none yet"
        raise KeyError(f"unknown service {name!r}; available: {known}")
    target = SERVICES[name]
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def available() -> list[str]:
    return [name for name in STACK_ORDER if name in SERVICES and _exists(SERVICES[name])]
