"""The fixed world the generator draws from: an ISP's plans, cities, geofences, campaigns.

Kept apart from the generation logic so demos, tests and benchmarks can name the same places
and campaigns (e.g. a segment "inside store-dublin" or a campaign funnel for "black-friday").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Geofence:
    id: str
    latitude: float
    longitude: float
    radius_m: float


GEOFENCES = (
    Geofence("store-dublin", 53.3498, -6.2603, 150.0),
    Geofence("store-cork", 51.8985, -8.4756, 150.0),
    Geofence("stadium-aviva", 53.3352, -6.2285, 300.0),
)
BEACONS = ("f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:7", "f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:8")

PLANS = ("fibre-100", "fibre-500", "fibre-1000", "mobile-only")
CITIES = ("Dublin", "Cork", "Galway", "Limerick", "New York")
PLATFORMS = ("ios", "android", "web")
INSTALL_SOURCES = ("facebook", "google-ads", "organic", "tiktok")

CAMPAIGNS = (
    ("black-friday", "email"),
    ("outage-dublin", "sms"),
    ("usage-alert", "push"),
    ("welcome", "email"),
)
# The receipt funnel a message walks through, per channel, and how likely each next step is.
FUNNELS = {
    "email": (("sent", 1.0), ("delivered", 0.95), ("opened", 0.5), ("clicked", 0.4), ("link_clicked", 1.0)),
    "sms": (("sent", 1.0), ("delivered", 0.9), ("clicked", 0.2)),
    "push": (("sent", 1.0), ("delivered", 0.9), ("opened", 0.3)),
}
EMAIL_ENDINGS = (("hard_bounced", 0.02), ("complained", 0.01), ("unsubscribed", 0.03))

CUSTOM_EVENTS = ("Viewed Plan", "Form Started", "Form Completed", "Speed Test")
TAGS = ("registration_complete", "journeyform_destination", "viewed_offers", "support_chat")
