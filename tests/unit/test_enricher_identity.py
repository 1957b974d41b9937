"""Identity resolution (stage 1) as pure functions on (record, directory)."""

from __future__ import annotations

from typing import Any

from services.enricher.identity import resolve
from tests.enricher_records import T0, event, tag, update


class Directory:
    """Applies resolutions in order, as the faust table would; records what was routed."""

    def __init__(self, policy: str = "reject") -> None:
        self.table: dict[str, Any] = {}
        self.policy = policy
        self.routed: list[dict[str, Any]] = []
        self.rejections: list[str] = []

    def feed(self, record_type: str, record: dict[str, Any]) -> str | None:
        result = resolve(record_type, record, b"orig", self.table, self.policy)
        if result.rejection:
            self.rejections.append(result.rejection.reason)
            return None
        self.table.update(result.writes)
        self.routed += result.routed
        return result.routed[-1]["person_id"]


class TestResolve:
    def test_new_install_gets_an_anonymous_person_kept_for_the_device(self):
        """Every record of a new device lands on one anonymous person."""
        d = Directory()
        first = d.feed("event", event("e1", T0, "install", install_id="dev-1"))
        again = d.feed("tag_hit", tag("t1", T0 + 1, "x", install_id="dev-1"))
        assert first == again
        assert d.table[f"person:{first}"]["ids"] == {}

    def test_login_with_unknown_identity_promotes_the_anonymous_person(self):
        """Logging in as someone new keeps the device's person and attaches the identity."""
        d = Directory()
        anon = d.feed("event", event("e1", T0, install_id="dev-1"))
        person = d.feed(
            "event", event("e2", T0 + 1, "personalize", install_id="dev-1", external_user_id="u1")
        )
        assert person == anon
        assert d.table["id:external_user_id:u1"] == {"person": anon}
        assert not [r for r in d.routed if r["kind"] == "merge"]

    def test_login_as_a_known_person_merges_the_anonymous_one_into_it(self):
        """The anonymous history is handed over with a merge envelope to the known person."""
        d = Directory()
        known = d.feed("event", event("e1", T0, install_id="dev-1"))
        d.feed("event", event("e2", T0 + 1, "personalize", install_id="dev-1", email="a@x.io"))
        anon = d.feed("event", event("e3", T0 + 2, install_id="dev-2"))
        person = d.feed("event", event("e4", T0 + 3, "personalize", install_id="dev-2", email="a@x.io"))
        assert person == known != anon
        merges = [r for r in d.routed if r["kind"] == "merge"]
        assert [(m["person_id"], m["details"]["merged_into"]) for m in merges] == [(anon, known)]
        assert d.table["device:install_id:dev-2"]["person"] == known
        assert sorted(d.table[f"person:{known}"]["devices"]) == ["install_id:dev-1", "install_id:dev-2"]

    def test_logout_gives_the_device_a_fresh_anonymous_person(self):
        """After depersonalize the device's records go to a new anonymous person."""
        d = Directory()
        d.feed("event", event("e1", T0, "personalize", install_id="dev-1", external_user_id="u1"))
        user = d.feed("event", event("e2", T0 + 1, install_id="dev-1"))
        logout = d.feed("event", event("e3", T0 + 2, "depersonalize", install_id="dev-1"))
        after = d.feed("event", event("e4", T0 + 3, install_id="dev-1"))
        assert logout == user != after
        assert d.table[f"person:{after}"]["ids"] == {}
        assert d.table["id:external_user_id:u1"] == {"person": user}

    def test_conflicting_identities_are_rejected_under_the_reject_policy(self):
        """A login naming two different persons' identities is refused, nothing changes."""
        d = Directory()
        a = d.feed("event", event("e1", T0, "personalize", install_id="dev-1", external_user_id="u1"))
        d.feed("event", event("e2", T0, "personalize", install_id="dev-2", email="b@x.io"))
        before = dict(d.table)
        got = d.feed(
            "event", event("e3", T0, "personalize", install_id="dev-3", external_user_id="u1", email="b@x.io")
        )
        assert got is None and d.rejections == ["identity_conflict"]
        assert d.table == before and d.table["id:external_user_id:u1"] == {"person": a}

    def test_conflicting_identities_merge_under_the_merge_policy(self):
        """With the merge policy both persons become one, announced by merge envelopes."""
        d = Directory("merge")
        a = d.feed("event", event("e1", T0, "personalize", install_id="dev-1", external_user_id="u1"))
        b = d.feed("event", event("e2", T0, "personalize", install_id="dev-2", email="b@x.io"))
        got = d.feed(
            "event", event("e3", T0, "personalize", install_id="dev-3", external_user_id="u1", email="b@x.io")
        )
        assert got == a
        assert d.table["id:email:b@x.io"] == {"person": a}
        assert d.table["device:install_id:dev-2"]["person"] == a
        assert (b, a) in [
            (m["person_id"], m["details"]["merged_into"]) for m in d.routed if m["kind"] == "merge"
        ]

    def test_another_user_logging_in_on_a_device_does_not_merge_people(self):
        """An identified device switching user moves to the other person without merging."""
        d = Directory()
        u1 = d.feed("event", event("e1", T0, "personalize", install_id="dev-1", external_user_id="u1"))
        u2 = d.feed("event", event("e2", T0 + 1, "personalize", install_id="dev-1", external_user_id="u2"))
        assert u1 != u2 and not [r for r in d.routed if r["kind"] == "merge"]
        assert d.table[f"person:{u1}"]["devices"] == []

    def test_backend_records_find_the_person_by_identity(self):
        """A record with only an email goes to the person owning that email."""
        d = Directory()
        person = d.feed("event", event("e1", T0, "personalize", install_id="dev-1", email="a@x.io"))
        assert d.feed("profile_update", update("u1", T0 + 1, {"first_name": "A"}, email="a@x.io")) == person

    def test_alias_links_an_anonymous_visitor_to_the_identity(self):
        """alias(previous_id=anonymous id) merges that visitor into the identified person."""
        d = Directory()
        visitor = d.feed("tag_hit", tag("t1", T0, "browsed", anonymous_id="web-9"))
        known = d.feed("event", event("e1", T0, "personalize", install_id="dev-1", external_user_id="u1"))
        alias = {**update("a1", T0 + 1, {}, action="alias", external_user_id="u1"), "previous_id": "web-9"}
        assert d.feed("profile_update", alias) == known
        assert d.table["device:anonymous_id:web-9"]["person"] == known
        assert (visitor, known) in [
            (m["person_id"], m["details"]["merged_into"]) for m in d.routed if m["kind"] == "merge"
        ]

    def test_uninstall_marks_the_device(self):
        """An uninstall keeps the device's person but flags the device."""
        d = Directory()
        d.feed("event", event("e1", T0, "uninstall", install_id="dev-1"))
        assert d.table["device:install_id:dev-1"]["uninstalled"] is True

    def test_replaying_a_record_resolves_to_the_same_person(self):
        """Person ids are derived, not random: a replay after a crash changes nothing."""
        d = Directory()
        d.feed("event", event("e1", T0, install_id="dev-1"))
        record = event("e2", T0, "personalize", install_id="dev-1", external_user_id="u1")
        first = d.feed("event", record)
        snapshot = dict(d.table)
        assert d.feed("event", record) == first and d.table == snapshot
