"""ClickHouse at scale: ``ddl.py``'s statements turned into a replicated, sharded cluster layout.

With ``TAGSTREAM_CLICKHOUSE_CLUSTER`` set, every table ``T`` becomes two:

* ``T_local`` on every node (``ON CLUSTER``), the same columns with the ``Replicated`` variant of
  its engine (ZooKeeper/Keeper path ``/clickhouse/tables/{shard}/{database}/{table}``, replica
  ``{replica}``: macros the ClickHouse operator defines on each pod);
* ``T`` itself, a ``Distributed`` table over ``T_local`` with a sharding key, so the loader's
  inserts and every report keep using the names they use on a single server.

Sharding keys (``sharding_key``), in order:

1. tables of the ``ReplacingMergeTree`` family by their sorting key: versions of one row must
   meet on one shard, or ``FINAL`` cannot collapse them (profiles by person, devices by install,
   merges by the merged-away person, the loader's intent log by topic and partition);
2. tables with a non-null ``person_id`` by ``cityHash64(person_id)``: everything about a person on
   one shard, so per-person reports and segment facts aggregate locally;
3. the remaining event tables by ``cityHash64(message_id)``: even spread, and a retried batch
   lands on the same shards as the first try (deterministic), where the insert token drops it.

``non_replicated_deduplication_window`` becomes ``replicated_deduplication_window``. Materialized
views read the *local* source table and write to the *Distributed* target, so each row is
re-sharded by the target's key. ``DROP`` uses ``SYNC`` so a re-created table can reuse its Keeper
path at once. Everything is plain text in, text out; ``ClusterDDL`` applies it through a client.
"""

from __future__ import annotations

import re
from typing import Any

from clickhouse_connect.driver.client import Client

LOCAL_SUFFIX = "_local"
REPLICA_ARGS = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"
# The loader's insert is acknowledged only once every shard has its part (not queued on the node
# that took the insert): offsets are committed after the ack, so the ack has to mean stored.
INSERT_SETTINGS = {"insert_distributed_sync": 1}

_NAME = r"(?:`[^`]+`|[\w.]+)"
_CREATE_TABLE = re.compile(rf"^\s*CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?({_NAME})\s*\(", re.I)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w*MergeTree)\b(?:\(([^)]*)\))?", re.I)
_ORDER_BY = re.compile(r"\bORDER\s+BY\s+(\([^)]*\)|[\w.]+)", re.I)
_CREATE_VIEW = re.compile(
    rf"^\s*CREATE\s+(OR\s+REPLACE\s+)?(MATERIALIZED\s+)?VIEW\s+(IF\s+NOT\s+EXISTS\s+)?({_NAME})", re.I
)
_CREATE_DICTIONARY = re.compile(rf"^\s*CREATE\s+DICTIONARY\s+(IF\s+NOT\s+EXISTS\s+)?({_NAME})", re.I)
_CREATE_DATABASE = re.compile(rf"^\s*CREATE\s+DATABASE\s+(IF\s+NOT\s+EXISTS\s+)?({_NAME})", re.I)
_ALTER = re.compile(rf"^\s*ALTER\s+TABLE\s+({_NAME})\s+(.*)$", re.I | re.S)
_DROP = re.compile(rf"^\s*DROP\s+TABLE\s+(IF\s+EXISTS\s+)?({_NAME})\s*$", re.I)
# ALTERs that only exist on MergeTree tables, not on Distributed ones.
_LOCAL_ONLY_ALTER = re.compile(r"^\s*(MODIFY\s+(SETTING|TTL|ORDER\s+BY)|REMOVE\s+TTL|MATERIALIZE)", re.I)


def local_name(table: str) -> str:
    if table.endswith("`"):
        return f"{table[:-1]}{LOCAL_SUFFIX}`"
    return f"{table}{LOCAL_SUFFIX}"


def _columns(statement: str) -> str:
    start = statement.index("(")
    depth = 0
    for i in range(start, len(statement)):
        depth += {"(": 1, ")": -1}.get(statement[i], 0)
        if depth == 0:
            return statement[start + 1 : i]
    raise ValueError("unbalanced parentheses in CREATE TABLE")


def sharding_key(statement: str) -> str:
    """The Distributed sharding key for one ``CREATE TABLE`` (rules in the module docstring)."""
    engine = _ENGINE.search(statement)
    order = _ORDER_BY.search(statement)
    if engine and engine.group(1).lower() != "mergetree" and order:
        key = order.group(1).strip()
        return f"cityHash64{key if key.startswith('(') else f'({key})'}"
    columns = _columns(statement)
    if re.search(r"^\s*person_id\s+String\s*,", columns, re.M):
        return "cityHash64(person_id)"
    if re.search(r"^\s*message_id\s+String\s*,", columns, re.M):
        return "cityHash64(message_id)"
    return "rand()"


def _replicated_table(statement: str, cluster: str) -> list[str]:
    match = _CREATE_TABLE.match(statement)
    assert match is not None
    table = match.group(2)
    engine = _ENGINE.search(statement)
    if engine is None:
        raise ValueError(f"no MergeTree engine to replicate in: {statement[:80]}")
    key = sharding_key(statement)
    args = f"{REPLICA_ARGS}, {engine.group(2)}" if engine.group(2) else REPLICA_ARGS
    body = statement[match.end() - 1 :]
    body = body.replace(engine.group(0), f"ENGINE = Replicated{engine.group(1)}({args})", 1)
    body = body.replace("non_replicated_deduplication_window", "replicated_deduplication_window")
    exists = match.group(1) or ""
    local = f"CREATE TABLE {exists}{local_name(table)} ON CLUSTER '{cluster}' {body}"
    distributed = (
        f"CREATE TABLE {exists}{table} ON CLUSTER '{cluster}' AS {local_name(table)}\n"
        f"ENGINE = Distributed('{cluster}', {_database(table)}, '{_bare(local_name(table))}', {key})"
    )
    return [local, distributed]


def _bare(table: str) -> str:
    return table.rsplit(".", 1)[-1].strip("`")


def _database(table: str) -> str:
    """The database of a (possibly qualified) table name, as a Distributed engine argument."""
    return f"'{table.rsplit('.', 1)[0].strip('`')}'" if "." in table else "currentDatabase()"


def _local_sources(select: str, tables: set[str]) -> str:
    """Point FROM/JOIN at the local tables, so a materialized view fires on each shard's inserts."""

    def swap(m: re.Match[str]) -> str:
        return f"{m.group(1)}{local_name(m.group(2))}" if m.group(2) in tables else m.group(0)

    return re.sub(rf"\b(FROM\s+|JOIN\s+)({_NAME})", swap, select, flags=re.I)


def clustered(statement: str, cluster: str, tables: set[str] | None = None) -> list[str]:
    """One single-server DDL statement -> the statements for ``cluster``. ``tables``: names that
    were made Distributed + ``_local`` (materialized views read their local part)."""
    tables = tables or set()
    on = f"ON CLUSTER '{cluster}'"
    if _CREATE_TABLE.match(statement):
        return _replicated_table(statement, cluster)
    if m := _CREATE_VIEW.match(statement):
        head, rest = statement[: m.end()], statement[m.end() :]
        if m.group(2):  # materialized: fire on the local inserts, write through the Distributed target
            rest = _local_sources(rest, tables)
        return [f"{head} {on}{rest}"]
    if m := _CREATE_DATABASE.match(statement) or _CREATE_DICTIONARY.match(statement):
        # A dictionary on every node; its source query reads the Distributed table (all shards).
        return [f"{statement[: m.end()]} {on}{statement[m.end() :]}"]
    if m := _DROP.match(statement):
        exists = m.group(1) or ""
        table = m.group(2)
        return [f"DROP TABLE {exists}{name} {on} SYNC" for name in (table, local_name(table))]
    if m := _ALTER.match(statement):
        table, action = m.group(1), m.group(2)
        action = action.replace("non_replicated_deduplication_window", "replicated_deduplication_window")
        local = f"ALTER TABLE {local_name(table)} {on} {action}"
        if _LOCAL_ONLY_ALTER.match(action):
            return [local]
        return [local, f"ALTER TABLE {table} {on} {action}"]
    raise ValueError(f"no cluster form for: {statement[:80]}")


class ClusterDDL:
    """A client whose ``command`` runs DDL in its cluster form; everything else passes through.

    ``ddl.apply`` runs unchanged against it: migrations, views, TTLs. Tables created through it are
    remembered, so a later materialized view reads their local part.
    """

    def __init__(self, client: Client, cluster: str) -> None:
        self._client = client
        self.cluster = cluster
        self.tables: set[str] = set()
        self.executed: list[str] = []
        for name, value in INSERT_SETTINGS.items():
            client.set_client_setting(name, value)

    def command(self, statement: str, *args: Any, **kwargs: Any) -> Any:
        result = None
        if m := _CREATE_TABLE.match(statement):
            self.tables.add(m.group(2))
        for each in clustered(statement, self.cluster, self.tables):
            self.executed.append(each)
            result = self._client.command(each, *args, **kwargs)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
