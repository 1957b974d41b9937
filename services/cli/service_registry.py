"""The services ``tagstream run`` and ``tagstream stack`` know: name -> ``module:function``.

A service's entry function takes no arguments, reads its settings from the environment, runs
until SIGTERM and returns the process exit code. Add a line here when a service lands.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

SERVICES: dict[str, str] = {}

# Order matters for `stack up`: upstream first.
STACK_ORDER = ("collector", "ingest", "enricher", "segmenter", "trigger", "loader")


def entry_point(name: str) -> Callable[[], int]:
    try:
        target = SERVICES[name]
    except KeyError:
        known = ", ".join(SERVICES) or "none yet"
        raise KeyError(f"unknown service {name!r}; available: {known}") from None
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def available() -> list[str]:
    return [name for name in STACK_ORDER if name in SERVICES]
