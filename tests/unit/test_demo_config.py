"""`make run` feeds the generator's world to the demo segments and campaigns (config/demo/): they
must load, and name only what the generator produces, or the demo shows empty segments."""

from pathlib import Path

from services.generator import catalogue
from services.segmenter.definitions import load
from services.trigger.definitions import load_campaigns

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo"
GENERATED_EVENTS = {*catalogue.CUSTOM_EVENTS, "Order Completed"}


def test_demo_segments_and_campaigns_load_and_refer_to_each_other_and_to_generated_names():
    segments = set(load(DEMO / "segments.yaml"))
    campaigns = load_campaigns(DEMO / "campaigns.yaml").file.campaigns
    geofences = {g.id for g in catalogue.GEOFENCES}

    assert "lapsed-but-reading" in segments  # the reference example is part of the demo
    for campaign in campaigns:
        trigger = campaign.trigger
        if trigger.kind == "segment":
            assert trigger.segment in segments, campaign.id
        elif trigger.kind == "event":
            assert trigger.name in GENERATED_EVENTS, campaign.id
        elif trigger.kind == "location":
            assert set(trigger.regions) <= geofences, campaign.id
        assert campaign.quiet_hours is None, f"{campaign.id}: the demo must send whatever the hour"
