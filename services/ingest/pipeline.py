"""One raw record's path through ingest, as a visible list of steps:

    size → decode → validate → normalise → deduplicate → encode and route

Speed (docs/design.md, ingest): records of the current schemas decode with generated code
(``fastread.py``), and a valid record that normalising left unchanged is forwarded as its own
bytes with only ``received_time`` rewritten (``restamp.py``) instead of being encoded again.

``process`` is pure apart from the dedupe store it is handed; it returns what to produce and
never raises for bad data: every refusal is a dead letter with a reason code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from services.common.kafka import record_key
from services.common.serde import SINGLE_OBJECT_HEADER_BYTES, Serde, SerdeError
from services.common.steps import Rejection, SourcePosition, dead_letter
from services.common.topics import RAW_TOPIC_BY_NAME, VALID_TOPIC_FOR_RAW, TopicSpec
from services.ingest import reasons
from services.ingest.dedupe import DedupeStore
from services.ingest.definitions import Definitions
from services.ingest.fastread import FastReader
from services.ingest.normalise import normalise
from services.ingest.restamp import restamp, restampable_headers, stamp_bytes
from services.ingest.validate import Limits, validate

SERVICE = "ingest"
# raw topic name -> (its spec, its *.valid spec): one str lookup per record (TopicSpec hashes all
# of its fields on every dict lookup).
_ROUTES = {name: (spec, VALID_TOPIC_FOR_RAW[spec]) for name, spec in RAW_TOPIC_BY_NAME.items()}


# Outcomes are named tuples: immutable like frozen dataclasses, a third of their cost to create
# (one per record).
class Valid(NamedTuple):
    output: TopicSpec  # a *.valid topic
    key: bytes | None
    value: bytes
    message_id: str


class Duplicate(NamedTuple):
    message_id: str


class Refused(NamedTuple):
    dead_letter: dict[str, Any]


Outcome = Valid | Duplicate | Refused


@dataclass
class Context:
    serde: Serde
    limits: Limits
    definitions: Definitions
    dedupe: DedupeStore
    max_record_bytes: int
    # header bytes -> record type whose valid records are forwarded restamped, not re-encoded
    # (none with Confluent framing: the output's header names the output topic's schema id)
    restampable: dict[bytes, str] = field(init=False)
    # decoders generated for the current raw schemas; other records are decoded by serde
    fast: FastReader = field(init=False)
    _stamp: tuple[int, bytes] = field(default=(-1, b""), init=False, repr=False)

    def __post_init__(self) -> None:
        raw_types = sorted({s.record_type for s in RAW_TOPIC_BY_NAME.values() if s.record_type})
        self.fast = FastReader(self.serde.catalogue, raw_types)
        framing = self.serde.framing == "single-object"
        self.restampable = restampable_headers(self.serde.catalogue, raw_types) if framing else {}

    def stamp(self, now_ms: int) -> bytes:
        """received_time's bytes, encoded once per batch (every record of one has the same)."""
        if self._stamp[0] != now_ms:
            self._stamp = (now_ms, stamp_bytes(now_ms))
        return self._stamp[1]


def _refuse(
    step: str, rejection: Rejection, source: SourcePosition, message_id: str | None = None
) -> Refused:
    return Refused(dead_letter(SERVICE, step, rejection, source, message_id))


def process(source: SourcePosition, bare_topic: str, now_ms: int, ctx: Context) -> Outcome:
    raw_spec, output = _ROUTES[bare_topic]
    value = source.value or b""
    # 1. size: refuse before spending time on it
    if len(value) > ctx.max_record_bytes:
        why = f"record is {len(value)} bytes (limit {ctx.max_record_bytes})"
        return _refuse("decode", Rejection(reasons.OVERSIZED, why), source)
    # 2. decode (either framing)
    try:
        record_type, record = ctx.fast.decode(value) or ctx.serde.decode(value)
    except SerdeError as exc:
        return _refuse("decode", Rejection(reasons.UNDECODABLE, str(exc)), source)
    message_id = record.get("message_id") or None
    if record_type != raw_spec.record_type:
        why = f"a {record_type} record on topic {bare_topic} (expects {raw_spec.record_type})"
        return _refuse("decode", Rejection(reasons.SCHEMA_VIOLATION, why), source, message_id)
    if not message_id or not message_id.strip():
        return _refuse("validate", Rejection(reasons.SCHEMA_VIOLATION, "message_id is empty"), source)
    # 3. normalise identifiers (validation needs them canonical), 4. validate meaning
    normalised = normalise(record_type, record, now_ms)
    if isinstance(normalised, Rejection):
        return _refuse("normalise", normalised, source, message_id)
    rejection = validate(record_type, normalised, now_ms, ctx.limits, ctx.definitions)
    if rejection is not None:
        return _refuse("validate", rejection, source, message_id)
    # 5. deduplicate within the window
    partition = (bare_topic, source.partition)
    if ctx.dedupe.is_duplicate(partition, message_id, now_ms):
        return Duplicate(message_id)
    ctx.dedupe.remember(partition, message_id, now_ms)
    # 6. encode and route, keyed so one device's (else person's) records stay in order; a record
    # normalising did not change keeps its bytes but for received_time
    encoded = None
    if ctx.restampable.get(value[:SINGLE_OBJECT_HEADER_BYTES]) == record_type and normalised == {
        **record,
        "received_time": now_ms,
    }:
        encoded = restamp(value, ctx.stamp(now_ms))
    if encoded is None:
        encoded = ctx.serde.encode(record_type, normalised, topic=output.name, check=False)
    return Valid(output, record_key(normalised), encoded, message_id)
