"""The ``tagstream`` command. Subcommand names are stable: scripts and docs rely on them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from services.cli import analytics as analytics_mod
from services.cli import consume as consume_mod
from services.cli import demo as demo_mod
from services.cli import produce as produce_mod
from services.cli import stack as stack_mod
from services.cli.dlq import dlq_app
from services.cli.geofences import geofences_app
from services.cli.importer import import_app
from services.cli.progress import progress_bar
from services.cli.registry import registry_app
from services.cli.segments import segments_app
from services.cli.service_registry import entry_point
from services.common.broker import BrokerError, LocalBroker, kafka_jars
from services.common.jsonform import JsonForm, JsonFormError, dumps, parse_time
from services.common.kafka import ensure_topics
from services.common.localproc import LocalProcessError
from services.common.serde import Serde, SerdeError
from services.common.settings import Settings, load_settings
from services.common.topics import ALL_TOPICS, spec_for, topic_name

app = typer.Typer(help="tagstream: behavioural customer data on Kafka and ClickHouse.", no_args_is_help=True)
broker_app = typer.Typer(help="The local single-node Kafka broker (KRaft).", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics declared in services/common/topics.py.", no_args_is_help=True)
stack_app = typer.Typer(help="The broker and every service, in the background.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")
app.add_typer(stack_app, name="stack")
app.add_typer(dlq_app, name="dlq")
app.add_typer(registry_app, name="registry")
app.add_typer(import_app, name="import")
app.add_typer(segments_app, name="segments")
app.add_typer(geofences_app, name="geofences")
app.command("report")(analytics_mod.report)
app.command("query")(analytics_mod.query)

err = Console(stderr=True, soft_wrap=True)  # never wrap: messages are grepped and copied


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings() -> Settings:
    return load_settings()


# -- broker -------------------------------------------------------------------------------------
@broker_app.command("start")
def broker_start() -> None:
    """Start the local broker (no-op if running); returns when it answers metadata requests."""
    settings = _settings()
    if not settings.uses_local_broker:
        err.print(f"TAGSTREAM_KAFKA_BOOTSTRAP is set ({settings.bootstrap_servers}): nothing to start")
        return
    broker = LocalBroker(settings)
    was_running = broker.status().running
    try:
        status = broker.start()
    except LocalProcessError as exc:
        raise _fail(str(exc)) from None
    verb = "already running" if was_running else "started"
    err.print(f"Kafka broker {verb}: {status.bootstrap} (pid {status.pid}, data {status.data_dir})")


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the local broker (SIGTERM, then SIGKILL after 60 s)."""
    stopped = LocalBroker(_settings()).stop()
    err.print("Kafka broker stopped" if stopped else "Kafka broker was not running")


@broker_app.command("status")
def broker_status() -> None:
    """Say whether the local broker runs; exit 1 if it does not."""
    settings = _settings()
    status = LocalBroker(settings).status()
    if status.running:
        typer.echo(f"running: {status.bootstrap} (pid {status.pid}, data {status.data_dir})")
    else:
        typer.echo(f"stopped (data {status.data_dir})")
        raise typer.Exit(1)


@broker_app.command("jars")
def broker_jars() -> None:
    """Fetch the broker's jars with Maven into the cache (done by `start` when needed)."""
    try:
        typer.echo(str(kafka_jars(_settings())))
    except LocalProcessError as exc:
        raise _fail(str(exc)) from None


# -- topics -------------------------------------------------------------------------------------
@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create missing topics and check existing ones (idempotent)."""
    settings = _settings()
    mismatches = 0
    for status in ensure_topics(settings):
        mismatches += status.action == "mismatch"
        typer.echo(f"{status.action:9} {status.name} {status.detail}".rstrip())
    if mismatches:
        raise _fail(f"{mismatches} topic(s) differ from their declaration")


@topics_app.command("list")
def topics_list() -> None:
    """The declared topics with partitions, cleanup policy and record type."""
    settings = _settings()
    for spec in ALL_TOPICS:
        typer.echo(
            f"{topic_name(spec, settings)}\t{spec.partitions}\t{spec.cleanup_policy}\t{spec.record_type}"
        )


# -- produce / consume --------------------------------------------------------------------------
@app.command()
def produce(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSON lines, one record per line.")
    ],
    topic: Annotated[str, typer.Option("--topic", "-t", help="Topic name (declared, without prefix).")],
    record_type: Annotated[
        str | None, typer.Option("--type", help="Record type; default: the topic's.")
    ] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Produce the valid lines, report the rest.")] = False,
) -> None:
    """Validate every line of FILE against its Avro schema, then produce them all to TOPIC."""
    settings = _settings()
    try:
        spec = spec_for(topic, settings)
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from None
    kind = record_type or spec.record_type
    if kind is None:
        raise _fail(f"topic {topic} carries no declared record type; pass --type")
    serde = Serde(registry_url=settings.schema_registry_url)
    name = topic_name(spec, settings)
    try:
        good, bad = produce_mod.prepare(file, kind, name, serde, JsonForm())
    except SerdeError as exc:
        raise _fail(str(exc)) from None
    if bad and not skip_invalid:
        first = bad[0]
        more = f" ({len(bad) - 1} more bad lines)" if len(bad) > 1 else ""
        raise _fail(f"{file}:{first.line}: {first.error}{more}; nothing was produced")
    for line in bad:
        err.print(f"skipped {file}:{line.line}: {line.error}", highlight=False)
    with progress_bar(err, "producing") as progress:
        task = progress.add_task("produce", total=len(good))
        try:
            produce_mod.produce_all(settings, name, good, on_delivered=lambda n: progress.advance(task, n))
        except RuntimeError as exc:
            raise _fail(str(exc)) from None
    err.print(f"produced {len(good)} {kind} records to {name}" + (f", skipped {len(bad)}" if bad else ""))


@app.command()
def consume(
    topic: Annotated[str, typer.Option("--topic", "-t", help="Topic name (declared, without prefix).")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record.")
    ] = False,
    max_records: Annotated[int | None, typer.Option("--max", help="Stop after N records.")] = None,
    timeout: Annotated[float, typer.Option(help="Stop after this many seconds without a record.")] = 5.0,
) -> None:
    """Print records of TOPIC as JSON lines (the form `produce` reads)."""
    settings = _settings()
    try:
        name = topic_name(spec_for(topic, settings), settings)
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from None
    serde = Serde(registry_url=settings.schema_registry_url)
    form = JsonForm()
    try:
        for item in consume_mod.consume(
            settings, name, serde, from_beginning=from_beginning, max_records=max_records, timeout_s=timeout
        ):
            if isinstance(item, SerdeError):
                err.print(f"undecodable record: {item}", highlight=False)
                continue
            kind, record = item
            sys.stdout.write(dumps(form.to_json(kind, record)) + "\n")
    except SerdeError as exc:
        raise _fail(str(exc)) from None
    sys.stdout.flush()


# -- services -----------------------------------------------------------------------------------
@app.command()
def run(
    service: Annotated[
        str, typer.Argument(help="ingest, collector, enricher, segmenter, trigger, webhook, loader")
    ],
) -> None:
    """Run one service in the foreground until SIGTERM/Ctrl-C."""
    try:
        entry = entry_point(service)
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from None
    raise typer.Exit(entry())


@stack_app.command("up")
def stack_up() -> None:
    """Start the broker (unless external), ensure topics, start every service in the background."""
    try:
        states = stack_mod.up(_settings(), say=err.print)
    except (LocalProcessError, BrokerError) as exc:
        raise _fail(str(exc)) from None
    if not states:
        err.print("no services are available yet: the broker and topics are up")


@stack_app.command("down")
def stack_down() -> None:
    """Stop every service (SIGTERM: finish batch, commit, close), then the local broker."""
    stack_mod.down(_settings(), say=err.print)


@stack_app.command("status")
def stack_status() -> None:
    """One line per process: name, pid or 'stopped', log file."""
    for state in stack_mod.status(_settings()):
        typer.echo(f"{state.name:10} {state.pid or 'stopped'}\t{state.log}")


@app.command()
def demo(
    persons: Annotated[int, typer.Option(help="Size of the synthetic population.")] = 200,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 7,
) -> None:
    """Feed a synthetic population into the running stack and show what comes out."""
    demo_mod.run_demo(_settings(), err, persons=persons, seed=seed)
    err.print("stack is running: `make status` lists processes and logs, `make stop` stops everything")


@app.command()
def generate(
    persons: Annotated[int, typer.Option(help="How many persons (each with 1-3 devices).")] = 100,
    seed: Annotated[int, typer.Option(help="Same seed and --now: same records.")] = 1,
    now: Annotated[str | None, typer.Option(help="Reference time (ISO-8601); default: now.")] = None,
    days: Annotated[int, typer.Option(help="Days of history before --now.")] = 30,
    late: Annotated[float, typer.Option(help="Share of records delivered late.")] = 0.02,
    duplicates: Annotated[float, typer.Option(help="Share of records delivered twice.")] = 0.02,
    bad: Annotated[float, typer.Option(help="Share of bad records (known reason codes).")] = 0.01,
    out: Annotated[
        Path | None, typer.Option(help="Write <topic>.jsonl files and manifest.json here.")
    ] = None,
    produce_: Annotated[bool, typer.Option("--produce", help="Produce to the raw topics.")] = False,
) -> None:
    """Generate a seeded synthetic population's history (an ISP's customers and their devices)."""
    import json as _json
    import time as _time

    from services.generator.output import produce_items, write_files
    from services.generator.population import GeneratorConfig, PopulationGenerator

    if out is None and not produce_:
        raise _fail("say where the records go: --out DIR and/or --produce")
    try:
        now_ms = parse_time(now, "--now") if now else int(_time.time() * 1000)
    except JsonFormError as exc:
        raise _fail(str(exc)) from None
    config = GeneratorConfig(persons, seed, now_ms, days, late, duplicates, bad)
    items = PopulationGenerator(config).generate()
    summary = None
    if out is not None:
        summary = write_files(items, out)
        err.print(f"wrote {len(items)} records to {out}/ (manifest.json)")
    if produce_:
        settings = _settings()
        with progress_bar(err, "producing") as progress:
            task = progress.add_task("produce", total=len(items))
            summary = produce_items(settings, items, on_delivered=lambda n: progress.advance(task, n))
        err.print(f"produced {len(items)} records to the raw topics")
    typer.echo(_json.dumps(summary))
