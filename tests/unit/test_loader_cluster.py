"""ClickHouse cluster DDL: with TAGSTREAM_CLICKHOUSE_CLUSTER set, every table is a ReplicatedMergeTree
``_local`` table ON CLUSTER plus a Distributed table under the original name, sharded so that
rows which must meet (versions of a profile, a person's history) land on one shard.

chDB cannot run replication, so the DDL is checked as text, and parsed by the real ClickHouse
parser (chDB's ``formatQuery``) so a typo cannot reach a production cluster."""

import re

import pytest

from services.common.clickhouse import connect
from services.loader import cluster, ddl
from services.loader.settings import LoaderSettings


class Recorder:
    """Stands in for the ClickHouse client where only a cluster could execute the statements:
    records commands, answers the migrations table query with 'nothing applied yet'."""

    def __init__(self):
        self.commands: list[str] = []
        self.inserts: list[str] = []
        self.settings: dict = {}

    def command(self, statement, *args, **kwargs):
        self.commands.append(statement)

    def query(self, _sql):
        return type("Result", (), {"result_rows": []})()

    def insert(self, table, *args, **kwargs):
        self.inserts.append(table)

    def set_client_setting(self, name, value):
        self.settings[name] = value


@pytest.fixture(scope="module")
def statements() -> list[str]:
    recorder = Recorder()
    ddl.apply_on_cluster(recorder, "tagstream", ttl_days=90)
    return recorder.commands


def creates(statements: list[str], table: str) -> str:
    pattern = re.compile(rf"CREATE TABLE (IF NOT EXISTS )?{re.escape(table)} ON CLUSTER ")
    return next(s for s in statements if pattern.match(s))


def single_node_tables() -> list[str]:
    recorder = Recorder()
    ddl.apply(recorder)
    return recorder.commands


class TestTables:
    def test_every_table_is_replicated_and_distributed(self, statements):
        """Each single-node MergeTree table has a Replicated _local twin and a Distributed table
        with its own name, both ON CLUSTER."""
        plain = [s for s in single_node_tables() if s.lstrip().upper().startswith("CREATE TABLE")]
        assert len(plain) >= 10
        for statement in plain:
            table = cluster._CREATE_TABLE.match(statement).group(2)
            local = creates(statements, cluster.local_name(table))
            assert re.search(r"ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/\{shard\}/", local)
            distributed = creates(statements, table)
            assert f"AS {cluster.local_name(table)}" in distributed
            assert "ENGINE = Distributed('tagstream', " in distributed

    def test_event_table_keeps_its_layout(self, statements):
        """tags_local keeps partitioning, sort order and insert-token dedup (replicated flavour);
        tags is spread by message_id."""
        local = creates(statements, "tags_local")
        assert (
            "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"
            in local
        )
        assert "PARTITION BY toYYYYMM(event_time) ORDER BY (app_id, name, event_time)" in local
        assert f"SETTINGS replicated_deduplication_window = {ddl.DEDUP_WINDOW}" in local
        assert "non_replicated" not in local
        assert creates(statements, "tags").endswith("'tags_local', cityHash64(message_id))")

    def test_replacing_tables_shard_by_their_key(self, statements):
        """Versions of one row meet on one shard, so FINAL collapses them: profiles by person,
        devices by install, merges by the merged-away person; the version argument is kept."""
        assert (
            "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', "
            in (creates(statements, "profiles_local"))
        )
        assert creates(statements, "profiles").endswith("cityHash64(person_id))")
        assert creates(statements, "devices").endswith("cityHash64(install_id))")
        assert creates(statements, "identity_merges").endswith("cityHash64(from_person_id))")
        assert creates(statements, "loader_batches").endswith("cityHash64(topic, partition, first_offset))")

    def test_sharding_rules(self):
        """Replacing engines by sorting key, then person-level tables by person, then message id."""
        assert (
            cluster.sharding_key(
                "CREATE TABLE t (message_id String,\n    person_id String,\n    x UInt8)"
                " ENGINE = MergeTree ORDER BY x"
            )
            == "cityHash64(person_id)"
        )
        assert (
            cluster.sharding_key(
                "CREATE TABLE t (\n    message_id String,\n    person_id Nullable(String))"
                " ENGINE = MergeTree ORDER BY x"
            )
            == "cityHash64(message_id)"
        )
        assert (
            cluster.sharding_key(
                "CREATE TABLE t (\n    person_id String,\n    v UInt64)"
                " ENGINE = ReplacingMergeTree(v) ORDER BY (person_id)"
            )
            == "cityHash64(person_id)"
        )

    def test_migrations_table_is_shared_by_the_cluster(self, statements):
        """Migrations are recorded once for the cluster, in a database-qualified Distributed table."""
        assert "Distributed('tagstream', 'default', 'schema_migrations_local', cityHash64(id))" in (
            creates(statements, "default.schema_migrations")
        )
        assert any(
            s.startswith("CREATE DATABASE IF NOT EXISTS default ON CLUSTER 'tagstream'") for s in statements
        )


class TestOtherStatements:
    def test_materialized_view_reads_local_writes_distributed(self, statements):
        """devices_mv fires on each shard's profile_updates_local inserts and writes through the
        Distributed devices table, which re-shards rows by install id."""
        view = next(s for s in statements if "devices_mv" in s)
        assert view.startswith(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS devices_mv ON CLUSTER 'tagstream' TO devices "
        )
        assert "FROM profile_updates_local" in view

    def test_ttl_goes_to_local_tables_only(self, statements):
        """Retention is a MergeTree property: set on the _local tables, never on Distributed ones."""
        ttl = [s for s in statements if "MODIFY TTL" in s]
        assert ttl and all(
            re.match(r"ALTER TABLE \w+_local ON CLUSTER 'tagstream' MODIFY TTL", s) for s in ttl
        )

    def test_alter_and_drop(self):
        """Columns are added to both tables; settings only locally; drops are SYNC on both so a
        re-created table can reuse its Keeper path."""
        assert cluster.clustered("ALTER TABLE t ADD COLUMN IF NOT EXISTS c UInt8", "c1") == [
            "ALTER TABLE t_local ON CLUSTER 'c1' ADD COLUMN IF NOT EXISTS c UInt8",
            "ALTER TABLE t ON CLUSTER 'c1' ADD COLUMN IF NOT EXISTS c UInt8",
        ]
        assert cluster.clustered(
            "ALTER TABLE t MODIFY SETTING non_replicated_deduplication_window = 5", "c1"
        ) == ["ALTER TABLE t_local ON CLUSTER 'c1' MODIFY SETTING replicated_deduplication_window = 5"]
        assert cluster.clustered("DROP TABLE IF EXISTS profiles", "c1") == [
            "DROP TABLE IF EXISTS profiles ON CLUSTER 'c1' SYNC",
            "DROP TABLE IF EXISTS profiles_local ON CLUSTER 'c1' SYNC",
        ]
        assert cluster.clustered("CREATE OR REPLACE VIEW facts.v AS SELECT 1 FROM t", "c1") == [
            "CREATE OR REPLACE VIEW facts.v ON CLUSTER 'c1' AS SELECT 1 FROM t"
        ]

    def test_unknown_statement_is_refused(self):
        """A statement with no known cluster form fails loudly instead of running on one node."""
        with pytest.raises(ValueError, match="no cluster form"):
            cluster.clustered("RENAME TABLE a TO b", "c1")

    def test_inserts_wait_for_every_shard(self):
        """The loader's client inserts synchronously through Distributed tables: its ack (after
        which offsets are committed) means every shard stored its part."""
        recorder = Recorder()
        ddl.apply_on_cluster(recorder, "tagstream")
        assert recorder.settings == {"insert_distributed_sync": 1}
        assert recorder.inserts  # migrations recorded through the Distributed table


class TestSyntax:
    def test_clickhouse_parses_every_statement(self, statements, chdb_dsn):
        """ClickHouse's own parser accepts every generated statement."""
        client = connect(chdb_dsn)
        try:
            for statement in statements:
                formatted = client.query("SELECT formatQuery({q:String})", parameters={"q": statement})
                assert formatted.result_rows[0][0]
        finally:
            client.close()


class TestSetting:
    def test_single_node_by_default(self, monkeypatch):
        """Unset TAGSTREAM_CLICKHOUSE_CLUSTER keeps today's plain MergeTree DDL."""
        monkeypatch.delenv("TAGSTREAM_CLICKHOUSE_CLUSTER", raising=False)
        assert LoaderSettings().clickhouse_cluster is None
        assert not any("ON CLUSTER" in s or "Replicated" in s for s in single_node_tables())
        monkeypatch.setenv("TAGSTREAM_CLICKHOUSE_CLUSTER", "tagstream")
        assert LoaderSettings().clickhouse_cluster == "tagstream"
