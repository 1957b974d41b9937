"""Every way a request can be refused gets its status code and a reason; a 200 means acknowledged."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading

import httpx
import pytest

from services.common.topics import EVENTS, TAGS
from tests.collector_support import WRITE_KEY, collector_settings, read_records, running_collector
from tests.conftest import free_port, settings_env
from tests.helpers import wait_until

TRACK = {"type": "track", "event": "Viewed", "userId": "u-1"}


@pytest.fixture
def collector(settings):
    with running_collector(collector_settings(settings)) as base:
        yield base


def post(base: str, path: str, body, auth=(WRITE_KEY, ""), **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(base + path, content=content, auth=auth, timeout=30, **kwargs)


@pytest.mark.integration
def test_bad_requests_get_their_status_codes(collector):
    """401 missing/unknown key, 400 malformed JSON or a bad field (named), 413 per message and batch."""
    missing = post(collector, "/v1/track", TRACK, auth=None)
    assert (missing.status_code, missing.json()["code"]) == (401, "unauthorized")
    assert post(collector, "/v1/track", TRACK, auth=("nope", "")).status_code == 401
    assert post(collector, "/v1/track", {**TRACK, "writeKey": "nope"}, auth=None).status_code == 401
    assert post(collector, "/v1/track", {**TRACK, "writeKey": WRITE_KEY}, auth=None).status_code == 200

    malformed = post(collector, "/v1/track", b'{"event": "x",')
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["message"]
    no_event = post(collector, "/v1/track", {"userId": "u-1"})
    assert no_event.status_code == 400 and no_event.json()["message"].startswith("event:")
    batch = post(collector, "/v1/batch", {"batch": [TRACK, {**TRACK, "timestamp": "soon"}]})
    assert batch.status_code == 400 and batch.json()["message"].startswith("batch[1].timestamp:")
    no_id = post(collector, "/v1/identify", {"traits": {"plan": "pro"}})
    assert no_id.status_code == 400 and "userId" in no_id.json()["message"]

    big_message = {**TRACK, "properties": {"blob": "x" * 33_000}}
    too_big = post(collector, "/v1/batch", {"batch": [TRACK, big_message]})
    assert too_big.status_code == 413 and too_big.json()["message"].startswith("batch[1]:")
    assert post(collector, "/v1/track", big_message).status_code == 413
    small = {**TRACK, "properties": {"blob": "x" * 20_000}}
    assert post(collector, "/v1/batch", {"batch": [small] * 26}).status_code == 413
    assert post(collector, "/v1/batch", {"batch": [small] * 20}).status_code == 200


@pytest.mark.integration
def test_gzip_bodies_are_accepted_and_a_gzip_bomb_is_refused(settings, collector):
    """A gzipped body is read like a plain one; one inflating past 500 KB is a 413, not a crash."""
    body = gzip.compress(json.dumps({**TRACK, "messageId": "gz-1"}).encode())
    ok = post(collector, "/v1/track", body, headers={"Content-Encoding": "gzip"})
    assert ok.status_code == 200
    assert read_records(settings, EVENTS, 1)[0]["message_id"] == "gz-1"
    bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")
    assert post(collector, "/v1/batch", bomb, headers={"Content-Encoding": "gzip"}).status_code == 413
    assert post(collector, "/v1/track", b"not gzip", headers={"Content-Encoding": "gzip"}).status_code == 400


@pytest.mark.integration
def test_a_key_over_its_rate_gets_429_with_retry_after(settings):
    """Past its burst a key is refused with Retry-After; another key is unaffected."""
    limited = collector_settings(settings, collector_rate_per_key=0.5, collector_burst_per_key=3)
    with running_collector(limited) as base:
        assert post(base, "/v1/batch", {"batch": [TRACK] * 3}).status_code == 200
        refused = post(base, "/v1/track", TRACK)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert post(base, "/v1/track", TRACK, auth=("wk_other", "")).status_code == 200


@pytest.mark.integration
def test_unreachable_broker_means_503_never_200(settings):
    """With no broker to acknowledge, the collector answers 503 and is not ready."""
    dead = collector_settings(
        settings, kafka_bootstrap=f"127.0.0.1:{free_port()}", collector_delivery_timeout_s=1.0
    )
    with running_collector(dead, wait_ready=False) as base:
        assert httpx.get(base + "/readyz", timeout=10).status_code == 503
        response = post(base, "/v1/track", TRACK)
        assert (response.status_code, response.json()["code"]) == (503, "unavailable")


@pytest.mark.integration
def test_cors_metrics_and_health(collector):
    """Browsers may call the API cross-origin; /metrics counts requests by route and status."""
    preflight = httpx.options(
        collector + "/v1/batch",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] in ("*", "https://shop.example")
    assert post(collector, "/v1/track", TRACK, headers={"Origin": "https://shop.example"}).status_code == 200
    assert post(collector, "/v1/track", {}).status_code == 400
    assert httpx.get(collector + "/healthz").status_code == 200
    page = httpx.get(collector + "/metrics").text
    assert 'collector_requests_total{route="/v1/track",status="200"}' in page
    assert 'collector_requests_total{route="/v1/track",status="400"}' in page
    assert 'collector_request_seconds_bucket{le="0.005",route="/v1/track"}' in page


@pytest.mark.integration
def test_sigterm_stops_the_service_and_every_acknowledged_record_is_on_the_topic(settings, tmp_path):
    """SIGTERM mid-load: the collector exits 0 and every request it answered 200 is on the broker."""
    port = free_port()
    env = settings_env(settings) | {
        "TAGSTREAM_COLLECTOR_PORT": str(port),
        "TAGSTREAM_COLLECTOR_WRITE_KEYS": f"{WRITE_KEY}=web",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run", "collector"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(base + "/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout=60, what="collector subprocess ready")
        acknowledged: list[str] = []
        lock = threading.Lock()

        def sender(worker: int) -> None:
            # Keep sending until the collector stops answering; remember what got a 200.
            with httpx.Client(auth=(WRITE_KEY, ""), timeout=30) as client:
                for i in range(10_000):
                    message_id = f"t-{worker}-{i}"
                    tag = {
                        "name": "registration_complete",
                        "installId": f"dev-{worker}",
                        "messageId": message_id,
                    }
                    try:
                        response = client.post(base + "/v1/tag", json=tag)
                    except httpx.TransportError:
                        return
                    if response.status_code == 200:
                        with lock:
                            acknowledged.append(message_id)

        senders = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
        for thread in senders:
            thread.start()
        wait_until(lambda: len(acknowledged) >= 40, timeout=60, what="40 acknowledged requests")
        process.send_signal(signal.SIGTERM)  # while requests are in flight
        assert process.wait(timeout=60) == 0
        for thread in senders:
            thread.join(timeout=60)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        stderr = process.stderr.read() if process.stderr else ""
    assert len(acknowledged) >= 40, stderr

    def every_acknowledged_one(records: list[dict]) -> bool:
        return set(acknowledged) <= {r["message_id"] for r in records}

    read_records(settings, TAGS, until=every_acknowledged_one)
    assert '"event": "collector stopped"' in stderr
