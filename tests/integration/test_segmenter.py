"""The segmenter against the real broker, as a subprocess: changes from facts, exits by timer,
SIGKILL and restart, a definitions reload while running, and a merge handed over between
partitions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from services.common.settings import Settings
from services.segmenter.enriched import to_ms
from tests import segmenter_records as sr
from tests.helpers import wait_until
from tests.integration.segmenter_harness import SegmenterProcess, Topics, partition_of

pytestmark = pytest.mark.integration


def write_definitions(path: Path, *segments: dict) -> None:
    path.write_text(yaml.safe_dump({"segments": list(segments)}))


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def topics(settings: Settings) -> Iterator[Topics]:
    t = Topics(settings)
    yield t
    t.close()


@pytest.fixture
def definitions(tmp_path: Path) -> Path:
    return tmp_path / "segments.yaml"


@pytest.fixture
def segmenter(settings: Settings, tmp_path: Path, definitions: Path) -> Iterator[SegmenterProcess]:
    process = SegmenterProcess(settings, tmp_path / "segmenter.log", definitions)
    yield process
    process.stop()


def test_facts_in_entered_changes_out(segmenter: SegmenterProcess, topics: Topics, definitions: Path):
    """An attribute, a third purchase within the hour and a tag each enter their segment, once."""
    write_definitions(
        definitions,
        {"id": "pro", "condition": {"attribute": "plan", "equals": "pro"}},
        {"id": "buyers", "condition": {"event": "purchase", "within": "1h", "at_least": 3}},
        {"id": "vip", "condition": {"tag": "vip"}},
        {"id": "heavy", "condition": {"attribute": "usage_gb", "gt": 500}},
    )
    segmenter.start()
    t = now_ms()
    topics.send(
        sr.update("ann", t, {"plan": ("string", "pro"), "usage_gb": ("number", "900")}),
        sr.update("bob", t, {"plan": ("string", "free"), "usage_gb": ("string", "900")}),
        *(sr.event("carl", t + i, "purchase", mid=f"c{i}") for i in range(3)),
        *(sr.event("dora", t + i, "purchase", mid=f"d{i}") for i in range(2)),
        sr.tag("dora", t, "vip", "gold"),
        sr.envelope("session_end", "bob", t),
    )
    topics.wait(lambda: len(topics.changes) >= 4, "four entered changes")
    assert httpx.get(f"http://127.0.0.1:{segmenter.port}/readyz").status_code == 200
    metrics = topics.wait(
        lambda: 'segmenter_facts_total{kind="event"} 5.0' in (m := segmenter.metrics()) and m, "metrics"
    )
    assert 'segmenter_members{segment="vip"} 1.0' in metrics
    assert sorted((c["person_id"], c["segment_id"], c["change"]) for c in topics.changes) == [
        ("ann", "heavy", "entered"),
        ("ann", "pro", "entered"),
        ("carl", "buyers", "entered"),
        ("dora", "vip", "entered"),
    ]
    carl = topics.seen("carl", "buyers", "entered")[0]
    assert carl["reason"] == "event:purchase" and carl["source_message_id"] == "c2"
    assert topics.dead == []
    assert segmenter.stop() == 0  # SIGTERM: a clean stop
    assert '"segmenter stopped"' in segmenter.log_path.read_text()


def test_a_time_window_exits_by_timer_with_no_further_events(
    segmenter: SegmenterProcess, topics: Topics, definitions: Path
):
    """A visit enters `visited-5s`; 5 s later, with no new fact, the person exits at the window's end."""
    write_definitions(definitions, {"id": "visited-5s", "condition": {"event": "visit", "within": "5s"}})
    segmenter.start().wait_processing()  # a 5 s window: the visit must not wait for the start
    topics.send(sr.event("eve", now_ms(), "visit"))
    entered = topics.wait(lambda: topics.seen("eve", "visited-5s", "entered"), "entered")[0]
    exited = topics.wait(lambda: topics.seen("eve", "visited-5s", "exited"), "exit by timer", timeout=60)[0]
    assert exited["reason"] == "timer"
    # The fact's event time is its processing time here (stamped just before sending, not later
    # than the processing clock), so the window closes exactly 5 s + 1 ms after the fact.
    assert to_ms(exited["change_time"]) - to_ms(entered["change_time"]) <= 5_001
    assert to_ms(exited["change_time"]) > to_ms(entered["change_time"])


def test_kill_restart_keeps_membership_and_timers_and_reload_adds_a_segment(
    segmenter: SegmenterProcess, topics: Topics, definitions: Path
):
    """After SIGKILL and restart: no duplicate entered, a pending window exit still fires; a new
    definitions file applied while running adds a segment whose members appear (a bad one is refused)."""
    vip = {"id": "vip", "condition": {"tag": "vip"}}
    recent = {"id": "recent", "condition": {"event": "visit", "within": "20s"}}
    write_definitions(definitions, vip, recent)
    segmenter.start()
    t = now_ms()
    topics.send(sr.tag("fay", t, "vip", mid="f1"), sr.event("gus", t, "visit", mid="g1"))
    topics.wait(
        lambda: topics.seen("fay", "vip", "entered") and topics.seen("gus", "recent", "entered"), "entered"
    )
    segmenter.kill()
    segmenter.start()
    topics.send(sr.tag("fay", now_ms(), "vip", mid="f2"), sr.event("hal", now_ms(), "visit", mid="h1"))
    topics.wait(lambda: topics.seen("hal", "recent", "entered"), "the restarted segmenter processing")
    exit_ = topics.wait(lambda: topics.seen("gus", "recent", "exited"), "gus's pending exit", timeout=90)[0]
    assert exit_["reason"] in ("timer", "restore")  # restore: the window ended while it was down
    assert to_ms(exit_["change_time"]) >= t + 20_001
    assert len(topics.seen("fay", "vip", "entered")) == 1
    assert len(topics.seen("gus", "recent", "entered")) == 1

    definitions.write_text("segments:\n  - id: Bad Id\n    condition: {tag: vip}\n")
    topics.wait(
        lambda: "segmenter_definition_reload_errors_total 1.0" in segmenter.metrics(), "the bad file refused"
    )
    write_definitions(
        definitions,
        vip,
        recent,
        {"id": "vip-visitors", "condition": {"any": [{"tag": "vip"}, {"event": "visit"}]}},
    )
    topics.wait(lambda: topics.seen("fay", "vip-visitors", "entered"), "fay in the new segment")
    topics.wait(lambda: topics.seen("hal", "vip-visitors", "entered"), "hal in the new segment")
    added = topics.seen("fay", "vip-visitors", "entered")[0]
    assert added["reason"] == "definition"
    topics.send(sr.tag("fay", now_ms(), "vip", mid="f3"))
    topics.send(sr.tag("ivy", now_ms(), "vip", mid="i1"))
    topics.wait(lambda: topics.seen("ivy", "vip-visitors", "entered"), "a new person streams into it")
    assert len(topics.seen("fay", "vip", "entered")) == 1


def test_two_instances_share_partitions_and_one_takes_over_after_a_kill(
    settings: Settings, tmp_path: Path, topics: Topics, definitions: Path
):
    """A second instance takes some partitions, the first is SIGKILLed and the second takes over:
    counts carry over (a second tag enters `vip-twice`), nobody re-enters a segment, and every
    pending window exit still fires."""
    write_definitions(
        definitions,
        {"id": "vip", "condition": {"tag": "vip"}},
        {"id": "vip-twice", "condition": {"tag": "vip", "at_least": 2}},
        {"id": "recent", "condition": {"event": "visit", "within": "25s"}},
    )
    first = SegmenterProcess(settings, tmp_path / "first.log", definitions).start()
    second = SegmenterProcess(
        settings, tmp_path / "second.log", definitions, TAGSTREAM_DATA_DIR=str(tmp_path / "second")
    )
    try:
        people = [f"person-{i}" for i in range(12)]
        t = now_ms()
        topics.send(*(sr.tag(p, t, "vip", mid=f"{p}-1") for p in people))
        topics.send(*(sr.event(p, t, "visit", mid=f"{p}-v") for p in people))
        topics.wait(lambda: len(topics.changes) == 24, "everyone entered vip and recent")
        second.start()
        wait_until(
            lambda: "partition restored" in second.log_path.read_text(), timeout=90, what="a rebalance"
        )
        first.kill()
        topics.send(*(sr.tag(p, now_ms(), "vip", mid=f"{p}-2") for p in people))
        topics.wait(
            lambda: all(topics.seen(p, "vip-twice", "entered") for p in people), "second tags counted"
        )
        topics.wait(
            lambda: all(topics.seen(p, "recent", "exited") for p in people), "every pending exit", timeout=120
        )
        for p in people:
            assert len(topics.seen(p, "vip", "entered")) == 1, p
            assert len(topics.seen(p, "vip-twice", "entered")) == 1, p
            assert len(topics.seen(p, "recent", "entered")) == 1, p
            assert {c["reason"] for c in topics.seen(p, "recent", "exited")} <= {"timer", "restore"}
        assert topics.dead == []
    finally:
        second.stop()
        first.stop()


def test_a_merge_hands_memberships_over_between_partitions(
    segmenter: SegmenterProcess, topics: Topics, definitions: Path
):
    """The enricher merges `anon` into `user` (their `enriched` partitions differ; only user's sees
    the merge): anon's memberships end, its purchase counts for user from then on, and so does a
    purchase of anon read after the merge. A copy of the merge sends anon's exit again and
    changes nothing else."""
    write_definitions(
        definitions,
        {"id": "buyers", "condition": {"event": "purchase"}},
        {"id": "twice", "condition": {"event": "purchase", "at_least": 2}},
        {"id": "thrice", "condition": {"event": "purchase", "at_least": 3}},
        {"id": "vip", "condition": {"tag": "vip"}},
    )
    assert partition_of("anon") != partition_of("user")
    segmenter.start().wait_processing()
    t = now_ms()
    topics.send(sr.event("anon", t, "purchase", mid="a1"), sr.event("user", t, "purchase", mid="u1"))
    topics.send(sr.tag("user", t, "vip", mid="u2"))
    topics.wait(lambda: len(topics.changes) >= 3, "three entered changes")
    merge = sr.envelope("merge", "user", t + 1, None, "login", merged_from="anon")
    topics.send(merge)
    topics.wait(lambda: topics.seen("user", "twice", "entered"), "the survivor entering twice")
    assert [c["reason"] for c in topics.seen("anon", "buyers", "exited")] == ["merge"]
    assert [c["source_message_id"] for c in topics.seen("user", "twice", "entered")] == ["login"]
    topics.send(merge)  # the enricher's copy after a crash
    topics.send(sr.event("anon", t - 5, "purchase", mid="a0"))  # anon's partition read it late
    topics.wait(lambda: topics.seen("user", "thrice", "entered"), "the late purchase counted for user")
    metrics = topics.wait(
        lambda: 'segmenter_handovers_total{step="duplicate"} 1.0' in (m := segmenter.metrics()) and m,
        "the copy's fold dropped by the survivor",
    )
    assert 'segmenter_handovers_total{step="folded"} 2.0' in metrics
    topics.wait(lambda: len(topics.seen("anon", "buyers", "exited")) == 2, "the exit sent again")
    assert sorted({(c["person_id"], c["segment_id"], c["change"]) for c in topics.changes}) == [
        ("anon", "buyers", "entered"),
        ("anon", "buyers", "exited"),
        ("user", "buyers", "entered"),
        ("user", "thrice", "entered"),
        ("user", "twice", "entered"),
        ("user", "vip", "entered"),
    ]
