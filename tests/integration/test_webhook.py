"""The webhook sender against the real broker and a local HTTP server: retries, refusals, replays."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from services.common.kafka import make_producer, make_reader
from services.common.serde import Serde
from services.common.settings import Settings
from services.common.topics import DEAD_LETTERS, OUTBOUND_TOPICS, topic_name
from tests.conftest import settings_env
from tests.helpers import ServiceProcess, wait_until

pytestmark = pytest.mark.integration
WEBHOOK = next(t for t in OUTBOUND_TOPICS if t.name == "outbound.webhook")


class Hooks:
    """A local HTTP server: /flaky answers 503 twice per message then 200, /refuse answers 400."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, bytes]] = []  # method, path, idempotency key, body
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers.get("Idempotency-Key") or ""
                hooks.requests.append((self.command, self.path, key, body))
                tries = sum(1 for r in hooks.requests if r[2] == key)
                status = 400 if self.path == "/refuse" else (503 if tries <= 2 else 200)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = _handle

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()
    yield h
    h.close()


@pytest.fixture
def sender(settings: Settings, tmp_path: Path) -> Iterator[ServiceProcess]:
    service = ServiceProcess(
        "webhook", settings_env(settings), tmp_path / "webhook.log", TAGSTREAM_WEBHOOK_BACKOFF_S="0.05"
    )
    try:
        yield service.start()
    finally:
        if service.process is not None:  # also when start() failed: never leave it running
            service.terminate()


def message(msg_id: str, url: str, method: str = "POST") -> dict[str, Any]:
    return {
        "message_id": msg_id,
        "created_time": 1_795_000_000_000,
        "person_id": "p-1",
        "campaign_id": "crm-sync",
        "channel": "webhook",
        "destination": url,
        "platform": None,
        "content": {"url": url, "body": '{"person": "p-1"}', "method": method},
        "tracking_token": None,
        "transactional": False,
        "trigger_event_id": "ev-1",
        "trigger_kind": "event",
        "trigger_name": "order",
        "trigger_time": 1_795_000_000_000,
        "send_slot": None,
    }


def produce(settings: Settings, *records: dict[str, Any]) -> None:
    serde, producer = Serde(), make_producer(settings)
    for record in records:
        producer.produce(
            topic_name(WEBHOOK, settings), key=b"p-1", value=serde.encode("outbound_message", record)
        )
    producer.flush(30)


def dead_letters(settings: Settings, count: int) -> list[dict[str, Any]]:
    serde, reader, found = Serde(), make_reader(settings), []
    reader.subscribe([topic_name(DEAD_LETTERS, settings)])
    try:

        def enough() -> bool:
            for m in reader.consume(100, timeout=0.2):
                if not m.error():
                    found.append(serde.decode(m.value())[1])
            return len(found) >= count

        wait_until(enough, what=f"{count} dead letters")
    finally:
        reader.close()
    return found


def test_retries_until_delivered_and_refusals_become_dead_letters(
    sender: ServiceProcess, hooks: Hooks, settings: Settings
):
    """503s are retried with the same Idempotency-Key until 200; a 400 is a dead letter naming the status."""
    produce(
        settings,
        message("msg-flaky", f"{hooks.url}/flaky", "PUT"),
        message("msg-refused", f"{hooks.url}/refuse"),
    )
    [letter] = dead_letters(settings, 1)
    assert (letter["service"], letter["reason"], letter["message_id"]) == (
        "webhook",
        "webhook_rejected",
        "msg-refused",
    )
    assert "HTTP 400" in letter["message"]
    flaky = [r for r in hooks.requests if r[2] == "msg-flaky"]
    assert [(r[0], r[1]) for r in flaky] == [("PUT", "/flaky")] * 3  # two 503s, then the 200
    assert flaky[-1][3] == b'{"person": "p-1"}'
    assert [r[2] for r in hooks.requests if r[1] == "/refuse"] == ["msg-refused"]  # not retried
    # A replayed copy of a delivered message (the trigger's crash window) is not delivered again.
    produce(
        settings,
        message("msg-flaky", f"{hooks.url}/flaky", "PUT"),
        message("msg-marker", f"{hooks.url}/flaky"),
    )
    wait_until(lambda: any(r[2] == "msg-marker" for r in hooks.requests), what="the marker delivered")
    assert len([r for r in hooks.requests if r[2] == "msg-flaky"]) == 3


def test_unreachable_endpoint_ends_in_a_dead_letter_after_max_attempts(
    settings: Settings, tmp_path: Path, hooks: Hooks
):
    """Nobody listening: the attempts run out and the dead letter says there was no response."""
    service = ServiceProcess(
        "webhook",
        settings_env(settings),
        tmp_path / "webhook.log",
        TAGSTREAM_WEBHOOK_BACKOFF_S="0.05",
        TAGSTREAM_WEBHOOK_MAX_ATTEMPTS="3",
    )
    hooks.close()  # the port is closed now
    with service:
        produce(settings, message("msg-nobody", f"{hooks.url}/flaky"))
        [letter] = dead_letters(settings, 1)
    assert letter["reason"] == "webhook_failed" and "no response after 3 attempts" in letter["message"]
