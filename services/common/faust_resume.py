"""A fix for how faust-streaming resumes its streams after a rebalance: records were lost.

At the end of a rebalance faust's ``Recovery`` (``on_recovery_completed`` after reading the
changelogs, ``_resume_streams`` when there was nothing to read) resumes the stream partitions,
then seeks them to the committed offsets, then calls ``app.flow_control.resume()``, which empties
every stream's queue (meant for records of the old assignment). But flow is already active then
(the changelogs were just read through it): between the resume and that emptying, the fetcher
reads the new partitions and puts records in the queues. The agent takes the first one at once;
the ones queued behind it are emptied away while faust has already counted them as read, so they
are not read again, and the next record read is taken for one after a gap (a transaction marker):
the commit passes the lost records as if handled. Seen in the segmenter's oracle (two instances,
`DEBUG` event logs against the topics): after the second rebalance, per newly assigned partition
the first record was applied, the second never (an `enriched` fact, a merge hand-over request),
two to five records per run. A lost fact is a wrong membership for a person in no merge; a lost
hand-over leaves the merged-away person a member; with two records lost at the head of a
partition faust never commits it again (a drain that times out).

The patch keeps faust's steps and reorders them: seek, empty the queues, and only then resume the
stream partitions and the flow, so the first records read are the committed ones, into empty
queues. Applied only to the versions checked to have the bug (tests/unit/test_faust_resume.py
fails on an unknown version, so an upgrade is checked).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust
from faust.tables.recovery import Recovery

# Versions whose Recovery resumes stream partitions before seeking and emptying the queues.
AFFECTED = frozenset({"0.15.3"})


async def _seek_then_resume(self: Any, assignment: set[Any]) -> None:
    """Faust's end of a rebalance with the stream partitions resumed last (see module doc)."""
    app, consumer = self.app, self.app.consumer
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
    self.completed.set()
    app.flow_control.resume()  # empties the queues: nothing of the new assignment is in them yet
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    consumer.resume_flow()
    await cast(Any, app)._fetcher.maybe_start()  # make sure the fetcher is running


async def _resume_streams(self: Any, generation_id: int = 0) -> None:
    app = self.app
    await app.on_rebalance_complete.send()
    assignment = app.consumer.assignment()
    if app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return
    await _seek_then_resume(self, assignment)
    self.tables.on_actives_ready()
    self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    app = self.app
    self.log.info("Restore complete!")
    await app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callbacks = [
        asyncio.ensure_future(
            table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])
        )
        for table in self.tables.values()
    ]
    if callbacks:
        await asyncio.wait(callbacks)
    assignment = app.consumer.assignment()
    if app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id {app.consumer_generation_id} param {generation_id}"
        )
        return
    await _seek_then_resume(self, assignment)
    self.tables.on_actives_ready()
    if not app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


def fix_stream_resume() -> bool:
    """Make faust resume stream partitions after seeking and emptying the queues; whether the
    patch is on."""
    if faust.__version__ not in AFFECTED:
        return False
    if getattr(Recovery._resume_streams, "_tagstream_fixed", False):
        return True
    for fixed in (_resume_streams, on_recovery_completed):
        fixed._tagstream_fixed = True  # type: ignore[attr-defined]
    Recovery._resume_streams = _resume_streams  # type: ignore[method-assign]
    Recovery.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]
    return True
