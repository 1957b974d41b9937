"""Signed tracking tokens: what a tracking URL is about, unforgeable and expiring.

A token is ``<payload>.<signature>``: the payload is compact JSON in URL-safe base64 (no
padding), the signature the first 16 bytes of HMAC-SHA256(secret, payload), also base64url.
It is signed, not encrypted: put ids in it, never personal data. The trigger service imports
:func:`sign` (and the URL helpers) to build links; the collector calls :func:`verify`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import asdict, dataclass, field

SIGNATURE_BYTES = 16
CHANNELS = ("email", "sms", "push", "webpush", "inapp", "app")
# Field -> its short key inside the payload (keeps URLs short).
_KEYS = {
    "channel": "ch",
    "send_id": "m",
    "campaign_id": "c",
    "identity": "p",
    "url": "u",
    "link_id": "l",
    "attributes": "a",
    "expires_at": "e",
}
_FIELDS = {short: name for name, short in _KEYS.items()}


class TokenError(ValueError):
    """A token that must be refused; ``reason`` is malformed, forged or expired."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TrackingToken:
    channel: str  # email, sms, push, webpush, inapp, app
    send_id: str | None = None  # the message (send) tracked: the receipt's send_id
    campaign_id: str | None = None
    identity: dict[str, str] = field(default_factory=dict)  # e.g. {"external_user_id": "u-7"}
    url: str | None = None  # click target (links only)
    link_id: str | None = None
    # Link attributes applied on click: {"update-city": "Dublin", "subscribe-to": "news"}.
    attributes: dict[str, str] = field(default_factory=dict)
    expires_at: int | None = None  # epoch seconds; None never expires


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(payload: str, secret: str) -> str:
    if not secret:
        raise ValueError("no tracking secret configured (TAGSTREAM_TRACKING_SECRET)")
    digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return _b64(digest[:SIGNATURE_BYTES])


def sign(token: TrackingToken, secret: str) -> str:
    if token.channel not in CHANNELS:
        raise ValueError(f"channel {token.channel!r} is not one of {', '.join(CHANNELS)}")
    compact = {_KEYS[k]: v for k, v in asdict(token).items() if v not in (None, {}, "")}
    payload = _b64(json.dumps(compact, separators=(",", ":"), ensure_ascii=False).encode())
    return f"{payload}.{_signature(payload, secret)}"


def verify(text: str, secret: str, now: float | None = None) -> TrackingToken:
    """The token's content if its signature is ours and it has not expired; else :class:`TokenError`."""
    payload, dot, signature = text.partition(".")
    if not dot or not payload or not signature:
        raise TokenError("malformed", "not a tracking token")
    if not hmac.compare_digest(signature, _signature(payload, secret)):
        raise TokenError("forged", "signature does not match")
    try:
        raw = json.loads(_unb64(payload))
        token = TrackingToken(**{_FIELDS[k]: v for k, v in raw.items()})
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed", "signed payload is not a token") from None
    if token.expires_at is not None and token.expires_at < (time.time() if now is None else now):
        raise TokenError("expired", "tracking link has expired")
    return token


def open_pixel_path(token: str) -> str:
    return f"/o/{token}.gif"


def click_path(token: str) -> str:
    return f"/c/{token}"


def push_paths(token: str) -> tuple[str, str]:
    """(delivered ack, opened) paths for app/web push."""
    return f"/p/{token}/ack", f"/p/{token}/open"


def unsubscribe_path(token: str) -> str:
    return f"/u/{token}"


def confirm_path(token: str) -> str:
    return f"/cf/{token}"
