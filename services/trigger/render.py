"""Templates: sandboxed Jinja2 with strict undefined, and tracking links plus the open pixel.

A template may read ``person`` (profile attributes, plus ``id``), ``event`` (``name``, ``kind``,
``time``, ``properties``), ``payload`` (a transactional send's data, arrays included) and
``campaign`` (``id``, ``name``). A variable that is missing is an error for that one message:
:func:`render` returns a ``template_error`` :class:`Rejection` naming it, never a message with a
hole. The sandbox refuses attribute access to Python internals; HTML email autoescapes values.

Tracking is pluggable: :class:`Tracking` takes a ``link_signer`` (claims → token), so the
collector's HMAC token module can be used as is; :func:`hmac_signer` is a stand-in with the
same shape.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from services.common.steps import Rejection
from services.trigger.definitions import CHANNELS, Campaign, CampaignFile

LinkSigner = Callable[[Mapping[str, str]], str]

_TEXT_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
_HTML_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
_HREF = re.compile(r'href="(https?://[^"]+)"')
_URL = re.compile(r"https?://[^\s<>\"']+")


def _env(part: str) -> SandboxedEnvironment:
    return _HTML_ENV if part == "html" else _TEXT_ENV


@lru_cache(maxsize=4096)
def _compiled(part: str, source: str) -> Any:
    return _env(part).from_string(source)


def _parts(campaign: Campaign, channel: str) -> dict[str, str]:
    template = getattr(campaign.templates, channel)
    if template is None:
        return {}
    return {k: v for k, v in template.model_dump(exclude={"method"}).items() if isinstance(v, str)}


def template_problems(file: CampaignFile) -> list[str]:
    """Syntax errors in every template of a campaign file, each with its path."""
    problems = []
    for i, campaign in enumerate(file.campaigns):
        for channel in CHANNELS:
            for part, source in _parts(campaign, channel).items():
                try:
                    _compiled(part, source)
                except TemplateSyntaxError as exc:
                    problems.append(
                        f"campaigns[{i}].templates.{channel}.{part}: line {exc.lineno}: {exc.message}"
                    )
    return problems


def render(campaign: Campaign, channel: str, context: Mapping[str, Any]) -> dict[str, str] | Rejection:
    """Every part of the channel's template rendered, or why not (no personal data in the reason)."""
    out: dict[str, str] = {}
    for part, source in _parts(campaign, channel).items():
        try:
            out[part] = _compiled(part, source).render(**context)
        except UndefinedError as exc:
            return Rejection("template_error", f"{campaign.id} {channel}.{part}: {exc.message}", "render")
        except TemplateError as exc:  # sandbox violations, errors raised by filters
            return Rejection(
                "template_error", f"{campaign.id} {channel}.{part}: {type(exc).__name__}", "render"
            )
    return out


@dataclass(frozen=True)
class Tracking:
    """Where tracking links point and how their tokens are signed."""

    base_url: str
    link_signer: LinkSigner

    def token(self, claims: Mapping[str, str]) -> str:
        return self.link_signer(dict(claims))

    def click_url(self, claims: Mapping[str, str], index: int, url: str) -> str:
        return f"{self.base_url.rstrip('/')}/c/{self.token({**claims, 'l': str(index), 'u': url})}"

    def open_url(self, claims: Mapping[str, str]) -> str:
        return f"{self.base_url.rstrip('/')}/o/{self.token({**claims, 'k': 'open'})}"


def hmac_signer(key: bytes) -> LinkSigner:
    """Claims as compact JSON, base64url, then '.', then a truncated HMAC-SHA256 of that text."""

    def sign(claims: Mapping[str, str]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(dict(claims), sort_keys=True).encode()).rstrip(b"=")
        mac = base64.urlsafe_b64encode(hmac.new(key, body, hashlib.sha256).digest()[:16]).rstrip(b"=")
        return f"{body.decode()}.{mac.decode()}"

    return sign


def add_tracking(
    content: dict[str, str], channel: str, tracking: Tracking, claims: Mapping[str, str]
) -> dict[str, str]:
    """Links rewritten to tracking links (email, SMS, push) and the open pixel added to HTML email."""
    if channel not in ("email", "sms", "push", "webpush"):
        return dict(content)
    counter = iter(range(1_000_000))
    out = dict(content)

    def link(url: str) -> str:
        return tracking.click_url(claims, next(counter), url)

    if "html" in out:
        html = _HREF.sub(lambda m: f'href="{link(m.group(1))}"', out["html"])
        pixel = f'<img src="{tracking.open_url(claims)}" width="1" height="1" alt="" style="display:none">'
        out["html"] = html.replace("</body>", pixel + "</body>", 1) if "</body>" in html else html + pixel
    if "text" in out:
        out["text"] = _URL.sub(lambda m: link(m.group(0)), out["text"])
    if out.get("url"):
        out["url"] = link(out["url"])
    return out
