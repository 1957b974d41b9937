"""ClickHouse access through clickhouse-connect, embedded (chDB) or server, by DSN alone.

``chdb:///abs/path`` runs the real ClickHouse engine in this process on disk; ``http://host:8123``
talks to a server. chDB lets one process hold one data directory at a time (opening a second
path fails until the first client is closed), so in embedded mode the loader owns the data dir
and other processes query through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from services.common.settings import Settings


def connect(dsn: str) -> Client:
    if dsn.startswith("chdb://"):
        path = dsn.removeprefix("chdb://")
        if path and not path.startswith("/"):
            raise ValueError(f"chdb DSN needs an absolute path: {dsn}")
        from pathlib import Path

        Path(path).mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=dsn)


def client_for(settings: Settings) -> Client:
    return connect(settings.clickhouse_dsn)


@dataclass(frozen=True)
class Migration:
    id: str  # stable, ordered: "0001_tags"
    statements: Sequence[str]  # idempotent DDL (CREATE ... IF NOT EXISTS, ALTER ... IF NOT EXISTS)


def migrate(client: Client, migrations: Sequence[Migration], database: str = "default") -> list[str]:
    """Apply migrations not yet recorded in ``<database>.schema_migrations``; returns the ids applied."""
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(id String, applied_at DateTime64(3) DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY id"
    )
    done = {row[0] for row in client.query(f"SELECT id FROM {database}.schema_migrations FINAL").result_rows}
    applied = []
    for migration in migrations:
        if migration.id in done:
            continue
        for statement in migration.statements:
            client.command(statement)
        client.insert(f"{database}.schema_migrations", [[migration.id]], column_names=["id"])
        applied.append(migration.id)
    return applied
