"""A seeded random fact history for the segmenter's tests, and its rows for the SQL oracle's tables.

Facts arrive out of order (small delays, some days late, a few stamped in the future by skewed
clocks) and some sit exactly on window boundaries of the oracle's segments, so inclusive/exclusive
edges are exercised on both sides. ``with_merges`` adds identity merges to such a history.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from services.segmenter.definitions import Segment, parse
from services.segmenter.facts import Fact

DAY = 86_400_000
HOUR = 3_600_000
NOW = 1_795_132_800_000  # 2026-11-20T00:00:00Z
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BOUNDARY_WINDOWS = (7 * DAY, 30 * DAY, 180 * DAY, 24 * HOUR)


def oracle_segments() -> list[Segment]:
    """The segments the oracle checks (every leaf, operator and measure, nested)."""
    return parse(yaml.safe_load((Path(__file__).parent / "oracle_segments.yaml").read_text()))


@dataclass(frozen=True)
class Arrival:
    fact: Fact
    at_ms: int  # when the segmenter sees it (monotone over the stream)


def _attribute(rng: random.Random, person: str, t: int) -> Fact:
    name = rng.choice(["plan", "monthly_usage_gb", "signup_date", "platform", "vip", "nickname"])
    value = {
        "plan": lambda: rng.choice(["basic", "pro", "max", "pro-plus"]),
        "monthly_usage_gb": lambda: rng.choice([rng.randint(0, 1200), rng.randint(0, 2000) / 4, "lots", 500]),
        "signup_date": lambda: rng.choice(
            [
                f"{rng.randint(2023, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "2025-01-01",
                "n/a",
                "2024-12-31T23:59:59.999Z",
                20240101,
            ]
        ),
        "platform": lambda: rng.choice(["ios", "android", "web", None]),
        "vip": lambda: rng.choice([True, False, "true"]),
        "nickname": lambda: rng.choice(["Ann", "Bo", None]),
    }[name]()
    return Fact(person, t, "attribute", name, value=value)


def _event(rng: random.Random, person: str, t: int) -> Fact:
    name = rng.choice(["Order Completed", "Order Completed", "Page Viewed", "App Launch"])
    properties: dict = {}
    if name == "Order Completed":
        properties["revenue"] = rng.choice([rng.randint(1, 200), rng.randint(1, 800) / 4, "free", None])
        if rng.random() < 0.8:
            properties["category"] = rng.choice(["shoes", "hats", "shoe polish"])
    elif name == "Page Viewed":
        properties["path"] = rng.choice(["/", "/deals", "/account"])
    return Fact(person, t, "event", name, properties=properties)


def _message(rng: random.Random, person: str, t: int) -> Fact:
    channel = rng.choice(["email", "email", "sms", "push"])
    status = rng.choice(["sent", "delivered", "opened", "read", "clicked", "link_clicked", "hard_bounced",
                         "undelivered", "unsubscribed"])  # fmt: skip
    return Fact(
        person, t, "message", status, channel=channel, campaign=rng.choice(["black-friday", "winback", None])
    )


def _location(rng: random.Random, person: str, t: int) -> Fact:
    kind = rng.choice(["enter", "exit", "dwell", "gps", "gps"])
    lat, lon = 53.35 + rng.uniform(-0.3, 0.3), -6.26 + rng.uniform(-0.4, 0.4)
    if kind == "gps":
        return Fact(person, t, "location", "gps", lat=lat, lon=lon)
    region = rng.choice(["store-dublin", "store-cork"])
    with_position = rng.random() < 0.3
    return Fact(person, t, "location", kind, region=region, lat=lat if with_position else None,
                lon=lon if with_position else None)  # fmt: skip


def _tag(rng: random.Random, person: str, t: int) -> Fact:
    name = rng.choice(["visited_store", "visited_store", "registration_complete", "journeyform_destination"])
    value = rng.choice(["dublin", "cork", None]) if name != "registration_complete" else None
    return Fact(person, t, "tag", name, value=value)


def _session(rng: random.Random, person: str, t: int) -> Fact:
    return Fact(person, t, "session", "started")


MAKERS = (_attribute, _event, _event, _message, _message, _location, _tag, _session, _session)


def generate(seed: int, persons: int = 30, facts: int = 1200, now_ms: int = NOW) -> list[Arrival]:
    """Facts for ``persons`` people over the last ~250 days, in arrival order."""
    rng = random.Random(seed)
    people = [f"p{i:02d}" for i in range(persons)]
    used: set[tuple[str, int]] = set()  # one fact per person and millisecond: latest-wins needs no tie rule
    arrivals: list[Arrival] = []

    def add(fact: Fact, at_ms: int) -> None:
        if (fact.person_id, fact.time_ms) in used:
            return
        used.add((fact.person_id, fact.time_ms))
        arrivals.append(Arrival(fact, min(at_ms, now_ms)))

    # A third of the people stopped buying, visiting and moving ~200 days ago; messages still reach them.
    dormant = set(rng.sample(people[:-1], len(people) // 3))
    for _ in range(facts):
        person = rng.choice(people[:-1])  # the last person only ever sends an event no segment reads
        maker = rng.choice(MAKERS)
        recent = rng.random() < 0.5 and not (person in dormant and maker is not _message)
        t = now_ms - rng.randint(0, 35 * DAY if recent else 250 * DAY)
        r = rng.random()
        if r < 0.04:  # skewed device clock: stamped up to 2 days ahead, possibly after the reference time
            t, at = now_ms + rng.randint(-DAY, 2 * DAY), now_ms - rng.randint(0, DAY)
        elif r < 0.12:  # late: days after it happened
            at = t + rng.randint(DAY, 10 * DAY)
        elif r < 0.2:  # exactly on (or one millisecond past) a window edge at the reference time
            t = now_ms - rng.choice(BOUNDARY_WINDOWS) - rng.choice([0, 1, -1])
            at = t + rng.randint(0, HOUR)
        else:
            at = t + rng.randint(0, 10 * 60_000)
        if person in dormant and maker not in (_message, _attribute) and t > now_ms - 185 * DAY:
            t = now_ms - 185 * DAY - rng.randint(0, 30 * DAY)
            at = t + rng.randint(0, HOUR)
        add(maker(rng, person, t), at)
    add(Fact(people[-1], now_ms - 3 * DAY, "event", "Unreferenced"), now_ms - 3 * DAY)
    arrivals.sort(key=lambda a: a.at_ms)
    return arrivals


@dataclass(frozen=True)
class Merge:
    """The enricher merged ``merged`` into ``survivor`` (an `enriched` ``merge`` envelope)."""

    merged: str
    survivor: str
    at_ms: int


def with_merges(arrivals: list[Arrival], seed: int, merges: int = 6) -> list[Arrival | Merge]:
    """``arrivals`` with ``merges`` persons merged into others mid-stream, plus one chain (x into a
    person merged on later), as the enricher writes it: after its merge, a merged-away person's
    attribute facts arrive under its survivor (the enricher routes its devices there and keeps
    the survivor's profile), its other facts under either id (the merged-away id when its
    partition is read late). Facts sharing a millisecond with another fact of the person they
    end up with are dropped: latest wins has no tie rule (in SQL either)."""
    rng = random.Random(seed * 31 + 7)
    people = sorted({a.fact.person_id for a in arrivals})[:-1]  # the last one: unreferenced only
    chosen = rng.sample(people, merges + 1)
    others = [p for p in people if p not in chosen]
    into = {a: rng.choice(others) for a in chosen[:merges]}
    into[chosen[merges]] = chosen[0]  # the chain: chosen[merges] → chosen[0] → a survivor

    def final(person: str, links: dict[str, str]) -> str:
        while person in links:
            person = links[person]
        return person

    seen: set[tuple[str, int]] = set()
    kept = []
    for a in arrivals:
        key = (final(a.fact.person_id, into), a.fact.time_ms)
        if key not in seen:
            seen.add(key)
            kept.append(a)
    at = {a: rng.randrange(len(kept) // 4, len(kept)) for a in into}
    chain = chosen[merges]
    at[chain], at[chosen[0]] = sorted((at[chain], at[chosen[0]]))  # x merges into a before a moves on
    items: list[Arrival | Merge] = []
    done: dict[str, str] = {}
    for i, arrival in enumerate(kept):
        for a in sorted(m for m, index in at.items() if index == i):
            items.append(Merge(a, into[a], arrival.at_ms))
            done[a] = into[a]
        f = arrival.fact
        if f.person_id in done and (f.kind == "attribute" or rng.random() < 0.5):
            f = Fact(final(f.person_id, done), f.time_ms, f.kind, f.name, f.value, f.properties,
                     f.channel, f.campaign, f.region, f.lat, f.lon)  # fmt: skip
        items.append(Arrival(f, arrival.at_ms))
    return items


def _dt(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def rows(facts: list[Fact]) -> dict[str, list[list]]:
    """The oracle's table rows (docs/segments.md contract) for these facts."""
    out: dict[str, list[list]] = {t: [] for t in ("profiles", "tags", "events", "message_events", "locations",
                                                  "sessions")}  # fmt: skip
    for f in facts:
        t = _dt(f.time_ms)
        if f.kind == "attribute":
            out["profiles"].append([f.person_id, f.name, json.dumps(f.value), t])
        elif f.kind == "tag":
            out["tags"].append([f.person_id, t, f.name, f.value])
        elif f.kind == "event":
            out["events"].append([f.person_id, t, f.name, json.dumps(dict(f.properties))])
        elif f.kind == "message":
            out["message_events"].append([f.person_id, t, f.channel, f.campaign, f.name])
        elif f.kind == "location":
            out["locations"].append([f.person_id, t, f.name, f.region, f.lat, f.lon])
        else:
            out["sessions"].append([f.person_id, t])
    return out
