"""SQL for the cluster-wide numbers of the Prometheus endpoint (ffdesk.engine.metrics).

One statement, so every number comes from the same snapshot (jobs by state add up, the queue
depth is never above the queued count). Only counts and durations: no path, preset argument
or reason ever leaves the database through here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from ffdesk.core.model import JobState
from ffdesk.db.nodes import _SEEN_STATE

Conn = psycopg.AsyncConnection[Any]

JOB_STATES: tuple[str, ...] = tuple(str(s) for s in JobState)
# What `ffdesk nodes` shows (nodes._SEEN_STATE): the recorded state, or stale / offline when
# the heartbeat says so.
NODE_STATES: tuple[str, ...] = ("online", "paused", "draining", "quarantined", "stale", "offline")
# Upper bounds (seconds) of the time-in-queue histogram: an idle cluster claims within
# milliseconds, a busy one may keep jobs waiting for an hour.
WAIT_BUCKETS: tuple[float, ...] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
WAIT_WINDOW_S = 3600.0  # jobs claimed this recently
STATEMENT_TIMEOUT_MS = 2000  # a scrape must never hold a pooled connection for long


@dataclass
class ClusterMetrics:
    jobs: dict[str, int]  # every state in JOB_STATES, zeros included
    queue_depth: int  # queued and due (not waiting out a retry backoff)
    nodes: dict[str, int]  # every state in NODE_STATES, zeros included
    running: dict[str, int]  # node -> running jobs (every node not offline, zeros included)
    fps: dict[str, float]  # node -> sum of its running jobs' fps
    wait_buckets: list[tuple[float, int]]  # (le, cumulative count), le ascending, no +Inf
    wait_sum: float
    wait_count: int
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, outcome) -> n


_CLUSTER_SQL = f"""
WITH waits AS MATERIALIZED (
    SELECT extract(epoch FROM j.claimed_at - j.created_at)::float8 AS s
      FROM jobs j
     WHERE j.claimed_at >= now() - make_interval(secs => %(window)s)
)
SELECT
    (SELECT coalesce(json_object_agg(x.state, x.n), '{{}}')
       FROM (SELECT state, count(*) AS n FROM jobs GROUP BY state) x) AS jobs,
    (SELECT count(*) FROM jobs WHERE state = 'queued' AND not_before <= now()) AS queue_depth,
    (SELECT coalesce(json_object_agg(x.state, x.n), '{{}}')
       FROM (SELECT {_SEEN_STATE} AS state, count(*) AS n FROM nodes n GROUP BY 1) x) AS nodes,
    (SELECT coalesce(json_agg(json_build_array(coalesce(n.identifier, r.node),
                                               coalesce(r.running, 0), coalesce(r.fps, 0))), '[]')
       FROM (SELECT n.identifier FROM nodes n WHERE {_SEEN_STATE} <> 'offline') n
       FULL JOIN (SELECT node, count(*) AS running, sum(fps)::float8 AS fps
                    FROM jobs WHERE state = 'running' AND node IS NOT NULL GROUP BY node) r
              ON r.node = n.identifier) AS per_node,
    (SELECT json_agg(json_build_array(b.le, (SELECT count(*) FROM waits w WHERE w.s <= b.le))
                     ORDER BY b.le)
       FROM unnest(%(buckets)s::float8[]) AS b(le)) AS wait_buckets,
    (SELECT coalesce(sum(s), 0)::float8 FROM waits) AS wait_sum,
    (SELECT count(*) FROM waits) AS wait_count,
    (SELECT coalesce(json_agg(json_build_array(x.kind, x.outcome, x.n)), '[]')
       FROM (SELECT coalesce(kind, 'none') AS kind, outcome, count(*) AS n
               FROM attempts WHERE outcome IS NOT NULL GROUP BY 1, 2) x) AS attempts
"""


async def cluster_metrics(conn: Conn) -> ClusterMetrics:
    """Every cluster-wide number of the metrics endpoint, read-only, in one snapshot."""
    async with conn.transaction():
        await conn.execute(
            f"SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"
        )
        cur = await conn.execute(
            _CLUSTER_SQL, {"window": WAIT_WINDOW_S, "buckets": list(WAIT_BUCKETS)}
        )
        row = await cur.fetchone()
    assert row is not None
    jobs, depth, node_states, per_node, buckets, wait_sum, wait_count, attempts = row
    return ClusterMetrics(
        jobs={s: int(jobs.get(s, 0)) for s in (*JOB_STATES, *sorted(set(jobs) - set(JOB_STATES)))},
        queue_depth=int(depth),
        nodes={
            s: int(node_states.get(s, 0))
            for s in (*NODE_STATES, *sorted(set(node_states) - set(NODE_STATES)))
        },
        running={str(name): int(n) for name, n, _ in sorted(per_node)},
        fps={str(name): float(f) for name, _, f in sorted(per_node)},
        wait_buckets=[(float(le), int(n)) for le, n in buckets],
        wait_sum=float(wait_sum),
        wait_count=int(wait_count),
        attempts={(str(k), str(o)): int(n) for k, o, n in sorted(attempts)},
    )
