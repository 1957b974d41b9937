"""Segment definitions: loading YAML/JSON files, refusing bad ones with a field path, diffing reloads.

A file holds one segment (a mapping with ``id``) or many (``segments: [...]``); a directory holds
any number of ``*.yaml``/``*.yml``/``*.json`` files read in name order. Every problem is reported as
``<file>: segments[3].condition.all[1].within: <message>`` so a marketer can find the field. A
reload produces a :class:`SegmentDiff` (added / changed / removed ids); streaming state is kept per
tracked fact, not per segment, so unchanged segments keep their membership across reloads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.segmenter.conditions import TAGS, Condition

SUFFIXES = (".yaml", ".yml", ".json")


class Segment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,127}$")
    name: str | None = None
    description: str | None = None
    condition: Condition


class SegmentFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    segments: list[Segment]

    @field_validator("segments")
    @classmethod
    def _unique_ids(cls, segments: list[Segment]) -> list[Segment]:
        seen: set[str] = set()
        for segment in segments:
            if segment.id in seen:
                raise ValueError(f"segment id {segment.id!r} is defined twice")
            seen.add(segment.id)
        return segments


class DefinitionError(ValueError):
    """A definition was refused; ``problems`` lists ``path: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid segment definitions:\n  " + "\n  ".join(problems))
        self.problems = problems


def error_path(loc: Iterable[int | str]) -> str:
    """Pydantic's location as the user wrote it.

    ``('segments', 3, 'condition', 'AllOf', 'all', 1, 'within')`` → ``segments[3].condition.all[1].within``.
    """
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part not in TAGS:  # the union member's tag is not a field the user wrote
            path += f".{part.rstrip('_')}" if path else part.rstrip("_")
    return path or "(top)"


def _problems(error: ValidationError, prefix: str) -> list[str]:
    return [
        f"{prefix}{error_path(item['loc'])}: {item['msg'].removeprefix('Value error, ')}"
        for item in error.errors()
    ]


def parse(document: Any, source: str = "") -> list[Segment]:
    """Validate one parsed document (a segment, or ``{segments: [...]}``)."""
    prefix = f"{source}: " if source else ""
    if isinstance(document, Mapping) and "segments" not in document and "id" in document:
        document = {"segments": [document]}
    try:
        return list(SegmentFile.model_validate(document).segments)
    except ValidationError as error:
        raise DefinitionError(_problems(error, prefix)) from None


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise DefinitionError([f"{path}: not valid {path.suffix.lstrip('.')}: {error}"]) from None


def load(path: Path | str) -> dict[str, Segment]:
    """Segments by id from a file or a directory; refuses duplicates across files."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES) if path.is_dir() else [path]
    segments: dict[str, Segment] = {}
    problems: list[str] = []
    for file in files:
        try:
            parsed = parse(_read(file), str(file))
        except DefinitionError as error:
            problems.extend(error.problems)
            continue
        for segment in parsed:
            if segment.id in segments:
                problems.append(f"{file}: segment id {segment.id!r} is already defined in another file")
            segments[segment.id] = segment
    if problems:
        raise DefinitionError(problems)
    return segments


@dataclass(frozen=True)
class SegmentDiff:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)


def _same(a: BaseModel, b: BaseModel) -> bool:
    return a.model_dump(mode="json", by_alias=True) == b.model_dump(mode="json", by_alias=True)


def diff(old: Mapping[str, Segment], new: Mapping[str, Segment]) -> SegmentDiff:
    """What a reload changes. A changed condition needs its membership recomputed from history;
    a changed name/description alone is still "changed" (cheap to recompute, simpler to reason about)."""
    return SegmentDiff(
        added=tuple(sorted(new.keys() - old.keys())),
        changed=tuple(sorted(k for k in new.keys() & old.keys() if not _same(old[k], new[k]))),
        removed=tuple(sorted(old.keys() - new.keys())),
    )
