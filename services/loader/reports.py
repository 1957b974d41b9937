"""The analytics reports, as ClickHouse SQL with bound parameters.

Every report takes ``since`` / ``until`` (event time, UTC, half-open) and ``app`` ('' = all
apps); ``person_tags`` also takes ``person`` (any identifier, or a person id) and ``search``.
A person is the enricher's person id (loaded from ``enriched``, the default source) mapped to
the id it was merged into (``ddl.surviving_person``), else the record's strongest identifier
(``identity_key``, ``*.valid`` source).
"Activity" is any event or tag hit. Location visits come from ``geofence_transitions`` (the
enricher's GPS- and device-reported transitions) plus, for rows loaded from ``locations.valid``,
the device-reported enter/exit in ``locations``; transitions carry no app, so ``--app`` keeps
only the latter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.loader.ddl import surviving_person

_WINDOW = (
    "event_time >= {since:DateTime64(3, 'UTC')} AND event_time < {until:DateTime64(3, 'UTC')} "
    "AND ({app:String} = '' OR app_id = {app:String})"
)
_PERSON = f"if(person_id IS NULL, identity_key, {surviving_person('assumeNotNull(person_id)')})"
# Region transitions, each once: with person_id (enriched source) they are in geofence_transitions.
_TRANSITIONS = f"""visits AS (
    SELECT event_time, region_id, toString(l.kind) AS kind, {_PERSON} AS person FROM locations AS l
    WHERE {_WINDOW} AND region_id != '' AND l.kind IN ('enter', 'exit') AND person_id IS NULL
    UNION ALL
    SELECT event_time, region_id, if(g.kind = 'entered', 'enter', 'exit') AS kind,
      {surviving_person("person_id")} AS person
    FROM geofence_transitions AS g
    WHERE g.kind IN ('entered', 'exited') AND event_time >= {{since:DateTime64(3, 'UTC')}}
      AND event_time < {{until:DateTime64(3, 'UTC')}} AND {{app:String}} = '')"""
_ACTIVITY = f"""activity AS (
    SELECT {_PERSON} AS person, event_time FROM events WHERE {_WINDOW}
    UNION ALL
    SELECT {_PERSON} AS person, event_time FROM tags WHERE {_WINDOW})"""
SESSION_GAP_SECONDS = 30 * 60  # a new session starts after 30 minutes without activity

# Delivery receipt statuses (schemas/README.md) grouped into funnel stages.
OPENED = "('opened', 'read', 'viewed')"
CLICKED = "('clicked', 'link_clicked')"
BOUNCED = "('bounced', 'soft_bounced', 'hard_bounced', 'undelivered')"


@dataclass(frozen=True)
class Report:
    name: str
    description: str
    sql: str


REPORTS: dict[str, Report] = {
    r.name: r
    for r in (
        Report(
            "tags",
            "Hits and unique persons per tag per day.",
            f"""SELECT toDate(event_time) AS day, name AS tag, count() AS hits,
  uniqExact({_PERSON}) AS persons
FROM tags WHERE {_WINDOW} GROUP BY day, tag ORDER BY day, tag""",
        ),
        Report(
            "tag_values",
            "Hits and unique persons per value of each tag.",
            f"""SELECT name AS tag, ifNull(value, '') AS value, count() AS hits,
  uniqExact({_PERSON}) AS persons
FROM tags WHERE {_WINDOW} GROUP BY tag, value ORDER BY tag, hits DESC, value""",
        ),
        Report(
            "person_tags",
            "A person's tags (time, app, name, value), newest first; --person and --search filter.",
            f"""SELECT event_time AS time, app_id AS app, name AS tag, value, {_PERSON} AS person
FROM tags WHERE {_WINDOW}
  AND ({{person:String}} = '' OR {_PERSON} = {{person:String}} OR identity_key = {{person:String}}
       OR has([install_id, anonymous_id, external_user_id, email, phone], {{person:String}}))
  AND ({{search:String}} = '' OR positionCaseInsensitive(name, {{search:String}}) > 0
       OR positionCaseInsensitive(ifNull(value, ''), {{search:String}}) > 0)
ORDER BY event_time DESC, tag LIMIT 10000""",
        ),
        Report(
            "campaigns",
            "Sent → delivered → opened → clicked per campaign and channel (sends counted once per "
            "stage), rates of each stage, bounces, complaints, unsubscribes, persons reached.",
            f"""SELECT campaign_id AS campaign, channel,
  uniqExactIf(send_id, status = 'sent') AS sent,
  uniqExactIf(send_id, status = 'delivered') AS delivered,
  uniqExactIf(send_id, status IN {OPENED}) AS opened,
  uniqExactIf(send_id, status IN {CLICKED}) AS clicked,
  if(sent = 0, NULL, round(delivered / sent, 4)) AS delivery_rate,
  if(delivered = 0, NULL, round(opened / delivered, 4)) AS open_rate,
  if(delivered = 0, NULL, round(clicked / delivered, 4)) AS click_rate,
  uniqExactIf(send_id, status IN {BOUNCED}) AS bounces,
  uniqExactIf(send_id, status = 'complained') AS complaints,
  uniqExactIf(send_id, status = 'unsubscribed') AS unsubscribes,
  uniqExact({_PERSON}) AS persons
FROM message_events WHERE {_WINDOW} GROUP BY campaign, channel ORDER BY campaign, channel""",
        ),
        Report(
            "active_users",
            "Daily, weekly (7 days ending that day) and monthly (30 days) active persons.",
            f"""WITH {_ACTIVITY}
SELECT day, finalizeAggregation(state) AS dau,
  uniqExactMerge(state) OVER (ORDER BY day RANGE BETWEEN 6 PRECEDING AND CURRENT ROW) AS wau,
  uniqExactMerge(state) OVER (ORDER BY day RANGE BETWEEN 29 PRECEDING AND CURRENT ROW) AS mau
FROM (SELECT toDate(event_time) AS day, uniqExactState(person) AS state FROM activity GROUP BY day)
ORDER BY day""",
        ),
        Report(
            "session_lengths",
            f"Sessions (activity with gaps under {SESSION_GAP_SECONDS // 60} min) by length.",
            f"""WITH {_ACTIVITY},
marked AS (
  SELECT person, event_time,
    if(row_number() OVER w = 1
       OR dateDiff('second', lagInFrame(event_time) OVER w, event_time) > {SESSION_GAP_SECONDS},
       1, 0) AS starts
  FROM activity
  WINDOW w AS (PARTITION BY person ORDER BY event_time ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)),
numbered AS (
  SELECT person, event_time,
    sum(starts) OVER (PARTITION BY person ORDER BY event_time ROWS UNBOUNDED PRECEDING) AS session
  FROM marked),
sessions AS (
  SELECT person, session, dateDiff('second', min(event_time), max(event_time)) AS seconds
  FROM numbered GROUP BY person, session)
SELECT multiIf(seconds < 60, '0-1m', seconds < 300, '1-5m', seconds < 900, '5-15m',
               seconds < 1800, '15-30m', seconds < 3600, '30-60m', '60m+') AS length,
  count() AS sessions, round(avg(seconds), 1) AS avg_seconds
FROM sessions GROUP BY length ORDER BY min(seconds)""",
        ),
        Report(
            "recency_frequency",
            "Persons by days since last activity (to --until, else now) and by active days.",
            f"""WITH {_ACTIVITY},
per_person AS (
  SELECT person,
    dateDiff('day', toDate(max(event_time)), toDate(if({{until:DateTime64(3, 'UTC')}} >= '2199-01-01',
      now64(3), {{until:DateTime64(3, 'UTC')}}))) AS days_since,
    uniqExact(toDate(event_time)) AS active_days
  FROM activity GROUP BY person)
SELECT multiIf(days_since <= 1, '0-1d', days_since <= 7, '2-7d', days_since <= 30, '8-30d', '31d+')
    AS recency,
  multiIf(active_days = 1, '1 day', active_days <= 3, '2-3 days', active_days <= 7, '4-7 days', '8+ days')
    AS frequency,
  count() AS persons
FROM per_person GROUP BY recency, frequency ORDER BY min(days_since), min(active_days)""",
        ),
        Report(
            "locations",
            "Entries, exits, unique visitors and average dwell (enter → exit) per location per day.",
            f"""WITH {_TRANSITIONS},
transitions AS (
  SELECT toDate(event_time) AS day, region_id, kind, person, event_time,
    lagInFrame(kind) OVER w AS previous_kind, lagInFrame(event_time) OVER w AS previous_time
  FROM visits
  WINDOW w AS (PARTITION BY person, region_id ORDER BY event_time
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))
SELECT day, region_id AS location, countIf(kind = 'enter') AS entries, countIf(kind = 'exit') AS exits,
  uniqExact(person) AS visitors,
  if(countIf(kind = 'exit' AND previous_kind = 'enter') = 0, NULL,
     round(avgIf(dateDiff('second', previous_time, event_time),
                 kind = 'exit' AND previous_kind = 'enter'), 1))
    AS avg_dwell_seconds
FROM transitions GROUP BY day, location ORDER BY day, location""",
        ),
        Report(
            "installs",
            "Installs, installing devices and persons by attribution source (context "
            "campaign_source, utm_source, else 'organic').",
            f"""SELECT coalesce(nullIf(context['campaign_source'], ''), nullIf(context['utm_source'], ''),
    'organic') AS attribution_source,
  count() AS installs, uniqExact(identity_key) AS devices, uniqExact({_PERSON}) AS persons
FROM events WHERE {_WINDOW} AND kind = 'install' GROUP BY attribution_source ORDER BY installs DESC,
  attribution_source""",
        ),
        Report(
            "retention",
            "Cohorts by first-seen week (Monday): persons active N weeks later and the share of the cohort.",
            f"""WITH {_ACTIVITY},
firsts AS (SELECT person, toMonday(min(event_time)) AS cohort FROM activity GROUP BY person),
weekly AS (
  SELECT DISTINCT a.person AS person, f.cohort AS cohort,
    intDiv(dateDiff('day', f.cohort, toMonday(a.event_time)), 7) AS week
  FROM activity AS a INNER JOIN firsts AS f ON a.person = f.person)
SELECT cohort AS cohort_week, week AS weeks_later, count() AS persons,
  round(persons / max(persons) OVER (PARTITION BY cohort), 4) AS retained
FROM weekly GROUP BY cohort, week ORDER BY cohort, week""",
        ),
    )
}

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(2200, 1, 1, tzinfo=UTC)


def parameters(
    since: datetime | None = None,
    until: datetime | None = None,
    app: str | None = None,
    person: str | None = None,
    search: str | None = None,
) -> dict[str, Any]:
    return {
        "since": since or EPOCH,
        "until": until or FAR_FUTURE,
        "app": app or "",
        "person": person or "",
        "search": search or "",
    }
