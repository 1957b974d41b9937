"""``tagstream geofences publish|list``: the geofence and iBeacon catalogue on the ``geofences`` topic.

``publish FILE`` checks the file (same format as ``TAGSTREAM_ENRICHER_GEOFENCE_FILE``,
``services/enricher/geofences.py``) and writes one record per entry; running enrichers apply it
without a restart. ``--prune`` also removes (tombstones) the topic's entries the file does not
have. ``list`` shows what the topic holds now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from services.cli.analytics import Format, emit, err
from services.common.follow import TopicFollower
from services.common.kafka import produce_acknowledged
from services.common.settings import Settings, load_settings
from services.common.topics import GEOFENCES, topic_name
from services.enricher.catalogue_feed import parse_record, record_key
from services.enricher.geofences import CatalogueError, read_catalogue_file
from services.loader.analytics import Result

geofences_app = typer.Typer(
    help="The geofence and iBeacon catalogue the enricher follows (the geofences topic).",
    no_args_is_help=True,
)
TimeoutOption = Annotated[float, typer.Option(help="Give up reading the topic after this many seconds.")]


def _read_topic(settings: Settings, timeout: float) -> dict[bytes, bytes]:
    """The topic's current records (key -> value), tombstoned ones left out."""
    current: dict[bytes, bytes] = {}

    def keep(key: bytes, value: bytes | None) -> None:
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value

    follower = TopicFollower(settings, topic_name(GEOFENCES, settings), keep, "geofences-cli").start()
    try:
        if not follower.wait_caught_up(timeout):
            message = f"the geofences topic was not read to its end within {timeout:g} s"
            err.print(f"[red]error:[/red] {message}", highlight=False)
            raise typer.Exit(1)
    finally:
        follower.stop()
    return current


@geofences_app.command("publish")
def publish(
    file: Annotated[Path, typer.Argument(help="Catalogue JSON: {'geofences': [...], 'beacons': [...]}.")],
    prune: Annotated[bool, typer.Option(help="Also remove topic entries the file does not have.")] = False,
    timeout: TimeoutOption = 30.0,
) -> None:
    """Check a catalogue file and write its entries to the geofences topic."""
    try:
        catalogue = read_catalogue_file(file)
    except CatalogueError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    settings = load_settings()
    name = topic_name(GEOFENCES, settings)
    records: dict[bytes, bytes | None] = {}
    for kind, entries in (("geofence", catalogue.geofences), ("beacon", catalogue.beacons)):
        for entry in entries:
            records[record_key(kind, entry.id)] = entry.model_dump_json(exclude_none=True).encode()
    removed = 0
    if prune:
        for key in _read_topic(settings, timeout):
            if key not in records:
                records[key] = None  # a tombstone: the enricher drops the entry
                removed += 1
    produce_acknowledged(settings, ((name, key, value) for key, value in records.items()))
    typer.echo(
        f"published {len(catalogue.geofences)} geofences and {len(catalogue.beacons)} beacons to {name}"
        + (f"; removed {removed}" if prune else "")
    )


@geofences_app.command("list")
def list_entries(
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    timeout: TimeoutOption = 30.0,
) -> None:
    """The entries on the geofences topic now (the enricher adds its file's entries to these)."""
    rows = []
    for key, value in sorted(_read_topic(load_settings(), timeout).items()):
        try:
            kind, entry_id, entry = parse_record(key, value)
        except CatalogueError as exc:
            rows.append(["?", key.decode(errors="replace"), f"refused: {exc}"])
            continue
        definition = entry.model_dump(exclude_none=True, exclude={"id"}) if entry else {}
        rows.append([kind, entry_id, json.dumps(definition)])
    emit(Result(["kind", "id", "definition"], rows), fmt)
