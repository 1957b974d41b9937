"""The two stages with their edges: bytes in -> decode -> pure step -> encode -> what to send and
what to write. No faust here, so the whole path is testable with dict tables.

The faust agents (``app.py``) perform a :class:`Outcome` in its order: every send first, then the
table writes. Faust flushes the producer before committing the input offset, so a crash replays
the record. Sends and the changelog are different partitions, so the state write may survive a
crash its outputs did not: the person stage then re-sends the outputs it kept in the person's
outbox (``outbox.py``; docs/design.md, "Recovery and guarantees").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from services.common.logs import get_logger
from services.common.serde import Serde, SerdeError
from services.common.steps import Rejection, SourcePosition, dead_letter
from services.enricher import metrics, outbox, versions
from services.enricher import profile as prof
from services.enricher.geofences import Catalogue
from services.enricher.hop_copies import WINDOW, HopCopies
from services.enricher.identity import resolve
from services.enricher.person import Output, PersonConfig, apply, on_timer

log = get_logger("enricher")
SEEN_IDS = 512  # per person: message ids already applied (a replay never applies twice)
ENCODE_AS = {"routed": "enriched_event", "enriched": "enriched_event", "profiles": "profile"}


@dataclass(frozen=True)
class Send:
    output: str  # routed, enriched, profiles, dead-letters
    key: bytes | None
    value: bytes


@dataclass
class Outcome:
    sends: list[Send] = field(default_factory=list)
    writes: dict[str, Any] = field(default_factory=dict)
    message_ids: tuple[str, ...] = ()  # of the input, for logs and the test-only crash hook
    read_back: int | None = None  # ask again once this partition's enriched end is read (readback.py)


class Stages:
    def __init__(
        self,
        serde: Serde,
        cfg: PersonConfig,
        conflict_policy: str,
        topics: Mapping[str, str],
        copy_window: int = WINDOW,
        clock: Callable[[], int] = lambda: int(time.time() * 1000),
        catalogue: Callable[[], Catalogue] | None = None,
    ) -> None:
        self.serde, self.cfg, self.policy, self.topics = serde, cfg, conflict_policy, topics
        self.clock = clock  # epoch ms: when a session's timer ends it (services/common/clock.py)
        self.catalogue = catalogue  # the geofence catalogue as it changes (catalogue_feed.py)
        # partition -> (message_id, kind) found at the end of enriched (readback.py), read at the
        # partition's first replay of an applied record in this process.
        self.produced: dict[int, set[tuple[str, str]]] = {}
        self.hop_copies = HopCopies(copy_window)  # the hop's replay after a crash (hop_copies.py)

    def identity(
        self, table: Mapping[str, Any], source: SourcePosition, committed: int | None = None
    ) -> Outcome:
        """Stage 1: resolve the record's person; route it (and any merge) keyed by person id.

        It reads the table as it was before this offset (``versions.py``), so a replay after a
        crash resolves, writes and routes exactly as the first time; a copy the hop forwarded
        again after a crash is skipped (``hop_copies.py``): its original was routed."""
        started = time.perf_counter()
        if self.hop_copies.is_copy(source.topic, source.partition, source.offset, source.value):
            metrics.DUPLICATES.labels("identity").inc()
            return Outcome()
        try:
            record_type, record = self.serde.decode(source.value)
        except SerdeError as exc:
            return self._reject("decode", Rejection("undecodable", str(exc)), source, None)
        try:
            as_of = versions.AsOf(table, source.offset)
            result = resolve(record_type, record, source.value, as_of, self.policy)
        except Exception as exc:  # a bug must not stop the partition: park the record, say why
            log.exception("resolve failed", extra={"offset": source.offset})
            return self._reject("resolve", internal_error(exc), source, record.get("message_id"))
        if result.rejection is not None:
            return self._reject("resolve", result.rejection, source, record.get("message_id"))
        writes = versions.stamp(table, result.writes, source.offset, committed)
        outcome = Outcome(writes=writes, message_ids=(record["message_id"],))
        for env in result.routed:
            if env["kind"] == "merge":
                metrics.MERGES.labels("identity").inc()
            outcome.sends.append(self._encode("routed", env))
        metrics.RECORDS.labels("identity", record_type).inc()
        metrics.LATENCY.labels("identity").observe(time.perf_counter() - started)
        return outcome

    def person(
        self, table: Mapping[str, Any], source: SourcePosition, committed: int | None = None
    ) -> Outcome:
        """Stage 2: apply the routed envelope to its person; emit enriched events and the profile.

        ``committed`` is the input partition's committed offset (None: unknown): outbox entries
        below it can never be replayed.
        """
        started = time.perf_counter()
        _, env = self.serde.decode(source.value)  # written by stage 1: always decodes
        env["event_time"] = to_ms(env["event_time"])
        person, dedup = env["person_id"], dedup_key(env)
        state = table.get(person)
        if state is not None and dedup in state.get("seen", []):
            return self._applied_before(state, env, dedup, source)
        try:
            record = self.serde.decode(env["original"])[1] if env["original"] else None
            new_state, outputs = apply(state, env, record, self._config(), self.clock())
        except Exception as exc:  # a bug must not stop the partition: park the record, say why
            log.exception("person stage failed", extra={"offset": source.offset})
            return self._reject("person", internal_error(exc), source, env["message_id"])
        new_state["p"] = source.partition  # the timer index is rebuilt per partition (app.py)
        new_state["seen"] = [*(state or {}).get("seen", [])[-(SEEN_IDS - 1) :], dedup]
        new_state["outbox"] = outbox.keep(
            (state or {}).get("outbox", {}), committed, dedup, outbox.entry(source.offset, outputs)
        )
        outcome = Outcome(self._sends(outputs), {person: new_state}, (env["message_id"],))
        for _, value in outputs:
            if value.get("kind") == "session_end":
                metrics.SESSIONS_ENDED.labels("activity").inc()
            elif value.get("kind") == "geofence_dwelled" and value["details"]["reported_by"] == "gps":
                metrics.DWELLS.labels("point").inc()
        metrics.RECORDS.labels("person", env["kind"]).inc()
        metrics.LATENCY.labels("person").observe(time.perf_counter() - started)
        return outcome

    def _config(self) -> PersonConfig:
        if self.catalogue is not None and (current := self.catalogue()) is not self.cfg.catalogue:
            self.cfg = replace(self.cfg, catalogue=current)
        return self.cfg

    def tick(self, table: Mapping[str, Any], persons: Iterable[str]) -> Outcome:
        """The timer (a tick of the persons' partition): end the sessions and make the visits dwell
        that are due by the clock.

        Nothing of it goes in the outbox: the agent writes these states only once the outputs are
        acknowledged, so a crash in between leaves them due and the next tick sends them again,
        with the same message ids (consumers drop the copies)."""
        now, outcome = self.clock(), Outcome()
        for person in persons:
            state = table.get(person)
            if state is None:
                continue
            new_state, outputs = on_timer(state, person, now, self._config())
            if outputs:
                outcome.sends += self._sends(outputs)
                outcome.writes[person] = new_state
            for _, value in outputs:
                if value["kind"] == "session_end":
                    metrics.SESSIONS_ENDED.labels("timer").inc()
                else:
                    metrics.DWELLS.labels("timer").inc()
        return outcome

    def _applied_before(
        self, state: dict[str, Any], env: dict[str, Any], dedup: str, source: SourcePosition
    ) -> Outcome:
        """A record already applied: a replay of its own position sends the outputs that are not
        on enriched (lost with the crash) and the current profile; a copy at another position is
        skipped."""
        stored = state.get("outbox", {}).get(dedup)
        if stored is None or stored["o"] != source.offset:
            metrics.DUPLICATES.labels("person").inc()
            return Outcome()
        found = self.produced.get(source.partition)
        if found is None:
            return Outcome(read_back=source.partition)
        outputs = [
            (output, value)
            for output, value in outbox.replay(stored, env["original"])
            if output != "enriched" or (value["message_id"], value["kind"]) not in found
        ]
        metrics.REEMITTED.labels("person").inc(len(outputs))
        outputs.append(("profile", prof.to_record(state["profile"], env["person_id"])))
        return Outcome(sends=self._sends(outputs))

    def _sends(self, outputs: list[Output]) -> list[Send]:
        sends = []
        for output, value in outputs:
            sends.append(self._encode("profiles" if output == "profile" else output, value))
            metrics.OUTPUTS.labels(output).inc()
        return sends

    def _encode(self, output: str, value: dict[str, Any]) -> Send:
        data = self.serde.encode(ENCODE_AS[output], value, topic=self.topics[output], check=False)
        return Send(output, value["person_id"].encode(), data)

    def _reject(
        self, step: str, rejection: Rejection, source: SourcePosition, message_id: str | None
    ) -> Outcome:
        letter = dead_letter("enricher", step, rejection, source, message_id)
        value = self.serde.encode("dead_letter", letter, topic=self.topics["dead-letters"])
        metrics.DEAD_LETTERS.labels(rejection.step or step, rejection.reason).inc()
        log.info("dead letter", extra={"reason": rejection.reason, "offset": source.offset})
        return Outcome(sends=[Send("dead-letters", source.key, value)])


def internal_error(exc: Exception) -> Rejection:
    """A bug met by one record: its dead letter names the exception (type and a short message;
    the dead letter carries the record itself anyway, the log line only the offset)."""
    return Rejection("internal_error", f"{type(exc).__name__}: {str(exc)[:200]}")


def to_ms(value: Any) -> int:
    """fastavro reads timestamp-millis as aware datetimes; state keeps epoch milliseconds."""
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)


def dedup_key(env: dict[str, Any]) -> str:
    if env["kind"] in ("merge", "absorb"):
        return f"{env['kind']}:{env['details'].get('merged_from', '')}:{env['message_id']}"
    return env["message_id"]
