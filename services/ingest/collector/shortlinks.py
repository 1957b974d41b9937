"""SMS short links: ``/s/<code>`` -> a signed click token, kept in the compacted ``short-links`` topic.

A code is derived from the token with the tracking secret (HMAC), so issuing the same link twice
gives the same code and codes cannot be guessed from tokens without the secret. Every collector
reads the whole topic into memory in a background thread and keeps following it, so a code
issued through any collector (or produced by the trigger service itself with :func:`short_code`)
resolves everywhere. An unknown code is a 404, never a redirect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from services.common.kafka import make_reader
from services.common.logs import get_logger
from services.common.settings import Settings
from services.common.topics import SHORT_LINKS, topic_name

CODE_BYTES = 6  # 8 base64url characters: 2^48 codes
log = get_logger(__name__)


def short_code(token: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), b"short-link:" + token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:CODE_BYTES]).decode()


class ShortLinkTable:
    """code -> token, filled from the topic by a follower thread."""

    def __init__(self, settings: Settings) -> None:
        self.topic = topic_name(SHORT_LINKS, settings)
        self._settings = settings
        self._codes: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="short-links", daemon=True)

    def start(self) -> ShortLinkTable:
        self._thread.start()
        return self

    def remember(self, code: str, token: str) -> None:
        self._codes[code] = token

    def lookup(self, code: str) -> str | None:
        return self._codes.get(code)

    def _follow(self) -> None:
        consumer = make_reader(self._settings)
        try:
            while not self._stop.is_set():
                try:
                    partitions = consumer.list_topics(self.topic, timeout=5).topics[self.topic].partitions
                    break
                except (KafkaException, KeyError):
                    if self._stop.wait(1.0):
                        return
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            while not self._stop.is_set():
                message = consumer.poll(0.5)
                if message is None or message.error() or message.key() is None:
                    continue
                code = message.key().decode(errors="replace")
                if message.value() is None:  # tombstone: the code was withdrawn
                    self._codes.pop(code, None)
                else:
                    self._codes[code] = message.value().decode(errors="replace")
        except Exception:  # the table must never take the collector down; lookups just miss
            log.exception("short-link follower stopped")
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
