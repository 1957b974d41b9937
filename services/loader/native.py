"""ClickHouse decodes a batch's Avro: the fast path for routes whose conversion is plain SQL.

Per record, Python decoding and row building cost ~35 µs, an order more than ClickHouse needs to
insert a row, so a per-record Python path cannot come near a direct insert. Here Python only
frames: every record of a batch written with one schema (same single-object fingerprint) is
prefixed with its Kafka offset as 8 little-endian bytes — which makes it a valid record of the
schema ``{_offset: fixed(8), _header: fixed(10), <the writer's fields>}``, the single-object
header (magic and fingerprint) read as a field rather than sliced off — and the records are
wrapped in one in-memory Avro container (header with that schema, one block). Framing is C-level
work per record (``struct`` packing, list slicing, one ``join``). ClickHouse reads the container
and runs the route's conversion as SQL (``NATIVE_SQL``, the same semantics as rows.py, checked row
for row by tests/integration/test_loader_native.py) in ``INSERT INTO table SELECT ... FROM
file(...)`` with the batch's deduplication token.

Anything unusual returns ``None`` and the caller uses the Python path for the batch (same token,
same rows): another framing, mixed writer schemas, a writer schema missing a field the SQL
reads, a record ClickHouse refuses (the Python path isolates it by halving), or a ClickHouse
server (``file()`` reads the server's disk; only chDB, which shares our file system, is used).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Sequence
from itertools import repeat
from typing import Any

from services.common.schemas import SchemaCatalogue, default_catalogue
from services.common.serde import SINGLE_OBJECT_HEADER_BYTES, SINGLE_OBJECT_MAGIC, avro_long
from services.loader.rows import IDENTITY_FIELDS, SOURCE_COLUMNS

_SYNC = b"tagstream-loader"  # any 16 bytes; the same after every block
_OFFSET = struct.Struct("<Q").pack  # an Avro fixed(8) that ClickHouse reads back as a UInt64
_SMALL_LONGS = [bytes([n << 1]) for n in range(64)]  # Avro longs 0..63: one byte each
_IDENTITY_KEY = (
    "multiIf("
    + ", ".join(
        f"notEmpty(ifNull(identity.{f}, '')), concat('{f}:', assumeNotNull(identity.{f}))"
        for f in IDENTITY_FIELDS
    )
    + ", '')"
)
_ENVELOPE = (
    "message_id, event_time, received_time, ifNull(source, ''), ifNull(app_id, ''), ifNull(backfill, false), "
    + ", ".join(f"identity.{f}" for f in IDENTITY_FIELDS)
    + f", {_IDENTITY_KEY}, __PERSON__, context"
)
# table → SELECT list in rows.COLUMNS order, over the writer's fields (rows.py semantics).
NATIVE_SQL: dict[str, str] = {
    "tags": f"{_ENVELOPE}, name, value",
    "events": f"{_ENVELOPE}, name, ifNull(kind, 'custom'), ifNull(properties, '{{}}')",
}


def _string(text: bytes) -> bytes:
    n = len(text)
    return (_SMALL_LONGS[n] if n < 64 else avro_long(n)) + text


class NativeLoader:
    def __init__(self, client: Any, catalogue: SchemaCatalogue | None = None) -> None:
        self.client = client
        self.catalogue = catalogue or default_catalogue()
        # file() reads the engine's disk: only chDB (in this process) sees our temp file.
        self.enabled = type(client).__name__ == "ChdbClient"
        self._headers: dict[tuple[bytes, str, bool], bytes | None] = {}

    def _header(self, fingerprint: bytes, record_type: str, with_person: bool) -> bytes | None:
        """The container header for this writer schema, or None (unknown, or another type)."""
        key = (fingerprint, record_type, with_person)
        if key not in self._headers:
            version = self.catalogue.by_fingerprint(fingerprint)
            self._headers[key] = None
            if version is not None and version.record_type == record_type:
                prefix: list[dict] = [{"name": "_offset", "type": _fixed("tagstream_offset", 8)}]
                if with_person:
                    prefix.append({"name": "_person", "type": "string"})
                prefix.append({"name": "_header", "type": _fixed("tagstream_single_object_header", 10)})
                raw = dict(version.raw, fields=[*prefix, *version.raw["fields"]])
                meta = {b"avro.schema": json.dumps(raw).encode(), b"avro.codec": b"null"}
                body = b"".join(_string(k) + _string(v) for k, v in meta.items())
                self._headers[key] = b"Obj\x01" + avro_long(len(meta)) + body + avro_long(0) + _SYNC
        return self._headers[key]

    def load(
        self,
        table: str,
        columns: Sequence[str],
        record_type: str,
        topic: str,
        partition: int,
        offsets: Sequence[int],
        values: Sequence[bytes | None],
        persons: Sequence[str] | None = None,
    ) -> bool:
        """Insert the batch's rows with ClickHouse decoding; False: use the Python path instead.

        ``offsets`` and ``values`` are the records' offsets and bytes; ``persons`` (``enriched``:
        the envelope's person per record) fill ``person_id``, framed after the offset as an Avro
        string."""
        select = NATIVE_SQL.get(table)
        if not self.enabled or select is None or not values:
            return False
        select = select.replace("__PERSON__", "NULL" if persons is None else "_person")
        first = values[0]
        if first is None or first[:2] != SINGLE_OBJECT_MAGIC:
            return False
        prefix = first[:SINGLE_OBJECT_HEADER_BYTES]
        try:  # one writer schema for all: bodies of another would be misread, not refused
            if not all(map(bytes.startswith, values, repeat(prefix))):  # type: ignore[arg-type]
                return False
        except TypeError:  # a None value (tombstone)
            return False
        header = self._header(prefix[len(SINGLE_OBJECT_MAGIC) :], record_type, persons is not None)
        if header is None:
            return False
        columns_per_record = [list(map(_OFFSET, offsets)), values]
        if persons is not None:
            columns_per_record.insert(1, [_string(person.encode()) for person in persons])
        parts: list[bytes] = [b""] * (len(columns_per_record) * len(values))
        for i, column in enumerate(columns_per_record):  # interleave: record by record
            parts[i :: len(columns_per_record)] = column  # type: ignore[assignment]
        data = b"".join(parts)
        container = header + avro_long(len(values)) + avro_long(len(data)) + data + _SYNC
        token = f"{topic}:{partition}:{offsets[0]}-{offsets[-1]}"
        names = ", ".join((*columns, *SOURCE_COLUMNS))
        fd, path = tempfile.mkstemp(suffix=".avro", prefix="loader-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(container)
            # The token inline: per-call settings cost chDB three more statements (read, SET, reset).
            sql = (
                f"INSERT INTO {table} ({names}) SETTINGS insert_deduplication_token = {_quote(token)} "
                f"SELECT {select}, {_quote(topic)}, {int(partition)}, reinterpretAsUInt64(_offset) "
                f"FROM file({_quote(path)}, 'Avro')"
            )
            try:
                self.client.command(sql)
            except Exception:  # a refused row, a schema without a field: the Python path decides
                return False
        finally:
            os.unlink(path)
        return True


def _fixed(name: str, size: int) -> dict:
    return {"type": "fixed", "name": name, "size": size}


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
