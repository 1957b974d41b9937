"""A service's notion of "now": the wall clock, or (tests only) a file holding epoch milliseconds.

``TAGSTREAM_TRIGGER_CLOCK_FILE`` and ``TAGSTREAM_SEGMENTER_CLOCK_FILE`` exist so integration tests
can release a delayed send, or close a 30-day window, by writing a later time instead of waiting,
and can compare a service's output with a recomputation at exactly the time it used. Never set
them in production: time stands still while the file does not change.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path


class Clock:
    def __init__(self, file: Path | None = None) -> None:
        self.file = file
        self._last: int | None = None

    def now_ms(self) -> int:
        if self.file is None:
            return int(time.time() * 1000)
        with contextlib.suppress(OSError, ValueError):  # a half-written file: the previous reading
            self._last = int(self.file.read_text().strip())
        return self._last if self._last is not None else int(time.time() * 1000)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms() / 1000, tz=UTC)
