"""The embedded ClickHouse engine (chDB through clickhouse-connect) and idempotent migrations."""

import pytest

from services.common.clickhouse import Migration, connect, migrate

MIGRATIONS = [
    Migration(
        "0001_t", ["CREATE TABLE IF NOT EXISTS t (id UInt64, s String) ENGINE = MergeTree ORDER BY id"]
    ),
    Migration("0002_t_col", ["ALTER TABLE t ADD COLUMN IF NOT EXISTS n UInt32 DEFAULT 0"]),
]


@pytest.mark.integration
def test_migrations_apply_once_and_data_persists_on_disk(chdb_dsn):
    """Migrations run once, a second run applies nothing, and rows survive a reconnect."""
    client = connect(chdb_dsn)
    try:
        assert migrate(client, MIGRATIONS) == ["0001_t", "0002_t_col"]
        assert migrate(client, MIGRATIONS) == []
        client.insert("t", [[1, "a", 5]], column_names=["id", "s", "n"])
    finally:
        client.close()
    client = connect(chdb_dsn)
    try:
        assert migrate(client, MIGRATIONS) == []
        assert client.query("SELECT id, s, n FROM t").result_rows == [(1, "a", 5)]
    finally:
        client.close()
