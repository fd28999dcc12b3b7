"""SQL for jobs and their attempts: enqueue, claim, fenced writes, listing, cancel, retry.

Fencing: every write a node makes after claiming a job names the claim token it got
(``claim``, unique per claim), its session and ``state = 'running'``. Zero rows updated means
the node no longer owns that run (canceled, rescued, re-claimed): it must stop FFmpeg, discard
its temp output and write nothing else about the job.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ffdesk.core.model import Attempt, Job, JobState, Lease, NewJob

Conn = psycopg.AsyncConnection[Any]

STDERR_CAP = 64 * 1024 * 1024  # far above any normal log; the rest is cut with a marker
STDERR_CUT_MARKER = "\n[ffdesk: stderr cut here, {} more bytes not stored]\n"

_JOB_COLUMNS = (
    "id, state, priority, input, output, preset, preset_args, needs, attempt, max_attempts, "
    "claim, node, node_session, lease_until, not_before, created_at, claimed_at, started_at, "
    "finished_at, progress, fps, speed, eta_s, out_time_s, duration_s, exit_code, reason, "
    "submitted_by, meta, revision, failure_kind, avoid_nodes, policy, written, "
    "in_roots, out_roots, requires, tags, pinned_node, ffmpeg_min, ffmpeg_max, "
    "batch_id, depends_on, deps_pending"
)
_FENCE = (
    "id = %(job_id)s AND claim = %(claim)s AND node_session = %(session)s AND state = 'running'"
)


def _job(row: dict[str, Any]) -> Job:
    row = dict(row)
    row["state"] = JobState(row["state"])
    row["node_session"] = str(row["node_session"]) if row["node_session"] else None
    return Job(**row)


def _fence_params(lease: Lease) -> dict[str, Any]:
    return {"job_id": lease.job_id, "claim": lease.claim, "session": lease.node_session}


def compress_stderr(text: str | bytes) -> tuple[bytes, int]:
    """zlib of FFmpeg's stderr as it was written (bytes kept exactly), and its size."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    if len(raw) > STDERR_CAP:
        raw = raw[:STDERR_CAP] + STDERR_CUT_MARKER.format(len(raw) - STDERR_CAP).encode()
    return zlib.compress(raw, 6), len(raw)


def decompress_stderr(blob: bytes | None) -> str | None:
    if blob is None:
        return None
    return zlib.decompress(blob).decode("utf-8", "replace")


async def get_stderr(
    conn: Conn, job_id: int, number: int | None = None
) -> tuple[int, bytes | None] | None:
    """(attempt number, the exact stderr bytes) of a job's attempt ``number`` (1 = its
    first run, in claim order), or of its latest attempt with a stderr. None: no such
    attempt; bytes None: that attempt stored no stderr (it never started FFmpeg)."""
    cur = await conn.execute(
        """SELECT n, stderr FROM (
               SELECT row_number() OVER (ORDER BY id) AS n, id, stderr
                 FROM attempts WHERE job_id = %(job)s) a
            WHERE (%(n)s::int IS NULL AND stderr IS NOT NULL) OR n = %(n)s::int
            ORDER BY id DESC LIMIT 1""",
        {"job": job_id, "n": number},
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return row[0], (zlib.decompress(row[1]) if row[1] is not None else None)


async def _event(
    conn: Conn,
    kind: str,
    job_id: int | None,
    node: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO events (job_id, node, kind, detail) VALUES (%s, %s, %s, %s)",
        [job_id, node, kind, Jsonb(detail or {})],
    )


# --------------------------------------------------------------------------- submit


class DependencyError(ValueError):
    """A job names a dependency that does not exist (or a later job of its own submission)."""


async def enqueue(
    conn: Conn,
    jobs: Sequence[NewJob],
    *,
    submitted_by: str,
    batch: bool = False,
    batch_name: str | None = None,
) -> list[int]:
    """Insert all jobs in one statement (one transaction, one NOTIFY); ids in input order.

    ``batch`` (or a ``batch_name``) makes the jobs one batch. Dependencies: ``depends_on``
    names existing jobs, ``after`` earlier jobs of this same call (by position); both only
    point backwards, so a cycle cannot be made.
    """
    if not jobs:
        return []
    for i, j in enumerate(jobs):
        if any(not 0 <= k < i for k in j.after):
            raise DependencyError(f"job {i} of this submission depends on a later job or itself")
    rows = [
        {
            "ord": i,
            "input": j.input,
            "output": j.output,
            "preset": j.preset,
            "preset_args": j.preset_args,
            "needs": j.needs,
            "priority": j.priority,
            "max_attempts": j.max_attempts,
            "meta": j.meta,
            "policy": j.policy,
            "in_roots": j.in_roots,
            "out_roots": j.out_roots,
            "requires": j.requires,
            "tags": j.tags,
            "pinned_node": j.pinned_node,
            "ffmpeg_min": j.ffmpeg_min,
            "ffmpeg_max": j.ffmpeg_max,
        }
        for i, j in enumerate(jobs)
    ]
    async with conn.transaction():
        batch_id = None
        if batch or batch_name is not None:
            cur = await conn.execute(
                "INSERT INTO batches (name, created_by) VALUES (%s, %s) RETURNING id",
                [batch_name, submitted_by],
            )
            row = await cur.fetchone()
            batch_id = row[0] if row else None
        cur = await conn.execute(
            """
            WITH src AS (
                SELECT * FROM jsonb_to_recordset(%(rows)s) AS r(
                    ord int, input text, output text, preset text, preset_args jsonb,
                    needs text[], priority int, max_attempts int, meta jsonb, policy jsonb,
                    in_roots text[], out_roots text[], requires text[], tags text[],
                    pinned_node text, ffmpeg_min text, ffmpeg_max text)
            ), ins AS (
                INSERT INTO jobs (input, output, preset, preset_args, needs, priority,
                                  max_attempts, meta, policy, submitted_by, in_roots, out_roots,
                                  requires, tags, pinned_node, ffmpeg_min, ffmpeg_max, batch_id)
                SELECT input, output, preset, preset_args, coalesce(needs, '{}'), priority,
                       max_attempts, meta, coalesce(policy, '{}'), %(by)s,
                       coalesce(in_roots, '{}'), coalesce(out_roots, '{}'),
                       coalesce(requires, '{}'), coalesce(tags, '{}'), pinned_node,
                       ffmpeg_min, ffmpeg_max, %(batch)s
                  FROM src ORDER BY ord
                RETURNING id
            ), ev AS (
                INSERT INTO events (job_id, kind, detail)
                SELECT id, 'submitted', jsonb_build_object('by', %(by)s::text) FROM ins
            )
            SELECT id FROM ins ORDER BY id
            """,
            {"rows": Jsonb(rows), "by": submitted_by, "batch": batch_id},
        )
        ids = [r[0] for r in await cur.fetchall()]
        deps = {
            job_id: sorted({*j.depends_on, *(ids[k] for k in j.after)})
            for job_id, j in zip(ids, jobs, strict=True)
            if j.depends_on or j.after
        }
        if deps:
            await _link_dependencies(conn, deps)
        return ids


async def _link_dependencies(conn: Conn, deps: dict[int, list[int]]) -> None:
    """Set each new job's dependencies and how many have not succeeded yet; a job whose
    dependency already failed (or was canceled) is canceled at once, saying which."""
    wanted = sorted({d for ds in deps.values() for d in ds})
    cur = await conn.execute("SELECT id FROM jobs WHERE id = ANY(%s)", [wanted])
    missing = sorted(set(wanted) - {r[0] for r in await cur.fetchall()})
    if missing:
        raise DependencyError(f"no job with id {', '.join(map(str, missing))} to depend on")
    await conn.execute(
        """
        WITH src AS (
            SELECT * FROM jsonb_to_recordset(%s) AS r(id bigint, deps bigint[])
        ), facts AS (
            SELECT src.id, src.deps,
                   (SELECT count(*) FROM jobs d
                     WHERE d.id = ANY(src.deps) AND d.state <> 'succeeded') AS pending,
                   (SELECT min(d.id) FROM jobs d
                     WHERE d.id = ANY(src.deps)
                       AND d.state IN ('failed', 'dead', 'canceled')) AS broken
              FROM src
        )
        UPDATE jobs j
           SET depends_on = facts.deps, deps_pending = facts.pending,
               state = CASE WHEN facts.broken IS NULL THEN j.state ELSE 'canceled' END,
               finished_at = CASE WHEN facts.broken IS NULL THEN NULL
                                  ELSE clock_timestamp() END,
               reason = CASE WHEN facts.broken IS NULL THEN NULL
                             ELSE 'dependency #' || facts.broken || ' '
                                  || (SELECT state FROM jobs WHERE id = facts.broken) END
          FROM facts WHERE j.id = facts.id
        """,
        [Jsonb([{"id": k, "deps": v} for k, v in deps.items()])],
    )


# --------------------------------------------------------------------------- claim


# The claiming node as the routing sees it. A node that is not registered (queue-level tests,
# tools) has no roots, encoders or tags: it can run only jobs that need none.
_ME = """me AS (
            SELECT coalesce(n.roots_read, '{}') AS roots_read,
                   coalesce(n.roots_write, '{}') AS roots_write,
                   coalesce(n.encoders, '{}') AS encoders, coalesce(n.tags, '{}') AS tags,
                   n.ffmpeg_semver AS semver
              FROM (SELECT 1) one LEFT JOIN nodes n ON n.identifier = %(node)s
        )"""

# A queued job this node may run (alias j; the node's row from _ME): routing by storage roots,
# encoders, tags, pinning and FFmpeg version, and never on a node it avoids. The node's side
# is read through scalar subqueries (evaluated once) and the test sits in ffdesk_can_run
# (see 0004_routing.sql): both keep the planner on the ordered index scans (0.4 ms per claim
# at 20 000 queued instead of 30 ms).
_RUNNABLE = """j.state = 'queued' AND NOT %(node)s = ANY(j.avoid_nodes)
               AND j.deps_pending = 0
               AND (j.pinned_node IS NULL OR j.pinned_node = %(node)s)
               AND ffdesk_can_run(j.in_roots, j.out_roots, j.requires, j.tags,
                                  j.ffmpeg_min, j.ffmpeg_max,
                                  (SELECT roots_read FROM me), (SELECT roots_write FROM me),
                                  (SELECT encoders FROM me), (SELECT tags FROM me),
                                  (SELECT semver FROM me))"""


async def claim(
    conn: Conn, *, node: str, session: str, host: str, limit: int, lease_seconds: float
) -> list[Job]:
    """Claim up to ``limit`` queued jobs in one statement (SKIP LOCKED: nodes never wait on
    each other and never get the same job). Creates the attempt rows in the same statement.

    The CTE is an optimization fence: the planner cannot turn the LIMIT into a nested loop
    that locks and updates more rows than asked for.
    """
    if limit <= 0:
        return []
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"""
        WITH {_ME},
        cand AS (
            -- Candidates from two index scans: the highest priorities and the oldest jobs.
            -- The oldest are always among them, so aging's bound holds however many
            -- high-priority jobs keep arriving; sorting a few hundred rows stays cheap.
            (SELECT j.id FROM jobs j WHERE {_RUNNABLE} AND j.not_before <= now()
              ORDER BY j.priority DESC, j.id LIMIT %(cand)s)
            UNION
            (SELECT j.id FROM jobs j WHERE {_RUNNABLE} AND j.not_before <= now()
              ORDER BY j.id LIMIT %(cand)s)
        ), picked AS MATERIALIZED (
            SELECT j.id FROM jobs j JOIN cand USING (id), cluster c
             WHERE j.state = 'queued'
             ORDER BY j.priority + floor(extract(epoch FROM now() - j.created_at) / c.aging_s)
                      DESC, j.id
             LIMIT %(limit)s
             FOR UPDATE OF j SKIP LOCKED
        ), claimed AS (
            UPDATE jobs j
               SET state = 'running', attempt = j.attempt + 1, claim = nextval('ffdesk_claim'),
                   node = %(node)s, node_session = %(session)s, claimed_at = now(),
                   started_at = NULL, finished_at = NULL,
                   lease_until = now() + make_interval(secs => %(lease)s),
                   progress = NULL, fps = NULL, speed = NULL, eta_s = NULL, out_time_s = NULL,
                   exit_code = NULL, reason = NULL, failure_kind = NULL
              FROM picked WHERE j.id = picked.id
            RETURNING j.*
        ), att AS (
            INSERT INTO attempts (id, job_id, seq, node, node_session, host, claimed_at)
            SELECT claim, id, attempt, node, node_session, %(host)s, claimed_at FROM claimed
        ), ev AS (
            INSERT INTO events (job_id, node, kind, detail)
            SELECT id, node, 'claimed',
                   jsonb_build_object('claim', claim, 'attempt', attempt, 'host', %(host)s::text)
              FROM claimed
        )
        SELECT {_JOB_COLUMNS} FROM claimed ORDER BY priority DESC, id
        """,
        {
            "limit": limit,
            "cand": max(64, 16 * limit),
            "node": node,
            "session": session,
            "host": host,
            "lease": lease_seconds,
        },
    )
    jobs = [_job(r) for r in await cur.fetchall()]
    await conn.commit()
    return jobs


async def next_due(conn: Conn, *, node: str) -> float | None:
    """Seconds until the earliest queued job this node may run becomes due (a retry
    waiting out its backoff); None if there is none. Lets an idle node sleep until then
    instead of finding it one poll interval late."""
    cur = await conn.execute(
        f"""WITH {_ME}
            SELECT extract(epoch FROM min(j.not_before) - now())::float8 FROM jobs j
             WHERE {_RUNNABLE} AND j.not_before > now()""",
        {"node": node},
    )
    row = await cur.fetchone()
    await conn.commit()
    return row[0] if row else None


# --------------------------------------------------------------------------- fenced writes


async def mark_started(
    conn: Conn,
    lease: Lease,
    *,
    argv: list[str],
    ffmpeg_version: str,
    ffmpeg_sha256: str,
    ffmpeg_fingerprint: str,
    duration_s: float | None,
    input_probe: dict[str, Any] | None,
    pid: int | None = None,
    node: str | None = None,
) -> bool:
    params = _fence_params(lease) | {
        "pid": pid,
        "node": node,
        "argv": Jsonb(argv),
        "ver": ffmpeg_version,
        "sha": ffmpeg_sha256,
        "fp": ffmpeg_fingerprint,
        "dur": duration_s,
        "probe": Jsonb(input_probe),
    }
    # One statement (three round trips before): it sits between claim and FFmpeg's start.
    cur = await conn.execute(
        f"""WITH started AS (
                UPDATE jobs SET started_at = clock_timestamp(), duration_s = %(dur)s,
                       progress = 0
                 WHERE {_FENCE}
                RETURNING id
            ), att AS (
                UPDATE attempts SET started_at = clock_timestamp(), argv = %(argv)s,
                       ffmpeg_version = %(ver)s, ffmpeg_sha256 = %(sha)s,
                       ffmpeg_fingerprint = %(fp)s, input_probe = %(probe)s, pid = %(pid)s
                 WHERE id = %(claim)s AND EXISTS (SELECT 1 FROM started)
            ), ev AS (
                INSERT INTO events (job_id, node, kind, detail)
                SELECT id, %(node)s, 'started',
                       jsonb_build_object('claim', %(claim)s::bigint, 'pid', %(pid)s::int)
                  FROM started
            )
            SELECT count(*) FROM started""",
        params,
    )
    row = await cur.fetchone()
    await conn.commit()
    return bool(row and row[0])


async def report_progress(
    conn: Conn,
    lease: Lease,
    *,
    progress: float | None,
    fps: float | None,
    speed: float | None,
    eta_s: float | None,
    out_time_s: float | None,
    duration_s: float | None = None,
    milestones: Sequence[int] = (),
    node: str | None = None,
) -> bool:
    """Progress of our run; ``milestones`` newly passed (25, 50, 75) go into the event log."""
    params = _fence_params(lease) | {
        "progress": progress,
        "fps": fps,
        "speed": speed,
        "eta": eta_s,
        "out": out_time_s,
        "dur": duration_s,
    }
    cur = await conn.execute(
        f"""UPDATE jobs SET progress = %(progress)s, fps = %(fps)s, speed = %(speed)s,
                   eta_s = %(eta)s, out_time_s = %(out)s,
                   duration_s = coalesce(%(dur)s, duration_s)
             WHERE {_FENCE}""",
        params,
    )
    if cur.rowcount == 1:
        for milestone in milestones:
            await _event(
                conn, "progress", lease.job_id, node, {"claim": lease.claim, "percent": milestone}
            )
    await conn.commit()
    return cur.rowcount == 1


async def lock_for_finish(conn: Conn, lease: Lease) -> bool:
    """Inside a transaction: lock our job row if we still own it.

    Used around the final ``os.replace`` of a successful output: while we hold the row lock
    no rescuer (SKIP LOCKED) or canceller can take the job, so the rename and the state change
    happen together or not at all, and a node that lost the job never overwrites the new
    owner's result.
    """
    cur = await conn.execute(f"SELECT 1 FROM jobs WHERE {_FENCE} FOR UPDATE", _fence_params(lease))
    return await cur.fetchone() is not None


@dataclass
class RunAudit:
    """What one run leaves in its attempt row besides the outcome: the input's fingerprint
    and the output's size, hash and probe summary (see ffdesk.engine.fingerprint)."""

    input_size: int | None = None
    input_mtime: float | None = None  # POSIX seconds
    input_hash: str | None = None
    input_full_hash: str | None = None
    output_path: str | None = None
    output_size: int | None = None
    output_hash: str | None = None
    output_full_hash: str | None = None
    output_probe: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """How a run ended, for :func:`finish`. ``state`` is the job's next state: succeeded,
    failed, dead, or queued (a retry after ``retry_in`` seconds, maybe avoiding this node)."""

    state: JobState
    exit_code: int | None = None
    reason: str | None = None
    kind: str | None = None  # failure class
    retry_in: float = 0.0
    avoid_node: bool = False
    why: str | None = None  # the policy's words: "retry 2 of 3 in 12.0 s"
    written: str | None = None  # the file written (succeeded)


async def other_nodes_available(conn: Conn, job_id: int, node: str) -> bool:
    """Could a live node other than ``node`` (and not avoided by the job) run it?"""
    cur = await conn.execute(
        """SELECT EXISTS (
               SELECT 1 FROM nodes n, jobs j
                WHERE j.id = %s AND n.identifier <> %s AND n.state = 'online'
                  AND now() - n.heartbeat_at < make_interval(secs => n.lease_s)
                  AND NOT n.identifier = ANY(j.avoid_nodes))""",
        [job_id, node],
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def finish(
    conn: Conn,
    lease: Lease,
    outcome: Outcome,
    *,
    stderr: str | bytes | None,
    node: str,
    input_probe: dict[str, Any] | None = None,
    duration_s: float | None = None,
    audit: RunAudit | None = None,
) -> bool:
    """Record the end of our run. Call inside a transaction.

    ``input_probe`` / ``duration_s``: the input as FFmpeg described it in this run's log.
    A retry keeps the attempt spent; the job goes back to ``queued`` with ``not_before`` set
    by the backoff and, for an environment failure, this node in ``avoid_nodes``.
    """
    blob, size = compress_stderr(stderr) if stderr is not None else (None, None)
    state = str(outcome.state)
    params = _fence_params(lease) | {
        "state": state,
        "rc": outcome.exit_code,
        "reason": outcome.reason,
        "kind": outcome.kind,
        "dur": duration_s,
        "retry": outcome.retry_in,
        "avoid": outcome.avoid_node,
        "node": node,
        "written": outcome.written,
    }
    cur = await conn.execute(
        f"""UPDATE jobs SET state = %(state)s,
                   finished_at = CASE WHEN %(state)s = 'queued' THEN NULL
                                      ELSE clock_timestamp() END,
                   duration_s = coalesce(%(dur)s, duration_s),
                   exit_code = %(rc)s, reason = %(reason)s, failure_kind = %(kind)s,
                   lease_until = NULL, eta_s = NULL,
                   progress = CASE WHEN %(state)s = 'succeeded' THEN 100
                                   WHEN %(state)s = 'queued' THEN NULL ELSE progress END,
                   written = CASE WHEN %(state)s = 'succeeded' THEN %(written)s ELSE written END,
                   node_session = CASE WHEN %(state)s = 'queued' THEN NULL ELSE node_session END,
                   node = CASE WHEN %(state)s = 'queued' THEN NULL ELSE node END,
                   started_at = CASE WHEN %(state)s = 'queued' THEN NULL ELSE started_at END,
                   fps = CASE WHEN %(state)s = 'queued' THEN NULL ELSE fps END,
                   speed = CASE WHEN %(state)s = 'queued' THEN NULL ELSE speed END,
                   not_before = CASE WHEN %(state)s = 'queued'
                                     THEN clock_timestamp() + make_interval(secs => %(retry)s)
                                     ELSE not_before END,
                   avoid_nodes = CASE WHEN %(avoid)s AND NOT %(node)s = ANY(avoid_nodes)
                                      THEN avoid_nodes || %(node)s::text ELSE avoid_nodes END
             WHERE {_FENCE}""",
        params,
    )
    if cur.rowcount != 1:
        return False
    outcome_name = "succeeded" if outcome.state == JobState.SUCCEEDED else "failed"
    await _close_attempt(
        conn,
        lease,
        outcome=outcome_name,
        exit_code=outcome.exit_code,
        reason=outcome.reason,
        stderr=(blob, size),
        kind=outcome.kind,
        retry_in=outcome.retry_in if outcome.state == JobState.QUEUED else None,
        input_probe=input_probe,
        audit=audit,
    )
    detail: dict[str, Any] = {"claim": lease.claim, "reason": outcome.reason}
    if outcome.kind:
        detail["kind"] = outcome.kind
    if outcome.why:
        detail["policy"] = outcome.why
    if outcome.state == JobState.QUEUED:
        detail |= {"retry_in": round(outcome.retry_in, 3), "avoid_node": outcome.avoid_node}
        kind = "retry-scheduled"
    else:
        kind = state
    if outcome.written:
        detail["written"] = outcome.written
    await _event(conn, kind, lease.job_id, node, detail)
    return True


async def record_output_intent(conn: Conn, lease: Lease, audit: RunAudit) -> bool:
    """Before the final rename: the output's hash on our attempt row, committed on its own.

    If the node dies after the rename but before the result commits, the next run of this
    job still recognises the file as its own (keep-both replaces it instead of writing
    "name (2).ext"). False if we no longer own the run.
    """
    async with conn.transaction():
        # A hint for a rare crash window, not a result: it need not wait for the WAL flush
        # (a lost hint costs at worst a "name (2).ext"), which keeps it off the job's path.
        await conn.execute("SET LOCAL synchronous_commit = off")
        cur = await conn.execute(
            """UPDATE attempts a SET output_size = %(size)s, output_hash = %(hash)s,
                       output_full_hash = %(full)s
                  FROM jobs j
                 WHERE a.id = %(claim)s AND a.finished_at IS NULL
                   AND j.id = %(job_id)s AND j.claim = %(claim)s
                   AND j.node_session = %(session)s AND j.state = 'running'""",
            _fence_params(lease)
            | {
                "size": audit.output_size,
                "hash": audit.output_hash,
                "full": audit.output_full_hash,
            },
        )
    return cur.rowcount == 1


async def record_hook(
    conn: Conn, lease: Lease, *, node: str, result: dict[str, Any], ok: bool
) -> None:
    """Append a hook run to our attempt's audit trail, and an event for the job's log."""
    await conn.execute(
        "UPDATE attempts SET hooks = hooks || %s WHERE id = %s",
        [Jsonb([result]), lease.claim],
    )
    await _event(
        conn,
        "hook" if ok else "hook-failed",
        lease.job_id,
        node,
        {"claim": lease.claim, "hook": result["name"], "phase": result["phase"],
         "exit_code": result["exit_code"], "error": result.get("error")},
    )
    await conn.commit()


async def own_output_hashes(conn: Conn, job_id: int) -> set[str]:
    """Fast hashes of every output this job's runs produced: an existing file with one of
    them is ffdesk's own for this job and may be replaced."""
    cur = await conn.execute(
        "SELECT output_hash FROM attempts WHERE job_id = %s AND output_hash IS NOT NULL",
        [job_id],
    )
    return {r[0] for r in await cur.fetchall()}


async def skip_existing(conn: Conn, lease: Lease, *, node: str, path: str) -> bool:
    """on_conflict = skip and the output exists: the job is done without running FFmpeg."""
    reason = f"skipped: {path} already exists (on_conflict = skip)"
    return await finish(
        conn, lease, Outcome(JobState.SUCCEEDED, reason=reason, written=path), stderr=None,
        node=node,
    )


async def _close_attempt(
    conn: Conn,
    lease: Lease,
    *,
    outcome: str,
    exit_code: int | None,
    reason: str | None,
    stderr: tuple[bytes | None, int | None],
    counted: bool = True,
    kind: str | None = None,
    retry_in: float | None = None,
    input_probe: dict[str, Any] | None = None,
    audit: RunAudit | None = None,
) -> None:
    """Everything the run leaves in its attempt row, in one statement (per-job cost)."""
    a = audit or RunAudit()
    await conn.execute(
        """UPDATE attempts SET finished_at = clock_timestamp(), outcome = %(outcome)s,
               exit_code = %(rc)s, reason = %(reason)s, counted = %(counted)s, kind = %(kind)s,
               stderr = coalesce(%(stderr)s, stderr),
               stderr_bytes = coalesce(%(stderr_bytes)s, stderr_bytes),
               retry_at = clock_timestamp() + make_interval(secs => %(retry)s::float8),
               input_probe = coalesce(%(probe)s, input_probe),
               input_size = coalesce(%(input_size)s, input_size),
               input_mtime = coalesce(to_timestamp(%(input_mtime)s::float8), input_mtime),
               input_hash = coalesce(%(input_hash)s, input_hash),
               input_full_hash = coalesce(%(input_full_hash)s, input_full_hash),
               output_path = coalesce(%(output_path)s, output_path),
               output_size = coalesce(%(output_size)s, output_size),
               output_hash = coalesce(%(output_hash)s, output_hash),
               output_full_hash = coalesce(%(output_full_hash)s, output_full_hash),
               output_probe = coalesce(%(output_probe)s, output_probe)
         WHERE id = %(claim)s AND finished_at IS NULL""",
        a.__dict__
        | {
            "outcome": outcome,
            "rc": exit_code,
            "reason": reason,
            "counted": counted,
            "kind": kind,
            "stderr": stderr[0],
            "stderr_bytes": stderr[1],
            "retry": retry_in,
            "probe": Jsonb(input_probe) if input_probe is not None else None,
            "output_probe": Jsonb(a.output_probe) if a.output_probe else None,
            "claim": lease.claim,
        },
    )


async def record_lost_attempt(
    conn: Conn,
    lease: Lease,
    *,
    reason: str,
    exit_code: int | None,
    stderr: str | bytes | None,
    node: str | None = None,
) -> None:
    """Audit of a run this node lost (canceled, rescued): its own attempt row only.

    This never touches the job row, so it cannot disturb a new owner.
    """
    blob, size = compress_stderr(stderr) if stderr is not None else (None, None)
    await _close_attempt(
        conn, lease, outcome="lost", exit_code=exit_code, reason=reason, stderr=(blob, size)
    )
    if node is not None:
        await _event(conn, "fenced-out", lease.job_id, node, {"claim": lease.claim,
                                                              "reason": reason})
    await conn.commit()


async def requeue_interrupted(
    conn: Conn, lease: Lease, *, reason: str, stderr: str | bytes | None, node: str
) -> bool:
    """Give a job back without spending its attempt (graceful shutdown, pause)."""
    blob, size = compress_stderr(stderr) if stderr is not None else (None, None)
    async with conn.transaction():
        cur = await conn.execute(
            f"""UPDATE jobs SET state = 'queued', attempt = greatest(attempt - 1, 0),
                       node = NULL, node_session = NULL, lease_until = NULL,
                       started_at = NULL, progress = NULL, fps = NULL, speed = NULL,
                       eta_s = NULL, out_time_s = NULL, reason = %(reason)s
                 WHERE {_FENCE}""",
            _fence_params(lease) | {"reason": reason},
        )
        if cur.rowcount != 1:
            return False
        await _close_attempt(
            conn,
            lease,
            outcome="interrupted",
            exit_code=None,
            reason=reason,
            stderr=(blob, size),
            counted=False,
        )
        await _event(conn, "requeued", lease.job_id, node, {"reason": reason})
    return True


# --------------------------------------------------------------------------- node life


async def recover_own(conn: Conn, *, node: str, session: str) -> list[int]:
    """At start: jobs a previous run of this node left in ``running`` (it crashed).

    The crashed run spent its attempt (the crash may have been the job's fault, e.g. OOM);
    jobs out of attempts go ``dead``. Attempts of earlier runs whose job ended meanwhile
    (canceled while this node was down) have no owner left to close them: closed as lost.
    """
    reason = f"node {node} restarted after a crash"
    ids = await _requeue_lost(
        conn,
        "state = 'running' AND node = %(node)s AND node_session <> %(session)s",
        {"node": node, "session": session},
        reason=reason,
        by=node,
    )
    await conn.execute(
        """UPDATE attempts SET outcome = 'lost', finished_at = clock_timestamp(), reason = %s
            WHERE node = %s AND node_session <> %s AND finished_at IS NULL""",
        [reason, node, session],
    )
    await conn.commit()
    return ids


async def rescue_expired(conn: Conn, *, by: str) -> list[int]:
    """Jobs whose lease expired (their node died or is cut off) go back to the queue."""
    return await _requeue_lost(conn, _EXPIRED, {}, reason=None, by=by)


def _requeue_ctes(where: str) -> str:
    """CTEs that give lost jobs back (attempt spent; ``dead`` when out of attempts), close
    their attempt rows and record a ``rescue`` event. ``moved`` lists what was moved.

    The UPDATE repeats the condition: a job that finished (or was re-claimed) between the
    SELECT and the UPDATE must stay as it is.
    """
    return f"""
        lost AS MATERIALIZED (
            SELECT id FROM jobs WHERE {where} FOR UPDATE SKIP LOCKED
        ), moved AS (
            UPDATE jobs j
               SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'dead' ELSE 'queued' END,
                   reason = coalesce(%(reason)s, 'node ' || j.node || ' lost'),
                   finished_at = CASE WHEN j.attempt >= j.max_attempts
                                      THEN clock_timestamp() END,
                   node_session = NULL, lease_until = NULL, started_at = NULL,
                   progress = NULL, fps = NULL, speed = NULL, eta_s = NULL
              FROM lost WHERE j.id = lost.id AND {where}
            RETURNING j.id, j.claim, j.state, j.reason, j.node
        ), att AS (
            UPDATE attempts a SET outcome = 'lost', finished_at = clock_timestamp(),
                   reason = moved.reason
              FROM moved WHERE a.id = moved.claim AND a.finished_at IS NULL
        ), ev AS (
            INSERT INTO events (job_id, node, kind, detail)
            SELECT id, %(by)s, 'rescue',
                   jsonb_build_object('state', state, 'reason', reason, 'lost_node', node)
              FROM moved
        )"""


_EXPIRED = "state = 'running' AND lease_until < now()"


async def _requeue_lost(
    conn: Conn, where: str, params: dict[str, Any], *, reason: str | None, by: str
) -> list[int]:
    cur = await conn.execute(
        f"WITH {_requeue_ctes(where)} SELECT id FROM moved ORDER BY id",
        params | {"reason": reason, "by": by},
    )
    ids = [r[0] for r in await cur.fetchall()]
    await conn.commit()
    return ids


@dataclass(frozen=True)
class RescueResult:
    jobs: list[int]  # given back (or dead)
    lost_nodes: list[str]  # newly recorded as offline
    next_expiry_s: float | None  # until the earliest other node's lease runs out


async def rescue(conn: Conn, *, by: str, session: str) -> RescueResult:
    """The rescuer's whole round in one statement (it runs every beat on every node, so it
    must be cheap): record nodes whose leases ran out as offline, give their jobs back, and
    say when the next foreign lease expires so the rescuer can sleep until exactly then."""
    cur = await conn.execute(
        f"""
        WITH lost_nodes AS (
            UPDATE nodes n SET state = 'offline',
                   state_reason = 'lost: no heartbeat since '
                                  || to_char(n.heartbeat_at, 'YYYY-MM-DD HH24:MI:SS TZ')
             WHERE n.state <> 'offline'
               AND now() - n.heartbeat_at > make_interval(secs => n.lease_s)
            RETURNING n.identifier
        ), node_ev AS (
            INSERT INTO events (node, kind, detail)
            SELECT identifier, 'node-lost', jsonb_build_object('by', %(by)s::text)
              FROM lost_nodes
        ), {_requeue_ctes(_EXPIRED)}
        SELECT 'job', id::text, NULL::float8 FROM moved
        UNION ALL
        SELECT 'node', identifier, NULL FROM lost_nodes
        UNION ALL
        SELECT 'next', NULL, extract(epoch FROM min(lease_until) - now())::float8
          FROM jobs
         WHERE state = 'running' AND lease_until >= now()
           AND node_session IS DISTINCT FROM %(session)s
        """,
        {"reason": None, "by": by, "session": session},
    )
    jobs_moved: list[int] = []
    lost: list[str] = []
    expiry = None
    for kind, key, seconds in await cur.fetchall():
        if kind == "job":
            jobs_moved.append(int(key))
        elif kind == "node":
            lost.append(key)
        else:
            expiry = seconds
    await conn.commit()
    return RescueResult(sorted(jobs_moved), sorted(lost), expiry)


async def renew_leases(
    conn: Conn,
    *,
    node: str,
    session: str,
    lease_seconds: float,
    cpu_percent: float | None = None,
    mem_percent: float | None = None,
) -> tuple[dict[int, int], str | None]:
    """One statement: the node's heartbeat and the leases of all its running jobs.

    Returns ({job id: claim} still owned, the node's recorded state). A running job missing
    from the first was lost; the state carries remote pause / drain / resume requests whose
    NOTIFY this node may have missed.
    """
    cur = await conn.execute(
        """
        WITH beat AS (
            UPDATE nodes SET heartbeat_at = now(), cpu_percent = %(cpu)s, mem_percent = %(mem)s
             WHERE identifier = %(node)s AND session = %(session)s
            RETURNING state
        ), leases AS (
            UPDATE jobs SET lease_until = now() + make_interval(secs => %(lease)s)
             WHERE node_session = %(session)s AND state = 'running'
            RETURNING id, claim
        )
        SELECT NULL::bigint, NULL::bigint, state FROM beat
        UNION ALL
        SELECT id, claim, NULL FROM leases
        """,
        {"node": node, "session": session, "lease": lease_seconds, "cpu": cpu_percent,
         "mem": mem_percent},
    )
    owned: dict[int, int] = {}
    state: str | None = None
    for job_id, claim_token, node_state in await cur.fetchall():
        if job_id is None:
            state = node_state
        else:
            owned[job_id] = claim_token
    await conn.commit()
    return owned, state


async def set_priority(conn: Conn, ids: Iterable[int], priority: int, *, by: str) -> dict[int, str]:
    """Change the priority of jobs that have not finished. Returns {id: state} found."""
    id_list = list(ids)
    async with conn.transaction():
        cur = await conn.execute(
            """UPDATE jobs SET priority = %s
                WHERE id = ANY(%s) AND state IN ('queued', 'running')""",
            [priority, id_list],
        )
        await conn.execute(
            """INSERT INTO events (job_id, kind, detail)
               SELECT j.id, 'priority', jsonb_build_object('by', %s::text, 'priority', %s::int)
                 FROM jobs j WHERE j.id = ANY(%s) AND j.state IN ('queued', 'running')""",
            [by, priority, id_list],
        )
        del cur
        cur = await conn.execute("SELECT id, state FROM jobs WHERE id = ANY(%s)", [id_list])
        return {r[0]: r[1] for r in await cur.fetchall()}


# --------------------------------------------------------------------------- user actions


async def cancel(conn: Conn, ids: Iterable[int], *, by: str) -> dict[int, str]:
    """Cancel queued or running jobs. Returns {id: previous state} for every id found.

    A running job is canceled by its state alone: the owning node learns it from NOTIFY (or at
    its next fenced write / heartbeat) and stops its FFmpeg.
    """
    id_list = list(ids)
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT id, state FROM jobs WHERE id = ANY(%s) FOR UPDATE", [id_list]
        )
        found = {r[0]: r[1] for r in await cur.fetchall()}
        todo = [i for i, s in found.items() if s in ("queued", "running")]
        if todo:
            await conn.execute(
                """UPDATE jobs SET state = 'canceled', finished_at = clock_timestamp(),
                       reason = 'canceled by ' || %s, lease_until = NULL, eta_s = NULL
                 WHERE id = ANY(%s)""",
                [by, todo],
            )
            await conn.execute(
                """INSERT INTO events (job_id, kind, detail)
                   SELECT unnest(%s::bigint[]), 'canceled', jsonb_build_object('by', %s::text)""",
                [todo, by],
            )
    return found


RETRYABLE_STATES = ("failed", "dead", "canceled")


async def retry(
    conn: Conn,
    ids: Iterable[int] = (),
    *,
    by: str,
    states: Sequence[str] = (),
    since_seconds: float | None = None,
) -> dict[int, str]:
    """Reprocess: put failed / dead / canceled jobs back in the queue with a fresh attempt
    budget and no avoided nodes. Their attempts and events stay in the audit trail.

    Selects ``ids`` if given, else every job in ``states`` (default: all three), optionally
    only those that finished within ``since_seconds``. Returns {id: previous state} of every
    selected job that exists (jobs in other states are reported but left alone).
    """
    id_list = list(ids)
    wanted = [s for s in (states or RETRYABLE_STATES)]
    async with conn.transaction():
        cur = await conn.execute(
            """SELECT id, state FROM jobs
                WHERE (cardinality(%(ids)s::bigint[]) = 0 OR id = ANY(%(ids)s))
                  AND (cardinality(%(ids)s::bigint[]) > 0 OR state = ANY(%(states)s))
                  AND (%(since)s::float8 IS NULL
                       OR finished_at >= now() - make_interval(secs => %(since)s::float8))
                ORDER BY id FOR UPDATE""",
            {"ids": id_list, "states": wanted, "since": since_seconds},
        )
        found = {r[0]: r[1] for r in await cur.fetchall()}
        todo = [i for i, s in found.items() if s in RETRYABLE_STATES and s in wanted]
        if todo:
            await conn.execute(
                """INSERT INTO events (job_id, kind, detail)
                   SELECT id, 'retried',
                          jsonb_build_object('by', %s::text, 'from', state, 'reason', reason)
                     FROM jobs WHERE id = ANY(%s) ORDER BY id""",
                [by, todo],
            )
            await conn.execute(
                """UPDATE jobs SET state = 'queued', attempt = 0, not_before = now(),
                       node = NULL, node_session = NULL, claim = NULL, lease_until = NULL,
                       claimed_at = NULL, started_at = NULL, finished_at = NULL,
                       progress = NULL, fps = NULL, speed = NULL, eta_s = NULL,
                       out_time_s = NULL, exit_code = NULL, reason = NULL,
                       failure_kind = NULL, avoid_nodes = '{}', written = NULL,
                       deps_pending = (SELECT count(*) FROM jobs d
                                        WHERE d.id = ANY(jobs.depends_on)
                                          AND d.state <> 'succeeded')
                 WHERE id = ANY(%s)""",
                [todo],
            )
    return found


# --------------------------------------------------------------------------- reading


async def list_jobs(
    conn: Conn,
    *,
    states: Sequence[str] = (),
    limit: int | None = None,
    since_revision: int | None = None,
) -> list[Job]:
    clauses, params = [], {}
    if states:
        clauses.append("state = ANY(%(states)s)")
        params["states"] = list(states)
    if since_revision is not None:
        clauses.append("revision > %(rev)s")
        params["rev"] = since_revision
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    lim = f"LIMIT {int(limit)}" if limit else ""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"SELECT {_JOB_COLUMNS} FROM jobs {where} ORDER BY id {lim}", params)
    return [_job(r) for r in await cur.fetchall()]


async def get_job(conn: Conn, job_id: int) -> Job | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = %s", [job_id])
    row = await cur.fetchone()
    return _job(row) if row else None


async def get_attempts(conn: Conn, job_id: int) -> list[Attempt]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        """SELECT id, job_id, seq, node, node_session, host, claimed_at, started_at,
                  finished_at, outcome, counted, exit_code, reason, argv, ffmpeg_version,
                  ffmpeg_sha256, ffmpeg_fingerprint, input_probe, stderr, stderr_bytes,
                  kind, pid, retry_at, input_size, input_mtime, input_hash, input_full_hash,
                  output_path, output_size, output_hash, output_full_hash, output_probe, hooks
             FROM attempts WHERE job_id = %s ORDER BY id""",
        [job_id],
    )
    rows = await cur.fetchall()
    out = []
    for r in rows:
        r["stderr"] = decompress_stderr(r["stderr"])
        r["node_session"] = str(r["node_session"])
        out.append(Attempt(**r))
    return out


async def get_events(conn: Conn, job_id: int) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT at, node, kind, detail FROM events WHERE job_id = %s ORDER BY id", [job_id]
    )
    return list(await cur.fetchall())


async def batch_jobs(conn: Conn, batch_id: int) -> list[int]:
    cur = await conn.execute("SELECT id FROM jobs WHERE batch_id = %s ORDER BY id", [batch_id])
    return [r[0] for r in await cur.fetchall()]


async def list_batches(conn: Conn, batch_id: int | None = None) -> list[dict[str, Any]]:
    """Batches with their progress (done / failed / canceled / running / queued / total)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        """SELECT b.id, b.name, b.state, b.created_at, b.created_by, b.finished_at,
                  count(j.id) AS total,
                  count(j.id) FILTER (WHERE j.state = 'succeeded') AS done,
                  count(j.id) FILTER (WHERE j.state IN ('failed', 'dead')) AS failed,
                  count(j.id) FILTER (WHERE j.state = 'canceled') AS canceled,
                  count(j.id) FILTER (WHERE j.state = 'running') AS running,
                  count(j.id) FILTER (WHERE j.state = 'queued') AS queued
             FROM batches b LEFT JOIN jobs j ON j.batch_id = b.id
            WHERE %(id)s::bigint IS NULL OR b.id = %(id)s::bigint
            GROUP BY b.id ORDER BY b.id""",
        {"id": batch_id},
    )
    rows = list(await cur.fetchall())
    await conn.commit()
    return rows


async def counts_by_state(conn: Conn) -> dict[str, int]:
    cur = await conn.execute("SELECT state, count(*) FROM jobs GROUP BY state")
    return {r[0]: r[1] for r in await cur.fetchall()}


async def notify(conn: Conn, channel: str, payload: str) -> None:
    """A plain NOTIFY (the listener's self-ping)."""
    await conn.execute("SELECT pg_notify(%s, %s)", [channel, payload])
    await conn.commit()


async def move_to_top(conn: Conn, ids: Iterable[int], *, by: str) -> dict[int, str]:
    """Give queued jobs a priority above every other queued job's effective priority
    (priority + aging steps, as the claim orders them). Returns {id: state}.

    Two steps above the highest: the aging steps of two jobs can drift apart by one as
    they cross step boundaries at different moments, and ties go to the older job."""
    id_list = list(ids)
    async with conn.transaction():
        await conn.execute(
            """
            WITH top AS (
                SELECT coalesce(least(max(j.priority + floor(
                           extract(epoch FROM now() - j.created_at) / c.aging_s)),
                           2147483645)::int + 2, 1) AS p
                  FROM jobs j, cluster c
                 WHERE j.state = 'queued' AND NOT j.id = ANY(%(ids)s)
            ), moved AS (
                UPDATE jobs SET priority = greatest(jobs.priority, top.p) FROM top
                 WHERE jobs.id = ANY(%(ids)s) AND jobs.state = 'queued'
                RETURNING jobs.id, jobs.priority
            )
            INSERT INTO events (job_id, kind, detail)
            SELECT id, 'priority', jsonb_build_object('by', %(by)s::text, 'priority', priority,
                                                      'top', true)
              FROM moved
            """,
            {"ids": id_list, "by": by},
        )
        cur = await conn.execute("SELECT id, state FROM jobs WHERE id = ANY(%s)", [id_list])
        return {r[0]: r[1] for r in await cur.fetchall()}
