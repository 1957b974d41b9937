"""Sandboxed templates with strict variables, and tracking links plus the open pixel."""

from services.common.steps import Rejection
from services.trigger.render import Tracking, add_tracking, hmac_signer, render

from .build import campaigns

SET = campaigns(
    """
    campaigns:
      - id: receipt
        transactional: true
        trigger: {kind: api, name: order_receipt}
        channels: {order: [email, sms]}
        templates:
          email:
            subject: "Order {{ payload.order_id }} for {{ person.first_name }}"
            html: "<ul>{% for i in payload['items'] %}<li>{{ i.qty }} x {{ i.name }}</li>{% endfor %}</ul>"
          sms: {text: "Hi {{ person.nickname }}"}
      - id: nosy
        trigger: {kind: event, name: a}
        channels: {order: [sms]}
        templates: {sms: {text: "{{ person.__class__.__mro__ }}"}}
    """
)
RECEIPT = SET.get("receipt")
CONTEXT = {
    "person": {"first_name": "Ann", "id": "p-1"},
    "event": {"name": "order_receipt", "kind": "api", "time": "", "properties": {}},
    "payload": {"order_id": "o-9", "items": [{"name": "<Modem>", "qty": 1}, {"name": "Cable", "qty": 2}]},
    "campaign": {"id": "receipt", "name": ""},
}
CLAIMS = {"m": "msg-1", "c": "receipt", "p": "p-1", "ch": "email"}


def signer_log():
    seen: list[dict] = []

    def sign(claims):
        seen.append(dict(claims))
        return f"tok{len(seen)}"

    return seen, sign


class TestRender:
    def test_profile_and_payload_arrays_are_rendered(self):
        """Subject and HTML use profile attributes and loop over the payload's items."""
        out = render(RECEIPT, "email", CONTEXT)
        assert out["subject"] == "Order o-9 for Ann"
        assert "<li>2 x Cable</li>" in out["html"]

    def test_html_values_are_escaped(self):
        """A value with markup is escaped in HTML email rather than injected."""
        assert "&lt;Modem&gt;" in render(RECEIPT, "email", CONTEXT)["html"]

    def test_missing_variable_is_a_rejection_naming_it(self):
        """A template reading an attribute the person lacks yields template_error naming the variable."""
        out = render(RECEIPT, "sms", CONTEXT)
        assert isinstance(out, Rejection)
        assert out.reason == "template_error" and "nickname" in out.message and "sms.text" in out.message
        assert "Ann" not in out.message  # no personal data in the reason

    def test_sandbox_refuses_python_internals(self):
        """Reaching for Python internals from a template is refused, not executed."""
        out = render(SET.get("nosy"), "sms", CONTEXT)
        assert isinstance(out, Rejection) and out.reason == "template_error"


class TestTracking:
    def test_email_links_are_tracked_and_the_pixel_added(self):
        """Each link in HTML email points to the tracker and an open pixel is inserted before </body>."""
        seen, sign = signer_log()
        html = '<html><body><a href="https://a.example.com/x">A</a> <a href="https://b.example.com">B</a></body></html>'
        out = add_tracking(
            {"subject": "s", "html": html}, "email", Tracking("https://t.example.com/", sign), CLAIMS
        )
        assert 'href="https://t.example.com/c/tok1"' in out["html"]
        assert 'href="https://t.example.com/c/tok2"' in out["html"]
        assert out["html"].endswith(
            '<img src="https://t.example.com/o/tok3" width="1" height="1" alt="" '
            'style="display:none"></body></html>'
        )
        assert seen[0] == {**CLAIMS, "l": "0", "u": "https://a.example.com/x"}
        assert seen[2]["k"] == "open"

    def test_sms_and_push_links_are_tracked(self):
        """URLs in SMS text and a push's open URL are replaced by tracking links."""
        _, sign = signer_log()
        tracking = Tracking("https://t.example.com", sign)
        assert add_tracking({"text": "See https://x.example.com/o?id=1 now"}, "sms", tracking, CLAIMS) == {
            "text": "See https://t.example.com/c/tok1 now"
        }
        assert add_tracking({"title": "t", "body": "b", "url": "https://x"}, "push", tracking, CLAIMS)[
            "url"
        ] == ("https://t.example.com/c/tok2")

    def test_webhook_content_is_left_alone(self):
        """A webhook body is data for a system, so links in it are not rewritten."""
        _, sign = signer_log()
        content = {"url": "https://crm.example.com", "body": '{"u": "https://x"}'}
        assert add_tracking(content, "webhook", Tracking("https://t", sign), CLAIMS) == content

    def test_hmac_signer_is_deterministic_and_keyed(self):
        """The same claims and key always give the same token; another key gives another."""
        assert hmac_signer(b"k1")(CLAIMS) == hmac_signer(b"k1")(dict(reversed(CLAIMS.items())))
        assert hmac_signer(b"k1")(CLAIMS) != hmac_signer(b"k2")(CLAIMS)
