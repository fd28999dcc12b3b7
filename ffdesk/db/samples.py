"""Throughput samples for the console's graphs: written by every node's heartbeat, read by the
desktop app (a window of history at once, then the new rows every few seconds).

Two kinds of rows in one table (migration 0002): a node row per node per heartbeat (its fps and
running jobs) and, once per interval, a cluster row (queue depth, running jobs, total fps, jobs
finished / failed / claimed since the previous cluster row, time-in-queue median and p95).
Whichever node's heartbeat comes first after the interval writes the cluster row; the others
skip it without waiting. History survives restarts, so a console opened now shows the past hour
at once; rows older than the retention are deleted by the cluster-row writer, a batch per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import psycopg

Conn = psycopg.AsyncConnection[Any]

# pg_try_advisory_xact_lock key for the cluster row: "ffdesks" in ASCII (migrate.py uses
# "ffdesk"), so the two never collide.
CLUSTER_LOCK_KEY = 0x66666465736B73
# A beat may arrive a little early (sleep jitter, clocks): without slack a lone node would
# write the cluster row only every other beat.
INTERVAL_SLACK = 0.8
# After an outage the first cluster row counts at most this many intervals back: the rate it
# reports stays a rate over a short span, not an average over the outage.
MAX_SPAN_INTERVALS = 3
# Rows deleted per cluster row: far more than are written per interval by any real cluster,
# so retention keeps up, while one statement never deletes a large backlog at once.
PURGE_BATCH = 500
MAX_POINTS = 1000  # per series, whatever the window: what the GUI draws without effort
# Bucket widths (seconds) for history: round numbers keep buckets on whole minutes etc.
_NICE_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 60, 90, 120, 180, 300, 600, 900, 1800, 3600)

_RECORD_SQL = """
WITH me AS (
    INSERT INTO samples (at, node, fps, running)
    SELECT now(), %(node)s, coalesce(sum(fps), 0), count(*)
      FROM jobs WHERE node_session = %(session)s AND state = 'running'
), clock AS (
    -- Race-free "at most one cluster row per interval": the UPDATE re-checks its condition on
    -- the newest version of the row when another writer committed after our snapshot. The
    -- advisory lock (taken only once the interval is over: CASE fixes the order) makes the
    -- losers skip instead of queueing behind the winner's row lock.
    UPDATE sample_clock
       SET prev_at = at, at = now()
     WHERE CASE WHEN at <= now() - make_interval(secs => %(min_gap)s)
                THEN pg_try_advisory_xact_lock(%(key)s) ELSE false END
    RETURNING greatest(prev_at, now() - make_interval(secs => %(max_span)s)) AS since
), cluster AS (
    -- Runs only when clock returned a row (the lateral subqueries depend on it, the scalar
    -- one is an init plan evaluated on first use): a node that does not write the cluster
    -- row reads nothing but its own running jobs.
    INSERT INTO samples (at, node, fps, running, queued, span_s, finished, failed, claimed,
                         queue_p50, queue_p95)
    SELECT now(), NULL, r.fps, r.running,
           (SELECT count(*) FROM jobs WHERE state = 'queued'),
           extract(epoch FROM now() - clock.since),
           f.finished, f.failed, w.claimed, w.p[1], w.p[2]
      FROM clock
     CROSS JOIN LATERAL (
           SELECT coalesce(sum(fps), 0) AS fps, count(*) AS running
             FROM jobs WHERE state = 'running' AND clock.since IS NOT NULL) r
     CROSS JOIN LATERAL (
           -- Ended on a node (a cancel is not throughput). The upper bound keeps a job that
           -- finished after our now() for the next row, which starts counting there.
           SELECT count(*) AS finished, count(*) FILTER (WHERE state <> 'succeeded') AS failed
             FROM jobs
            WHERE finished_at > clock.since AND finished_at <= now()
              AND state IN ('succeeded', 'failed', 'dead')) f
     CROSS JOIN LATERAL (
           -- Time in queue of each claim: from when the job could first run (submitted,
           -- deferred, retried) or its previous attempt ended (a rescue re-queues it).
           SELECT count(*) AS claimed,
                  percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY wait) AS p
             FROM (SELECT greatest(extract(epoch FROM a.claimed_at - greatest(
                              j.created_at, j.not_before, prev.finished_at)), 0) AS wait
                     FROM attempts a
                     JOIN jobs j ON j.id = a.job_id
                     LEFT JOIN LATERAL (
                          SELECT max(p.finished_at) AS finished_at FROM attempts p
                           WHERE p.job_id = a.job_id AND p.id < a.id) prev ON true
                    WHERE a.claimed_at > clock.since AND a.claimed_at <= now()) waits) w
    RETURNING at
), purge AS (
    -- The oldest rows, a batch at most, by a range on samples_at_idx (a ctid list would let
    -- the planner scan the whole table on every beat).
    DELETE FROM samples
     WHERE EXISTS (SELECT FROM clock)
       AND at < now() - make_interval(secs => %(retention)s)
       AND at <= coalesce((SELECT at FROM samples
                            WHERE at < now() - make_interval(secs => %(retention)s)
                            ORDER BY at OFFSET %(batch)s - 1 LIMIT 1), 'infinity')
)
SELECT count(*) FROM cluster
"""


async def record(
    conn: Conn, *, node: str, session: str, interval_s: float, retention_h: float = 24
) -> bool:
    """Write this node's sample and, when it is due, the cluster's; one statement.

    Call it from the heartbeat, every ``interval_s`` seconds (the heartbeat period). Returns
    whether this call wrote the cluster row (at most one per ~``interval_s`` cluster-wide,
    however many nodes call at the same moment). Commits.
    """
    cur = await conn.execute(
        _RECORD_SQL,  # type: ignore[arg-type]  # constant text, parameters bound
        {
            "node": node,
            "session": session,
            "min_gap": interval_s * INTERVAL_SLACK,
            "key": CLUSTER_LOCK_KEY,
            "max_span": interval_s * MAX_SPAN_INTERVALS,
            "retention": retention_h * 3600.0,
            "batch": PURGE_BATCH,
        },
    )
    row = await cur.fetchone()
    await conn.commit()
    return bool(row and row[0])


# --------------------------------------------------------------------------- reading

_NAN = math.nan


@dataclass(frozen=True, slots=True)
class SamplePoint:
    """One row: a cluster point (``node`` is None) or a node's point (cluster fields NaN).

    ``at`` is epoch seconds. Counts (``finished``, ``failed``, ``claimed``) cover ``span_s``
    seconds before ``at``; time in queue is NaN when no job was claimed in that span.
    """

    at: float
    node: str | None
    fps: float
    running: float
    queued: float = _NAN
    span_s: float = _NAN
    finished: float = _NAN
    failed: float = _NAN
    claimed: float = _NAN
    queue_p50: float = _NAN
    queue_p95: float = _NAN


@dataclass(frozen=True, slots=True)
class ClusterSeries:
    """Column-wise cluster points, oldest first (epoch seconds and plain floats).

    In a downsampled history each point is a bucket: levels (fps, running, queued) are means,
    counts and ``span_s`` are sums, ``queue_p50`` is the claim-weighted mean of the medians and
    ``queue_p95`` the highest p95 (peaks must stay visible in a day's view).
    """

    at: list[float] = field(default_factory=list)
    fps: list[float] = field(default_factory=list)
    running: list[float] = field(default_factory=list)
    queued: list[float] = field(default_factory=list)
    span_s: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)
    failed: list[float] = field(default_factory=list)
    claimed: list[float] = field(default_factory=list)
    queue_p50: list[float] = field(default_factory=list)
    queue_p95: list[float] = field(default_factory=list)
    newest: float = _NAN  # the newest row's own time (a bucket's ``at`` is its rows' mean)

    def columns(self) -> tuple[list[float], ...]:
        """Every column, ``at`` first, in :class:`SamplePoint`'s field order: the one place
        that order is spelled out (the view stacks them into its ring buffer)."""
        return (self.at, self.fps, self.running, self.queued, self.span_s, self.finished,
                self.failed, self.claimed, self.queue_p50, self.queue_p95)


@dataclass(frozen=True, slots=True)
class NodeSeries:
    at: list[float] = field(default_factory=list)
    fps: list[float] = field(default_factory=list)
    running: list[float] = field(default_factory=list)
    newest: float = _NAN


@dataclass(frozen=True, slots=True)
class SampleHistory:
    """What the graphs show: the cluster series and each node's, for one window.

    ``bucket_s`` is the width the rows were averaged over (0: raw rows, as from ``recent``);
    the view merges live points into buckets of the same width.
    """

    since_s: float
    bucket_s: float
    cluster: ClusterSeries
    nodes: dict[str, NodeSeries]

    def points(self) -> list[SamplePoint]:
        """Every point, cluster and nodes, in time order (for a view's ``append``)."""
        c = self.cluster
        out = [SamplePoint(at, None, *vals) for at, *vals in zip(*c.columns(), strict=True)]
        for name, s in self.nodes.items():
            rows = zip(s.at, s.fps, s.running, strict=True)
            out += [SamplePoint(at, name, fps, running) for at, fps, running in rows]
        out.sort(key=lambda p: (p.at, p.node is not None, p.node or ""))
        return out


def bucket_for(since_s: float, max_points: int = MAX_POINTS) -> float:
    """The smallest round bucket width that keeps a window under ``max_points`` per series."""
    need = since_s / max_points
    for width in _NICE_BUCKETS:
        if width >= need:
            return float(width)
    return float(math.ceil(need / 3600) * 3600)


def _f(value: Any) -> float:
    return _NAN if value is None else float(value)


_CLUSTER_COLUMNS = (
    "extract(epoch FROM at)::float8, fps::float8, running::float8, queued::float8, "
    "span_s::float8, finished::float8, failed::float8, claimed::float8, "
    "queue_p50::float8, queue_p95::float8, extract(epoch FROM at)::float8"
)
_CLUSTER_BUCKETED = """
    avg(extract(epoch FROM at))::float8, avg(fps)::float8, avg(running)::float8,
    avg(queued)::float8, sum(span_s::float8), sum(finished)::float8, sum(failed)::float8,
    sum(claimed)::float8,
    (sum(queue_p50::float8 * claimed) FILTER (WHERE queue_p50 IS NOT NULL)
     / nullif(sum(claimed) FILTER (WHERE queue_p50 IS NOT NULL), 0))::float8,
    max(queue_p95)::float8, max(extract(epoch FROM at))::float8
"""
# date_bin needs PostgreSQL 14; buckets start at whole multiples of the width since the epoch.
_BIN = "date_bin(make_interval(secs => %(bucket)s), at, timestamptz '1970-01-01 00:00+00')"


async def history(conn: Conn, *, since_s: float, max_points: int = MAX_POINTS) -> SampleHistory:
    """The last ``since_s`` seconds, averaged into buckets so no series has more than about
    ``max_points`` points (5 min: 1 s, i.e. raw rows; 1 h: 5 s; 24 h: 90 s)."""
    bucket = bucket_for(since_s, max_points)
    params = {"since": since_s, "bucket": bucket}
    window = "at >= now() - make_interval(secs => %(since)s)"
    cur = await conn.execute(
        f"""SELECT {_CLUSTER_BUCKETED} FROM samples
             WHERE node IS NULL AND {window}
             GROUP BY {_BIN} ORDER BY 1""",  # type: ignore[arg-type]  # constant fragments
        params,
    )
    cluster = _cluster_series(await cur.fetchall())
    cur = await conn.execute(
        f"""SELECT node, avg(extract(epoch FROM at))::float8, avg(fps)::float8,
                   avg(running)::float8, max(extract(epoch FROM at))::float8
              FROM samples
             WHERE node IS NOT NULL AND {window}
             GROUP BY node, {_BIN} ORDER BY node, 2""",  # type: ignore[arg-type]
        params,
    )
    nodes = _node_series(await cur.fetchall())
    await conn.commit()
    return SampleHistory(since_s, bucket, cluster, nodes)


async def recent(conn: Conn, *, after: float) -> SampleHistory:
    """Raw rows newer than ``after`` (epoch seconds): the live points since the last poll.

    Pass a little less than the newest time already shown (say 30 s): a node's row can commit
    a moment after a later-stamped one of another node, and the view drops what it has.
    """
    params = {"after": after}
    cur = await conn.execute(
        f"""SELECT {_CLUSTER_COLUMNS} FROM samples
             WHERE node IS NULL AND at > to_timestamp(%(after)s)
             ORDER BY at""",  # type: ignore[arg-type]  # constant fragments
        params,
    )
    cluster = _cluster_series(await cur.fetchall())
    cur = await conn.execute(
        """SELECT node, extract(epoch FROM at)::float8, fps::float8, running::float8,
                  extract(epoch FROM at)::float8
             FROM samples
            WHERE node IS NOT NULL AND at > to_timestamp(%(after)s)
            ORDER BY node, at""",
        params,
    )
    nodes = _node_series(await cur.fetchall())
    await conn.commit()
    return SampleHistory(0.0, 0.0, cluster, nodes)


def _cluster_series(rows: list[tuple[Any, ...]]) -> ClusterSeries:
    """Rows of the cluster columns plus the newest row's time, last."""
    columns: list[list[float]] = [[] for _ in range(10)]
    for row in rows:
        for column, value in zip(columns, row, strict=False):
            column.append(_f(value))
    newest = max((float(r[-1]) for r in rows), default=_NAN)
    return ClusterSeries(*columns, newest=newest)


def _node_series(rows: list[tuple[Any, ...]]) -> dict[str, NodeSeries]:
    """Rows of (node, time, fps, running, newest row's time), ordered by node then time."""
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    return {
        name: NodeSeries(
            at=[float(r[1]) for r in group],
            fps=[_f(r[2]) for r in group],
            running=[_f(r[3]) for r in group],
            newest=max(float(r[4]) for r in group),
        )
        for name, group in grouped.items()
    }
