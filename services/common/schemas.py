"""The Avro schemas in ``schemas/``: current version per record type, and every old version.

``schemas/<record_type>.avsc`` is the current (reader) schema; ``schemas/history/<type>.vN.avsc``
keeps older writer schemas so records written with them still decode (schema resolution
fills new fields from their defaults). Versions are told apart by their CRC-64-AVRO
fingerprint, as Avro single-object encoding does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from services.common.settings import REPO_ROOT

SCHEMA_DIR = REPO_ROOT / "schemas"


@dataclass(frozen=True)
class SchemaVersion:
    record_type: str  # file stem: "event", "tag_hit", ...
    full_name: str  # Avro full name: "io.tagstream.Event"
    raw: dict[str, Any]  # the .avsc as JSON
    parsed: Any  # fastavro's parsed form
    canonical: str  # parsing canonical form (what the fingerprint is taken of)
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO
    current: bool
    path: Path


def _load(path: Path, record_type: str, current: bool) -> SchemaVersion:
    raw = json.loads(path.read_text())
    # Keep fastavro's "parsed" marker: without it every schemaless_reader/writer call parses the
    # schema again, which cost more than the Avro body itself.
    parsed = parse_schema(raw, _force=True)
    canonical = to_parsing_canonical_form(parsed)
    return SchemaVersion(
        record_type=record_type,
        full_name=f"{raw.get('namespace', '')}.{raw['name']}".lstrip("."),
        raw=raw,
        parsed=parsed,
        canonical=canonical,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
        current=current,
        path=path,
    )


class SchemaCatalogue:
    """All schema versions found in one directory."""

    def __init__(self, directory: Path = SCHEMA_DIR) -> None:
        self._current: dict[str, SchemaVersion] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        self._by_full_name: dict[str, str] = {}
        self._versions: dict[str, list[SchemaVersion]] = {}
        for path in sorted(directory.glob("*.avsc")):
            self._add(_load(path, path.stem, current=True))
        for path in sorted((directory / "history").glob("*.avsc")):
            self._add(_load(path, path.name.split(".")[0], current=False))
        for record_type in self._versions:
            if record_type not in self._current:
                raise ValueError(
                    f"schemas/history has {record_type} but schemas/{record_type}.avsc is missing"
                )

    def _add(self, version: SchemaVersion) -> None:
        if version.current:
            self._current[version.record_type] = version
            self._by_full_name[version.full_name] = version.record_type
        self._by_fingerprint.setdefault(version.fingerprint, version)
        self._versions.setdefault(version.record_type, []).append(version)

    def current(self, record_type: str) -> SchemaVersion:
        try:
            return self._current[record_type]
        except KeyError:
            raise KeyError(
                f"no schema for record type {record_type!r}; known: {sorted(self._current)}"
            ) from None

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fp)

    def record_type_of(self, full_name: str) -> str | None:
        return self._by_full_name.get(full_name)

    def versions(self, record_type: str) -> list[SchemaVersion]:
        return list(self._versions.get(record_type, []))

    @property
    def record_types(self) -> list[str]:
        return sorted(self._current)


@cache
def default_catalogue() -> SchemaCatalogue:
    return SchemaCatalogue()
