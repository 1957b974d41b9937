"""Decoded records (event, tag_hit, location) become the core's person events."""

import json
from datetime import UTC, datetime

from services.common.jsonform import JsonForm
from services.common.serde import Serde
from services.common.steps import Rejection
from services.trigger.records import api_event, person_event, segment_event


def decoded(record_type: str, obj: dict) -> dict:
    """A record as the trigger will receive it: JSON form → Avro bytes → decoded."""
    serde = Serde()
    return serde.decode(serde.encode(record_type, JsonForm().from_json(record_type, obj)))[1]


BASE = {"message_id": "m-1", "event_time": "2026-11-20T10:00:00.000Z"}


class TestRecords:
    def test_event_keeps_name_time_and_properties(self):
        """An event becomes an 'event' person event with its properties as an object."""
        rec = decoded("event", {**BASE, "name": "Order Completed", "properties": {"items": [{"sku": "A"}]}})
        evt = person_event("event", rec, "p-1")
        assert (evt.event_id, evt.kind, evt.name) == ("m-1", "event", "Order Completed")
        assert evt.properties == {"items": [{"sku": "A"}]}
        assert evt.time == datetime(2026, 11, 20, 10, tzinfo=UTC)

    def test_tag_value_becomes_a_property(self):
        """A tag's optional value is available to filters as the 'value' property."""
        evt = person_event("tag_hit", decoded("tag_hit", {**BASE, "name": "plan", "value": "pro"}), "p-1")
        assert (evt.kind, evt.name, evt.properties) == ("tag", "plan", {"value": "pro"})

    def test_geofence_transitions_map_and_gps_points_do_not_trigger(self):
        """enter/exit/dwell become entered/exited/dwelled; a plain GPS point triggers nothing."""
        rec = decoded(
            "location", {**BASE, "kind": "dwell", "region_id": "store-1", "region_kind": "geofence"}
        )
        evt = person_event("location", rec, "p-1")
        assert (evt.location.transition, evt.location.region_id) == ("dwelled", "store-1")
        assert (
            person_event("location", decoded("location", {**BASE, "latitude": 1.0, "longitude": 2.0}), "p")
            is None
        )

    def test_properties_that_are_not_an_object_are_rejected(self):
        """Properties text that is not a JSON object is a schema_violation, not a crash."""
        rec = {**decoded("event", {**BASE, "name": "x"}), "properties": json.dumps([1, 2])}
        out = person_event("event", rec, "p-1")
        assert isinstance(out, Rejection) and out.reason == "schema_violation"

    def test_segment_and_api_inputs(self):
        """Segment changes and API requests build the matching person events."""
        when = datetime(2026, 11, 20, tzinfo=UTC)
        assert segment_event("sc-1", "p-1", "vip", False, when).segment.change == "exited"
        evt = api_event("req-1", "p-1", "order_receipt", {"items": [1]}, when)
        assert (evt.event_id, evt.kind, evt.properties) == ("req-1", "api", {"items": [1]})
