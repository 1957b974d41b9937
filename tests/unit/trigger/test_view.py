"""The profile record and segment changes as the core's PersonView."""

from __future__ import annotations

from services.trigger.view import apply_segment, from_profile, person_view


def profile(**fields):
    base = {"person_id": "p-1", "updated_time": 0, "attributes": [], "devices": [], "subscriptions": []}
    return {**base, **fields}


def attr(name, value, type_="string", scope="person"):
    return {"name": name, "type": type_, "value": value, "scope": scope, "time": 1}


class TestFromProfile:
    def test_email_subscription_comes_from_the_subscriptions_list_or_an_attribute(self):
        """'email' in subscriptions, or subscribed.email=true, makes the address usable for marketing."""
        assert from_profile(profile(subscriptions=["email"]))["email_subscribed"] is True
        assert from_profile(profile(attributes=[attr("subscribed.email", "true", "boolean")]))[
            "email_subscribed"
        ]
        assert from_profile(profile(subscriptions=["news"]))["email_subscribed"] is False

    def test_unsubscribed_lists_come_from_boolean_attributes(self):
        """subscribed.<x>=false and unsubscribed.<x>=true both name <x> as unsubscribed."""
        stored = from_profile(
            profile(
                attributes=[
                    attr("subscribed.sms", "false", "boolean"),
                    attr("unsubscribed.news", "true", "boolean"),
                ]
            )
        )
        assert stored["unsubscribed"] == ["news", "sms"]

    def test_attributes_are_typed_and_device_scoped_ones_left_out(self):
        """Numbers and booleans become values a filter can compare; device attributes are not the person's."""
        stored = from_profile(
            profile(
                attributes=[
                    attr("age", "42", "number"),
                    attr("score", "2.5", "number"),
                    attr("vip", "true", "boolean"),
                    attr("model", "x", scope="install_id:a"),
                    attr("timezone", "Europe/Dublin"),
                ]
            )
        )
        assert stored["attributes"] == {"age": 42, "score": 2.5, "vip": True, "timezone": "Europe/Dublin"}
        assert stored["timezone"] == "Europe/Dublin"

    def test_devices_installed_with_a_token_and_the_latest_is_primary(self):
        """Uninstalled and anonymous devices are dropped; the latest device with a token is primary."""
        devices = [
            {
                "device_id": "install_id:old",
                "platform": "iOS",
                "push_token": "t1",
                "uninstalled": False,
                "last_seen": 1,
            },
            {
                "device_id": "install_id:gone",
                "platform": "android",
                "push_token": "t2",
                "uninstalled": True,
                "last_seen": 2,
            },
            {
                "device_id": "anonymous_id:web",
                "platform": "web",
                "push_token": None,
                "uninstalled": False,
                "last_seen": 3,
            },
            {
                "device_id": "install_id:new",
                "platform": "android",
                "push_token": "t3",
                "uninstalled": False,
                "last_seen": 4,
            },
        ]
        view = person_view("p-1", {"profile": from_profile(profile(devices=devices))})
        assert [(d.install_id, d.platform, d.push_enabled, d.primary) for d in view.devices] == [
            ("old", "ios", True, False),
            ("new", "android", True, True),
        ]
        assert view.identities == {"install_id": "new"}


class TestSegments:
    def test_a_later_change_wins_and_an_older_one_is_ignored(self):
        """Membership follows change times, so a late-arriving older change does not undo a newer one."""
        segments: dict = {}
        assert apply_segment(segments, "vip", "entered", 10)
        assert not apply_segment(segments, "vip", "exited", 5)
        assert person_view("p-1", {"segments": segments}).segments == frozenset({"vip"})
        assert apply_segment(segments, "vip", "exited", 20)
        assert person_view("p-1", {"segments": segments}).segments == frozenset()

    def test_nothing_known_is_an_empty_view(self):
        """A person seen only through an event has no channels and no segments."""
        view = person_view("p-9", None)
        assert view.email is None and view.devices == () and view.segments == frozenset()
