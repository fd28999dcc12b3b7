"""Catch-up reads for change consumers (the event bus, the GUI): what changed since last time.

Why not just ``revision > last seen``: revisions come from a sequence drawn *before* commit. A
transaction A that draws revision 10 and commits after a transaction B that drew 11 is invisible
when a consumer reads B's row; that consumer then remembers 11 and never asks for 10 again.

What we do instead: every job and node row stores ``xid``, the (64-bit) id of the transaction
that last wrote it. A catch-up is one snapshot; it returns the changed rows together with that
snapshot, its :class:`Watermark`. The next catch-up asks for rows whose writer was *not yet
visible* in the previous snapshot:

* ``xid >= pg_snapshot_xmin(previous)``: every transaction that commits after the previous
  snapshot was taken is either running in it (so its xid >= its xmin) or starts after it
  (xid >= xmax). This bound is what lets the ``jobs (xid)`` index do the work.
* ``NOT pg_visible_in_snapshot(xid, previous)``: drops the rows the previous catch-up already
  returned. Comparing with the xmin alone would return every row written since the oldest
  transaction still open anywhere on the server, again and again while it stays open (an idle
  ``psql`` session or a ``pg_dump`` can hold it for hours); with the whole snapshot the answer is
  exact and consumers only drop the overlap of a first, revision-based catch-up.

A consumer that starts from a revision ``R`` (e.g. from an older list) gets ``revision > R`` the
first time; that first step inherits the revision caveat above, so a consumer that loads a full
list first should load it with :func:`catch_up` (``since_revision=0``) and go on from its
watermark instead.

Rows are never deleted today; a future pruning job must leave a trace (tombstone, event) for
consumers, since a deleted row cannot be caught up with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ffdesk.core.model import Job, NodeRow
from ffdesk.db.jobs import _JOB_COLUMNS, _job

Conn = psycopg.AsyncConnection[Any]

_NODE_COLUMNS = (
    "identifier, session, host, pid, os, arch, cpu, cores, ram_bytes, app_version, "
    "ffmpeg_version, ffmpeg_fingerprint, encoders, tags, slots, heartbeat_s, lease_s, state, "
    "state_reason, started_at, heartbeat_at, revision"
)


@dataclass(frozen=True)
class Watermark:
    """Where a catch-up stopped: the snapshot it read with, in PostgreSQL's text form
    ``xmin:xmax:xip,...`` (a ``pg_snapshot``). Opaque to consumers; pass it to the next call."""

    snapshot: str

    @property
    def xmin(self) -> int:
        """Every transaction with a smaller id had ended when the snapshot was taken."""
        return int(self.snapshot.split(":", 1)[0])


@dataclass(frozen=True)
class Changes:
    """Jobs and nodes changed since a point, both read in one snapshot, in revision order."""

    jobs: list[Job]
    nodes: list[NodeRow]
    watermark: Watermark


def _node(row: dict[str, Any]) -> NodeRow:
    row = dict(row)
    row["session"] = str(row["session"])
    row["encoders"] = tuple(row["encoders"] or ())
    row["tags"] = tuple(row["tags"] or ())
    return NodeRow(**row)


def _changed_rows(table: str, columns: str, after: Watermark | None, since: int | None) -> str:
    if after is not None and since is not None:
        raise ValueError("give either a watermark or a revision to start from, not both")
    if after is not None:
        where = (
            "xid >= pg_snapshot_xmin(%(after)s::pg_snapshot) "
            "AND NOT pg_visible_in_snapshot(xid, %(after)s::pg_snapshot)"
        )
    elif since is not None:
        where = "revision > %(since)s"
    else:
        where = "false"  # starting from now: only the watermark
    # The LEFT JOIN keeps one row (the snapshot, NULL columns) when nothing changed, so the
    # rows and the snapshot they were read with always come back from one statement.
    return f"""
        SELECT s.snap, c.*
          FROM (SELECT pg_current_snapshot()::text) AS s (snap)
          LEFT JOIN LATERAL (SELECT {columns} FROM {table} WHERE {where}) AS c ON true
         ORDER BY c.revision
    """


async def _read(
    conn: Conn, table: str, columns: str, after: Watermark | None, since: int | None
) -> tuple[list[dict[str, Any]], Watermark]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        _changed_rows(table, columns, after, since),
        {"after": after.snapshot if after else None, "since": since},
    )
    rows = await cur.fetchall()
    watermark = Watermark(rows[0]["snap"])
    out = []
    for row in rows:
        del row["snap"]
        if row["revision"] is not None:
            out.append(row)
    return out, watermark


async def job_changes(
    conn: Conn, *, after: Watermark | None = None, since_revision: int | None = None
) -> tuple[list[Job], Watermark]:
    """Jobs changed since ``after`` (a previous watermark) or with a revision above
    ``since_revision``; with neither, no rows: just the watermark of "now". One statement."""
    rows, watermark = await _read(conn, "jobs", _JOB_COLUMNS, after, since_revision)
    return [_job(r) for r in rows], watermark


async def node_changes(
    conn: Conn, *, after: Watermark | None = None, since_revision: int | None = None
) -> tuple[list[NodeRow], Watermark]:
    """Like :func:`job_changes`, for the node registry."""
    rows, watermark = await _read(conn, "nodes", _NODE_COLUMNS, after, since_revision)
    return [_node(r) for r in rows], watermark


async def catch_up(
    conn: Conn, *, after: Watermark | None = None, since_revision: int | None = None
) -> Changes:
    """Jobs and nodes changed since the same point, read in one REPEATABLE READ snapshot (so
    one watermark is right for both). ``conn`` must not be inside a transaction."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        jobs, watermark = await job_changes(conn, after=after, since_revision=since_revision)
        nodes, _same = await node_changes(conn, after=after, since_revision=since_revision)
    return Changes(jobs, nodes, watermark)


# --------------------------------------------------------------------------- LISTEN / NOTIFY


async def listen(conn: Conn, channels: Iterable[str]) -> None:
    """LISTEN on each channel. On an autocommit connection it is in effect when this returns,
    so a catch-up read that starts afterwards cannot miss a change without a notification."""
    for channel in channels:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


async def notify(conn: Conn, channel: str, payload: str) -> None:
    """Send one notification (delivered when the current transaction commits)."""
    await conn.execute("SELECT pg_notify(%s, %s)", [channel, payload])
