"""The one list of Kafka topics: name, partitions, cleanup policy, retention, record type.

Every producer and consumer names topics through :func:`topic_name` so that
``TAGSTREAM_TOPIC_PREFIX`` (used by tests to isolate runs) applies everywhere.
Later services add their internal topics here, not in their own modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.settings import Settings

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    record_type: str | None  # Avro record type carried (schemas/<record_type>.avsc); None: opaque bytes
    partitions: int = 6
    cleanup_policy: str = "delete"  # "delete" or "compact"
    retention_ms: int = 7 * DAY_MS  # -1 keeps forever (used for compacted topics)

    def config(self) -> dict[str, str]:
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


# Raw input: what producers and the HTTP collector write.
TAGS = TopicSpec("tags", "tag_hit")
EVENTS = TopicSpec("events", "event")
LOCATIONS = TopicSpec("locations", "location")
DELIVERY_RECEIPTS = TopicSpec("delivery-receipts", "delivery_receipt")
PROFILE_UPDATES = TopicSpec("profile-updates", "profile_update")
RAW_TOPICS: tuple[TopicSpec, ...] = (TAGS, EVENTS, LOCATIONS, DELIVERY_RECEIPTS, PROFILE_UPDATES)

# Ingest output: the same record types, validated, normalised, deduplicated, keyed per device/person.
VALID_TAGS = TopicSpec("tags.valid", "tag_hit")
VALID_EVENTS = TopicSpec("events.valid", "event")
VALID_LOCATIONS = TopicSpec("locations.valid", "location")
VALID_DELIVERY_RECEIPTS = TopicSpec("delivery-receipts.valid", "delivery_receipt")
VALID_PROFILE_UPDATES = TopicSpec("profile-updates.valid", "profile_update")
VALID_TOPICS: tuple[TopicSpec, ...] = (
    VALID_TAGS,
    VALID_EVENTS,
    VALID_LOCATIONS,
    VALID_DELIVERY_RECEIPTS,
    VALID_PROFILE_UPDATES,
)
VALID_TOPIC_FOR_RAW = dict(zip(RAW_TOPICS, VALID_TOPICS, strict=True))

# ingest's deduplication markers (key "<raw topic>|<message_id>", partition = the raw partition).
# Compacted and time-limited: markers older than twice the default window are deleted.
INGEST_DEDUP = TopicSpec("ingest-dedup", None, cleanup_policy="compact,delete", retention_ms=2 * DAY_MS)

# Enricher output: one envelope per event, keyed by person id; the latest profile per person.
ENRICHED = TopicSpec("enriched", "enriched_event")
PROFILES = TopicSpec("profiles", "profile", cleanup_policy="compact", retention_ms=-1)

# Segmenter output: entered/exited changes.
SEGMENT_MEMBERSHIP = TopicSpec("segment-membership", "segment_membership")
# Segmenter internal: one empty tick per owned partition per second, so timers run in the context of
# their partition (table writes need it). Same partition count as `enriched`; an hour is plenty.
SEGMENTER_TICKS = TopicSpec("segmenter.ticks", None, partitions=ENRICHED.partitions, retention_ms=3600 * 1000)
# Segmenter internal: merge hand-overs between partitions, keyed by person id (value: JSON), so a
# message lands on the partition that owns that person's state (docs/segments.md, "Merges"), and
# an empty record per owned partition per tick. A day: a hand-over is read within seconds.
SEGMENTER_MERGES = TopicSpec("segmenter.merges", None, partitions=ENRICHED.partitions, retention_ms=DAY_MS)

# Trigger output: rendered messages for senders, one topic per channel.
OUTBOUND_TOPICS: tuple[TopicSpec, ...] = tuple(
    TopicSpec(f"outbound.{channel}", "outbound_message")
    for channel in ("email", "sms", "push", "webpush", "inapp", "webhook")
)

# Every service writes what it cannot process here, with a reason (schemas/dead_letter.avsc).
DEAD_LETTERS = TopicSpec("dead-letters", "dead_letter", partitions=3, retention_ms=30 * DAY_MS)

# Collector: SMS short-link code -> signed tracking token (UTF-8 text), kept forever by compaction.
SHORT_LINKS = TopicSpec("short-links", None, partitions=3, cleanup_policy="compact", retention_ms=-1)
# The geofence and iBeacon catalogue, one record per entry keyed geofence:<id> / beacon:<id>
# (value: the entry's JSON; a tombstone removes it), followed by every enricher instance.
GEOFENCES = TopicSpec("geofences", None, partitions=1, cleanup_policy="compact", retention_ms=-1)

# Enricher internals: the identity stage input (one partition: the identity directory is global,
# see docs/design.md) and the person stage input (keyed by person id).
ENRICHER_IDENTITY = TopicSpec("enricher.identity", None, partitions=1)
ENRICHER_ROUTED = TopicSpec("enricher.routed", "enriched_event")
# Enricher internal: wake-up calls from the enricher's timer to the routed partition whose persons
# have a session to end (value: the tick's kind), co-partitioned with enricher.routed.
ENRICHER_TICKS = TopicSpec("enricher.ticks", None, partitions=ENRICHER_ROUTED.partitions, retention_ms=DAY_MS)
ENRICHER_TOPICS: tuple[TopicSpec, ...] = (
    ENRICHER_IDENTITY,
    ENRICHER_ROUTED,
    ENRICHER_TICKS,
    ENRICHED,
    PROFILES,
)

# Trigger internals: wake-up calls from the trigger's timer to the partition whose persons are
# due (value: JSON), co-partitioned with enriched/segment-membership/profiles (6 partitions).
TRIGGER_TICKS = TopicSpec("trigger.ticks", None, retention_ms=DAY_MS)
# Trigger internal: merge hand-overs between partitions, keyed by person id (value: JSON), so a
# message lands on the partition that owns that person's state (docs/campaigns.md, "Merges").
TRIGGER_MERGES = TopicSpec("trigger.merges", None, partitions=ENRICHED.partitions)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    *RAW_TOPICS,
    *VALID_TOPICS,
    ENRICHER_IDENTITY,
    ENRICHER_ROUTED,
    ENRICHER_TICKS,
    ENRICHED,
    PROFILES,
    SEGMENT_MEMBERSHIP,
    SEGMENTER_TICKS,
    SEGMENTER_MERGES,
    TRIGGER_TICKS,
    TRIGGER_MERGES,
    *OUTBOUND_TOPICS,
    DEAD_LETTERS,
    INGEST_DEDUP,
    SHORT_LINKS,
    GEOFENCES,
)

RAW_TOPIC_BY_NAME = {spec.name: spec for spec in RAW_TOPICS}
TOPIC_BY_NAME = {spec.name: spec for spec in ALL_TOPICS}


def topic_name(spec: TopicSpec, settings: Settings) -> str:
    """The topic's name on the broker, with the configured prefix."""
    return f"{settings.topic_prefix}{spec.name}"


def spec_for(name: str, settings: Settings) -> TopicSpec:
    """The spec of a topic given its broker name (with or without the prefix)."""
    bare = name.removeprefix(settings.topic_prefix) if settings.topic_prefix else name
    try:
        return TOPIC_BY_NAME[bare]
    except KeyError:
        known = ", ".join(sorted(TOPIC_BY_NAME))
        raise KeyError(f"unknown topic {name!r}; known topics: {known}") from None
