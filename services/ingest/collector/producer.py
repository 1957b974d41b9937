"""confluent-kafka's Producer bridged to asyncio: ``await send_all(...)`` returns only once the
broker acknowledged every record (acks=all, idempotent), or raises :class:`DeliveryFailed`.

librdkafka calls delivery callbacks from ``poll()``; a daemon thread polls and hands each
result to the event loop with ``call_soon_threadsafe``. ``message.timeout.ms`` bounds how long a
record may wait for an unreachable broker, so a request gets its 503 in bounded time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from services.common.kafka import make_producer
from services.common.settings import Settings


class DeliveryFailed(Exception):
    """The broker did not acknowledge a record (unreachable, timed out, queue full)."""


class AsyncProducer:
    def __init__(self, settings: Settings, delivery_timeout_s: float) -> None:
        self._timeout_s = delivery_timeout_s
        self._producer: Producer = make_producer(
            settings, **{"message.timeout.ms": max(1000, int(delivery_timeout_s * 1000))}
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send_all(self, records: Iterable[tuple[str, bytes | None, bytes]]) -> None:
        """Produce ``(topic, key, value)`` records; return once all are acknowledged."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []

        def callback_for(future: asyncio.Future[None]) -> Any:
            def on_delivery(error: KafkaError | None, _message: Message) -> None:
                loop.call_soon_threadsafe(_settle, future, error)

            return on_delivery

        try:
            for topic, key, value in records:
                future: asyncio.Future[None] = loop.create_future()
                self._producer.produce(topic, value=value, key=key, on_delivery=callback_for(future))
                futures.append(future)
        except (BufferError, KafkaException) as exc:
            # Already-queued records may still be delivered: the client retries with the same
            # messageIds, which ingest deduplicates.
            raise DeliveryFailed(f"producer refused the record: {exc}") from None
        try:
            # librdkafka times each record out itself; this bound only guards a stuck poll thread.
            await asyncio.wait_for(asyncio.gather(*futures), self._timeout_s + 5)
        except TimeoutError:
            raise DeliveryFailed("no acknowledgement from the broker in time") from None

    def reachable(self, timeout: float = 2.0) -> bool:
        try:
            self._producer.list_topics(timeout=timeout)
            return True
        except KafkaException:
            return False

    def close(self, timeout: float = 30.0) -> int:
        """Flush what is queued, stop polling; returns the number of records left undelivered."""
        left = self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=5)
        # Drop the client now: librdkafka's threads live (and reconnect) until it is freed.
        del self._producer
        return left


def _settle(future: asyncio.Future[None], error: KafkaError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(DeliveryFailed(f"broker did not acknowledge: {error.str()}"))
