"""``tagstream segments list|size|members``: defined segments and their current membership.

Definitions come from the segment definitions file or directory (``--definitions``, else the
segmenter's: ``TAGSTREAM_SEGMENTER_DEFINITIONS_FILE``, else ``<config_dir>/segments.yaml``, else
``segments.example.yaml``); membership from ClickHouse (``services.loader.membership``),
through the same routes as ``tagstream query`` (server, running loader's API, or chDB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.cli.analytics import Format, _run, emit, err
from services.common.settings import load_settings
from services.loader import membership
from services.loader.analytics import Analytics, QueryFailed, QueryRefused, Result
from services.segmenter.definitions import DefinitionError, Segment, load
from services.segmenter.settings import SegmenterSettings

segments_app = typer.Typer(
    help="Segments: definitions and current membership (loaded from segment-membership).",
    no_args_is_help=True,
)
DefinitionsOption = Annotated[
    Path | None,
    typer.Option(
        "--definitions",
        help="Segment definitions file or directory (default: the segmenter's, "
        "TAGSTREAM_SEGMENTER_DEFINITIONS_FILE, else config/segments.yaml, else the example).",
    ),
]
FormatOption = Annotated[Format, typer.Option("--format", help="Output format.")]


def definitions_path(explicit: Path | None) -> Path:
    return explicit if explicit is not None else SegmenterSettings().definitions_path


def _segments(path: Path | None) -> dict[str, Segment]:
    source = definitions_path(path)
    try:
        return load(source)
    except FileNotFoundError:
        err.print(f"[red]error:[/red] no segment definitions at {source}", highlight=False)
        raise typer.Exit(2) from None
    except DefinitionError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


def _known(segment_id: str, segments: dict[str, Segment]) -> None:
    if segment_id not in segments:
        defined = ", ".join(sorted(segments)) or "none"
        err.print(f"[red]error:[/red] unknown segment {segment_id!r}; defined: {defined}", highlight=False)
        raise typer.Exit(2)


def _query(sql: str) -> Result:
    try:
        return Analytics(load_settings()).query(sql)
    except (QueryRefused, QueryFailed) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


@segments_app.command("list")
def list_segments(definitions: DefinitionsOption = None, fmt: FormatOption = Format.table) -> None:
    """Every defined segment with its current number of members."""
    segments = _segments(definitions)
    sizes = {row[0]: int(row[1]) for row in _query(membership.sizes_sql()).rows}
    rows = [[s.id, s.name or "", sizes.get(s.id, 0)] for s in segments.values()]
    # Changes for ids no longer defined (removed segments whose exits have not loaded yet).
    rows += [[sid, "(not defined)", n] for sid, n in sorted(sizes.items()) if sid not in segments and n]
    emit(Result(["segment", "name", "members"], rows), fmt)


@segments_app.command("size")
def size(
    segment_id: Annotated[str, typer.Argument(metavar="ID", help="Segment id.")],
    definitions: DefinitionsOption = None,
) -> None:
    """The current number of members of one segment."""
    _known(segment_id, _segments(definitions))
    typer.echo(int(_query(membership.size_sql(segment_id)).rows[0][0]))


@segments_app.command("members")
def members(
    segment_id: Annotated[str, typer.Argument(metavar="ID", help="Segment id.")],
    limit: Annotated[int, typer.Option(min=1, help="At most this many persons (by person id).")] = 100,
    definitions: DefinitionsOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Current members of one segment: person id and when they entered."""
    _known(segment_id, _segments(definitions))
    _run(lambda a: a.query(membership.members_sql(segment_id, limit)), fmt)
