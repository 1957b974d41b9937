"""The trigger state's byte form: everything pending survives a restart."""

import pytest

from services.trigger.state import PendingSend, PersonState, SendRecord, Timer, TriggerRef, pending_key


def full_state() -> PersonState:
    ref = TriggerRef("ev-1", "event", "cart_updated", 1000, {"items": [{"sku": "A", "qty": 2}], "total": 9.5})
    return PersonState(
        pending={pending_key("c", "ev-1"): PendingSend("c", ref, 5000, "slot-1")},
        timers={"cart": Timer(7000, ref)},
        sends=[SendRecord(900, "sms", "c")],
        entries={"c": 1000},
        conversions={"c": 800},
    )


class TestState:
    def test_round_trip_keeps_everything(self):
        """A state written to bytes and read back equals the original, nested payloads included."""
        state = full_state()
        assert PersonState.from_bytes(state.to_bytes()) == state

    def test_byte_form_is_stable(self):
        """The same state always serialises to the same bytes (a replay writes identical changelog values)."""
        assert full_state().to_bytes() == full_state().to_bytes()

    def test_nothing_stored_is_an_empty_state(self):
        """A person without stored state starts empty."""
        assert PersonState.from_bytes(None) == PersonState()

    def test_unknown_format_is_refused(self):
        """Bytes from an unknown format version are refused instead of misread."""
        with pytest.raises(ValueError, match="unknown trigger state format"):
            PersonState.from_bytes(b'{"v": 99}')

    def test_next_due_is_the_earliest_pending_or_timer(self):
        """The adapter's next wake-up for a person is the earliest pending send or timer."""
        assert full_state().next_due_ms() == 5000
        assert PersonState().next_due_ms() is None

    def test_copy_is_independent(self):
        """Changing a copy leaves the original untouched."""
        state = full_state()
        other = state.copy()
        other.entries["c"] = 2000
        other.pending.clear()
        assert state.entries["c"] == 1000 and len(state.pending) == 1
