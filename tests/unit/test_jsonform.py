"""The JSON form: what `produce` accepts and `consume` prints."""

import json

import pytest

from services.common.jsonform import JsonForm, JsonFormError, dumps, format_time, parse_time
from tests.helpers import DATA


class TestTimes:
    def test_iso_with_zone(self):
        """ISO-8601 times with Z or an offset become epoch milliseconds."""
        assert parse_time("2026-11-22T18:00:00.123Z") == parse_time("2026-11-22T19:00:00.123+01:00")
        assert format_time(parse_time("2026-11-22T18:00:00.123Z")) == "2026-11-22T18:00:00.123Z"

    def test_time_without_zone_is_refused(self):
        """A time without a zone is ambiguous and refused, naming the field."""
        with pytest.raises(JsonFormError, match=r"event_time.*no time zone"):
            JsonForm().from_json(
                "event", {"message_id": "m", "event_time": "2026-11-22T18:00:00", "name": "x"}
            )


class TestRecords:
    @pytest.mark.parametrize("path", sorted((DATA / "records").glob("*.jsonl")), ids=lambda p: p.stem)
    def test_canonical_lines_survive_from_and_to_json(self, path):
        """Each example line converts to a record and back to the identical line."""
        form = JsonForm()
        for line in path.read_text().splitlines():
            assert dumps(form.to_json(path.stem, form.from_json(path.stem, json.loads(line)))) == line

    @pytest.mark.parametrize(
        ("obj", "fragment"),
        [
            ({"event_time": "2026-11-22T18:00:00Z", "name": "x"}, "message_id: required field is missing"),
            (
                {"message_id": "m", "event_time": "2026-11-22T18:00:00Z", "name": "x", "nme": 1},
                "nme: unknown field",
            ),
            ({"message_id": "m", "event_time": "2026-11-22T18:00:00Z", "name": 5}, "name: expected string"),
            (
                {"message_id": "m", "event_time": "2026-11-22T18:00:00Z", "name": "x", "kind": "nope"},
                "kind: 'nope'",
            ),
            (
                {"message_id": "m", "event_time": "2026-11-22T18:00:00Z", "name": "x", "properties": [1]},
                "properties",
            ),
            (
                {
                    "message_id": "m",
                    "event_time": "2026-11-22T18:00:00Z",
                    "name": "x",
                    "identity": {"mail": "a"},
                },
                "identity.mail: unknown field",
            ),
        ],
    )
    def test_bad_objects_name_the_field(self, obj, fragment):
        """Every kind of bad input is refused with the path of the offending field."""
        with pytest.raises(JsonFormError, match=fragment):
            JsonForm().from_json("event", obj)
