"""A valid record forwarded as its own bytes with received_time rewritten is exactly what encoding
the normalised record writes."""

from __future__ import annotations

from io import BytesIO

import pytest
from fastavro import parse_schema, schemaless_writer

from services.common.serde import SINGLE_OBJECT_MAGIC, Serde, avro_long
from services.common.steps import SourcePosition
from services.ingest.dedupe import DedupeStore
from services.ingest.definitions import Definitions
from services.ingest.normalise import normalise
from services.ingest.pipeline import Context, Valid, process
from services.ingest.restamp import restamp, stamp_bytes
from services.ingest.validate import DAY_MS, Limits
from tests import records as r

NOW = 1_795_000_000_000
LIMITS = Limits(600_000, 30 * DAY_MS, 3650 * DAY_MS, 32 * 1024, 200, 5, 128, 4096)
SERDE = Serde()

RECORDS = [
    ("tags", "tag_hit", r.tag(t=NOW, value="v")),
    ("tags", "tag_hit", r.tag(t=NOW, message_id="é" * 70, install_id="d" * 200) | {"received_time": NOW - 5}),
    ("events", "event", r.event(t=NOW, properties='{"a": [1, {"b": null}]}') | {"context": {"x": "y"}}),
    ("locations", "location", r.location(t=NOW - 1)),
    ("delivery-receipts", "delivery_receipt", r.receipt("sms", "clicked", t=NOW, phone="353861234567")),
    (
        "profile-updates",
        "profile_update",
        r.profile_update(attributes=[r.attribute("tier", "gold"), r.attribute("n", "2", "number")], t=NOW),
    ),
    # normalising changes these: re-encoded, same result
    ("tags", "tag_hit", r.tag(" padded ", t=NOW, email=" Ann@Example.COM ")),
    ("delivery-receipts", "delivery_receipt", r.receipt("email", " Opened ", t=NOW)),
]


def ctx(serde: Serde = SERDE) -> Context:
    return Context(serde, LIMITS, Definitions(), DedupeStore(DAY_MS), 256 * 1024)


@pytest.mark.parametrize(("topic", "record_type", "record"), RECORDS)
def test_valid_output_is_the_normalised_record_encoded(topic, record_type, record):
    """Byte for byte what Serde.encode of the normalised record (received_time = now) writes."""
    value = SERDE.encode(record_type, record)
    outcome = process(SourcePosition(topic, 0, 1, None, value), topic, NOW, ctx())
    assert isinstance(outcome, Valid)
    expected = SERDE.encode(record_type, normalise(record_type, SERDE.decode(value)[1], NOW))
    assert outcome.value == expected
    assert SERDE.decode(outcome.value)[1]["received_time"].timestamp() * 1000 == NOW


def test_unchanged_records_are_not_encoded_again(monkeypatch):
    """The point of restamping: the encoder is not called for a record normalising left as is."""
    context = ctx(Serde())
    value = SERDE.encode("tag_hit", r.tag(t=NOW))
    monkeypatch.setattr(context.serde, "encode", lambda *a, **k: pytest.fail("re-encoded"))
    assert isinstance(process(SourcePosition("tags", 0, 1, None, value), "tags", NOW, context), Valid)


def test_records_of_an_older_schema_are_encoded_with_the_current_one():
    """A v1 writer's record is not forwarded as is: the output carries the current schema."""
    catalogue = SERDE.catalogue
    old = next(v for v in catalogue.versions("tag_hit") if not v.current)
    record = {f["name"]: r.tag(t=NOW)[f["name"]] for f in old.raw["fields"]}
    buffer = BytesIO(SINGLE_OBJECT_MAGIC + old.fingerprint)
    buffer.seek(0, 2)
    schemaless_writer(buffer, old.parsed, record)
    outcome = process(SourcePosition("tags", 0, 1, None, buffer.getvalue()), "tags", NOW, ctx())
    assert isinstance(outcome, Valid)
    assert outcome.value[:10] == SINGLE_OBJECT_MAGIC + catalogue.current("tag_hit").fingerprint


def test_stamp_is_avro_long_branch():
    """The stamp is the union's second branch and a zigzag varint, as fastavro writes it."""
    fields = [{"name": "t", "type": ["null", "long"]}]
    schema = parse_schema({"type": "record", "name": "X", "fields": fields})
    for n in (0, 1, -1, 63, 64, NOW, 2**62):
        buffer = BytesIO()
        schemaless_writer(buffer, schema, {"t": n})
        assert stamp_bytes(n) == buffer.getvalue()
        assert avro_long(n) == buffer.getvalue()[1:]


def test_unexpected_layout_is_left_to_the_encoder():
    """Bytes that are not laid out as expected give None (the caller encodes) rather than garbage."""
    header = SINGLE_OBJECT_MAGIC + b"\x00" * 8
    assert restamp(header + b"\x02a\x02\x04", stamp_bytes(NOW)) is None  # bad union branch
    assert restamp(header + b"\x02a", stamp_bytes(NOW)) is None  # truncated
