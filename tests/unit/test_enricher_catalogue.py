"""The geofence catalogue: the file's checks, the topic's records, and the two overlaid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.enricher.catalogue_feed import CatalogueFeed, parse_record, record_key
from services.enricher.geofences import CatalogueError, CatalogueFile, read_catalogue_file
from services.enricher.main import run

SHOP = {"id": "shop", "latitude": 53.3498, "longitude": -6.2603, "radius_m": 100}
PARK = {"id": "park", "polygon": [[53.0, -6.0], [53.0, -6.1], [53.1, -6.1]]}
DOOR = {"id": "door", "uuid": "F7826DA6-4FA2", "major": 1, "minor": 2}
BAD_FILES = [
    (
        {"geofences": [SHOP, {**SHOP, "id": "b", "radius_m": -5}]},
        "geofences[1].radius_m: Input should be greater",
    ),
    (
        {"geofences": [{"id": "c", "latitude": 53.0, "longitude": -6.0}]},
        "geofences[0]: Value error, a circle",
    ),
    ({"geofences": [{**SHOP, "radius": 10}]}, "geofences[0].radius: Extra inputs are not permitted"),
    ({"geofences": [{**PARK, "polygon": [[53.0, -6.0], [53.1, -6.1]]}]}, "geofences[0].polygon: List should"),
    ({"geofences": [{**SHOP, "latitude": 95}]}, "geofences[0].latitude: Input should be less than or equal"),
    (
        {"beacons": [{**DOOR, "major": 70000}]},
        "beacons[0].major: Input should be less than or equal to 65535",
    ),
    ({"geofences": [SHOP, SHOP]}, "geofence ids given twice: shop"),
    ("{not json", "not JSON"),
]
BAD_RECORDS = [
    (b"fence:shop", json.dumps(SHOP), "expected geofence:<id> or beacon:<id>"),
    (b"geofence:other", json.dumps(SHOP), "the value's id is 'shop'"),
    (b"geofence:shop", "{", "not JSON"),
    (b"geofence:shop", json.dumps({**SHOP, "radius_m": 0}), "radius_m: Input should be greater than 0"),
]


def catalogue_file(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "geofences.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


class TestFile:
    def test_circles_polygons_and_beacons_are_read(self, tmp_path):
        """A valid file gives every entry; beacons are looked up the way devices report them."""
        file = read_catalogue_file(catalogue_file(tmp_path, {"geofences": [SHOP, PARK], "beacons": [DOOR]}))
        assert [g.id for g in file.geofences] == ["shop", "park"]
        assert file.beacons[0].region == "f7826da6-4fa2:1:2"

    @pytest.mark.parametrize(("content", "message"), BAD_FILES)
    def test_a_bad_entry_is_refused_naming_it(self, tmp_path, content, message):
        """The error names the file and the entry, so the user knows what to fix."""
        path = catalogue_file(tmp_path, content)
        with pytest.raises(CatalogueError) as refused:
            read_catalogue_file(path)
        assert str(refused.value).startswith(f"{path}: ") and message in str(refused.value)


class TestTopicRecords:
    def test_a_record_is_keyed_by_kind_and_id_and_a_tombstone_removes(self):
        assert parse_record(record_key("geofence", "shop"), json.dumps(SHOP).encode())[2].radius_m == 100
        assert parse_record(b"beacon:door", None) == ("beacon", "door", None)

    @pytest.mark.parametrize(("key", "value", "message"), BAD_RECORDS)
    def test_a_bad_record_is_refused_with_a_reason(self, key, value, message):
        with pytest.raises(CatalogueError, match=message):
            parse_record(key, value.encode())


class TestFeed:
    def test_the_topic_overlays_the_file_and_a_tombstone_brings_the_files_entry_back(self):
        feed = CatalogueFeed(CatalogueFile.model_validate({"geofences": [SHOP]}))
        assert [g.radius_m for g in feed.current().geofences] == [100]
        feed.apply(b"geofence:shop", json.dumps({**SHOP, "radius_m": 300}).encode())
        feed.apply(b"geofence:park", json.dumps(PARK).encode())
        assert {g.id: g.radius_m for g in feed.current().geofences} == {"shop": 300, "park": 0.0}
        feed.apply(b"geofence:shop", None)
        feed.apply(b"geofence:park", None)
        assert {g.id: g.radius_m for g in feed.current().geofences} == {"shop": 100}

    def test_a_refused_record_leaves_the_entry_it_would_have_replaced(self):
        feed = CatalogueFeed(CatalogueFile())
        feed.apply(b"beacon:door", json.dumps(DOOR).encode())
        feed.apply(b"beacon:door", json.dumps({**DOOR, "minor": -1}).encode())
        assert feed.current().beacon_id("f7826da6-4fa2:1:2") == "door"

    def test_the_catalogue_is_rebuilt_only_after_a_change(self):
        """The person stage asks per record: the same object until a record changes it."""
        feed = CatalogueFeed(CatalogueFile())
        first = feed.current()
        assert feed.current() is first
        feed.apply(b"geofence:shop", json.dumps(SHOP).encode())
        assert feed.current() is not first


def test_the_enricher_does_not_start_on_a_bad_catalogue_file(tmp_path, monkeypatch, capsys):
    """`tagstream run enricher` with a broken file stops at once, saying which entry to fix."""
    path = catalogue_file(tmp_path, {"geofences": [{**SHOP, "radius_m": "wide"}]})
    monkeypatch.setenv("TAGSTREAM_ENRICHER_GEOFENCE_FILE", str(path))
    assert run() == 2
    error = capsys.readouterr().err
    assert "TAGSTREAM_ENRICHER_GEOFENCE_FILE" in error and "geofences[0].radius_m" in error
