"""Two fixes for how faust-streaming keeps its committed offsets.

1. Commits past gaps (transaction markers), :func:`fix_gap_commits`:

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


# 2. Which committed offsets are real, :func:`track_confirmed_commits`.
#
# Faust records an offset as committed even when the commit failed: its aiokafka driver returns
# False on "already rebalanced" and ``_commit_offsets`` updates ``_committed_offset`` either way.
# Until the rebalance resets it, that offset is ahead of the broker's, and the replay after the
# rebalance starts at the broker's. The enricher forgets identity versions and outbox entries
# below the committed offset (no replay reaches below it), so it must use one the broker
# confirmed: forgetting a version a replay still needs made a replayed login read its person as
# absent (chaos run seed 102, docs/design.md "Fault tests").
CONFIRMED = "_tagstream_confirmed"


def track_confirmed_commits() -> None:
    """Keep, beside faust's own record, the offsets the broker confirmed per partition: those a
    commit succeeded with and those read from the broker at each assignment."""
    if getattr(Consumer._commit_offsets, "_tagstream_tracked", False):
        return
    Consumer._commit_offsets, Consumer.perform_seek = tracking(  # type: ignore[method-assign]
        Consumer._commit_offsets, Consumer.perform_seek
    )


def tracking(commit_offsets: Any, perform_seek: Any) -> tuple[Any, Any]:
    """Faust's ``Consumer._commit_offsets`` and ``perform_seek`` wrapped to keep the confirmed offsets."""

    async def _commit_offsets(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
        did_commit = await commit_offsets(self, offsets, start_new_transaction=start_new_transaction)
        if did_commit:
            confirmed = self.__dict__.setdefault(CONFIRMED, {})
            for tp, offset in offsets.items():
                if self._committed_offset.get(tp) == offset:  # committed, not discarded as revoked
                    confirmed[tp] = offset
        return bool(did_commit)

    async def _perform_seek(self: Any) -> None:
        await perform_seek(self)
        confirmed = self.__dict__.setdefault(CONFIRMED, {})
        confirmed.clear()  # every assigned partition is sought: its offset now comes from the broker
        confirmed.update({tp: o for tp, o in self._committed_offset.items() if o is not None})

    _commit_offsets._tagstream_tracked = True  # type: ignore[attr-defined]
    return _commit_offsets, _perform_seek


def confirmed_offset(consumer: Any, tp: Any) -> int | None:
    """The partition's committed offset as the broker has it (None: not known): no replay starts
    below it. Faust's own value, unless a failed commit put that ahead of the last confirmed one."""
    believed = getattr(consumer, "_committed_offset", {}).get(tp)
    confirmed = getattr(consumer, CONFIRMED, {}).get(tp)
    if believed is None or confirmed is None:
        return None
    return min(believed, confirmed)
