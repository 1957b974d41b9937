"""Local faust tables after a crash: dropped (rebuilt from the changelog); after a clean stop: kept."""

from __future__ import annotations

from pathlib import Path

from faust.streams import current_event as faust_current

from services.common.faust_service import CLEAN_STOP, current_event, drop_state_after_crash


def test_tables_of_a_run_that_did_not_stop_cleanly_are_dropped(tmp_path: Path) -> None:
    state = tmp_path / "segmenter"
    (state / "app-data").mkdir(parents=True)
    (state / "app-data" / "table.db").write_text("ahead of the changelog")
    assert drop_state_after_crash(state) is True
    assert not state.exists()


def test_tables_of_a_clean_stop_are_kept_until_the_next_stop_says_so(tmp_path: Path) -> None:
    state = tmp_path / "segmenter"
    (state / "app-data").mkdir(parents=True)
    (state / CLEAN_STOP).touch()
    assert drop_state_after_crash(state) is False
    assert (state / "app-data").exists()
    assert not (state / CLEAN_STOP).exists()  # this run must stop cleanly too for them to be kept


def test_a_first_start_has_nothing_to_drop(tmp_path: Path) -> None:
    assert drop_state_after_crash(tmp_path / "new") is False


def test_a_batched_event_is_faust_current_event_while_its_writes_run() -> None:
    """Faust's tables take a write's changelog partition from ``faust.streams.current_event()``,
    which ``stream.take_events`` does not set in the agent's task: the trigger names it."""

    class Event:  # faust holds the current event by weak reference
        pass

    outer, inner = Event(), Event()
    with current_event(outer):  # type: ignore[arg-type]
        with current_event(inner):  # type: ignore[arg-type]
            assert faust_current() is inner
        assert faust_current() is outer
    assert faust_current() is None
