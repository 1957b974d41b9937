"""The trigger's metrics count what its decisions did."""

from prometheus_client import REGISTRY

from services.trigger import metrics
from services.trigger.core import on_event
from services.trigger.state import PersonState

from .build import at, context, person, tag

CTX = context(
    """
    campaigns:
      - id: m-ok
        trigger: {kind: tag, name: metrics_ok}
        channels: {order: [sms]}
        templates: {sms: {text: "hello"}}
      - id: m-bad
        trigger: {kind: tag, name: metrics_ok}
        channels: {order: [sms]}
        templates: {sms: {text: "{{ person.missing }}"}}
      - id: m-none
        trigger: {kind: tag, name: metrics_ok}
        channels: {order: [email]}
        templates: {email: {subject: s, text: t}}
    """
)


def value(name: str, labels: dict) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class TestMetrics:
    def test_messages_skips_and_rejections_are_counted_by_reason(self):
        """One decision with a message, a template error and an unreachable channel moves three counters."""
        before = (
            value("tagstream_trigger_messages_total", {"campaign": "m-ok", "channel": "sms"}),
            value("tagstream_trigger_rejected_total", {"step": "render", "reason": "template_error"}),
            value("tagstream_trigger_skipped_total", {"campaign": "m-none", "reason": "no_channel"}),
        )
        out = on_event(tag("metrics_ok", at(0)), person(email=None), PersonState(), at(0), CTX)
        metrics.count(out.actions)
        after = (
            value("tagstream_trigger_messages_total", {"campaign": "m-ok", "channel": "sms"}),
            value("tagstream_trigger_rejected_total", {"step": "render", "reason": "template_error"}),
            value("tagstream_trigger_skipped_total", {"campaign": "m-none", "reason": "no_channel"}),
        )
        assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
