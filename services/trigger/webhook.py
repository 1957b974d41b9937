"""``tagstream run webhook``: deliver ``outbound.webhook`` messages by HTTP, with retries and backoff.

A message's path: consume -> decode -> seen before? skip -> request (method and body from the
message, header ``Idempotency-Key: <message_id>``) -> 2xx: delivered; 408, 429, 5xx or no
response: retry after an exponential backoff, up to ``max_attempts``, then dead letter
``webhook_failed``; any other status: dead letter ``webhook_rejected`` at once. Dead letters
name the last response status. The input offset is committed only after the outcome (delivery,
or the dead letter acknowledged), so a crash resends the same request with the same key;
receivers deduplicate on ``Idempotency-Key``. Retries block the partition (order is kept).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import Counter, Histogram
from pydantic import Field

from services.common.kafka import make_consumer, make_producer
from services.common.logs import configure_logging, get_logger
from services.common.runtime import HealthServer, StopFlag
from services.common.serde import Serde, SerdeError
from services.common.settings import Settings
from services.common.steps import Rejection, SourcePosition, dead_letter
from services.common.topics import DEAD_LETTERS, OUTBOUND_TOPICS, topic_name

log = get_logger("webhook")
DEFAULT_HEALTH_PORT = 9107
WEBHOOK = next(t for t in OUTBOUND_TOPICS if t.name == "outbound.webhook")
RECENT_IDS = 10_000  # message ids delivered by this process (a replay after a rebalance is skipped)

DELIVERIES = Counter("tagstream_webhook_deliveries_total", "Webhook messages by outcome.", ["outcome"])
ATTEMPTS = Counter("tagstream_webhook_attempts_total", "HTTP attempts by status (or 'error').", ["status"])
REQUEST_SECONDS = Histogram(
    "tagstream_webhook_request_seconds",
    "Duration of one HTTP attempt.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class WebhookSettings(Settings):
    webhook_group_id: str = Field(
        default="tagstream-webhook", description="Consumer group (after the prefix)."
    )
    webhook_max_attempts: int = Field(default=5, description="Attempts before a message is dead-lettered.")
    webhook_backoff_s: float = Field(default=0.5, description="First retry delay; doubles per attempt.")
    webhook_backoff_max_s: float = Field(default=30.0, description="Longest retry delay.")
    webhook_timeout_s: float = Field(default=5.0, description="Timeout of one HTTP attempt.")


@dataclass(frozen=True)
class Delivery:
    outcome: str  # delivered, rejected, failed
    status: int | None  # last HTTP status, None: no response
    attempts: int


def retryable(status: int | None) -> bool:
    return status is None or status in (408, 429) or status >= 500


def deliver(
    send: Callable[[], int | None],
    max_attempts: int,
    backoff_s: float,
    backoff_max_s: float,
    wait: Callable[[float], bool],
) -> Delivery:
    """Call ``send`` until a 2xx, a final refusal or ``max_attempts``; ``wait`` returns True to stop."""
    status: int | None = None
    for attempt in range(1, max_attempts + 1):
        status = send()
        if status is not None and 200 <= status < 300:
            return Delivery("delivered", status, attempt)
        if not retryable(status):
            return Delivery("rejected", status, attempt)
        if attempt < max_attempts and wait(min(backoff_max_s, backoff_s * 2 ** (attempt - 1))):
            return Delivery("interrupted", status, attempt)
    return Delivery("failed", status, max_attempts)


def http_sender(client: httpx.Client, message: dict[str, Any]) -> Callable[[], int | None]:
    content = message["content"]

    def send() -> int | None:
        started = time.perf_counter()
        try:
            response = client.request(
                content.get("method") or "POST",
                message["destination"],
                content=content.get("body", "").encode(),
                headers={"Idempotency-Key": message["message_id"], "Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            ATTEMPTS.labels("error").inc()
            log.info("webhook attempt failed", extra={"error": type(exc).__name__})
            return None
        finally:
            REQUEST_SECONDS.observe(time.perf_counter() - started)
        ATTEMPTS.labels(str(response.status_code)).inc()
        return response.status_code

    return send


class Sender:
    def __init__(self, s: WebhookSettings, stop: StopFlag) -> None:
        self.s, self.stop, self.serde = s, stop, Serde(registry_url=s.schema_registry_url)
        self.consumer = make_consumer(s, f"{s.topic_prefix}{s.webhook_group_id}")
        self.producer = make_producer(s)
        self.client = httpx.Client(timeout=s.webhook_timeout_s)
        self.recent: OrderedDict[str, None] = OrderedDict()
        self.dead_letters = topic_name(DEAD_LETTERS, s)

    def run(self, on_ready: Callable[[], None]) -> None:
        self.consumer.subscribe([topic_name(WEBHOOK, self.s)])
        on_ready()
        while not self.stop.is_set:
            for message in self.consumer.consume(100, timeout=0.5):
                if message.error():
                    continue
                if not self.process(message):
                    return  # stopping mid-retry: not committed, the next owner resends
                self.consumer.commit(message=message, asynchronous=False)

    def process(self, message: Any) -> bool:
        source = SourcePosition(
            message.topic(), message.partition(), message.offset(), message.key(), message.value()
        )
        try:
            _, record = self.serde.decode(source.value)
        except SerdeError as exc:
            return self._dead(source, None, Rejection("undecodable", str(exc), "decode"))
        msg_id = record["message_id"]
        if msg_id in self.recent:
            DELIVERIES.labels("duplicate").inc()
            return True
        result = deliver(
            http_sender(self.client, record),
            self.s.webhook_max_attempts,
            self.s.webhook_backoff_s,
            self.s.webhook_backoff_max_s,
            self.stop.wait,
        )
        if result.outcome == "interrupted":
            return False
        DELIVERIES.labels(result.outcome).inc()
        log.info(
            "webhook " + result.outcome,
            extra={"campaign": record["campaign_id"], "status": result.status, "attempts": result.attempts},
        )
        if result.outcome != "delivered":
            reason = "webhook_rejected" if result.outcome == "rejected" else "webhook_failed"
            status = result.status or "no response"
            text = f"{record['campaign_id']}: HTTP {status} after {result.attempts} attempts"
            if not self._dead(source, msg_id, Rejection(reason, text, "deliver")):
                return False
        self.recent[msg_id] = None
        while len(self.recent) > RECENT_IDS:
            self.recent.popitem(last=False)
        return True

    def _dead(self, source: SourcePosition, msg_id: str | None, rejection: Rejection) -> bool:
        letter = dead_letter("webhook", rejection.step, rejection, source, msg_id)
        value = self.serde.encode("dead_letter", letter, topic=self.dead_letters)
        self.producer.produce(self.dead_letters, key=source.key, value=value)
        return self.producer.flush(30) == 0

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(30)
        self.client.close()


def run() -> int:
    settings = WebhookSettings()
    configure_logging("webhook", settings.log_level)
    stop = StopFlag().install()
    ready = StopFlag()  # a flag we set once subscribed
    health = HealthServer(
        settings.health_host, settings.health_port_or(DEFAULT_HEALTH_PORT), ready=lambda: ready.is_set
    ).start()
    log.info("webhook sender starting", extra={"health_port": health.port})
    sender = Sender(settings, stop)
    try:
        sender.run(ready.set)
    finally:
        sender.close()
        health.stop()
        log.info("webhook sender stopped")
    return 0
