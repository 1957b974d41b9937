"""Segment definitions: the documented format, refusals with field paths, loading and reload diffs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from services.segmenter.conditions import AllOf, EventCondition, Not, parse_duration
from services.segmenter.definitions import DefinitionError, diff, load, parse

ROOT = Path(__file__).parents[3]


def problems(document: object) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        parse(document, "segments.yaml")
    return caught.value.problems


class TestParse:
    def test_the_reference_example_parses_into_a_nested_condition(self) -> None:
        """The 6-month example reads as all(not(any(...)), opened email) with 180-day windows."""
        segments = load(ROOT / "config" / "segments.example.yaml")
        example = segments["lapsed-but-reading"].condition
        assert isinstance(example, AllOf)
        assert isinstance(example.all[0], Not)
        assert [leaf.within for leaf in example.all[0].not_.any] == [180 * 86_400_000] * 2

    def test_an_invalid_window_deep_in_a_tree_is_reported_with_its_path(self) -> None:
        """A bad duration is reported as segments[3].condition.all[1].within with what is expected."""
        ok = {"id": "ok", "condition": {"attribute": "plan", "equals": "pro"}}
        bad = {"id": "bad", "condition": {"all": [{"tag": "t"}, {"event": "E", "within": "7 fortnights"}]}}
        found = problems({"segments": [ok, ok | {"id": "ok2"}, ok | {"id": "ok3"}, bad]})
        assert len(found) == 1
        assert found[0].startswith(
            "segments.yaml: segments[3].condition.all[1].within: expected a positive duration"
        )

    def test_a_mapping_without_a_known_condition_key_is_refused(self) -> None:
        """A condition with none of the known keys names the keys it could have used."""
        found = problems({"id": "x", "condition": {"not": {"evnt": "Order Completed"}}})
        assert found == [
            "segments.yaml: segments[0].condition.not: a condition needs one of the keys all, any, not, "
            "attribute, event, tag, message, location, session, inside, near"
        ]

    def test_misspelt_fields_are_refused(self) -> None:
        """An unknown field inside a leaf is refused rather than silently ignored."""
        found = problems({"id": "x", "condition": {"event": "E", "with_in": "7d"}})
        assert found == ["segments.yaml: segments[0].condition.with_in: Extra inputs are not permitted"]

    @pytest.mark.parametrize(
        ("condition", "message"),
        [
            ({"attribute": "a", "gt": 1, "lt": 5}, "needs exactly one of"),
            ({"attribute": "a"}, "needs exactly one of"),
            ({"attribute": "a", "between": [1, "2025-01-01"]}, "two numbers or two dates"),
            ({"event": "E", "never": True, "at_least": 1}, "never cannot be combined"),
            ({"event": "E", "at_least": 3, "at_most": 1}, "at_least is greater than at_most"),
            ({"event": "E", "first": {"before": "30d"}, "within": "7d"}, "first/last look at all history"),
            ({"event": "E", "sum": {"property": "revenue"}}, "sum needs at least one of"),
            ({"event": "E", "sum": {"property": "r", "gt": 1}, "at_least": 2}, "use one measure"),
            ({"message": "read"}, "Input should be"),
            ({"near": {"lat": 91, "lon": 0, "km": 1}}, "less than or equal to 90"),
            ({"all": []}, "at least 1 item"),
        ],
    )
    def test_inconsistent_leaves_are_refused_with_a_reason(self, condition: dict, message: str) -> None:
        """Each inconsistent or out-of-range leaf is refused and the message says why."""
        found = problems({"id": "x", "condition": condition})
        assert any(message in p for p in found), found

    def test_duplicate_ids_in_one_file_are_refused(self) -> None:
        """Two segments with the same id in one file are refused."""
        seg = {"id": "same", "condition": {"tag": "t"}}
        assert problems({"segments": [seg, seg]}) == [
            "segments.yaml: segments: segment id 'same' is defined twice"
        ]

    def test_yaml_dates_and_iso_strings_mean_midnight_utc(self) -> None:
        """``before: 2025-01-01`` from YAML and ``"2025-01-01"`` from JSON give the same instant."""
        from_yaml = parse(yaml.safe_load("id: a\ncondition: {attribute: d, before: 2025-01-01}"))[0]
        from_json = parse(json.loads('{"id": "a", "condition": {"attribute": "d", "before": "2025-01-01"}}'))[
            0
        ]
        assert from_yaml == from_json

    def test_a_bare_counted_leaf_means_at_least_once(self) -> None:
        """A leaf with no count, sum or first/last asks for at least one occurrence."""
        leaf = parse({"id": "a", "condition": {"event": "E", "within": "7d"}})[0].condition
        assert isinstance(leaf, EventCondition)
        assert leaf.count_range == (1, None)

    @pytest.mark.parametrize(("text", "ms"), [("30s", 30_000), ("90m", 5_400_000), ("24h", 86_400_000),
                                              ("2w", 1_209_600_000), ("6mo", 15_552_000_000)])  # fmt: skip
    def test_durations_have_fixed_lengths(self, text: str, ms: int) -> None:
        """Durations use fixed units (a month is 30 days) so SQL and streaming agree."""
        assert parse_duration(text) == ms


class TestLoad:
    def test_a_directory_of_yaml_and_json_files_loads_every_segment(self, tmp_path: Path) -> None:
        """Single-segment files and multi-segment files in a directory load together."""
        (tmp_path / "a.yaml").write_text("id: one\ncondition: {tag: t}\n")
        (tmp_path / "b.yml").write_text("segments:\n  - {id: two, condition: {session: started}}\n")
        (tmp_path / "c.json").write_text('{"segments": [{"id": "three", "condition": {"inside": "r"}}]}')
        (tmp_path / "notes.txt").write_text("ignored")
        assert sorted(load(tmp_path)) == ["one", "three", "two"]

    def test_every_bad_file_is_reported_at_once(self, tmp_path: Path) -> None:
        """Problems from several files (unparsable ones, cross-file duplicates) are listed together."""
        (tmp_path / "a.yaml").write_text("id: one\ncondition: {tag: t}\n")
        (tmp_path / "b.yaml").write_text("id: one\ncondition: {tag: u}\n")
        (tmp_path / "c.yaml").write_text("id: [unclosed\n")
        (tmp_path / "d.json").write_text('{"id": "four", "condition": {"tag": 3}}')
        with pytest.raises(DefinitionError) as caught:
            load(tmp_path)
        found = "\n".join(caught.value.problems)
        assert "b.yaml: segment id 'one' is already defined" in found
        assert "c.yaml: not valid yaml" in found
        assert "d.json: segments[0].condition.tag: Input should be a valid string" in found

    def test_the_example_configuration_loads(self) -> None:
        """config/segments.example.yaml is valid and documents every kind of leaf."""
        segments = load(ROOT / "config" / "segments.example.yaml")
        text = (ROOT / "config" / "segments.example.yaml").read_text()
        assert len(segments) >= 10
        for key in ("attribute:", "event:", "tag:", "message:", "location:", "inside:", "near:", "session:"):
            assert key in text


class TestDiff:
    def test_a_reload_reports_added_changed_and_removed_ids(self) -> None:
        """A new window is a change, a new id is added, a missing id removed, equal ones not listed."""
        old = {s.id: s for s in parse({"segments": [
            {"id": "keep", "condition": {"tag": "t"}},
            {"id": "edit", "condition": {"event": "E", "within": "7d"}},
            {"id": "gone", "condition": {"session": "started"}},
        ]})}  # fmt: skip
        new = {s.id: s for s in parse({"segments": [
            {"id": "keep", "condition": {"tag": "t"}},
            {"id": "edit", "condition": {"event": "E", "within": "14d"}},
            {"id": "born", "condition": {"inside": "r"}},
        ]})}  # fmt: skip
        changes = diff(old, new)
        assert (changes.added, changes.changed, changes.removed) == (("born",), ("edit",), ("gone",))
        assert diff(new, new).empty
