"""Generate a reproducible history for N persons: records for the five raw topics, in time order.

Each person has 1-3 devices. A device installs (with an attribution source), is used anonymously
for a while, then its person logs in (personalize) and behaves: sessions (app launches), tags,
custom events, purchases, attribute updates (an ISP: plan, monthly usage, city, signup date), GPS
points around geofences, and message receipts for campaigns. Some devices log out.

On top of the clean history the generator mixes in, by configured shares: late records (emitted
after newer ones), duplicates (the same message again) and bad records of known reason codes.
Everything comes from one ``random.Random(seed)``: the same seed and ``now`` give the same output.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from services.generator import catalogue as cat

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class GeneratorConfig:
    persons: int = 100
    seed: int = 1
    now_ms: int = 1_795_000_000_000
    days: int = 30
    late_share: float = 0.02
    duplicate_share: float = 0.02
    bad_share: float = 0.01


@dataclass(frozen=True)
class Generated:
    """One raw record (or raw bytes for undecodable input) and what ingest should make of it."""

    topic: str  # raw topic name without prefix
    record_type: str
    record: dict[str, Any] | None  # None when `raw` carries undecodable bytes
    raw: bytes | None = None
    expected_reason: str | None = None  # a dead-letter reason code for bad records
    duplicate_of: str | None = None  # message_id of the original for duplicates


@dataclass
class _Device:
    install_id: str
    platform: str


@dataclass
class _Person:
    user_id: str
    email: str
    phone: str
    devices: list[_Device] = field(default_factory=list)


TOPIC_OF = {
    "tag_hit": "tags",
    "event": "events",
    "location": "locations",
    "delivery_receipt": "delivery-receipts",
    "profile_update": "profile-updates",
}


class PopulationGenerator:
    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self._counter = 0

    # -- identifiers ----------------------------------------------------------------------
    def _id(self, prefix: str) -> str:
        return f"{prefix}-{self.config.seed}-{self.rng.getrandbits(48):012x}"

    def _message_id(self) -> str:
        self._counter += 1
        return f"gen-{self.config.seed}-{self._counter:08d}"

    def _envelope(self, t: int, identity: dict[str, str | None], **context: str) -> dict[str, Any]:
        base_identity = {"install_id": None, "anonymous_id": None, "external_user_id": None, "email": None}
        return {
            "message_id": self._message_id(),
            "event_time": t,
            "received_time": None,
            "source": "generator",
            "app_id": "isp-app",
            "backfill": False,
            "identity": {**base_identity, "phone": None, **identity},
            "context": dict(context),
        }

    # -- one person's history ---------------------------------------------------------------
    def _person(self, index: int) -> _Person:
        person = _Person(
            user_id=f"user-{self.config.seed}-{index:06d}",
            email=f"person{index}@example.com",
            phone=f"3538{self.rng.randrange(10_000_000, 99_999_999)}",
        )
        for _ in range(self.rng.choice((1, 1, 2, 3))):
            person.devices.append(_Device(self._id("dev"), self.rng.choice(cat.PLATFORMS)))
        return person

    def _history(self, person: _Person) -> Iterator[tuple[int, str, dict[str, Any]]]:
        start = self.config.now_ms - self.config.days * DAY_MS
        for device in person.devices:
            t = start + self.rng.randrange(0, self.config.days * DAY_MS // 2)
            dev = {"install_id": device.install_id}
            ctx = {"platform": device.platform}
            source = self.rng.choice(cat.INSTALL_SOURCES)
            install = self._envelope(t, dev, **ctx, campaign_source=source)
            yield (
                t,
                "event",
                {
                    **install,
                    "name": "install",
                    "kind": "install",
                    "properties": json.dumps({"source": source}),
                },
            )
            t += self.rng.randrange(60_000, HOUR_MS)
            yield t, "tag_hit", {**self._envelope(t, dev, **ctx), "name": "viewed_offers", "value": None}
            login = t + self.rng.randrange(HOUR_MS, 3 * DAY_MS)
            yield login, "profile_update", self._personalize(login, person, device)
            yield from self._activity(person, device, login, ctx)

    def _personalize(self, t: int, person: _Person, device: _Device) -> dict[str, Any]:
        identity = {
            "install_id": device.install_id,
            "external_user_id": person.user_id,
            "email": person.email,
        }
        signup = t - self.rng.randrange(0, 700) * DAY_MS
        attributes = [
            {"name": "plan", "type": "string", "value": self.rng.choice(cat.PLANS), "scope": "person"},
            {"name": "city", "type": "string", "value": self.rng.choice(cat.CITIES), "scope": "person"},
            {"name": "signup_date", "type": "date", "value": _date(signup), "scope": "person"},
            {"name": "phone_number", "type": "string", "value": person.phone, "scope": "person"},
        ]
        device_info = {
            "platform": device.platform,
            "os_version": None,
            "app_version": "5.2.0",
            "model": None,
            "push_token": f"tok-{device.install_id}" if device.platform != "web" else None,
            "push_enabled": device.platform != "web",
        }
        record = self._envelope(t, identity, platform=device.platform)
        return {
            **record,
            "action": "personalize",
            "previous_id": None,
            "attributes": attributes,
            "device": device_info,
        }

    def _activity(self, person: _Person, device: _Device, t: int, ctx: dict[str, str]) -> Iterator[Any]:
        ident = {"install_id": device.install_id, "external_user_id": person.user_id}
        end = self.config.now_ms - HOUR_MS
        while True:
            t += self.rng.randrange(2 * HOUR_MS, 4 * DAY_MS)
            if t >= end:
                break
            yield (
                t,
                "event",
                {
                    **self._envelope(t, ident, **ctx),
                    "name": "app_launch",
                    "kind": "app_launch",
                    "properties": "{}",
                },
            )
            roll = self.rng.random()
            if roll < 0.3:
                name = self.rng.choice(cat.TAGS)
                value = self.rng.choice(cat.CITIES) if name == "journeyform_destination" else None
                yield (
                    t + 5_000,
                    "tag_hit",
                    {**self._envelope(t + 5_000, ident, **ctx), "name": name, "value": value},
                )
            elif roll < 0.5:
                name = self.rng.choice(cat.CUSTOM_EVENTS)
                props = json.dumps({"plan": self.rng.choice(cat.PLANS)})
                yield (
                    t + 8_000,
                    "event",
                    {
                        **self._envelope(t + 8_000, ident, **ctx),
                        "name": name,
                        "kind": "custom",
                        "properties": props,
                    },
                )
            elif roll < 0.6:
                props = json.dumps(
                    {"order_id": self._id("ord"), "revenue": round(self.rng.uniform(10, 120), 2)}
                )
                yield (
                    t + 9_000,
                    "event",
                    {
                        **self._envelope(t + 9_000, ident, **ctx),
                        "name": "Order Completed",
                        "kind": "purchase",
                        "properties": props,
                    },
                )
            elif roll < 0.7:
                usage = f"{self.rng.uniform(5, 900):.1f}"
                attrs = [{"name": "monthly_usage_gb", "type": "number", "value": usage, "scope": "person"}]
                upd = {
                    **self._envelope(t + 3_000, ident),
                    "action": "update",
                    "previous_id": None,
                    "attributes": attrs,
                    "device": None,
                }
                yield t + 3_000, "profile_update", upd
            elif roll < 0.82 and device.platform != "web":
                yield from self._walk(t, ident, ctx)
            elif roll < 0.95:
                yield from self._campaign(t, person, device)
            elif roll < 0.97:
                logout = {
                    **self._envelope(t + 1_000, {"install_id": device.install_id}),
                    "action": "depersonalize",
                }
                yield (
                    t + 1_000,
                    "profile_update",
                    {**logout, "previous_id": None, "attributes": [], "device": None},
                )
                return

    def _walk(self, t: int, ident: dict[str, str], ctx: dict[str, str]) -> Iterator[Any]:
        """GPS points approaching, inside and leaving one geofence."""
        fence = self.rng.choice(cat.GEOFENCES)
        offsets = (0.01, 0.003, 0.0005, 0.0002, 0.0004, 0.004, 0.012)
        for step, offset in enumerate(offsets):
            ts = t + step * 5 * 60_000
            point = {
                "kind": "gps",
                "latitude": fence.latitude + offset,
                "longitude": fence.longitude,
                "accuracy_m": 10.0,
            }
            yield (
                ts,
                "location",
                {**self._envelope(ts, ident, **ctx), **point, "region_id": None, "region_kind": None},
            )

    def _campaign(self, t: int, person: _Person, device: _Device) -> Iterator[Any]:
        campaign, channel = self.rng.choice(cat.CAMPAIGNS)
        if channel == "push" and device.platform == "web":
            channel = "webpush"
        ident: dict[str, str | None] = {"external_user_id": person.user_id}
        if channel == "email":
            ident["email"] = person.email
        elif channel == "sms":
            ident["phone"] = person.phone
        else:
            ident["install_id"] = device.install_id
        send_id = self._id("send")

        def receipt(ts: int, status: str, link: tuple[str | None, str | None], reason: str | None) -> Any:
            record = {
                **self._envelope(ts, ident),
                "channel": channel,
                "status": status,
                "campaign_id": campaign,
                "send_id": send_id,
                "link_id": link[0],
                "link_url": link[1],
                "provider": None,
                "reason": reason,
            }
            return ts, "delivery_receipt", record

        funnel = cat.FUNNELS["push" if channel == "webpush" else channel]
        for step, (status, chance) in enumerate(funnel):
            if self.rng.random() > chance:
                break
            clicked = status in ("clicked", "link_clicked")
            link = ("cta", "https://isp.example.com/offers") if clicked else (None, None)
            yield receipt(t + step * 10 * 60_000, status, link, None)
        if channel == "email":
            for status, chance in cat.EMAIL_ENDINGS:
                if self.rng.random() < chance:
                    reason = "mailbox does not exist" if status == "hard_bounced" else None
                    yield receipt(t + HOUR_MS, status, (None, None), reason)
                    break

    # -- the whole stream ---------------------------------------------------------------------
    def generate(self) -> list[Generated]:
        timeline: list[tuple[int, int, str, dict[str, Any]]] = []
        for index in range(self.config.persons):
            for t, record_type, record in self._history(self._person(index)):
                timeline.append((t, len(timeline), record_type, record))
        timeline.sort()
        out = [Generated(TOPIC_OF[rt], rt, rec) for _, _, rt, rec in timeline]
        out = self._make_late(out)
        out = self._add_duplicates(out)
        return self._add_bad(out)

    def _make_late(self, items: list[Generated]) -> list[Generated]:
        """Move a share of records later in the stream: they arrive after newer ones."""
        late = [i for i in range(len(items)) if self.rng.random() < self.config.late_share]
        moved = [items[i] for i in late]
        keep = [item for i, item in enumerate(items) if i not in set(late)]
        for item in moved:
            keep.insert(self.rng.randrange(len(keep) // 2, len(keep) + 1), item)
        return keep

    def _add_duplicates(self, items: list[Generated]) -> list[Generated]:
        out: list[Generated] = []
        for item in items:
            out.append(item)
            if item.record is not None and self.rng.random() < self.config.duplicate_share:
                out.append(
                    Generated(
                        item.topic, item.record_type, item.record, duplicate_of=item.record["message_id"]
                    )
                )
        return out

    def _add_bad(self, items: list[Generated]) -> list[Generated]:
        count = round(len(items) * self.config.bad_share)
        makers = (
            self._bad_missing_identity,
            self._bad_out_of_range,
            self._bad_status,
            self._bad_future,
            self._bad_bytes,
        )
        for n in range(count):
            bad = makers[n % len(makers)]()
            items.insert(self.rng.randrange(0, len(items) + 1), bad)
        return items

    def _bad_missing_identity(self) -> Generated:
        rec = {
            **self._envelope(self.config.now_ms - DAY_MS, {}),
            "name": "Speed Test",
            "kind": "custom",
            "properties": "{}",
        }
        return Generated("events", "event", rec, expected_reason="missing_identity")

    def _bad_out_of_range(self) -> Generated:
        rec = {**self._envelope(self.config.now_ms - DAY_MS, {"install_id": self._id("dev")}), "kind": "gps"}
        rec.update(latitude=123.0, longitude=-6.26, accuracy_m=5.0, region_id=None, region_kind=None)
        return Generated("locations", "location", rec, expected_reason="value_out_of_range")

    def _bad_status(self) -> Generated:
        rec = {
            **self._envelope(self.config.now_ms - DAY_MS, {"external_user_id": "user-x"}),
            "channel": "sms",
        }
        rec.update(
            status="opened",
            campaign_id="welcome",
            send_id=None,
            link_id=None,
            link_url=None,
            provider=None,
            reason=None,
        )
        return Generated("delivery-receipts", "delivery_receipt", rec, expected_reason="unknown_status")

    def _bad_future(self) -> Generated:
        rec = {
            **self._envelope(self.config.now_ms + 30 * DAY_MS, {"install_id": self._id("dev")}),
            "name": "support_chat",
        }
        return Generated("tags", "tag_hit", {**rec, "value": None}, expected_reason="time_out_of_range")

    def _bad_bytes(self) -> Generated:
        raw = b'{"this is": "json, not avro"}'
        return Generated("events", "event", None, raw=raw, expected_reason="undecodable")


def _date(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).date().isoformat()
