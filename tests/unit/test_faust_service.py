"""Local faust tables after a crash: dropped (rebuilt from the changelog); after a clean stop: kept."""

from __future__ import annotations

from pathlib import Path

from services.common.faust_service import CLEAN_STOP, drop_state_after_crash


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
