"""The synthetic population: reproducible, schema-valid, realistic lifecycles, known bad records."""

from collections import defaultdict

import pytest

from services.common.serde import Serde
from services.generator.output import manifest
from services.generator.population import GeneratorConfig, PopulationGenerator

CONFIG = GeneratorConfig(persons=40, seed=11, now_ms=1_795_000_000_000, days=20)


@pytest.fixture(scope="module")
def items():
    return PopulationGenerator(CONFIG).generate()


class TestReproducible:
    def test_same_seed_same_records(self, items):
        """The same seed and reference time give exactly the same stream."""
        again = PopulationGenerator(CONFIG).generate()
        assert [(i.topic, i.record, i.raw) for i in again] == [(i.topic, i.record, i.raw) for i in items]

    def test_other_seed_other_records(self, items):
        """Another seed gives another population."""
        other = PopulationGenerator(
            GeneratorConfig(persons=40, seed=12, now_ms=CONFIG.now_ms, days=20)
        ).generate()
        assert [i.record for i in other[:50]] != [i.record for i in items[:50]]


class TestContent:
    def test_every_record_fits_its_schema(self, items):
        """Every generated record (bad ones included, except raw bytes) encodes with validation on."""
        serde = Serde()
        for item in items:
            if item.record is not None:
                serde.encode(item.record_type, item.record)

    def test_devices_install_before_login(self, items):
        """Each device's install event precedes its personalize in event time."""
        installs, logins = {}, defaultdict(list)
        for item in items:
            rec = item.record
            if rec is None or item.expected_reason:
                continue
            device = rec["identity"]["install_id"]
            if item.record_type == "event" and rec["kind"] == "install":
                installs[device] = rec["event_time"]
            if item.record_type == "profile_update" and rec["action"] == "personalize":
                logins[device].append(rec["event_time"])
        assert installs and logins
        for device, times in logins.items():
            assert all(installs[device] < t for t in times)

    def test_all_kinds_of_behaviour_appear(self, items):
        """Tags, purchases, GPS points, receipts, attribute updates and logouts all occur."""
        seen = {
            (i.record_type, i.record.get("kind") or i.record.get("action") or "") for i in items if i.record
        }
        for expected in [
            ("event", "purchase"),
            ("event", "app_launch"),
            ("location", "gps"),
            ("tag_hit", ""),
        ]:
            assert expected in seen
        assert ("profile_update", "depersonalize") in seen and ("profile_update", "update") in seen
        assert any(
            i.record_type == "delivery_receipt" and i.record["status"] == "opened" for i in items if i.record
        )

    def test_bad_duplicate_and_late_records_are_mixed_in(self, items):
        """Bad records carry their expected reason; duplicates repeat an earlier message_id."""
        summary = manifest(items)
        assert set(summary["expected_dead_letters"]) == {
            "missing_identity",
            "value_out_of_range",
            "unknown_status",
            "time_out_of_range",
            "undecodable",
        }
        seen_ids = set()
        for item in items:
            if item.duplicate_of:
                assert item.duplicate_of in seen_ids
            if item.record:
                seen_ids.add(item.record["message_id"])
        assert summary["duplicates"] > 0
        assert summary["valid_unique"] + summary["duplicates"] + sum(
            summary["expected_dead_letters"].values()
        ) == len(items)
