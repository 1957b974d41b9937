"""Faust's commit past transaction markers (services/common/faust_commits.py), on faust's own code."""

import asyncio
from collections import defaultdict

import faust
from faust.transport.consumer import Consumer
from intervaltree import IntervalTree

from services.common.faust_commits import AFFECTED, confirmed_offset, fix_gap_commits, tracking

TP = ("chaos-events.valid", 0)


class Offsets:
    """The bookkeeping faust's Consumer keeps per partition, with its own methods for it."""

    def __init__(self) -> None:
        self._gap: defaultdict = defaultdict(IntervalTree)
        self._acked: defaultdict = defaultdict(list)
        self._acked_index: defaultdict = defaultdict(set)
        self._committed_offset: defaultdict = defaultdict(lambda: None)

    # Looked up at each call: the fix replaces Consumer._add_gap.
    async def _add_gap(self, tp: tuple[str, int], offset_from: int, offset_to: int) -> None:
        await Consumer._add_gap(self, tp, offset_from, offset_to)

    def _new_offset(self, tp: tuple[str, int]) -> int | None:
        return Consumer._new_offset(self, tp)

    def read(self, offsets: list[int]) -> None:
        """What faust's ``_drain_messages`` and ``ack`` do for records read at these offsets."""
        last = None
        for offset in offsets:
            if last and offset - last > 1:  # faust's own condition (a gap after offset 0 is missed)
                asyncio.run(self._add_gap(TP, last + 1, offset))
            last = offset
            self._acked_index[TP].add(offset)
            self._acked[TP].append(offset)


def test_the_installed_faust_is_one_whose_gap_handling_was_checked():
    """Upgrading faust-streaming must re-check faust_commits.py: the fix shifts the end of every gap
    by one, which a version that fixed the caller would not want."""
    assert faust.__version__ in AFFECTED, f"faust-streaming {faust.__version__}: re-check faust_commits.py"
    assert fix_gap_commits()


def test_one_commit_goes_past_every_transaction_marker_read_so_far():
    """Three transactions of two records each, a commit marker after each (offsets 2, 5, 8): every
    record is processed, so the commit is the offset after the last record, not after the first
    transaction (faust-streaming 0.15.3 committed 4, then one transaction per commit interval)."""
    fix_gap_commits()
    offsets = Offsets()
    offsets.read([0, 1, 3, 4, 6, 7])
    assert offsets._new_offset(TP) == 8
    assert offsets._gap[TP].is_empty() and offsets._acked[TP] == []


def test_a_commit_stops_before_a_record_not_yet_processed():
    fix_gap_commits()
    offsets = Offsets()
    offsets.read([1, 3, 4, 6])
    offsets._acked[TP].remove(4)  # read, still being processed
    offsets._acked_index[TP].discard(4)
    assert offsets._new_offset(TP) == 4


class Committing:
    """Faust's bookkeeping of committed offsets around a commit, as its driver behaves: the offset
    is recorded as committed even when the commit failed ("already rebalanced")."""

    def __init__(self) -> None:
        self._committed_offset: dict = {}
        self.fail = False

    async def commit_offsets(self, offsets: dict, start_new_transaction: bool = True) -> bool:
        self._committed_offset.update(offsets)
        return not self.fail

    async def perform_seek(self) -> None:
        self._committed_offset.update({TP: 10})  # what the broker has


def test_a_failed_commit_does_not_move_the_confirmed_offset():
    """The enricher forgets what lies below the committed offset: after a failed commit faust's own
    value is ahead of the broker's, where the replay after the rebalance starts."""
    consumer = Committing()
    commit, seek = tracking(Committing.commit_offsets, Committing.perform_seek)
    assert confirmed_offset(consumer, TP) is None  # nothing known yet: forget nothing
    asyncio.run(seek(consumer))
    assert confirmed_offset(consumer, TP) == 10
    consumer.fail = True
    assert asyncio.run(commit(consumer, {TP: 20})) is False
    assert consumer._committed_offset[TP] == 20 and confirmed_offset(consumer, TP) == 10
    consumer.fail = False
    assert asyncio.run(commit(consumer, {TP: 25})) is True
    assert confirmed_offset(consumer, TP) == 25
