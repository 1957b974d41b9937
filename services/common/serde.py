"""Avro serde for Kafka values, on fastavro.

Two framings, told apart by the first byte when decoding:

* **single-object encoding** (the default): ``C3 01`` + 8-byte CRC-64-AVRO fingerprint of the
  writer schema + Avro binary body. Needs no registry: the fingerprint names a schema version
  in ``schemas/``.
* **Confluent wire format** (when ``TAGSTREAM_SCHEMA_REGISTRY_URL`` is set): ``00`` + 4-byte
  big-endian schema id + body; ids come from a Confluent-compatible registry
  (subject ``<topic>-value``).

Records decode with the *current* schema of their type as reader, so older writer versions
resolve to today's fields. Every failure is a :class:`SerdeError` naming the problem.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from services.common.schemas import SchemaCatalogue, SchemaVersion, default_catalogue

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
SINGLE_OBJECT_HEADER_BYTES = len(SINGLE_OBJECT_MAGIC) + 8  # magic, then the 8-byte schema fingerprint
CONFLUENT_MAGIC = b"\x00"
_MASK64 = (1 << 64) - 1


class SerdeError(Exception):
    """A record could not be encoded or decoded; the message says why."""


class Serde:
    """Encodes and decodes tagstream records; one instance per process is enough."""

    def __init__(self, catalogue: SchemaCatalogue | None = None, registry_url: str | None = None) -> None:
        self.catalogue = catalogue or default_catalogue()
        self._registry = _Registry(registry_url) if registry_url else None

    @property
    def framing(self) -> str:
        return "confluent" if self._registry else "single-object"

    # -- encode ---------------------------------------------------------------------------
    def encode(
        self, record_type: str, record: dict[str, Any], *, topic: str = "", check: bool = True
    ) -> bytes:
        """Avro-encode ``record`` with the current schema of ``record_type``.

        ``check`` validates first, so a bad field is reported by name; hot paths that build
        records themselves may skip it (fastavro still refuses what it cannot write).
        """
        try:
            schema = self.catalogue.current(record_type)
        except KeyError as exc:
            raise SerdeError(str(exc)) from None
        if check:
            try:
                validate(record, schema.parsed, raise_errors=True)
            except ValidationError as exc:
                raise SerdeError(f"{record_type}: {_describe_validation(exc)}") from None
        buffer = io.BytesIO()
        if self._registry is not None:
            if not topic:
                raise SerdeError("Confluent framing needs the topic (subject <topic>-value)")
            buffer.write(CONFLUENT_MAGIC + struct.pack(">I", self._registry.id_for(topic, schema.raw)))
        else:
            buffer.write(single_object_header(schema))
        try:
            schemaless_writer(buffer, schema.parsed, record)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise SerdeError(f"{record_type}: cannot encode: {exc}") from None
        return buffer.getvalue()

    # -- decode ---------------------------------------------------------------------------
    def decode(self, data: bytes | None) -> tuple[str, dict[str, Any]]:
        """Return ``(record_type, record)``; raise :class:`SerdeError` for anything else."""
        if not data:
            raise SerdeError("empty value: expected an Avro record")
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < SINGLE_OBJECT_HEADER_BYTES:
                raise SerdeError("truncated single-object header")
            fingerprint = data[len(SINGLE_OBJECT_MAGIC) : SINGLE_OBJECT_HEADER_BYTES]
            writer = self.catalogue.by_fingerprint(fingerprint)
            if writer is None:
                raise SerdeError(f"unknown schema fingerprint {fingerprint.hex()} (not in schemas/)")
            record_type = writer.record_type
            writer_schema, body = writer.parsed, data[SINGLE_OBJECT_HEADER_BYTES:]
        elif data[:1] == CONFLUENT_MAGIC:
            if len(data) < 5:
                raise SerdeError("truncated Confluent header")
            schema_id = struct.unpack(">I", data[1:5])[0]
            if self._registry is None:
                raise SerdeError(
                    f"Confluent-framed record (schema id {schema_id}) but TAGSTREAM_SCHEMA_REGISTRY_URL "
                    "is not set: point it at the registry the producer used"
                )
            record_type, writer_schema = self._registry.writer(schema_id, self.catalogue)
            body = data[5:]
        else:
            raise SerdeError(f"unknown framing: first bytes {data[:2].hex()} are neither C301 nor 00")
        reader = self.catalogue.current(record_type)
        try:
            stream = io.BytesIO(body)
            # Same schema: no resolution step (fastavro would compare the two dicts per record).
            resolve = None if writer_schema is reader.parsed else reader.parsed
            record = schemaless_reader(stream, writer_schema, resolve)
        except Exception as exc:  # fastavro raises many types for corrupt bodies
            raise SerdeError(f"{record_type}: corrupt Avro body: {type(exc).__name__}: {exc}") from None
        if stream.tell() != len(body):
            raise SerdeError(f"{record_type}: {len(body) - stream.tell()} trailing bytes after the record")
        return record_type, record


class _Registry:
    """Schema ids from a Confluent-compatible registry, cached both ways."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: Any = None  # created on first use, so a bad URL fails like any record would
        self._ids: dict[tuple[str, str], int] = {}
        self._writers: dict[int, tuple[str, Any]] = {}

    def client(self) -> Any:
        if self._client is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            try:
                # Few retries: a registry that is down should fail produce/consume quickly, by name.
                self._client = SchemaRegistryClient({"url": self.url, "max.retries": 1})
            except ValueError as exc:
                raise SerdeError(f"TAGSTREAM_SCHEMA_REGISTRY_URL {self.url!r} is not usable: {exc}") from None
        return self._client

    def id_for(self, topic: str, raw: dict[str, Any]) -> int:
        # The full .avsc, not its parsing canonical form: the canonical form drops defaults and
        # logical types, so other readers would see timestamps as plain longs and a registry
        # with BACKWARD compatibility would refuse a new version whose added fields have defaults.
        text = json.dumps(raw, separators=(",", ":"))
        key = (topic, text)
        if key not in self._ids:
            from confluent_kafka.schema_registry import Schema

            subject, client = f"{topic}-value", self.client()
            try:
                self._ids[key] = client.register_schema(subject, Schema(text, "AVRO"))
            except Exception as exc:
                raise SerdeError(f"schema registry {self.url} did not register {subject}: {exc}") from None
        return self._ids[key]

    def writer(self, schema_id: int, catalogue: SchemaCatalogue) -> tuple[str, Any]:
        if schema_id not in self._writers:
            client = self.client()
            try:
                text = client.get_schema(schema_id).schema_str
            except Exception as exc:
                missing = getattr(exc, "http_status_code", None) == 404
                problem = "is not in" if missing else "could not be fetched from"
                raise SerdeError(f"schema id {schema_id} {problem} registry {self.url}: {exc}") from None
            try:
                raw = json.loads(text)
                full_name = f"{raw.get('namespace', '')}.{raw['name']}".lstrip(".")
                parsed = parse_schema(raw, _force=True)  # marked parsed: not re-parsed per record
            except Exception as exc:
                raise SerdeError(f"schema id {schema_id} is not an Avro record schema: {exc}") from None
            record_type = catalogue.record_type_of(full_name)
            if record_type is None:
                raise SerdeError(f"schema id {schema_id} is {full_name}, not a tagstream record type")
            self._writers[schema_id] = (record_type, parsed)
        return self._writers[schema_id]


def single_object_header(schema: SchemaVersion) -> bytes:
    """The single-object header of records written with ``schema``: magic, then its fingerprint."""
    return SINGLE_OBJECT_MAGIC + schema.fingerprint


def avro_read_long(data: bytes, at: int) -> tuple[int, int]:
    """An Avro ``long`` read at ``at``: (value, position after it). IndexError if the bytes end
    first, ValueError past 10 bytes (what a 64-bit value can take)."""
    n = shift = 0
    for _ in range(10):
        byte = data[at]
        at += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            n &= _MASK64  # as fastavro's unsigned 64-bit accumulator
            return (n >> 1) ^ -(n & 1), at
        shift += 7
    raise ValueError("varint longer than 10 bytes")


def avro_long(value: int) -> bytes:
    """Avro's ``long`` encoding: zig-zag, then a base-128 varint (for code that frames Avro by hand:
    ingest's restamp, the loader's container files)."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _describe_validation(exc: ValidationError) -> str:
    # fastavro reports "<path> is <value> of type <type> expected <schema>"; keep the first lines.
    errors = getattr(exc, "errors", None) or [str(exc)]
    return (
        "; ".join(str(e).split(" expected ")[0] for e in errors)[:500] or "record does not match its schema"
    )
