"""An ``enriched`` envelope (schemas/enriched_event.avsc) as the segmenter's :class:`Fact` list. Pure.

The envelope's ``kind`` decides; ``original`` (the input record's Avro bytes) is decoded by the
caller and passed in as ``record``:

    kind                      facts
    profile_update            one attribute fact per attribute, typed (number → float,
                              boolean → bool, date → ISO string, null → removes it)
    tag                       tag fact: name, value
    event, app_launch         event fact: name, properties (JSON object)
    delivery_receipt          message fact: name = status, channel, campaign
    location (gps)            location fact: name = gps, lat/lon
    geofence_entered/exited/  location fact: name = enter/exit/dwell, region = details.region_id
      dwelled
    session_start             session fact: name = started
    anything else             none (session_end: the person is still known; a merge is
                              handed over by stream.py, docs/segments.md "Merges")

A device-reported enter/exit/dwell ``location`` record gives no fact of its own: the enricher
passes it on as a ``geofence_*`` envelope with the normalised region id (iBeacons by catalogue
id), and counting both would count the visit twice.

Device-scoped attributes are person attributes here too (latest wins across devices), so
``{attribute: platform, equals: ios}`` works whichever scope the app wrote it with.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from typing import Any

from services.common.steps import Rejection
from services.segmenter.facts import Fact

REGION_ACTIONS = {"geofence_entered": "enter", "geofence_exited": "exit", "geofence_dwelled": "dwell"}
NEEDS_RECORD = ("profile_update", "tag", "event", "app_launch", "delivery_receipt", "location")


def facts_for(envelope: dict[str, Any], record: dict[str, Any] | None) -> list[Fact] | Rejection:
    """The facts one enriched envelope states about its person (possibly none)."""
    kind, person, t = envelope["kind"], envelope["person_id"], to_ms(envelope["event_time"])
    details = envelope.get("details") or {}
    if kind in NEEDS_RECORD and record is None:
        return Rejection("missing_original", f"a {kind} envelope without its original record", "map")
    r: dict[str, Any] = record or {}
    if kind == "profile_update":
        return [attribute_fact(person, t, a) for a in r.get("attributes") or []]
    if kind == "tag":
        return [Fact(person, t, "tag", r["name"], value=r.get("value"))]
    if kind in ("event", "app_launch"):
        try:
            properties = json.loads(r.get("properties") or "{}")
        except ValueError:
            return Rejection("bad_properties", "event properties are not JSON", "map")
        if not isinstance(properties, dict):
            return Rejection("bad_properties", "event properties are not a JSON object", "map")
        return [Fact(person, t, "event", r["name"], properties=properties)]
    if kind == "delivery_receipt":
        return [Fact(person, t, "message", r["status"], channel=r["channel"], campaign=r.get("campaign_id"))]
    if kind == "location":
        lat, lon = r.get("latitude"), r.get("longitude")
        if (r.get("kind") or "gps") != "gps" or lat is None or lon is None:
            return []
        return [Fact(person, t, "location", "gps", lat=lat, lon=lon)]
    if kind in REGION_ACTIONS:
        region = details.get("region_id")
        if not region:
            return Rejection("missing_region", f"{kind} without details.region_id", "map")
        return [Fact(person, t, "location", REGION_ACTIONS[kind], region=region)]
    if kind == "session_start":
        return [Fact(person, t, "session", "started")]
    return []


def attribute_fact(person: str, t: int, attribute: dict[str, Any]) -> Fact:
    return Fact(
        person, t, "attribute", attribute["name"], value=typed(attribute.get("type"), attribute.get("value"))
    )


def typed(kind: str | None, text: str | None) -> Any:
    """The attribute's canonical text as the value segments compare (docs/segments.md, "Typing").

    Text that does not parse as its declared type (ingest refuses it, so only hand-written
    records) stays a string, so it fails number/date tests instead of stopping the stream.
    """
    if text is None:
        return None
    if kind == "number":
        try:
            value = float(text)
        except ValueError:
            return text
        return value if math.isfinite(value) else text
    if kind == "boolean":
        low = text.strip().lower()
        return {"true": True, "false": False}.get(low, text)
    if kind == "date":
        return iso_date(text)
    return text


def iso_date(text: str) -> str:
    """``YYYY-MM-DD`` stays; a datetime becomes ``YYYY-MM-DDTHH:MM:SS.fffZ`` in UTC (naive = UTC)."""
    try:
        if len(text) == 10:
            return date.fromisoformat(text).isoformat()
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def to_ms(value: Any) -> int:
    """fastavro reads timestamp-millis as aware datetimes."""
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)
