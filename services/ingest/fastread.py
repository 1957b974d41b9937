"""Decode raw records written with the current schema by Python code generated for that schema.

fastavro's ``schemaless_reader`` interprets the parsed schema for every record (type names
looked up per field) and spent about 10 µs on a tag hit, a third of ingest's CPU per record;
straight-line code generated once per schema at start-up takes about a third of that.

It reads what fastavro reads, with fastavro's quirks (a boolean byte other than 0 is true; a
negative enum or union index counts from the end, as a Python list index does), and refuses
what it refuses (truncated input, bad UTF-8, an index out of range, a timestamp that is no
datetime, trailing bytes), as :class:`SerdeError` naming the record type. One difference:
``timestamp-millis`` values stay ints (ms), which is all ingest needs; the range fastavro turns
into a ``datetime`` is still checked. Varints longer than 10 bytes are refused where fastavro
returns a wrapped number. Schemas with types this does not handle (fixed, decimals, other
logical types, recursive records) are left to fastavro, as are older schema versions (they
need resolution) and Confluent framing.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from services.common.schemas import SchemaCatalogue
from services.common.serde import (
    SINGLE_OBJECT_HEADER_BYTES,
    SerdeError,
    avro_read_long,
    single_object_header,
)

Reader = Callable[[bytes], dict[str, Any]]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The ms values fastavro can turn into a datetime (epoch + timedelta): years 1 to 9999.
TIMESTAMP_MIN_MS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
TIMESTAMP_MAX_MS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
_PRIMITIVE = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class Unsupported(Exception):
    """The schema has something the generator does not handle; fastavro decodes it."""


class _Trailing(Exception):
    pass


def _eof(wanted: int, at: int, length: int) -> EOFError:
    return EOFError(f"Expected {wanted} bytes, read {max(0, min(wanted, length - at))}")


class _Generator:
    """Emits the body of ``read(d)``: ``at`` is the read position, ``L`` the input length."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self.named: dict[str, dict[str, Any]] = {}
        self._counter = 0
        self._active: set[str] = set()

    def var(self, prefix: str = "v") -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def long(self, target: str, indent: int) -> None:
        self.emit(indent, "b = d[at]")
        self.emit(indent, "if b < 128:")
        self.emit(indent + 1, f"{target} = (b >> 1) ^ -(b & 1)")
        self.emit(indent + 1, "at += 1")
        self.emit(indent, "else:")
        self.emit(indent + 1, f"{target}, at = _read_long(d, at)")

    def sized(self, target: str, indent: int, decode: bool) -> None:
        n = self.var("n")
        self.long(n, indent)
        self.emit(indent, f"e = at + {n}")
        self.emit(indent, f"if {n} < 0 or e > L:")
        self.emit(indent + 1, f"raise _eof({n}, at, L)")
        self.emit(indent, f"{target} = d[at:e].decode()" if decode else f"{target} = d[at:e]")
        self.emit(indent, "at = e")

    def value(self, schema: Any, target: str, indent: int, namespace: str = "") -> None:
        if isinstance(schema, list):
            return self.union(schema, target, indent, namespace)
        if isinstance(schema, str):
            if schema in _PRIMITIVE:
                return self.primitive(schema, target, indent)
            full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
            named = self.named.get(full) or self.named.get(schema)
            if named is None:
                raise Unsupported(f"unknown type {schema}")
            return self.value(named, target, indent, namespace)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical is not None:
            if logical != "timestamp-millis" or kind != "long":
                raise Unsupported(f"logical type {logical}")
            self.long(target, indent)
            self.emit(indent, f"if not {TIMESTAMP_MIN_MS} <= {target} <= {TIMESTAMP_MAX_MS}:")
            self.emit(indent + 1, "raise OverflowError('date value out of range')")
            return None
        if kind == "record":
            return self.record(schema, target, indent, namespace)
        if kind == "enum":
            self.define(schema, namespace)
            symbols = self.var("symbols")
            self.constants[symbols] = tuple(schema["symbols"])
            index = self.var("i")
            self.long(index, indent)
            self.emit(indent, f"{target} = {symbols}[{index}]")
            return None
        if kind == "array":
            return self.blocks(schema["items"], target, indent, namespace, is_map=False)
        if kind == "map":
            return self.blocks(schema["values"], target, indent, namespace, is_map=True)
        if kind in _PRIMITIVE:
            return self.primitive(kind, target, indent)
        raise Unsupported(f"type {kind}")

    def define(self, schema: dict[str, Any], namespace: str) -> str:
        name = schema["name"]
        space = schema.get("namespace", namespace)
        full = name if "." in name or not space else f"{space}.{name}"
        self.named[full] = schema
        self.named.setdefault(name, schema)
        return full

    def primitive(self, kind: str, target: str, indent: int) -> None:
        if kind == "null":
            self.emit(indent, f"{target} = None")
        elif kind == "boolean":
            self.emit(indent, f"{target} = d[at] != 0")
            self.emit(indent, "at += 1")
        elif kind in ("int", "long"):
            self.long(target, indent)
        elif kind in ("float", "double"):
            packer = "_DOUBLE" if kind == "double" else "_FLOAT"
            self.emit(indent, f"{target} = {packer}.unpack_from(d, at)[0]")
            self.emit(indent, f"at += {packer}.size")
        elif kind == "string":
            self.sized(target, indent, decode=True)
        else:  # bytes
            self.sized(target, indent, decode=False)

    def record(self, schema: dict[str, Any], target: str, indent: int, namespace: str) -> None:
        full = self.define(schema, namespace)
        if full in self._active:
            raise Unsupported(f"recursive record {full}")
        self._active.add(full)
        space = full.rpartition(".")[0]
        fields = []
        for field in schema["fields"]:
            var = self.var()
            self.value(field["type"], var, indent, space)
            fields.append(f"{field['name']!r}: {var}")
        self._active.discard(full)
        self.emit(indent, f"{target} = {{{', '.join(fields)}}}")

    def union(self, branches: list[Any], target: str, indent: int, namespace: str) -> None:
        index = self.var("i")
        self.long(index, indent)
        # fastavro indexes the branch list: a negative index counts from the end
        self.emit(indent, f"if {index} < 0:")
        self.emit(indent + 1, f"{index} += {len(branches)}")
        for number, branch in enumerate(branches):
            self.emit(indent, f"{'if' if number == 0 else 'elif'} {index} == {number}:")
            self.value(branch, target, indent + 1, namespace)
        self.emit(indent, "else:")
        self.emit(indent + 1, "raise IndexError('union index out of range')")

    def blocks(self, items: Any, target: str, indent: int, namespace: str, is_map: bool) -> None:
        count = self.var("c")
        self.emit(indent, f"{target} = {{}}" if is_map else f"{target} = []")
        self.emit(indent, "while True:")
        self.long(count, indent + 1)
        self.emit(indent + 1, f"if {count} == 0:")
        self.emit(indent + 2, "break")
        self.emit(indent + 1, f"if {count} < 0:")  # a block with its size in bytes: skip the size
        self.emit(indent + 2, f"{count} = -{count}")
        self.long("_", indent + 2)
        self.emit(indent + 1, f"for _ in range({count}):")
        item = self.var()
        if is_map:
            key = self.var("k")
            self.sized(key, indent + 2, decode=True)
            self.value(items, item, indent + 2, namespace)
            self.emit(indent + 2, f"{target}[{key}] = {item}")
        else:
            self.value(items, item, indent + 2, namespace)
            self.emit(indent + 2, f"{target}.append({item})")


def compile_reader(schema: dict[str, Any]) -> Reader:
    """A function decoding one single-object-framed record (header included) of ``schema``;
    raise :class:`Unsupported` for a schema it cannot handle."""
    generator = _Generator()
    generator.value(schema, "record", 1)
    source = "\n".join(
        [
            "def read(d):",
            "    L = len(d)",
            f"    at = {SINGLE_OBJECT_HEADER_BYTES}",
            *generator.lines,
            "    if at != L:",
            "        raise _Trailing(L - at)",
            "    return record",
        ]
    )
    namespace: dict[str, Any] = {
        "_read_long": avro_read_long,
        "_eof": _eof,
        "_Trailing": _Trailing,
        "_DOUBLE": struct.Struct("<d"),
        "_FLOAT": struct.Struct("<f"),
        **generator.constants,
    }
    # the source is built above from the schema alone (names are quoted with repr)
    exec(compile(source, f"<fastread {schema.get('name')}>", "exec"), namespace)
    return namespace["read"]


class FastReader:
    """Decoders for the current schema of each record type, by their single-object header."""

    def __init__(self, catalogue: SchemaCatalogue, record_types: list[str]) -> None:
        self._by_header: dict[bytes, tuple[str, Reader]] = {}
        for record_type in record_types:
            schema = catalogue.current(record_type)
            try:
                reader = compile_reader(schema.raw)
            except Unsupported:
                continue
            self._by_header[single_object_header(schema)] = (record_type, reader)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]] | None:
        """``(record_type, record)``, None if this is not a record it has a decoder for (the
        caller uses ``Serde.decode``), or :class:`SerdeError` as ``Serde.decode`` raises it."""
        entry = self._by_header.get(data[:SINGLE_OBJECT_HEADER_BYTES])
        if entry is None:
            return None
        record_type, reader = entry
        try:
            return record_type, reader(data)
        except _Trailing as exc:
            raise SerdeError(f"{record_type}: {exc.args[0]} trailing bytes after the record") from None
        except Exception as exc:  # as Serde.decode: corrupt bodies raise many types
            raise SerdeError(f"{record_type}: corrupt Avro body: {type(exc).__name__}: {exc}") from None
