"""The loader's rule for upstream copies: same bytes within the previous N offsets of a partition."""

import random

from services.loader.batcher import Batch, Item
from services.loader.copies import CopyFilter


def _log(*values: bytes, start: int = 0) -> list[Item]:
    return [Item(start + i, None, v) for i, v in enumerate(values)]


def _filter(log: list[Item], window: int) -> CopyFilter:
    def read_before(_topic: str, _partition: int, first: int, end: int) -> list[Item]:
        return [item for item in log if first <= item.offset < end]

    return CopyFilter(window, read_before)


def _kept(copies: CopyFilter, items: list[Item]) -> list[bytes | None]:
    batch = Batch("enriched", 0, [i.offset for i in items], [i.key for i in items], [i.value for i in items])
    kept, _dropped = copies.keep(batch)
    return list(kept.values)


def test_a_copy_inside_the_window_is_dropped_and_one_beyond_it_is_kept():
    log = _log(b"a", b"b", b"a", b"c", b"d", b"e", b"b")
    # offset 2 repeats offset 0 (2 back): dropped; offset 6 repeats offset 1 (5 back): kept
    assert _kept(_filter(log, window=3), log) == [b"a", b"b", b"c", b"d", b"e", b"b"]


def test_the_decision_depends_on_the_log_only_so_a_replayed_batch_keeps_the_same_rows():
    log = _log(b"a", b"b", b"c", b"a", b"b", b"x")
    first_run = _filter(log, window=10)
    assert _kept(first_run, log[:3]) == [b"a", b"b", b"c"]
    assert _kept(first_run, log[3:]) == [b"x"]
    # A restarted process meets the second batch first: it reads the window back from the log.
    assert _kept(_filter(log, window=10), log[3:]) == [b"x"]


def test_window_zero_loads_everything():
    log = _log(b"a", b"a")
    assert _kept(_filter(log, window=0), log) == [b"a", b"a"]


def test_batch_by_batch_equals_the_rule_over_the_whole_log():
    # Random values from a small alphabet, random batch cuts, a small window (so the memory
    # pruning runs often): the kept records are exactly those without the same bytes in the
    # `window` offsets before them.
    rng = random.Random(7)
    for window in (1, 3, 8):
        log = _log(*(bytes([rng.randrange(6)]) for _ in range(400)))
        expected = [
            item.value
            for item in log
            if not any(other.value == item.value for other in log[max(0, item.offset - window) : item.offset])
        ]
        copies, kept, start = _filter(log, window), [], 0
        while start < len(log):
            end = min(len(log), start + rng.randrange(1, 30))
            kept += _kept(copies, log[start:end])
            start = end
        assert kept == expected, window
