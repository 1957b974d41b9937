"""``tagstream report`` and ``tagstream query``: analytics from the terminal, in both modes.

The work happens in ``services.loader.analytics`` (routing: server, running loader's HTTP API,
or chDB opened directly); this module parses options and prints table, JSON or CSV.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.common.settings import load_settings
from services.loader.analytics import Analytics, QueryFailed, QueryRefused, Result
from services.loader.reports import REPORTS

err = Console(stderr=True, soft_wrap=True)


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"not an ISO date/time: {value}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def emit(result: Result, fmt: Format) -> None:
    data = result.to_json()
    if fmt is Format.json:
        for row in data["rows"]:
            sys.stdout.write(json.dumps(dict(zip(data["columns"], row, strict=True)), default=str) + "\n")
    elif fmt is Format.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(data["columns"])
        writer.writerows(data["rows"])
    else:
        table = Table(*data["columns"])
        for row in data["rows"]:
            table.add_row(*("" if v is None else str(v) for v in row))
        Console(soft_wrap=True).print(table)
    sys.stdout.flush()


def _run(call: Any, fmt: Format) -> None:
    try:
        result = call(Analytics(load_settings()))
    except QueryRefused as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except QueryFailed as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    emit(result, fmt)


def report(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(REPORTS)}")],
    since: Annotated[str | None, typer.Option(help="From this UTC date/time (ISO), inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this UTC date/time (ISO), exclusive.")] = None,
    app: Annotated[str | None, typer.Option(help="Only this app_id.")] = None,
    person: Annotated[str | None, typer.Option(help="person_tags: a person id or any identifier.")] = None,
    search: Annotated[str | None, typer.Option(help="person_tags: tag name or value contains.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Run an analytics report (reads ClickHouse; never writes)."""
    filters = {"since": _time(since), "until": _time(until), "app": app, "person": person, "search": search}
    _run(lambda a: a.report(name, **filters), fmt)


def query(
    sql: Annotated[str, typer.Argument(help="One read-only statement (SELECT, WITH, SHOW, DESCRIBE...).")],
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
) -> None:
    """Run read-only SQL against ClickHouse; writes are refused with exit code 2."""
    _run(lambda a: a.query(sql), fmt)
