"""Campaign definitions: the documented format is accepted, mistakes are refused by path, reloads diff."""

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from services.common.settings import REPO_ROOT
from services.trigger.definitions import CampaignError, load_campaigns, parse_campaigns, reload_campaigns

EXAMPLE = REPO_ROOT / "config" / "campaigns.example.yaml"

MINIMAL = {
    "campaigns": [
        {
            "id": "c1",
            "trigger": {"kind": "event", "name": "signup"},
            "channels": {"order": ["sms"]},
            "templates": {"sms": {"text": "hi"}},
        }
    ]
}


def _with(**changes):
    data = json.loads(json.dumps(MINIMAL))
    data["campaigns"][0].update(changes)
    return data


def _problems(data) -> list[str]:
    with pytest.raises(CampaignError) as caught:
        parse_campaigns(data)
    return caught.value.problems


class TestDefinitions:
    def test_example_file_covers_every_documented_kind(self):
        """The shipped example loads and uses event, drop-off, broadcast, location and API triggers."""
        loaded = load_campaigns(EXAMPLE)
        kinds = {c.trigger.kind for c in loaded.campaigns.values()}
        assert kinds == {"event", "dropoff", "broadcast", "location", "api"}
        assert loaded.campaigns["welcome-email"].delay == timedelta(hours=1)

    def test_every_example_in_the_docs_loads(self):
        """Each YAML example in docs/campaigns.md is a valid campaign file."""
        text = (REPO_ROOT / "docs" / "campaigns.md").read_text()
        blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
        assert len(blocks) == 5
        for block in blocks:
            assert len(load_campaigns(block).campaigns) == 1

    def test_json_and_yaml_read_the_same(self, tmp_path: Path):
        """A campaign file written as JSON loads to the same definitions as its YAML form."""
        as_json = tmp_path / "c.json"
        as_json.write_text(json.dumps(yaml.safe_load(EXAMPLE.read_text()), default=str))
        assert load_campaigns(as_json).campaigns == load_campaigns(EXAMPLE).campaigns

    def test_every_offending_field_is_named_by_path(self):
        """A file with several mistakes is refused with one problem per field, each with its path."""
        data = _with(delay="soon", channels={"order": ["email", "fax"]})
        data["campaigns"][0]["trigger"] = {"kind": "event"}
        problems = _problems(data)
        assert any(p.startswith("campaigns[0].delay:") for p in problems)
        assert any(p.startswith("campaigns[0].channels.order[1]:") for p in problems)
        assert any(p.startswith("campaigns[0].trigger.event.name:") for p in problems)

    def test_unknown_fields_are_refused(self):
        """A misspelt option is an error rather than silently ignored."""
        assert any("campaigns[0].delya" in p for p in _problems(_with(delya="1h")))

    def test_unknown_trigger_kind_is_refused(self):
        """A trigger kind that does not exist is refused at the trigger's path."""
        assert any(
            p.startswith("campaigns[0].trigger") for p in _problems(_with(trigger={"kind": "telepathy"}))
        )

    def test_template_syntax_error_is_refused_with_its_path(self):
        """A template that does not parse is refused before any message is rendered."""
        problems = _problems(_with(templates={"sms": {"text": "{{ person.first_name "}}))
        assert problems[0].startswith("campaigns[0].templates.sms.text: line 1")

    def test_a_channel_without_its_template_is_refused(self):
        """Listing a channel requires a template for it."""
        assert any(
            "templates missing for channels: email" in p
            for p in _problems(_with(channels={"order": ["email"]}))
        )

    def test_duplicate_ids_are_refused(self):
        """Two campaigns cannot share an id (it is part of every message id)."""
        data = _with()
        data["campaigns"].append(data["campaigns"][0])
        assert any("duplicate campaign id 'c1'" in p for p in _problems(data))

    def test_broadcast_time_needs_a_timezone(self):
        """A broadcast at a naive local time is ambiguous and refused."""
        trigger = {"kind": "broadcast", "segment": "s", "at": "2026-11-23T09:00:00"}
        assert any("needs a timezone" in p for p in _problems(_with(trigger=trigger)))

    def test_reentry_after_needs_its_period(self):
        """'once per N days' without N is refused."""
        assert any("campaigns[0].reentry" in p for p in _problems(_with(reentry={"mode": "after"})))

    def test_bad_timezone_and_filter_operator_are_refused(self):
        """An unknown default timezone and an unknown filter operator are both named."""
        data = _with(trigger={"kind": "event", "name": "x", "where": {"total": {"gtee": 5}}})
        data["default_timezone"] = "Mars/Olympus"
        problems = _problems(data)
        assert any(p.startswith("default_timezone:") for p in problems)
        assert any(p.startswith("campaigns[0].trigger.event.where.total") for p in problems)

    def test_negative_duration_and_bodiless_email_are_refused(self):
        """A negative delay and an email without html or text are refused by path."""
        assert any(p.startswith("campaigns[0].delay") for p in _problems(_with(delay=-5)))
        email_only = _with(channels={"order": ["email"]}, templates={"email": {"subject": "s"}})
        assert any(p.startswith("campaigns[0].templates.email") for p in _problems(email_only))

    def test_durations_accept_units_and_seconds(self):
        """'90s', '15m', '2w' and a bare number of seconds are all durations."""
        for text, expected in (("90s", 90), ("15m", 900), ("2w", 1209600), (30, 30)):
            assert parse_campaigns(_with(delay=text)).get("c1").delay == timedelta(seconds=expected)

    def test_reload_reports_added_changed_and_removed(self):
        """Comparing a reloaded file with the previous one lists what was added, changed and removed."""
        before = parse_campaigns(
            {"campaigns": [MINIMAL["campaigns"][0], {**MINIMAL["campaigns"][0], "id": "gone"}]}
        )
        after = parse_campaigns(
            {
                "campaigns": [
                    {**MINIMAL["campaigns"][0], "delay": "1h"},
                    {**MINIMAL["campaigns"][0], "id": "new"},
                ]
            }
        )
        diff = after.diff(before)
        assert (diff.added, diff.changed, diff.removed) == (["new"], ["c1"], ["gone"])
        assert after.diff(after).changed == []

    def test_command_line_check_reports_problems(self, tmp_path: Path, capsys):
        """The file checker exits non-zero and prints each problem for a bad file."""
        from services.trigger.definitions import _check

        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump(_with(delay="soon")))
        assert _check([str(EXAMPLE), str(bad)]) == 1
        out = capsys.readouterr().out
        assert "ok, 5 campaigns" in out and "campaigns[0].delay" in out


class TestReload:
    def test_a_good_edit_replaces_the_set_and_reports_the_diff(self, tmp_path: Path):
        """Re-reading an edited file gives the new set and what changed."""
        path = tmp_path / "campaigns.yaml"
        path.write_text(yaml.safe_dump(MINIMAL))
        first = reload_campaigns(path, None)
        assert first.diff.added == ["c1"] and first.problems == []
        path.write_text(yaml.safe_dump(_with(delay="2h")))
        second = reload_campaigns(path, first.campaigns)
        assert second.diff.changed == ["c1"] and second.campaigns.get("c1").delay == timedelta(hours=2)

    def test_a_bad_edit_keeps_the_previous_set(self, tmp_path: Path):
        """A refused edit leaves the running campaigns in place and reports the problems."""
        path = tmp_path / "campaigns.yaml"
        path.write_text(yaml.safe_dump(MINIMAL))
        running = reload_campaigns(path, None).campaigns
        path.write_text(yaml.safe_dump(_with(delay="soon")))
        refused = reload_campaigns(path, running)
        assert refused.campaigns is running and refused.diff is None
        assert refused.problems[0].startswith("campaigns[0].delay")
        assert reload_campaigns(tmp_path / "missing.yaml", running).campaigns is running
