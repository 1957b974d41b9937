"""Faust's end of a rebalance (services/common/faust_resume.py), on faust's own Recovery methods:
records read for the new assignment while the seek is awaited stay in the stream queues."""

import asyncio
from typing import Any

import faust
import pytest
from faust.tables.recovery import Recovery

from services.common.faust_resume import AFFECTED, fix_stream_resume

STREAM, CHANGELOG = ("enriched", 4), ("persons-changelog", 4)


class Calls(list):
    def __call__(self, name: str, result: Any = None) -> Any:
        def record(*_args: Any, **_kwargs: Any) -> Any:
            self.append(name)
            return result

        return record


class FakeRecovery:
    """The parts of faust's Recovery, app and consumer the two methods use. The fetcher delivers a
    record to the queue whenever the stream partition is resumed and flow is active, as faust's
    does while a seek is awaited."""

    def __init__(self) -> None:
        self.calls = Calls()
        self.queue: list[str] = []
        self.lost: list[str] = []
        self.resumed = False
        self.flow = True  # active: the changelogs were just read through it
        calls, outer = self.calls, self

        class Consumer:
            def assignment(self) -> set:
                return {STREAM, CHANGELOG}

            async def perform_seek(self) -> None:
                calls.append("seek")
                outer.deliver()  # the fetcher runs while the seek is awaited

            def resume_partitions(self, tps: set) -> None:
                calls.append(f"resume {sorted(tps)}")
                outer.resumed = STREAM in tps

            def resume_flow(self) -> None:
                calls.append("resume_flow")
                outer.flow = True

        class FlowControl:
            """mode's FlowControlEvent: resume() also empties the queues it manages."""

            def __init__(self) -> None:
                self._suspend, self._resume = asyncio.Event(), asyncio.Event()
                self._suspend.set()

            def resume(self) -> None:
                self._suspend.clear()
                self._resume.set()
                calls.append("empty queues")
                outer.lost += outer.queue  # counted as read by faust: never read again
                outer.queue.clear()

        class ChangelogQueue:
            def clear(self) -> None:
                calls.append("empty changelog queue")

        class Signal:
            async def send(self) -> None:
                pass

        class Fetcher:
            async def maybe_start(self) -> None:
                outer.deliver()

        class App:
            consumer = Consumer()
            flow_control = FlowControl()
            on_rebalance_complete = Signal()
            consumer_generation_id = 1
            _fetcher = Fetcher()
            conf = type("Conf", (), {"broker_request_timeout": 30})()
            assignor = type("Assignor", (), {"assigned_standbys": lambda self: set()})()
            on_rebalance_end = calls("rebalance end")

        self.app = App()
        self.completed = asyncio.Event()
        self.log = type("Log", (), {"info": calls("log"), "warning": calls("warn"), "dev": calls("log")})()
        tables = type(
            "Tables",
            (),
            {
                "changelog_queue": ChangelogQueue(),
                "on_actives_ready": calls("actives"),
                "on_standbys_ready": calls("standbys"),
                "values": lambda self: [],
            },
        )
        self.tables = tables()
        self._set_recovery_ended = calls("ended")

    def deliver(self) -> None:
        if self.resumed and self.flow:
            self.queue.append(f"record {len(self.queue) + len(self.lost)}")

    def _is_changelog_tp(self, tp: tuple) -> bool:
        return tp == CHANGELOG

    async def _wait(self, coro: Any, timeout: float | None = None) -> None:
        await coro


def test_the_installed_faust_is_one_whose_resume_was_checked():
    """Upgrading faust-streaming must re-check faust_resume.py: it replaces two Recovery methods."""
    assert faust.__version__ in AFFECTED, f"faust-streaming {faust.__version__}: re-check faust_resume.py"
    assert fix_stream_resume()


@pytest.mark.parametrize("method", ["_resume_streams", "on_recovery_completed"])
def test_records_read_after_a_rebalance_are_not_emptied_away(method: str):
    """faust-streaming 0.15.3 emptied the stream queues after resuming the partitions and seeking:
    a record delivered during the seek was emptied away while counted as read (lost)."""
    fix_stream_resume()
    recovery = FakeRecovery()
    asyncio.run(getattr(Recovery, method)(recovery, 1))
    assert recovery.lost == []
    assert recovery.queue == ["record 0", "record 1"]  # read during the seek, then after it
    flow = recovery.app.flow_control
    assert flow._resume.is_set() and not flow._suspend.is_set() and "resume_flow" in recovery.calls
    assert recovery.completed.is_set() and "rebalance end" in recovery.calls
    assert "empty changelog queue" in recovery.calls  # as faust does: only the stream queues are kept
