"""SQL for watchfolders and the registry of the files they have seen.

A scan is one transaction (see :mod:`ffdesk.engine.watch`): :func:`claim_next` locks one due
watchfolder with ``FOR UPDATE SKIP LOCKED`` (so exactly one node scans it at a time), the
scanner reads :func:`load_files`, walks the folder, and writes :func:`apply_scan`, the jobs
of the ready files (:func:`ffdesk.db.jobs.enqueue`) and :func:`finish_scan` before the same
COMMIT. A crash at any point loses the whole scan, never half of it.

Every file update is a compare-and-set against the row as the scan read it: if anything else
changed a row meanwhile, the scan raises :class:`ScanConflict` and rolls back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ffdesk.core.errors import FfdeskError

Conn = psycopg.AsyncConnection[Any]

CHANNEL = "ffdesk"  # the nodes' channel: {"k": "watch"} wakes their watch loops
_WAKE = json.dumps({"k": "watch"})

_COLUMNS = (
    "name, folder, root, output, preset, preset_def, max_attempts, priority, include_globs, "
    "exclude_globs, recursive, interval_s, stable_scans, min_age_s, requeue_changed, enabled, "
    "pinned_node, error"
)


# The watchfolders a node scans: pinned to it, or unpinned under a root it has.
_MINE = "enabled AND (pinned_node = %(node)s OR (pinned_node IS NULL AND root = ANY(%(roots)s)))"


class ScanConflict(FfdeskError):
    """A file row changed under a scan: the scan is rolled back (nothing queued)."""


@dataclass(frozen=True)
class NewWatchfolder:
    name: str
    folder: str  # root reference or local absolute path
    root: str | None
    output: str | None
    preset: str
    preset_def: dict[str, Any]  # description, args, output, needs, policy
    max_attempts: int
    include_globs: list[str]
    exclude_globs: list[str]
    recursive: bool
    interval_s: float
    stable_scans: int
    min_age_s: float
    requeue_changed: bool
    pinned_node: str | None
    priority: int = 0


@dataclass(frozen=True)
class Watchfolder:
    name: str
    folder: str
    root: str | None
    output: str | None
    preset: str
    preset_def: dict[str, Any]
    max_attempts: int
    priority: int
    include_globs: list[str]
    exclude_globs: list[str]
    recursive: bool
    interval_s: float
    stable_scans: int
    min_age_s: float
    requeue_changed: bool
    enabled: bool
    pinned_node: str | None
    error: str | None


@dataclass(frozen=True)
class KnownFile:
    """A watch_files row as a scan reads it."""

    rel: str
    size: int
    mtime_ns: int
    stable_count: int
    stable_age: float  # seconds since size/mtime last changed (database clock)
    state: str  # pending | queued | gone
    queued_size: int | None = None
    queued_mtime_ns: int | None = None
    job_id: int | None = None


@dataclass(frozen=True)
class FileWrite:
    """What a scan writes for one file (new row, or an update of a known one)."""

    rel: str
    size: int
    mtime_ns: int
    stable_count: int
    state: str
    reset: bool = False  # size/mtime changed (or first seen): stable_since = now()
    queue: bool = False  # ready: a job is enqueued for it in this scan
    job_id: int | None = None  # filled in once the job exists


# --------------------------------------------------------------------------- management


async def _wake(conn: Conn) -> None:
    await conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, _WAKE])


async def add(conn: Conn, w: NewWatchfolder, *, by: str) -> bool:
    """Create a watchfolder (due at once); False if the name is taken."""
    params = asdict(w) | {"preset_def": Jsonb(w.preset_def), "by": by}
    async with conn.transaction():
        cur = await conn.execute(
            """INSERT INTO watchfolders (name, folder, root, output, preset, preset_def,
                                         max_attempts, priority, include_globs, exclude_globs,
                                         recursive, interval_s, stable_scans, min_age_s,
                                         requeue_changed, pinned_node, created_by)
               VALUES (%(name)s, %(folder)s, %(root)s, %(output)s, %(preset)s, %(preset_def)s,
                       %(max_attempts)s, %(priority)s, %(include_globs)s, %(exclude_globs)s,
                       %(recursive)s, %(interval_s)s, %(stable_scans)s, %(min_age_s)s,
                       %(requeue_changed)s, %(pinned_node)s, %(by)s)
               ON CONFLICT (name) DO NOTHING
               RETURNING name""",
            params,
        )
        created = await cur.fetchone() is not None
        if created:
            await _wake(conn)
    return created


async def remove(conn: Conn, name: str) -> bool:
    """Delete a watchfolder and its file registry (its jobs stay). Waits for a running scan."""
    async with conn.transaction():
        cur = await conn.execute("DELETE FROM watchfolders WHERE name = %s RETURNING name", [name])
        return await cur.fetchone() is not None


async def set_enabled(conn: Conn, name: str, enabled: bool) -> bool | None:
    """Pause or resume; returns the previous ``enabled`` (None: no such watchfolder). A
    resumed watchfolder is due at once."""
    async with conn.transaction():
        cur = await conn.execute(
            """UPDATE watchfolders w SET enabled = %(on)s,
                      next_scan_at = CASE WHEN %(on)s AND NOT old.enabled THEN now()
                                          ELSE w.next_scan_at END
                 FROM (SELECT name, enabled FROM watchfolders WHERE name = %(name)s
                        FOR UPDATE) old
                WHERE w.name = old.name
            RETURNING old.enabled""",
            {"name": name, "on": enabled},
        )
        row = await cur.fetchone()
        if row is not None and enabled and not row[0]:
            await _wake(conn)
    return None if row is None else bool(row[0])


async def list_watchfolders(conn: Conn) -> list[dict[str, Any]]:
    """Every watchfolder with its scan status and file counts."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        """SELECT w.name, w.folder, w.root, w.output, w.preset, w.include_globs,
                  w.exclude_globs, w.recursive, w.interval_s, w.stable_scans, w.min_age_s,
                  w.requeue_changed, w.enabled, w.pinned_node, w.max_attempts, w.priority,
                  w.created_at, w.created_by, w.next_scan_at, w.last_scan_at,
                  w.last_scanned_by, w.last_scan_files, w.scan_count, w.error, w.error_at,
                  extract(epoch FROM now() - w.last_scan_at)::float8 AS last_scan_age,
                  count(f.rel_path) FILTER (WHERE f.state = 'pending') AS pending,
                  count(f.rel_path) FILTER (WHERE f.state = 'queued') AS queued,
                  count(f.rel_path) FILTER (WHERE f.state = 'gone') AS gone
             FROM watchfolders w LEFT JOIN watch_files f ON f.watchfolder = w.name
            GROUP BY w.name ORDER BY w.name"""
    )
    rows = await cur.fetchall()
    await conn.commit()
    return rows


async def list_files(conn: Conn, name: str) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        """SELECT rel_path, size, mtime_ns, stable_count, stable_since, first_seen, state,
                  job_id, queued_size, queued_mtime_ns, queued_at, queue_count
             FROM watch_files WHERE watchfolder = %s ORDER BY rel_path""",
        [name],
    )
    rows = await cur.fetchall()
    await conn.commit()
    return rows


# --------------------------------------------------------------------------- scanning


async def claim_next(
    conn: Conn, *, node: str, roots: Sequence[str]
) -> tuple[Watchfolder | None, float | None]:
    """Inside a transaction: lock the watchfolder this node should scan next.

    Returns (the locked watchfolder, 0) when one is due; (None, seconds until the next one
    is due) when the earliest unlocked one is not due yet, or when other nodes are scanning
    all of them right now (then: the shortest interval); (None, None) when this node may
    scan none. A node scans the folders pinned to it and the unpinned ones under a root it
    has. Folders other nodes are scanning right now are skipped (SKIP LOCKED).
    """
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"""SELECT {_COLUMNS}, extract(epoch FROM next_scan_at - now())::float8 AS due_in
              FROM watchfolders
             WHERE {_MINE}
             ORDER BY next_scan_at
             LIMIT 1
             FOR UPDATE SKIP LOCKED""",
        {"node": node, "roots": list(roots)},
    )
    row = await cur.fetchone()
    if row is None:
        # Nothing unlocked: either nothing for this node, or others are scanning it all
        # right now; then look again in one interval (and take turns with them).
        cur = await conn.execute(
            f"SELECT min(interval_s)::float8 FROM watchfolders WHERE {_MINE}",
            {"node": node, "roots": list(roots)},
        )
        again = await cur.fetchone()
        return None, again[0] if again else None
    due_in = row.pop("due_in")
    if due_in > 0:
        return None, due_in
    return Watchfolder(**row), 0.0


async def load_files(conn: Conn, name: str) -> dict[str, KnownFile]:
    cur = await conn.execute(
        """SELECT rel_path, size, mtime_ns, stable_count,
                  extract(epoch FROM now() - stable_since)::float8, state,
                  queued_size, queued_mtime_ns, job_id
             FROM watch_files WHERE watchfolder = %s""",
        [name],
    )
    return {row[0]: KnownFile(*row) for row in await cur.fetchall()}


async def job_outputs(conn: Conn, name: str) -> list[str]:
    """Outputs (planned and actually written) of this watchfolder's latest jobs: when they
    land inside the watched folder, the scan must not take them for new inputs."""
    cur = await conn.execute(
        """SELECT j.output, j.written FROM watch_files f JOIN jobs j ON j.id = f.job_id
            WHERE f.watchfolder = %s""",
        [name],
    )
    return [path for row in await cur.fetchall() for path in row if path]


def _rows(writes: Sequence[FileWrite], known: dict[str, KnownFile] | None = None) -> Jsonb:
    rows = []
    for w in writes:
        row = {
            "rel": w.rel,
            "size": w.size,
            "mtime_ns": w.mtime_ns,
            "stable_count": w.stable_count,
            "state": w.state,
            "reset": w.reset,
            "job_id": w.job_id,
        }
        if known is not None:
            was = known[w.rel]
            row |= {
                "was_state": was.state,
                "was_size": was.size,
                "was_mtime_ns": was.mtime_ns,
                "was_stable": was.stable_count,
            }
        rows.append(row)
    return Jsonb(rows)


async def apply_scan(
    conn: Conn,
    name: str,
    *,
    known: dict[str, KnownFile],
    inserts: Sequence[FileWrite],
    updates: Sequence[FileWrite],
    gone: Sequence[str],
    deletes: Sequence[str],
) -> None:
    """Write one scan's file changes (inside the scan's transaction). Updates are
    compare-and-set against ``known``; any mismatch raises :class:`ScanConflict`."""
    if inserts:
        # A plain INSERT: a row that exists already means two scans overlapped, which the
        # watchfolder lock rules out; the primary key turns it into an error, not a duplicate.
        await conn.execute(
            """INSERT INTO watch_files (watchfolder, rel_path, size, mtime_ns, stable_count,
                                        state)
               SELECT %(w)s, r.rel, r.size, r.mtime_ns, r.stable_count, r.state
                 FROM jsonb_to_recordset(%(rows)s) AS r(rel text, size bigint, mtime_ns bigint,
                                                        stable_count int, state text)""",
            {"w": name, "rows": _rows(inserts)},
        )
    if updates:
        cur = await conn.execute(
            """UPDATE watch_files f
                  SET size = r.size, mtime_ns = r.mtime_ns, stable_count = r.stable_count,
                      state = r.state,
                      stable_since = CASE WHEN r.reset THEN now() ELSE f.stable_since END,
                      job_id = coalesce(r.job_id, f.job_id),
                      queued_size = CASE WHEN r.job_id IS NULL THEN f.queued_size
                                         ELSE r.size END,
                      queued_mtime_ns = CASE WHEN r.job_id IS NULL THEN f.queued_mtime_ns
                                             ELSE r.mtime_ns END,
                      queued_at = CASE WHEN r.job_id IS NULL THEN f.queued_at ELSE now() END,
                      queue_count = f.queue_count + (r.job_id IS NOT NULL)::int
                 FROM jsonb_to_recordset(%(rows)s) AS r(
                          rel text, size bigint, mtime_ns bigint, stable_count int, state text,
                          reset boolean, job_id bigint, was_state text, was_size bigint,
                          was_mtime_ns bigint, was_stable int)
                WHERE f.watchfolder = %(w)s AND f.rel_path = r.rel
                  AND f.state = r.was_state AND f.size = r.was_size
                  AND f.mtime_ns = r.was_mtime_ns AND f.stable_count = r.was_stable""",
            {"w": name, "rows": _rows(updates, known)},
        )
        if cur.rowcount != len(updates):
            raise ScanConflict(
                f"watchfolder '{name}': {len(updates) - cur.rowcount} file row(s) changed "
                "during the scan; scan rolled back"
            )
    if gone:
        await conn.execute(
            """UPDATE watch_files SET state = 'gone'
                WHERE watchfolder = %s AND rel_path = ANY(%s) AND state <> 'gone'""",
            [name, list(gone)],
        )
    if deletes:
        await conn.execute(
            """DELETE FROM watch_files
                WHERE watchfolder = %s AND rel_path = ANY(%s) AND queued_size IS NULL""",
            [name, list(deletes)],
        )


async def finish_scan(
    conn: Conn, name: str, *, node: str, error: str | None, files: int | None
) -> None:
    """Record the scan (inside its transaction) and schedule the next one an interval after
    this one ends. ``files`` None: the folder could not be listed (kept from before)."""
    await conn.execute(
        """UPDATE watchfolders
              SET last_scan_at = now(), last_scanned_by = %(node)s, scan_count = scan_count + 1,
                  next_scan_at = clock_timestamp() + make_interval(secs => interval_s),
                  last_scan_files = coalesce(%(files)s, last_scan_files),
                  error_at = CASE WHEN %(error)s::text IS NULL THEN NULL
                                  WHEN error IS DISTINCT FROM %(error)s::text THEN now()
                                  ELSE error_at END,
                  error = %(error)s::text
            WHERE name = %(w)s""",
        {"w": name, "node": node, "error": error, "files": files},
    )


async def record_failure(conn: Conn, name: str, *, node: str, error: str) -> None:
    """After a scan that crashed (and was rolled back): show why, and wait an interval before
    the next try instead of failing in a tight loop."""
    async with conn.transaction():
        await finish_scan(conn, name, node=node, error=error, files=None)
