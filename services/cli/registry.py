"""``tagstream registry start|stop|status|jars``: the local Apicurio schema registry.

Mirrors ``tagstream broker``: idempotent start that returns once the Confluent API answers,
state (pid, log) under ``<data_dir>/registry``, jars cached under ``<cache_dir>``. Storage is in
memory, so a restart forgets every schema; producers register theirs again on first use.
"""

from __future__ import annotations

import typer
from rich.console import Console

from services.common.localproc import LocalProcessError
from services.common.registry_server import LocalRegistry, apicurio_dir
from services.common.settings import load_settings

registry_app = typer.Typer(
    help="A local Confluent-compatible schema registry (Apicurio, in memory).", no_args_is_help=True
)
err = Console(stderr=True, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


@registry_app.command("start")
def start() -> None:
    """Start the registry (no-op if running); returns when its Confluent API answers."""
    settings = load_settings()
    registry = LocalRegistry(settings)
    if settings.schema_registry_url and settings.schema_registry_url.rstrip("/") != registry.url:
        err.print(
            f"TAGSTREAM_SCHEMA_REGISTRY_URL is set ({settings.schema_registry_url}): nothing to start",
            highlight=False,
        )
        return
    was_running = registry.status().running
    try:
        status = registry.start()
    except LocalProcessError as exc:
        raise _fail(str(exc)) from None
    verb = "already running" if was_running else "started"
    err.print(f"schema registry {verb}: {status.url} (pid {status.pid})", highlight=False)
    err.print(f"use it: export TAGSTREAM_SCHEMA_REGISTRY_URL={status.url}", highlight=False)


@registry_app.command("stop")
def stop() -> None:
    """Stop the registry (SIGTERM, then SIGKILL after 30 s); its schemas are forgotten."""
    stopped = LocalRegistry(load_settings()).stop()
    err.print("schema registry stopped" if stopped else "schema registry was not running")


@registry_app.command("status")
def status() -> None:
    """Say whether the registry runs (and its URL); exit 1 if it does not."""
    current = LocalRegistry(load_settings()).status()
    if current.running:
        typer.echo(f"running: {current.url} (pid {current.pid})")
    else:
        typer.echo(f"stopped ({current.url})")
        raise typer.Exit(1)


@registry_app.command("jars")
def jars() -> None:
    """Fetch the registry's distribution with Maven into the cache (done by `start` when needed)."""
    try:
        typer.echo(str(apicurio_dir(load_settings())))
    except LocalProcessError as exc:
        raise _fail(str(exc)) from None
