"""Current segment membership from the ``segment_membership`` table (the segmenter's changes).

A person is a member of a segment when their latest change for it is ``entered``. "Latest" is by
change time, then Kafka offset: the segmenter keys changes by person id, so one person's changes
share a partition and a later offset is a later decision (ties on time stay ordered). Replayed
duplicates (same ``change_id``) do not change the answer.
"""

from __future__ import annotations

from services.segmenter.sql import quote

_LATEST = """SELECT segment_id, person_id,
    argMax(change, (event_time, _offset)) AS latest, max(event_time) AS since
  FROM segment_membership{where} GROUP BY segment_id, person_id"""


def _where(segment_id: str | None) -> str:
    return "" if segment_id is None else f" WHERE segment_id = {quote(segment_id)}"


def sizes_sql() -> str:
    """``segment_id, members`` for every segment that has ever had a change."""
    return (
        f"SELECT toString(segment_id) AS segment_id, countIf(latest = 'entered') AS members "
        f"FROM ({_LATEST.format(where='')}) GROUP BY segment_id ORDER BY segment_id"
    )


def size_sql(segment_id: str) -> str:
    return f"SELECT countIf(latest = 'entered') AS members FROM ({_LATEST.format(where=_where(segment_id))})"


def members_sql(segment_id: str, limit: int | None = None) -> str:
    """``person_id, since`` (time of the change that made them a member), by person id."""
    limit_sql = f" LIMIT {int(limit)}" if limit is not None else ""
    return (
        f"SELECT person_id, since FROM ({_LATEST.format(where=_where(segment_id))}) "
        f"WHERE latest = 'entered' ORDER BY person_id{limit_sql}"
    )
