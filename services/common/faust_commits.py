"""A fix for how faust-streaming commits offsets past gaps (transaction markers).

Ingest writes the ``*.valid`` topics in transactions, so a commit marker follows every batch:
an offset no consumer receives. Faust fills such holes itself: when the next record comes after
one, ``_drain_messages`` calls ``_add_gap(tp, last + 1, offset)``, and ``_new_offset`` later adds
the gap's offsets to the acknowledged ones and commits after the first run of consecutive
offsets. But ``_add_gap`` treats its end as inclusive, so the gap also holds ``offset``, the
record after the marker: that offset is then in the acknowledged list twice, the run breaks
there, and a commit only gets as far as the next marker. One ingest transaction per commit
interval (2.8 s) per partition: under a steady load the enricher's committed offsets on
``*.valid`` fell ever further behind what it had processed (the chaos run's drain timed out on
it; a lag that SREs see grow), and a SIGKILL replayed minutes of input through the hop as
copies (docs/design.md, "Fault tests").

faust-streaming 0.15.3 (the newest release, 2026-12) has the bug. The patch is applied only to
the versions checked to have it: a version that fixed the caller would otherwise lose the gap's
last offset and never commit past it (tests/unit/test_faust_commits.py fails on an unknown
version, so an upgrade is checked).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.consumer import Consumer

# Versions whose Consumer._add_gap includes the record after the gap (checked in their source).
AFFECTED = frozenset({"0.15.3"})


def fix_gap_commits() -> bool:
    """Make faust's gaps end before the record that follows them; whether the patch is on."""
    if faust.__version__ not in AFFECTED:
        return False
    original = Consumer._add_gap
    if getattr(original, "_tagstream_fixed", False):
        return True

    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        # The caller passes the offset of the record after the gap; the gap ends before it.
        await original(self, tp, offset_from, offset_to - 1)

    _add_gap._tagstream_fixed = True  # type: ignore[attr-defined]
    Consumer._add_gap = _add_gap  # type: ignore[method-assign]
    return True
