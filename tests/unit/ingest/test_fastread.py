"""The generated decoders read what fastavro reads and refuse what it refuses."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import pytest

from services.common.serde import SINGLE_OBJECT_MAGIC, Serde, SerdeError, avro_long
from services.ingest.fastread import TIMESTAMP_MAX_MS, TIMESTAMP_MIN_MS, FastReader, compile_reader
from tests import records as r

NOW = 1_795_000_000_000
SERDE = Serde()
RAW_TYPES = ["tag_hit", "event", "location", "delivery_receipt", "profile_update"]
FAST = FastReader(SERDE.catalogue, RAW_TYPES)

RECORDS = [
    ("tag_hit", r.tag(t=NOW, value="v") | {"context": {"a": "1", "ü": "ß" * 300}}),
    ("tag_hit", r.tag(t=NOW, email="a@b.co", phone="353861234567") | {"received_time": NOW + 1}),
    ("event", r.event(t=-5, properties='{"x": [1, 2]}') | {"backfill": True}),
    ("location", r.location(t=NOW, lat=-90.0, lon=180.0, accuracy_m=0.5)),
    ("location", r.location(None, None, "enter", t=NOW, region_id="g1")),
    ("delivery_receipt", r.receipt("push", "opened", t=NOW) | {"link_url": "https://x", "reason": "r"}),
    (
        "profile_update",
        r.profile_update(
            "personalize",
            [r.attribute(f"a{i}", None if i % 3 else str(i), "number") for i in range(70)],
            t=NOW,
        ),
    ),
]


def as_ms(record: Any) -> Any:
    """fastavro's datetimes as the ms the generated decoders return."""
    if isinstance(record, datetime):
        return round(record.timestamp() * 1000)
    if isinstance(record, dict):
        return {k: as_ms(v) for k, v in record.items()}
    if isinstance(record, list | tuple):
        return type(record)(as_ms(v) for v in record)
    return record


def both(data: bytes) -> tuple[Any, Any]:
    """(fastavro's result, the generated decoder's): the decoded pair, or 'refused'."""
    results = []
    for decode in (SERDE.decode, FAST.decode):
        try:
            results.append(as_ms(decode(data)))
        except SerdeError:
            results.append("refused")
    return results[0], results[1]


def test_every_raw_type_has_a_generated_decoder():
    """All five raw record types take the fast path (else ingest silently falls back)."""
    for record_type, record in RECORDS:
        assert FAST.decode(SERDE.encode(record_type, record)) is not None, record_type


@pytest.mark.parametrize(("record_type", "record"), RECORDS)
def test_same_records_as_fastavro(record_type, record):
    """Every field, nested record, map, array, enum, union and double decodes as fastavro does."""
    data = SERDE.encode(record_type, record)
    slow, fast = both(data)
    assert fast == slow == (record_type, as_ms(record))


@pytest.mark.parametrize(("record_type", "record"), RECORDS)
def test_corrupt_bodies_are_refused_like_fastavro(record_type, record):
    """Truncated, extended and bit-flipped bodies: refused, or read, exactly as fastavro does."""
    data = SERDE.encode(record_type, record)
    rng = random.Random(len(data))
    refused = 0
    for _ in range(400):
        body = bytearray(data[10:])
        mutation = rng.randrange(4)
        if mutation == 0:
            del body[rng.randrange(len(body)) :]
        elif mutation == 1:
            body += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        else:
            for _ in range(mutation):
                body[rng.randrange(len(body))] = rng.randrange(256)
        slow, fast = both(data[:10] + bytes(body))
        refused += fast == "refused"
        assert fast == slow, bytes(body).hex()
    assert refused > 100  # the mutations did exercise the refusals


def test_fastavro_quirks_are_kept():
    """A boolean byte other than 0 is true; a negative union or enum index counts from the end."""
    fields = [
        {"name": "b", "type": "boolean"},
        {"name": "u", "type": ["null", "string"]},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["x", "y"]}},
    ]
    read = compile_reader({"type": "record", "name": "Q", "fields": fields})
    header = SINGLE_OBJECT_MAGIC + bytes(8)
    assert read(header + b"\x05" + b"\x01\x02a" + b"\x01") == {"b": True, "u": "a", "e": "y"}


@pytest.mark.parametrize(
    "t", [TIMESTAMP_MIN_MS - 1, TIMESTAMP_MIN_MS, 0, TIMESTAMP_MAX_MS, TIMESTAMP_MAX_MS + 1, 2**62]
)
def test_timestamp_range_is_fastavros(t):
    """event_time outside the years 1-9999 is undecodable on both paths; inside it decodes."""
    good = SERDE.encode("tag_hit", r.tag(t=0))
    # message_id, then event_time: swap in t's varint
    length = good[10] >> 1
    at = 11 + length
    data = good[:at] + avro_long(t) + good[at + 1 :]
    slow, fast = both(data)
    assert fast == slow
    assert (fast == "refused") == (not TIMESTAMP_MIN_MS <= t <= TIMESTAMP_MAX_MS)


def test_other_framings_and_versions_are_left_to_fastavro():
    """Unknown headers give None: the caller decodes with Serde (old schema versions, Confluent)."""
    old = next(v for v in SERDE.catalogue.versions("tag_hit") if not v.current)
    assert FAST.decode(SINGLE_OBJECT_MAGIC + old.fingerprint + b"\x00") is None
    assert FAST.decode(b"\x00\x00\x00\x00\x01\x02") is None
    assert FAST.decode(b"") is None
