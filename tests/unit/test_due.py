"""The in-memory due index and the test clock."""

from __future__ import annotations

from pathlib import Path

from services.common.clock import Clock
from services.common.due import STALE_SLACK, DueIndex


class TestDueIndex:
    def test_take_due_returns_due_persons_earliest_first_and_forgets_them(self):
        """Only persons whose time came are taken, once, in time order."""
        index = DueIndex()
        index.set(0, "b", 20)
        index.set(0, "a", 10)
        index.set(0, "c", 30)
        assert index.take_due(0, 25) == ["a", "b"]
        assert index.take_due(0, 25) == []
        assert index.next_due(0) == 30 and index.pending() == 1

    def test_a_new_due_time_replaces_the_old_one(self):
        """Moving a person's time later (or clearing it) leaves no stale wake-up behind."""
        index = DueIndex()
        index.set(1, "a", 10)
        index.set(1, "a", 50)
        assert index.take_due(1, 20) == [] and index.next_due(1) == 50
        index.set(1, "a", None)
        assert index.next_due(1) is None and not index.has_due(1, 100)

    def test_a_time_moved_at_every_record_keeps_the_heap_bounded(self):
        """A busy person moves its session end at every record: stale entries do not pile up."""
        index = DueIndex()
        index.set(0, "quiet", 5)
        for t in range(100_000):
            index.set(0, "busy", 1_000 + t)
        assert len(index._heaps[0]) <= 2 * 2 + STALE_SLACK
        assert index.take_due(0, 10) == ["quiet"] and index.take_due(0, 100_998) == []
        assert index.take_due(0, 100_999) == ["busy"]

    def test_a_partition_ticks_to_rebuild_then_when_due_never_twice_while_one_is_on_its_way(self):
        """The services' timers ask this: one tick in flight per partition until it is handled."""
        index = DueIndex()
        assert index.ticks_to_send({0, 1}, 100) == [(0, "rebuild"), (1, "rebuild")]
        assert index.ticks_to_send({0, 1}, 100) == []  # both still on their way
        index.built.update({0, 1})
        index.tick_handled(0)
        index.tick_handled(1)
        index.set(1, "a", 50)
        assert index.ticks_to_send({0, 1}, 100, also_due=lambda p: p == 0) == [(0, "due"), (1, "due")]
        index.tick_handled(0)
        assert index.ticks_to_send({0, 1}, 100) == []  # 0: nothing due now; 1: still on its way

    def test_reassign_forgets_revoked_partitions(self):
        """A partition that moved away is forgotten and must be rebuilt if it comes back."""
        index = DueIndex()
        index.reassign({0, 1})
        index.set(0, "a", 10)
        index.built.update({0, 1})
        index.reassign({1})
        assert index.next_due(0) is None and index.built == {1}


class TestClock:
    def test_the_clock_file_is_now_and_a_bad_read_keeps_the_last_value(self, tmp_path: Path):
        """Tests move time by writing epoch ms; a half-written file does not jump to the wall clock."""
        path = tmp_path / "clock"
        path.write_text("1000")
        clock = Clock(path)
        assert clock.now_ms() == 1000
        path.write_text("")
        assert clock.now_ms() == 1000
        path.write_text("5000")
        assert clock.now().timestamp() == 5.0

    def test_without_a_file_it_is_the_wall_clock(self):
        assert Clock().now_ms() > 1_700_000_000_000
