"""Poll the definitions file (or directory) and load it when it changes; refusals keep the old set.

``Watcher.poll()`` returns new definitions when the files changed and load cleanly, else None. A
refused change is logged once (with every ``path: message`` from ``definitions.load``) and counted;
the previous definitions stay in force until the files change again.
"""

from __future__ import annotations

from pathlib import Path

from services.common.logs import get_logger
from services.segmenter import metrics
from services.segmenter.definitions import SUFFIXES, DefinitionError, Segment, load

log = get_logger("segmenter")
Signature = tuple[tuple[str, int, int], ...]


def signature(path: Path) -> Signature:
    files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES) if path.is_dir() else [path]
    out = []
    for file in files:
        try:
            st = file.stat()
        except OSError:
            out.append((str(file), -1, -1))
        else:
            out.append((str(file), st.st_mtime_ns, st.st_size))
    return tuple(out)


class Watcher:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: Signature | None = None

    def initial(self) -> dict[str, Segment]:
        """The definitions at start; a missing or bad file stops the service (nothing to run with)."""
        self._seen = signature(self.path)
        return load(self.path)

    def poll(self) -> dict[str, Segment] | None:
        try:
            current = signature(self.path)
        except OSError:
            return None
        if current == self._seen:
            return None
        self._seen = current
        try:
            segments = load(self.path)
        except DefinitionError as error:
            metrics.RELOAD_ERRORS.inc()
            log.error(
                "segment definitions refused; keeping the previous ones", extra={"problems": error.problems}
            )
            return None
        except OSError as error:
            metrics.RELOAD_ERRORS.inc()
            log.error(
                "segment definitions unreadable; keeping the previous ones", extra={"error": str(error)}
            )
            return None
        metrics.RELOADS.inc()
        return segments
