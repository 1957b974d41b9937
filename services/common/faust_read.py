"""Faust's consumer reads only committed records (``isolation.level=read_committed``).

faust-streaming reads committed only when the app itself runs exactly-once; ours run
at-least-once, so its aiokafka consumer read *uncommitted*. Ingest writes ``*.valid`` exactly
once by transactions: a SIGKILLed ingest's open transaction is aborted and its records written
again, committed. Read uncommitted, the enricher enriched the aborted records as well, then met
each committed copy at a later offset of ``enricher.identity``, resolved against identity state
written in between: a record under two persons (docs/design.md, "Fault tests"). Every other
consumer here (librdkafka's default) already reads committed.

The consumer is built in ``AIOKafkaConsumerThread._create_worker_consumer`` with no setting for
this; aiokafka reads the isolation level when the consumer starts, so setting it on the new,
not yet started consumer is enough.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread


def read_committed() -> None:
    """Make every faust worker consumer created from now on read committed records only."""
    original = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, "_tagstream_read_committed", False):
        return

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._isolation_level = "read_committed"  # read by aiokafka at start()
        return consumer

    _create_worker_consumer._tagstream_read_committed = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
