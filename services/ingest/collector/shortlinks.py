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

from services.common.follow import TopicFollower
from services.common.settings import Settings
from services.common.topics import SHORT_LINKS, topic_name

CODE_BYTES = 6  # 8 base64url characters: 2^48 codes


def short_code(token: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), b"short-link:" + token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:CODE_BYTES]).decode()


class ShortLinkTable:
    """code -> token, filled from the topic by a follower thread."""

    def __init__(self, settings: Settings) -> None:
        self.topic = topic_name(SHORT_LINKS, settings)
        self._codes: dict[str, str] = {}
        self._follower = TopicFollower(settings, self.topic, self._apply, "short-links")

    def start(self) -> ShortLinkTable:
        self._follower.start()
        return self

    def remember(self, code: str, token: str) -> None:
        self._codes[code] = token

    def lookup(self, code: str) -> str | None:
        return self._codes.get(code)

    def _apply(self, key: bytes, value: bytes | None) -> None:
        code = key.decode(errors="replace")
        if value is None:  # tombstone: the code was withdrawn
            self._codes.pop(code, None)
        else:
            self._codes[code] = value.decode(errors="replace")

    def stop(self) -> None:
        self._follower.stop()
