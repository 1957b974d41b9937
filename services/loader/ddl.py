"""Every ClickHouse table of tagstream, as idempotent migrations (the one place DDL lives).

Time-series tables share one shape: the record's envelope (ids, times, source, app, identity,
context), its own fields, ``person_id`` (NULL until the enricher resolves persons) and the
Kafka position it came from (``_topic``, ``_partition``, ``_offset``) for audits.

* ``PARTITION BY toYYYYMM(event_time)``: months are the unit of TTL drops and backfills.
* ``non_replicated_deduplication_window``: ClickHouse remembers the last N insert tokens per
  table, so a batch retried with the same ``insert_deduplication_token`` is dropped, not doubled.
* ``LowCardinality`` on low-entropy strings (app, source, names, kinds, channels, statuses):
  dictionary-encoded, smaller and faster to group by.
* CHECK constraints refuse rows no report could use (impossible coordinates); such a row
  becomes a dead letter and the rest of its batch loads.

Merged persons (planned, with the enricher): ``identity_merges`` records ``from → to`` person
ids; a dictionary over it (``dictGetOrDefault('person_merges', 'to_person_id', person_id,
person_id)``) maps any historic id to the surviving one, so reports group by the surviving id
without rewriting history. Until the enricher fills ``person_id`` reports fall back to
``identity_key`` (the record's strongest identifier).
"""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from services.common.clickhouse import Migration, migrate
from services.loader.cluster import ClusterDDL

DEDUP_WINDOW = 10_000  # insert tokens remembered per table: far more than batches between two commits
TIME_SERIES_TABLES = ("tags", "events", "locations", "message_events", "profile_updates", "dead_letters")

_ENVELOPE = """
    message_id String,
    event_time DateTime64(3, 'UTC'),
    received_time Nullable(DateTime64(3, 'UTC')),
    source LowCardinality(String),
    app_id LowCardinality(String),
    backfill Bool,
    install_id Nullable(String),
    anonymous_id Nullable(String),
    external_user_id Nullable(String),
    email Nullable(String),
    phone Nullable(String),
    identity_key String,
    person_id Nullable(String),
    context Map(LowCardinality(String), String),"""

_SOURCE = """
    _topic LowCardinality(String),
    _partition UInt16,
    _offset UInt64,
    _loaded_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX identity_idx identity_key TYPE bloom_filter GRANULARITY 4"""

_SETTINGS = f"SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}"


def _series(table: str, columns: str, order_by: str, extra: str = "") -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ({_ENVELOPE}{columns},{_SOURCE}{extra})\n"
        f"ENGINE = MergeTree PARTITION BY toYYYYMM(event_time) ORDER BY ({order_by}) {_SETTINGS}"
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001_tags",
        [_series("tags", "name LowCardinality(String), value Nullable(String)", "app_id, name, event_time")],
    ),
    Migration(
        "0002_events",
        [
            _series(
                "events",
                "name LowCardinality(String), kind LowCardinality(String), properties String",
                "app_id, kind, name, event_time",
            )
        ],
    ),
    Migration(
        "0003_locations",
        [
            _series(
                "locations",
                """kind LowCardinality(String),
    latitude Nullable(Float64), longitude Nullable(Float64), accuracy_m Nullable(Float64),
    region_id String, region_kind LowCardinality(String)""",
                "app_id, region_id, kind, event_time",
                """,
    CONSTRAINT latitude_range CHECK latitude IS NULL OR (latitude >= -90 AND latitude <= 90),
    CONSTRAINT longitude_range CHECK longitude IS NULL OR (longitude >= -180 AND longitude <= 180)""",
            )
        ],
    ),
    Migration(
        "0004_message_events",
        [
            _series(
                "message_events",
                """channel LowCardinality(String), status LowCardinality(String),
    campaign_id LowCardinality(String), send_id String, link_id LowCardinality(String),
    link_url Nullable(String), provider LowCardinality(String), reason Nullable(String)""",
                "campaign_id, channel, status, event_time",
            )
        ],
    ),
    Migration(
        "0005_profile_updates",
        [
            _series(
                "profile_updates",
                """action LowCardinality(String), previous_id Nullable(String),
    attribute_names Array(String), attribute_types Array(LowCardinality(String)),
    attribute_values Array(Nullable(String)), attribute_scopes Array(LowCardinality(String)),
    device_platform LowCardinality(String), device_os_version LowCardinality(String),
    device_app_version LowCardinality(String), device_model LowCardinality(String),
    push_token Nullable(String), push_enabled Nullable(Bool)""",
                "identity_key, event_time",
            )
        ],
    ),
    Migration(
        "0006_dead_letters",
        [
            # event_time is the dead letter's own time: when a service refused the record.
            """CREATE TABLE IF NOT EXISTS dead_letters (
    message_id String,
    event_time DateTime64(3, 'UTC'),
    service LowCardinality(String),
    step LowCardinality(String),
    reason LowCardinality(String),
    message String,
    source_topic LowCardinality(String),
    source_partition Int32,
    source_offset Int64,
    original String,
    original_key Nullable(String),
    truncated Bool,
    _topic LowCardinality(String),
    _partition UInt16,
    _offset UInt64,
    _loaded_at DateTime64(3, 'UTC') DEFAULT now64(3))
ENGINE = MergeTree PARTITION BY toYYYYMM(event_time) ORDER BY (service, reason, event_time) """
            + _SETTINGS
        ],
    ),
    Migration(
        "0007_profiles",
        [
            # Latest state per person, written by the enricher's `profiles` topic (not yet loaded).
            """CREATE TABLE IF NOT EXISTS profiles (
    person_id String,
    version UInt64,
    updated_at DateTime64(3, 'UTC'),
    identities Map(LowCardinality(String), Array(String)),
    attributes Map(String, String),
    deleted Bool DEFAULT false,
    _topic LowCardinality(String),
    _partition UInt16,
    _offset UInt64,
    _loaded_at DateTime64(3, 'UTC') DEFAULT now64(3))
ENGINE = ReplacingMergeTree(version) ORDER BY person_id """
            + _SETTINGS
        ],
    ),
    Migration(
        "0008_identity_merges",
        [
            """CREATE TABLE IF NOT EXISTS identity_merges (
    from_person_id String,
    to_person_id String,
    merged_at DateTime64(3, 'UTC'))
ENGINE = ReplacingMergeTree(merged_at) ORDER BY from_person_id"""
        ],
    ),
    Migration(
        "0009_loader_batches",
        [
            # The loader's intent log: the offset range of each batch, written before its insert,
            # so a restarted loader cuts the replayed batch at the same range (same token).
            """CREATE TABLE IF NOT EXISTS loader_batches (
    topic String,
    partition UInt16,
    first_offset UInt64,
    last_offset UInt64,
    created_at DateTime64(3, 'UTC') DEFAULT now64(3))
ENGINE = ReplacingMergeTree(created_at) ORDER BY (topic, partition, first_offset)
TTL toDateTime(created_at) + INTERVAL 30 DAY"""
        ],
    ),
    Migration(
        "0010_devices",
        [
            # Latest known state of each device, derived from profile updates carrying a device.
            """CREATE TABLE IF NOT EXISTS devices (
    install_id String,
    app_id LowCardinality(String),
    platform LowCardinality(String),
    os_version LowCardinality(String),
    app_version LowCardinality(String),
    model LowCardinality(String),
    push_token Nullable(String),
    push_enabled Nullable(Bool),
    identity_key String,
    updated_at DateTime64(3, 'UTC'))
ENGINE = ReplacingMergeTree(updated_at) ORDER BY install_id""",
            """CREATE MATERIALIZED VIEW IF NOT EXISTS devices_mv TO devices AS
SELECT assumeNotNull(install_id) AS install_id, app_id, device_platform AS platform,
    device_os_version AS os_version, device_app_version AS app_version, device_model AS model,
    push_token, push_enabled, identity_key, event_time AS updated_at
FROM profile_updates WHERE install_id IS NOT NULL AND device_platform != ''""",
        ],
    ),
)


def apply(client: Client, ttl_days: int = 0) -> list[str]:
    """Create or upgrade every table; set the retention TTL when one is configured."""
    applied = migrate(client, MIGRATIONS)
    if ttl_days > 0:
        for table in TIME_SERIES_TABLES:
            # Existing rows are dropped at the next merge, not rewritten now.
            client.command(
                f"ALTER TABLE {table} MODIFY TTL toDateTime(event_time) + INTERVAL {int(ttl_days)} DAY",
                settings={"materialize_ttl_after_modify": 0},
            )
    return applied


def apply_on_cluster(client: Client, cluster: str, ttl_days: int = 0) -> list[str]:
    """``apply`` for a ClickHouse cluster: every statement in its replicated + Distributed form."""
    return apply(ClusterDDL(client, cluster), ttl_days)  # type: ignore[arg-type]
