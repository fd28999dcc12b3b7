"""SQL for webhooks: subscriptions, the delivery outbox, claims and attempts.

Deliveries are created by a trigger on ``events`` (migration 0008) in the transaction that
records the event. A node claims due deliveries with ``FOR UPDATE SKIP LOCKED`` and a lease;
``(delivery id, attempt)`` is the fencing token of a claim: a node whose lease ran out (and
whose delivery another node took) records nothing.

Secrets leave the database only towards the node that signs a delivery; no listing returns
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

Conn = psycopg.AsyncConnection[Any]

EVENTS = (
    "job.succeeded",
    "job.failed",
    "job.dead",
    "batch.finished",
    "node.offline",
    "node.quarantined",
)
PING = "ping"


@dataclass(frozen=True)
class Claimed:
    """One delivery a node claimed and must now POST."""

    id: int
    attempt: int
    max_attempts: int
    webhook_id: int
    url: str
    secret: str
    retry_base_s: float
    event: str
    payload: dict[str, Any]
    created_at: datetime

    def __repr__(self) -> str:  # never the secret, not even in a traceback
        return f"Claimed(id={self.id}, attempt={self.attempt}, webhook={self.webhook_id})"


async def add(
    conn: Conn,
    url: str,
    events: Sequence[str],
    *,
    secret: str,
    preset: str | None,
    max_attempts: int,
    retry_base_s: float,
    by: str,
) -> int:
    cur = await conn.execute(
        """INSERT INTO webhooks (url, events, preset, secret, max_attempts, retry_base_s,
                                 created_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        [url, list(events), preset, secret, max_attempts, retry_base_s, by],
    )
    row = await cur.fetchone()
    await conn.commit()
    assert row is not None
    return int(row[0])


async def remove(conn: Conn, webhook_id: int) -> bool:
    """Remove a webhook with its deliveries and their attempts."""
    cur = await conn.execute("DELETE FROM webhooks WHERE id = %s", [webhook_id])
    await conn.commit()
    return cur.rowcount == 1


async def list_webhooks(conn: Conn) -> list[dict[str, Any]]:
    """Every webhook with its delivery counts (never its secret)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        """SELECT w.id, w.url, w.events, w.preset, w.enabled, w.max_attempts, w.retry_base_s,
                  w.created_at, w.created_by,
                  count(d.id) FILTER (WHERE d.state = 'pending') AS pending,
                  count(d.id) FILTER (WHERE d.state = 'delivered') AS delivered,
                  count(d.id) FILTER (WHERE d.state = 'failed') AS failed,
                  max(d.finished_at) AS last_finished_at
             FROM webhooks w LEFT JOIN webhook_deliveries d ON d.webhook_id = w.id
            GROUP BY w.id ORDER BY w.id"""
    )
    rows = list(await cur.fetchall())
    await conn.commit()
    return rows


async def queue_ping(conn: Conn, webhook_id: int) -> int | None:
    """Queue a ``ping`` delivery to a webhook; its delivery id, or None if there is none."""
    cur = await conn.execute(
        """WITH ins AS (
               INSERT INTO webhook_deliveries (webhook_id, event, payload, max_attempts)
               SELECT id, 'ping',
                      jsonb_build_object('webhook', jsonb_build_object(
                          'id', id, 'events', events, 'preset', preset)),
                      max_attempts
                 FROM webhooks WHERE id = %s
               RETURNING id
           ), note AS (
               SELECT pg_notify('ffdesk', '{"k":"webhook"}') FROM ins
           )
           SELECT id FROM ins, note""",
        [webhook_id],
    )
    row = await cur.fetchone()
    await conn.commit()
    return int(row[0]) if row else None


async def list_attempts(
    conn: Conn, *, webhook_id: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The latest delivery attempts, newest first; a delivery nobody tried yet appears once
    with ``attempt`` None."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        """SELECT * FROM (
               SELECT coalesce(a.at, d.created_at) AS at, d.id AS delivery_id, d.webhook_id,
                      d.event, d.job_id, d.state, d.attempts, d.max_attempts, d.next_at,
                      a.attempt, a.node, a.finished_at, a.http_status, a.error, a.duration_ms,
                      (a.attempt IS NOT NULL AND a.finished_at IS NULL
                       AND (d.attempts > a.attempt OR d.state <> 'pending'
                            OR d.lease_until < now())) AS lost
                 FROM webhook_deliveries d
                 LEFT JOIN webhook_attempts a ON a.delivery_id = d.id
                WHERE %(hook)s::bigint IS NULL OR d.webhook_id = %(hook)s::bigint
                ORDER BY coalesce(a.at, d.created_at) DESC, d.id DESC, a.attempt DESC
                LIMIT %(limit)s
           ) x ORDER BY at, delivery_id, attempt NULLS FIRST""",
        {"hook": webhook_id, "limit": limit},
    )
    rows = list(await cur.fetchall())
    await conn.commit()
    return rows


# --------------------------------------------------------------------------- delivering


async def claim(conn: Conn, *, node: str, limit: int, lease_s: float) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries (SKIP LOCKED: never one another node holds) and
    open their attempt rows, in one statement."""
    return (await claim_next(conn, node=node, limit=limit, lease_s=lease_s))[0]


async def claim_next(
    conn: Conn, *, node: str, limit: int, lease_s: float
) -> tuple[list[Claimed], float | None]:
    """:func:`claim`, and in the same statement the seconds until the earliest other pending
    delivery may be claimed (a retry's backoff or a lost node's lease running out; None:
    nothing else pending): an idle node's round is one query."""
    if limit <= 0:
        return [], await next_due(conn)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        """WITH picked AS MATERIALIZED (
               SELECT d.id FROM webhook_deliveries d
                WHERE d.state = 'pending' AND d.next_at <= now()
                  AND (d.lease_until IS NULL OR d.lease_until < now())
                ORDER BY d.next_at, d.id
                LIMIT %(limit)s
                FOR UPDATE OF d SKIP LOCKED
           ), claimed AS (
               UPDATE webhook_deliveries d
                  SET attempts = d.attempts + 1, claimed_by = %(node)s,
                      lease_until = now() + make_interval(secs => %(lease)s)
                 FROM picked WHERE d.id = picked.id
                  AND d.state = 'pending'
               RETURNING d.*
           ), att AS (
               INSERT INTO webhook_attempts (delivery_id, attempt, node)
               SELECT id, attempts, %(node)s FROM claimed
           ), due AS (
               -- the statement's snapshot still shows the claimed rows as they were
               SELECT extract(epoch FROM min(greatest(next_at, coalesce(lease_until, next_at)))
                                         - now())::float8 AS due
                 FROM webhook_deliveries
                WHERE state = 'pending' AND id NOT IN (SELECT id FROM claimed)
           )
           SELECT c.id, c.attempts AS attempt, c.max_attempts, c.webhook_id, w.url, w.secret,
                  w.retry_base_s, c.event, c.payload, c.created_at, due.due
             FROM due LEFT JOIN (claimed c JOIN webhooks w ON w.id = c.webhook_id) ON true
            ORDER BY c.next_at, c.id""",
        {"limit": limit, "node": node, "lease": lease_s},
    )
    rows = list(await cur.fetchall())
    await conn.commit()
    due = rows[0].pop("due") if rows else None
    claimed = []
    for row in rows:
        row.pop("due", None)
        if row["id"] is not None:
            claimed.append(Claimed(**row))
    return claimed, due


async def finish(
    conn: Conn,
    claimed: Claimed,
    *,
    node: str,
    ok: bool,
    http_status: int | None,
    error: str | None,
    duration_ms: float,
    retry_in: float | None,
) -> str | None:
    """Record an attempt's result; the delivery becomes ``delivered``, ``failed`` (out of
    attempts, or ``retry_in`` None) or waits ``retry_in`` seconds. Returns the delivery's new
    state; None if this node no longer holds the claim (it records nothing then)."""
    cur = await conn.execute(
        """WITH done AS (
               UPDATE webhook_deliveries
                  SET state = CASE WHEN %(ok)s THEN 'delivered'
                                   WHEN %(retry)s::float8 IS NULL OR attempts >= max_attempts
                                       THEN 'failed'
                                   ELSE 'pending' END,
                      next_at = CASE WHEN %(ok)s OR %(retry)s::float8 IS NULL THEN next_at
                                     ELSE clock_timestamp()
                                          + make_interval(secs => %(retry)s::float8) END,
                      finished_at = CASE WHEN %(ok)s OR %(retry)s::float8 IS NULL
                                              OR attempts >= max_attempts
                                         THEN clock_timestamp() END,
                      claimed_by = NULL, lease_until = NULL,
                      last_status = %(status)s, last_error = %(error)s
                WHERE id = %(id)s AND attempts = %(attempt)s AND claimed_by = %(node)s
                  AND state = 'pending'
               RETURNING state
           ), att AS (
               UPDATE webhook_attempts
                  SET finished_at = clock_timestamp(), http_status = %(status)s,
                      error = %(error)s, duration_ms = %(ms)s
                WHERE delivery_id = %(id)s AND attempt = %(attempt)s
                  AND EXISTS (SELECT 1 FROM done)
           )
           SELECT state FROM done""",
        {
            "id": claimed.id,
            "attempt": claimed.attempt,
            "node": node,
            "ok": ok,
            "retry": retry_in,
            "status": http_status,
            "error": error,
            "ms": duration_ms,
        },
    )
    row = await cur.fetchone()
    await conn.commit()
    return row[0] if row else None


async def next_due(conn: Conn) -> float | None:
    """Seconds until the earliest pending delivery may be claimed (a retry's backoff or a
    lost node's lease running out); None if there is nothing pending."""
    cur = await conn.execute(
        """SELECT extract(epoch FROM min(greatest(next_at, coalesce(lease_until, next_at)))
                                  - now())::float8
             FROM webhook_deliveries WHERE state = 'pending'"""
    )
    row = await cur.fetchone()
    await conn.commit()
    return row[0] if row else None


async def prune(conn: Conn, *, keep_days: float) -> int:
    """Forget finished deliveries (and their attempts) older than ``keep_days``; one node at
    a time (a transaction-level advisory lock)."""
    async with conn.transaction():
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(hashtext('ffdesk-hooks'))")
        row = await cur.fetchone()
        if not row or not row[0]:
            return 0
        cur = await conn.execute(
            """DELETE FROM webhook_deliveries
                WHERE state <> 'pending'
                  AND finished_at < now() - make_interval(secs => %s)""",
            [keep_days * 86400],
        )
        return cur.rowcount
