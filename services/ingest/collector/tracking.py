"""Tracking-link routes: open pixel, click redirect, short links, push ack/open, unsubscribe, confirm.

Every route verifies the token first; a forged, malformed or expired token is refused (403 or
410) and never redirects. The open pixel is the exception that answers a 1x1 GIF whatever the
token, at once: its receipt is produced in the background (a mail client does not wait).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.common.logs import get_logger
from services.ingest.collector import links, metrics
from services.ingest.collector.producer import DeliveryFailed
from services.ingest.collector.replies import basic_username, error
from services.ingest.collector.shortlinks import short_code
from services.ingest.collector.tokens import TokenError, TrackingToken, verify

if TYPE_CHECKING:
    from services.ingest.collector.app import Collector, Handler

log = get_logger(__name__)
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache"}


def _page(status: int, text: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><title>{text}</title><p>{text}</p>", status_code=status)


def _refused(exc: TokenError) -> HTMLResponse:
    metrics.TOKENS_REFUSED.labels(exc.reason).inc()
    if exc.reason == "expired":
        return _page(410, "This link has expired.")
    return _page(403, "This link is not valid.")


def _context(request: Request) -> dict[str, str]:
    context = {"user_agent": request.headers.get("user-agent", "")}
    if request.client:
        context["ip"] = request.client.host
    return {k: v for k, v in context.items() if v}


def routes(collector: Collector) -> list[tuple[str, Handler, list[str]]]:
    secret = collector.secret

    def token_of(text: str) -> TrackingToken:
        if not secret:
            raise TokenError("malformed", "no tracking secret configured")
        return verify(text, secret)

    def now_ms() -> int:
        return int(time.time() * 1000)

    async def open_pixel(request: Request) -> Response:
        try:
            token = token_of(request.path_params["token"])
        except TokenError as exc:
            metrics.TOKENS_REFUSED.labels(exc.reason).inc()
            return Response(GIF, media_type="image/gif", headers=NO_CACHE)
        record = links.receipt(token, "opened", now_ms(), _context(request))
        if record:
            collector.in_background([record])
        return Response(GIF, media_type="image/gif", headers=NO_CACHE)

    async def read_pixel(request: Request) -> Response:
        """The second pixel: the response is held back; still connected after the delay -> read."""
        try:
            token = token_of(request.path_params["token"])
        except TokenError as exc:
            metrics.TOKENS_REFUSED.labels(exc.reason).inc()
            return Response(GIF, media_type="image/gif", headers=NO_CACHE)
        deadline = time.monotonic() + collector.settings.collector_read_delay_s
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                return Response(GIF, media_type="image/gif", headers=NO_CACHE)
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        record = links.receipt(token, "read", now_ms(), _context(request))
        if record:
            collector.in_background([record])
        return Response(GIF, media_type="image/gif", headers=NO_CACHE)

    async def follow(request: Request, text: str) -> Response:
        try:
            token = token_of(text)
        except TokenError as exc:
            return _refused(exc)
        if not token.url or urlsplit(token.url).scheme not in ("http", "https"):
            return _page(404, "This link has no destination.")
        try:
            await collector.produce(links.click_records(token, now_ms(), _context(request)))
        except DeliveryFailed as exc:
            # The person still gets where they were going; the click is counted as lost.
            metrics.DELIVERY_FAILURES.inc()
            log.warning("click not recorded", extra={"error": str(exc)})
        return RedirectResponse(token.url, status_code=302, headers=NO_CACHE)

    async def click(request: Request) -> Response:
        return await follow(request, request.path_params["token"])

    async def short(request: Request) -> Response:
        token = collector.short_links.lookup(request.path_params["code"])
        if token is None:
            return _page(404, "This link does not exist.")
        return await follow(request, token)

    def receipt_route(status: str, ok: Any) -> Handler:
        async def handle(request: Request) -> Response:
            try:
                token = token_of(request.path_params["token"])
            except TokenError as exc:
                return _refused(exc)
            record = links.receipt(token, status, now_ms(), _context(request))
            if record is None:
                return _page(400, f"A {token.channel} message has no '{status}' status.")
            try:
                await collector.produce([record])
            except DeliveryFailed:
                metrics.DELIVERY_FAILURES.inc()
                return _page(503, "Please try again in a moment.")
            return ok()

        return handle

    async def issue_short_link(request: Request) -> Response:
        if basic_username(request) not in collector.write_keys:
            return error(401, "unauthorized", "missing or unknown write key")
        try:
            body = json.loads(await request.body())
            text = body["token"]
            token_of(text)
        except (ValueError, KeyError, TypeError):
            return error(400, "schema_violation", "token: required, a signed tracking token")
        except TokenError as exc:
            return error(400, "schema_violation", f"token: {exc}")
        code = short_code(text, secret)
        try:
            assert collector.producer is not None
            await collector.producer.send_all([(collector.short_links.topic, code.encode(), text.encode())])
        except DeliveryFailed:
            return error(503, "unavailable", "broker did not acknowledge; retry later")
        collector.short_links.remember(code, text)
        return JSONResponse({"code": code, "path": f"/s/{code}"})

    return [
        ("/o/{token}.gif", open_pixel, ["GET"]),
        ("/r/{token}.gif", read_pixel, ["GET"]),
        ("/c/{token}", click, ["GET"]),
        ("/s/{code}", short, ["GET"]),
        ("/p/{token}/ack", receipt_route("delivered", lambda: Response(status_code=204)), ["GET", "POST"]),
        ("/p/{token}/open", receipt_route("opened", lambda: Response(status_code=204)), ["GET", "POST"]),
        ("/u/{token}", receipt_route("unsubscribed", lambda: _page(200, "You are unsubscribed.")), ["GET"]),
        ("/cf/{token}", receipt_route("confirmed", lambda: _page(200, "Subscription confirmed.")), ["GET"]),
        ("/v1/shortlinks", issue_short_link, ["POST"]),
    ]
