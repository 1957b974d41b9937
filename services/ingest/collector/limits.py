"""Request limits: body size (with gzip), Segment's 32 KB per message, per-key rate limit."""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024


class TooLarge(Exception):
    """The body (or one message) is over its limit; the text says which."""


async def read_body(chunks: AsyncIterator[bytes], gzip: bool, limit: int = MAX_BATCH_BYTES) -> bytes:
    """The request body, gunzipped when ``gzip``; stop reading past ``limit`` (decompressed).

    Decompressing in bounded steps keeps a small gzip bomb from ever growing past the limit.
    """
    inflater = zlib.decompressobj(wbits=31) if gzip else None
    out = bytearray()
    async for chunk in chunks:
        if inflater is None:
            out += chunk
        else:
            data = chunk
            while data:
                out += inflater.decompress(data, limit + 1 - len(out))
                data = inflater.unconsumed_tail
                if len(out) > limit:
                    break
        if len(out) > limit:
            raise TooLarge(f"body: over the {limit // 1024} KB limit")
    if inflater is not None:
        out += inflater.flush()
        if len(out) > limit:
            raise TooLarge(f"body: over the {limit // 1024} KB limit")
    return bytes(out)


@dataclass
class _Bucket:
    tokens: float
    updated: float = field(default_factory=time.monotonic)


class RateLimiter:
    """A token bucket per write key, counted in messages."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, n: int) -> int:
        """Take ``n`` tokens: 0 when allowed, else the seconds to wait (``Retry-After``)."""
        now = time.monotonic()
        bucket = self._buckets.setdefault(key, _Bucket(self.burst, now))
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        need = min(float(n), self.burst)  # a batch bigger than the bucket passes when it is full
        if bucket.tokens >= need:
            bucket.tokens -= need
            return 0
        return max(1, math.ceil((need - bucket.tokens) / self.rate))
