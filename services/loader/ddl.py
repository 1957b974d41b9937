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
TIME_SERIES_TABLES = (
    *("tags", "events", "locations", "message_events", "profile_updates", "dead_letters", "sessions"),
    *("geofence_transitions", "segment_membership", "outbound_messages"),
)
# Views with the segmenter's SQL-oracle contract (docs/segments.md), over the loaded tables:
# ``sql.compile_segment(segment, now_ms, database=SEGMENT_FACTS_DATABASE)``.
SEGMENT_FACTS_DATABASE = "segment_facts"

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


MERGE_DEPTH = 2  # merge chains (a → b, then b → c) are followed this many steps at query time


def surviving_person(person: str) -> str:
    """SQL: the person id a (non-NULL String) person id was finally merged into, else itself.

    ``person_merges`` maps each merged id to the latest id it was merged into; following it
    ``MERGE_DEPTH`` times resolves chains, so history written before a merge groups under the
    surviving person without rewriting rows, and a later merge applies to old rows at once."""
    for _ in range(MERGE_DEPTH):
        person = f"dictGetOrDefault('person_merges', 'to_person_id', {person}, {person})"
    return person


def _person_series(table: str, columns: str, order_by: str) -> str:
    """A table of the enricher's derived events (person id always known, no input envelope)."""
    return f"""CREATE TABLE IF NOT EXISTS {table} (
    message_id String,
    person_id String,
    device_id Nullable(String),
    event_time DateTime64(3, 'UTC'),{columns},
    _topic LowCardinality(String),
    _partition UInt16,
    _offset UInt64,
    _loaded_at DateTime64(3, 'UTC') DEFAULT now64(3))
ENGINE = MergeTree PARTITION BY toYYYYMM(event_time) ORDER BY ({order_by}) {_SETTINGS}"""


def _view(name: str, select: str) -> str:
    # Unqualified tables in a view resolve to the current database when it is created.
    return f"CREATE OR REPLACE VIEW {SEGMENT_FACTS_DATABASE}.{name} AS {select}"


# Every view reads its table as `t`: a bare `person_id` would mean the output alias, not the column.
_KNOWN = "t.person_id IS NOT NULL"  # rows loaded from *.valid have no person: not facts of anyone
_PERSON = f"{surviving_person('assumeNotNull(t.person_id)')} AS person_id"
# The attribute's canonical text as the JSON scalar the segmenter compares (segmenter/enriched.py
# `typed`): a number that parses and is finite, true/false, a date as YYYY-MM-DD or a UTC
# YYYY-MM-DDTHH:MM:SS.fffZ; text that does not parse as its type stays a string; null unsets.
_V = "assumeNotNull(a.3)"
_AS_FLOAT = f"toFloat64OrNull(trim({_V}))"
_AS_INSTANT = f"parseDateTime64BestEffortOrNull({_V}, 3, 'UTC')"
_ATTRIBUTE_JSON = f"""multiIf(a.3 IS NULL, 'null',
        a.2 = 'number' AND isFinite(ifNull({_AS_FLOAT}, nan)), toString({_AS_FLOAT}),
        a.2 = 'boolean' AND lower(trim({_V})) IN ('true', 'false'), lower(trim({_V})),
        a.2 = 'date' AND length({_V}) != 10 AND {_AS_INSTANT} IS NOT NULL,
            toJSONString(concat(replaceOne(toString({_AS_INSTANT}), ' ', 'T'), 'Z')),
        toJSONString({_V}))"""
SEGMENT_FACT_VIEWS: dict[str, str] = {
    # One row per attribute of each current profile (a merged-away person has no facts left).
    "profiles": f"""SELECT {_PERSON}, a.1 AS name, {_ATTRIBUTE_JSON} AS value, a.5 AS updated_at
FROM profiles AS t FINAL
ARRAY JOIN arrayZip(attribute_names, attribute_types, attribute_values, attribute_scopes,
                    attribute_times) AS a
WHERE t.merged_into IS NULL""",
    "tags": f"SELECT {_PERSON}, event_time, toString(name) AS name, value FROM tags AS t WHERE {_KNOWN}",
    "events": f"SELECT {_PERSON}, event_time, toString(name) AS name, properties "
    f"FROM events AS t WHERE {_KNOWN}",
    "message_events": f"SELECT {_PERSON}, event_time, "
    "toString(channel) AS channel, nullIf(toString(campaign_id), '') AS campaign, toString(status) AS status "
    f"FROM message_events AS t WHERE {_KNOWN}",
    # GPS points from `locations`, every region transition (device-reported or from GPS) from
    # `geofence_transitions`: a device-reported enter is in both tables, counted once here.
    "locations": f"""SELECT {_PERSON}, event_time, toString(t.kind) AS kind,
    CAST(NULL AS Nullable(String)) AS region_id, latitude, longitude
FROM locations AS t
WHERE {_KNOWN} AND t.kind = 'gps' AND latitude IS NOT NULL AND longitude IS NOT NULL
UNION ALL
SELECT {_PERSON}, event_time,
    multiIf(t.kind = 'entered', 'enter', t.kind = 'exited', 'exit', 'dwell') AS kind,
    CAST(region_id AS Nullable(String)) AS region_id, CAST(NULL AS Nullable(Float64)) AS latitude,
    CAST(NULL AS Nullable(Float64)) AS longitude
FROM geofence_transitions AS t""",
    "sessions": f"SELECT {_PERSON}, event_time FROM sessions AS t WHERE t.kind = 'start'",
}


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
    Migration(
        "0011_profiles_loaded",
        [
            # 0007's table was a placeholder nothing ever loaded: replaced by the shape of
            # schemas/profile.avsc. Version = Kafka offset: `profiles` is keyed by person id, so a
            # person's profiles share one partition and the last written is the latest.
            "DROP TABLE IF EXISTS profiles",
            """CREATE TABLE IF NOT EXISTS profiles (
    person_id String,
    updated_at DateTime64(3, 'UTC'),
    merged_into Nullable(String),
    external_user_id Nullable(String),
    email Nullable(String),
    phone Nullable(String),
    attribute_names Array(String),
    attribute_types Array(LowCardinality(String)),
    attribute_values Array(Nullable(String)),
    attribute_scopes Array(String),
    attribute_times Array(DateTime64(3, 'UTC')),
    tags Map(String, String),
    device_ids Array(String),
    device_platforms Array(LowCardinality(String)),
    device_push_tokens Array(Nullable(String)),
    device_uninstalled Array(Bool),
    device_last_seen Array(DateTime64(3, 'UTC')),
    first_seen Nullable(DateTime64(3, 'UTC')),
    last_seen Nullable(DateTime64(3, 'UTC')),
    session_count UInt32,
    last_session_start Nullable(DateTime64(3, 'UTC')),
    last_latitude Nullable(Float64),
    last_longitude Nullable(Float64),
    last_location_time Nullable(DateTime64(3, 'UTC')),
    install_source Map(LowCardinality(String), String),
    last_open Map(LowCardinality(String), DateTime64(3, 'UTC')),
    last_click Map(LowCardinality(String), DateTime64(3, 'UTC')),
    subscriptions Array(String),
    _topic LowCardinality(String),
    _partition UInt16,
    _offset UInt64,
    _loaded_at DateTime64(3, 'UTC') DEFAULT now64(3))
ENGINE = ReplacingMergeTree(_offset) ORDER BY person_id """
            + _SETTINGS,
        ],
    ),
    Migration(
        "0012_sessions",
        [
            # session_start / session_end from the enricher; an end comes with the next activity
            # or from the enricher's inactivity timer, so an open session has no end row yet.
            _person_series(
                "sessions",
                """
    kind LowCardinality(String),
    session_id String,
    duration_ms Nullable(UInt64)""",
                "person_id, event_time",
            )
        ],
    ),
    Migration(
        "0013_geofence_transitions",
        [
            _person_series(
                "geofence_transitions",
                """
    kind LowCardinality(String),
    region_id String,
    region_kind LowCardinality(String),
    reported_by LowCardinality(String)""",
                "region_id, kind, event_time",
            )
        ],
    ),
    Migration(
        "0014_identity_merges_loaded",
        [
            "ALTER TABLE identity_merges ADD COLUMN IF NOT EXISTS _topic LowCardinality(String)",
            "ALTER TABLE identity_merges ADD COLUMN IF NOT EXISTS _partition UInt16",
            "ALTER TABLE identity_merges ADD COLUMN IF NOT EXISTS _offset UInt64",
            "ALTER TABLE identity_merges ADD COLUMN IF NOT EXISTS _loaded_at DateTime64(3, 'UTC') "
            "DEFAULT now64(3)",
            "ALTER TABLE identity_merges MODIFY SETTING "
            f"non_replicated_deduplication_window = {DEDUP_WINDOW}",
        ],
    ),
    Migration(
        "0015_person_merges",
        [
            # merged id → the latest id it was merged into (surviving_person follows chains).
            # Reloaded every few seconds: a merge shows in reports and segment facts soon after
            # it loads.
            """CREATE DICTIONARY IF NOT EXISTS person_merges (from_person_id String, to_person_id String)
PRIMARY KEY from_person_id
SOURCE(CLICKHOUSE(QUERY 'SELECT m.from_person_id AS from_person_id,
    argMax(m.to_person_id, m.merged_at) AS to_person_id FROM identity_merges AS m GROUP BY m.from_person_id'))
LIFETIME(MIN 1 MAX 5) LAYOUT(COMPLEX_KEY_HASHED())"""
        ],
    ),
    Migration(
        "0016_segment_membership",
        [
            # event_time is the change's time (change_time in schemas/segment_membership.avsc).
            """CREATE TABLE IF NOT EXISTS segment_membership (
    change_id String,
    person_id String,
    segment_id LowCardinality(String),
    change LowCardinality(String),
    event_time DateTime64(3, 'UTC'),
    reason LowCardinality(String),
    source_message_id Nullable(String),
    _topic LowCardinality(String),
    _partition UInt16,
    _offset UInt64,
    _loaded_at DateTime64(3, 'UTC') DEFAULT now64(3))
ENGINE = MergeTree PARTITION BY toYYYYMM(event_time) ORDER BY (segment_id, person_id, event_time) """
            + _SETTINGS
        ],
    ),
    Migration(
        "0017_outbound_messages",
        [
            # event_time is when the trigger decided to send (created_time in the schema).
            """CREATE TABLE IF NOT EXISTS outbound_messages (
    message_id String,
    event_time DateTime64(3, 'UTC'),
    person_id String,
    campaign_id LowCardinality(String),
    channel LowCardinality(String),
    destination String,
    platform LowCardinality(Nullable(String)),
    content Map(LowCardinality(String), String),
    tracking_token Nullable(String),
    transactional Bool,
    trigger_event_id String,
    trigger_kind LowCardinality(String),
    trigger_name LowCardinality(String),
    trigger_time DateTime64(3, 'UTC'),
    send_slot Nullable(String),
    _topic LowCardinality(String),
    _partition UInt16,
    _offset UInt64,
    _loaded_at DateTime64(3, 'UTC') DEFAULT now64(3))
ENGINE = MergeTree PARTITION BY toYYYYMM(event_time) ORDER BY (campaign_id, channel, event_time) """
            + _SETTINGS
        ],
    ),
)


def apply(client: Client, ttl_days: int = 0) -> list[str]:
    """Create or upgrade every table, (re)create the segment fact views, set the TTL if configured."""
    applied = migrate(client, MIGRATIONS)
    # Views hold no data: replaced on every start, so they always match this code.
    client.command(f"CREATE DATABASE IF NOT EXISTS {SEGMENT_FACTS_DATABASE}")
    for name, select in SEGMENT_FACT_VIEWS.items():
        client.command(_view(name, select))
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
