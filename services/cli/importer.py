"""``tagstream import ...``: bulk imports from files (``profiles FILE.csv``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from services.cli import import_profiles
from services.cli.produce import produce_all
from services.cli.progress import progress_bar
from services.common.serde import Serde
from services.common.settings import load_settings
from services.common.topics import PROFILE_UPDATES, topic_name

import_app = typer.Typer(help="Bulk imports from files.", no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)


@import_app.command("profiles")
def profiles(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV with a header row.")],
    mapping: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="YAML/JSON: columns: {header: 'name:type' | skip}."),
    ] = None,
) -> None:
    """Stream CSV rows to profile-updates as typed attributes; list rejected rows by line number."""
    settings = load_settings()
    name = topic_name(PROFILE_UPDATES, settings)
    try:
        serde = Serde(registry_url=settings.schema_registry_url)
        good, bad = import_profiles.prepare(file, name, serde, mapping)
    except (import_profiles.MappingError, UnicodeDecodeError) as exc:
        err.print(f"[red]error:[/red] {exc}; nothing was imported", highlight=False)
        raise typer.Exit(1) from None
    for line in bad:
        err.print(f"rejected {file}:{line.line}: {line.error}", highlight=False)
    with progress_bar(err, "importing", transient=False) as progress:
        task = progress.add_task("import", total=len(good))
        try:
            produce_all(settings, name, good, on_delivered=lambda n: progress.advance(task, n))
        except RuntimeError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
    err.print(f"imported {len(good)} profiles to {name}" + (f", rejected {len(bad)} rows" if bad else ""))
    if bad:
        raise typer.Exit(1)  # the valid rows are in; a script must still notice the rejected ones
