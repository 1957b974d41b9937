"""Which campaigns an event starts, conversions, and a person's share of a broadcast."""

from services.trigger.match import broadcast_fire, matched_campaigns, record_conversions
from services.trigger.state import PersonState, to_ms

from .build import T0, api, at, campaigns, event, location, person, segment, tag

SET = campaigns(
    """
    campaigns:
      - id: big-order
        trigger: {kind: event, name: Order Completed, where: {total: {gte: 100}}}
        conditions: {converted_by: {name: Order Completed}}
        channels: {order: [sms]}
        templates: {sms: {text: thanks}}
      - id: registered
        trigger: {kind: tag, name: registration_complete}
        channels: {order: [sms]}
        templates: {sms: {text: hi}}
      - id: joined-vip
        trigger: {kind: segment, segment: vip, change: entered}
        channels: {order: [sms]}
        templates: {sms: {text: vip}}
      - id: left-vip
        trigger: {kind: segment, segment: vip, change: exited}
        channels: {order: [sms]}
        templates: {sms: {text: bye}}
      - id: at-store
        trigger: {kind: location, regions: [store-1], transition: entered}
        channels: {order: [push]}
        templates: {push: {title: t, body: b}}
      - id: left-store
        trigger: {kind: location, regions: [store-1], transition: exited}
        channels: {order: [push]}
        templates: {push: {title: t, body: b}}
      - id: lingered
        trigger: {kind: location, regions: [store-1], transition: dwelled, min_dwell: 10m}
        channels: {order: [push]}
        templates: {push: {title: t, body: b}}
      - id: receipt
        transactional: true
        trigger: {kind: api, name: order_receipt}
        channels: {order: [email]}
        templates: {email: {subject: s, text: t}}
      - id: paused
        enabled: false
        trigger: {kind: tag, name: registration_complete}
        channels: {order: [sms]}
        templates: {sms: {text: never}}
      - id: outage
        trigger: {kind: broadcast, segment: area-d15, at: "2026-11-23T13:00:00Z", where: {service: broadband}}
        channels: {order: [sms]}
        templates: {sms: {text: outage}}
    """
)


def ids(evt) -> list[str]:
    return [f.campaign_id for f in matched_campaigns(evt, SET)]


class TestMatch:
    def test_event_with_property_filter(self):
        """An event matches by name only when its properties pass the filter."""
        assert ids(event("Order Completed", total=150)) == ["big-order"]
        assert ids(event("Order Completed", total=20)) == []
        assert ids(event("Something Else", total=150)) == []

    def test_tag_trigger_and_disabled_campaigns(self):
        """A tag starts its enabled campaign; a disabled one with the same trigger stays silent."""
        assert ids(tag("registration_complete")) == ["registered"]

    def test_segment_entered_and_exited(self):
        """Entering and leaving a segment start different campaigns."""
        assert ids(segment("vip", "entered")) == ["joined-vip"]
        assert ids(segment("vip", "exited")) == ["left-vip"]
        assert ids(segment("other", "entered")) == []

    def test_location_entered_exited_and_dwelled(self):
        """Region transitions match by region and kind; a dwell must last at least min_dwell."""
        assert ids(location("store-1", "entered")) == ["at-store"]
        assert ids(location("store-1", "exited")) == ["left-store"]
        assert ids(location("store-1", "dwelled", dwell=900)) == ["lingered"]
        assert ids(location("store-1", "dwelled", dwell=60)) == []
        assert ids(location("store-2", "entered")) == []

    def test_api_transactional_send_carries_its_payload(self):
        """An API request for a transactional trigger starts it with the payload as properties."""
        fires = matched_campaigns(api("order_receipt", {"items": [{"sku": "A"}]}), SET)
        assert [f.campaign_id for f in fires] == ["receipt"]
        assert fires[0].trigger.properties == {"items": [{"sku": "A"}]}

    def test_trigger_keeps_the_event_identity(self):
        """The fire remembers the triggering event's id and time (for ids and delays)."""
        fire = matched_campaigns(tag("registration_complete", at(5)), SET)[0]
        assert fire.trigger.event_id.startswith("tag-registration_complete")
        assert fire.trigger.time_ms == to_ms(at(5))

    def test_conversion_is_recorded_without_touching_the_input_state(self):
        """A converting event records its time for the campaign; the given state is unchanged."""
        before = PersonState()
        after = record_conversions(event("Order Completed", at(3), total=1), SET, before)
        assert after.conversions == {"big-order": to_ms(at(3))}
        assert before.conversions == {}

    def test_broadcast_reaches_members_matching_the_attribute_filter(self):
        """A broadcast includes a person in the segment with matching attributes, and nobody else."""
        outage = SET.get("outage")
        member = person(segments=frozenset({"area-d15"}), attributes={"service": "broadband"})
        fire = broadcast_fire(outage, member)
        assert fire is not None and fire.trigger.event_id == "broadcast:outage:2026-11-23T13:00:00+00:00"
        assert (
            broadcast_fire(outage, person(segments=frozenset({"area-d15"}), attributes={"service": "tv"}))
            is None
        )
        assert broadcast_fire(outage, person(attributes={"service": "broadband"})) is None
        assert outage.trigger.at > T0
