"""``tagstream dlq inspect|replay``: look at dead letters, and re-feed them after a fix.

``replay`` produces each selected dead letter's original bytes (and key) to its source topic, so
the record takes the normal path again; ingest's deduplication makes a repeated replay harmless.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated, Any

import typer

from services.cli.consume import consume
from services.common.jsonform import format_time
from services.common.kafka import make_producer
from services.common.serde import Serde, SerdeError
from services.common.settings import load_settings
from services.common.topics import DEAD_LETTERS, spec_for, topic_name

dlq_app = typer.Typer(
    help="Dead letters: why records were refused, and replay after a fix.", no_args_is_help=True
)

ReasonOption = Annotated[str | None, typer.Option("--reason", help="Only this reason code.")]
ServiceOption = Annotated[str | None, typer.Option("--service", help="Only letters from this service.")]
TimeoutOption = Annotated[float, typer.Option(help="Stop after this many seconds without a record.")]


def _letters(reason: str | None, service: str | None, timeout: float) -> list[dict[str, Any]]:
    settings = load_settings()
    serde = Serde(registry_url=settings.schema_registry_url)
    name = topic_name(DEAD_LETTERS, settings)
    letters = []
    for item in consume(settings, name, serde, from_beginning=True, max_records=None, timeout_s=timeout):
        if isinstance(item, SerdeError):
            continue
        _kind, letter = item
        if (reason is None or letter["reason"] == reason) and (
            service is None or letter["service"] == service
        ):
            letters.append(letter)
    return letters


@dlq_app.command("inspect")
def inspect(
    reason: ReasonOption = None,
    service: ServiceOption = None,
    summary: Annotated[bool, typer.Option(help="Counts by service, step and reason only.")] = False,
    timeout: TimeoutOption = 3.0,
) -> None:
    """One JSON line per dead letter (without the original bytes), or a summary."""
    letters = _letters(reason, service, timeout)
    if summary:
        for (svc, step, why), count in sorted(
            Counter((x["service"], x["step"], x["reason"]) for x in letters).items()
        ):
            typer.echo(f"{count:8d}  {svc:10} {step:10} {why}")
        return
    for letter in letters:
        shown = {k: v for k, v in letter.items() if k not in ("original", "original_key")}
        shown["time"] = format_time(letter["time"])
        shown["original_bytes"] = len(letter["original"])
        typer.echo(json.dumps(shown))


@dlq_app.command("replay")
def replay(
    reason: ReasonOption = None,
    service: ServiceOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be replayed.")] = False,
    timeout: TimeoutOption = 3.0,
) -> None:
    """Produce the selected letters' original records to their source topics again."""
    settings = load_settings()
    letters = [x for x in _letters(reason, service, timeout) if not x["truncated"]]
    if dry_run:
        typer.echo(f"would replay {len(letters)} records")
        return
    producer = make_producer(settings)
    failures: list[str] = []
    for letter in letters:
        try:
            target = topic_name(spec_for(letter["source_topic"], settings), settings)
        except KeyError as exc:
            failures.append(str(exc))
            continue
        producer.produce(
            target,
            letter["original"],
            letter["original_key"],
            on_delivery=lambda err, _m: failures.append(str(err)) if err else None,
        )
        producer.poll(0)
    producer.flush(60)
    if failures:
        typer.echo(f"error: {len(failures)} records not replayed: {failures[:3]}", err=True)
        raise typer.Exit(1)
    typer.echo(f"replayed {len(letters)} records")
