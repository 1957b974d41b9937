"""ClickHouse decodes a batch's Avro: the fast path for routes whose conversion is plain SQL.

Per record, Python decoding and row building cost ~35 µs, an order more than ClickHouse needs to
insert a row, so a per-record Python path cannot come near a direct insert. Here Python only
frames: every body of a batch written with one schema (same single-object fingerprint) is
prefixed with its Kafka offset as an Avro ``long`` — which makes it a valid record of the schema
``{_offset: long, <the writer's fields>}`` — and the bodies are wrapped in one in-memory Avro
container (header with that schema, one block). ClickHouse reads the container and runs the
route's conversion as SQL (``NATIVE_SQL``, the same semantics as rows.py, checked row for row by
tests/integration/test_loader_native.py) in ``INSERT INTO table SELECT ... FROM file(...)`` with
the batch's deduplication token.

Anything unusual returns ``None`` and the caller uses the Python path for the batch (same token,
same rows): another framing, mixed writer schemas, a writer schema missing a field the SQL
reads, a record ClickHouse refuses (the Python path isolates it by halving), or a ClickHouse
server (``file()`` reads the server's disk; only chDB, which shares our file system, is used).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from services.common.schemas import SchemaCatalogue, default_catalogue
from services.common.serde import SINGLE_OBJECT_MAGIC
from services.loader.batcher import Item
from services.loader.rows import IDENTITY_FIELDS, SOURCE_COLUMNS

_SYNC = b"tagstream-loader"  # any 16 bytes; the same after every block
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


def _long(value: int) -> bytes:
    """Avro ``long``: zig-zag, then base-128 varint."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(text: bytes) -> bytes:
    return _long(len(text)) + text


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
                prefix = [{"name": "_offset", "type": "long"}]
                if with_person:
                    prefix.append({"name": "_person", "type": "string"})
                raw = dict(version.raw, fields=[*prefix, *version.raw["fields"]])
                meta = {b"avro.schema": json.dumps(raw).encode(), b"avro.codec": b"null"}
                body = b"".join(_string(k) + _string(v) for k, v in meta.items())
                self._headers[key] = b"Obj\x01" + _long(len(meta)) + body + _long(0) + _SYNC
        return self._headers[key]

    def load(
        self,
        table: str,
        columns: Sequence[str],
        record_type: str,
        topic: str,
        partition: int,
        items: Sequence[Item],
        persons: Sequence[str] | None = None,
    ) -> bool:
        """Insert the batch's rows with ClickHouse decoding; False: use the Python path instead.

        ``items`` carry the record bytes and their offsets; ``persons`` (``enriched``: the
        envelope's person per item) fill ``person_id``, framed after the offset as an Avro string."""
        select = NATIVE_SQL.get(table)
        if not self.enabled or select is None or not items:
            return False
        select = select.replace("__PERSON__", "NULL" if persons is None else "_person")
        first = items[0].value
        if first is None or first[:2] != SINGLE_OBJECT_MAGIC:
            return False
        prefix = first[:10]
        if any(item.value is None or item.value[:10] != prefix for item in items):
            return False
        header = self._header(prefix[2:], record_type, persons is not None)
        if header is None:
            return False
        if persons is None:
            data = b"".join(_long(item.offset) + item.value[10:] for item in items)  # type: ignore[index]
        else:
            data = b"".join(
                _long(item.offset) + _string(person.encode()) + item.value[10:]  # type: ignore[index]
                for item, person in zip(items, persons, strict=True)
            )
        container = header + _long(len(items)) + _long(len(data)) + data + _SYNC
        token = f"{topic}:{partition}:{items[0].offset}-{items[-1].offset}"
        names = ", ".join((*columns, *SOURCE_COLUMNS))
        fd, path = tempfile.mkstemp(suffix=".avro", prefix="loader-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(container)
            # The token inline: per-call settings cost chDB three more statements (read, SET, reset).
            sql = (
                f"INSERT INTO {table} ({names}) SETTINGS insert_deduplication_token = {_quote(token)} "
                f"SELECT {select}, {_quote(topic)}, {int(partition)}, _offset "
                f"FROM file({_quote(path)}, 'Avro')"
            )
            try:
                self.client.command(sql)
            except Exception:  # a refused row, a schema without a field: the Python path decides
                return False
        finally:
            os.unlink(path)
        return True


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
