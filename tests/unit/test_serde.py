"""Serde: framing, schema evolution, and one error type for every failure."""

import io
import struct

import pytest
from fastavro import schemaless_writer

from services.common.schemas import SchemaCatalogue
from services.common.serde import SINGLE_OBJECT_MAGIC, Serde, SerdeError

EVENT = {
    "message_id": "m1",
    "event_time": 1_795_000_000_000,
    "received_time": None,
    "source": "api",
    "app_id": None,
    "backfill": False,
    "identity": {
        "install_id": "d1",
        "anonymous_id": None,
        "external_user_id": None,
        "email": None,
        "phone": None,
    },
    "context": {},
    "name": "Signed Up",
    "kind": "custom",
    "properties": "{}",
}


class TestSingleObject:
    def test_round_trip(self):
        """An encoded record decodes to the same type and fields."""
        serde = Serde()
        data = serde.encode("event", EVENT)
        assert data[:2] == SINGLE_OBJECT_MAGIC
        kind, record = serde.decode(data)
        assert kind == "event"
        assert record["name"] == "Signed Up"
        assert int(record["event_time"].timestamp() * 1000) == EVENT["event_time"]

    def test_v1_record_reads_with_current_reader(self):
        """A record written with schemas/history/event.v1.avsc decodes with today's fields defaulted."""
        catalogue = SchemaCatalogue()
        v1 = next(v for v in catalogue.versions("event") if not v.current)
        old = {k: v for k, v in EVENT.items() if k not in ("app_id", "backfill")}
        buffer = io.BytesIO()
        buffer.write(SINGLE_OBJECT_MAGIC + v1.fingerprint)
        schemaless_writer(buffer, v1.parsed, old)
        kind, record = Serde(catalogue).decode(buffer.getvalue())
        assert kind == "event"
        assert record["backfill"] is False and record["app_id"] is None
        assert record["message_id"] == "m1"


class TestErrors:
    @pytest.mark.parametrize(
        ("data", "fragment"),
        [
            (b"", "empty"),
            (b'{"json": true}', "unknown framing"),
            (SINGLE_OBJECT_MAGIC + b"\x01\x02", "truncated"),
            (SINGLE_OBJECT_MAGIC + b"\xff" * 8 + b"\x00", "unknown schema fingerprint"),
            (b"\x00" + struct.pack(">I", 7) + b"\x02", "TAGSTREAM_SCHEMA_REGISTRY_URL is not set"),
        ],
    )
    def test_undecodable_bytes_raise_serde_error(self, data, fragment):
        """Garbage of every shape is one SerdeError whose message says what is wrong."""
        with pytest.raises(SerdeError, match=fragment):
            Serde().decode(data)

    def test_corrupt_body(self):
        """A known header over a body that is not the record is a SerdeError, not a crash."""
        serde = Serde()
        good = serde.encode("event", EVENT)
        with pytest.raises(SerdeError, match=r"corrupt|trailing"):
            serde.decode(good[:14])

    def test_an_unusable_registry_url_is_a_serde_error(self):
        """A registry URL without a scheme fails encoding with a SerdeError naming the variable."""
        serde = Serde(registry_url="localhost:8081")
        with pytest.raises(SerdeError, match="TAGSTREAM_SCHEMA_REGISTRY_URL 'localhost:8081' is not usable"):
            serde.encode("event", EVENT, topic="events")

    def test_confluent_framing_needs_the_topic(self):
        """Without a topic there is no subject to register under: a SerdeError, before any network call."""
        with pytest.raises(SerdeError, match="needs the topic"):
            Serde(registry_url="http://127.0.0.1:1").encode("event", EVENT)

    def test_encode_names_the_bad_field(self):
        """Encoding a record with a wrong value names the field."""
        with pytest.raises(SerdeError, match="kind"):
            Serde().encode("event", {**EVENT, "kind": "not-a-kind"})
