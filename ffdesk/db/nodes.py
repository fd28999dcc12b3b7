"""SQL for the node registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

Conn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True)
class NodeInfo:
    identifier: str
    session: str
    host: str
    pid: int
    pid_created: float
    os: str
    arch: str
    cpu: str
    cores: int
    ram_bytes: int
    app_version: str
    ffmpeg_version: str
    ffmpeg_fingerprint: str
    slots: int
    heartbeat_s: float
    lease_s: float
    encoders: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


async def find_live_owner(conn: Conn, identifier: str, *, stale_after: float) -> dict | None:
    """The registry row for ``identifier`` if a node using it has beaten its heart recently."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        """SELECT identifier, session, host, pid, pid_created, state,
                  extract(epoch FROM now() - heartbeat_at) AS age
             FROM nodes
            WHERE identifier = %s AND state <> 'offline'
              AND heartbeat_at > now() - make_interval(secs => %s)""",
        [identifier, stale_after],
    )
    row = await cur.fetchone()
    await conn.commit()
    return row


async def register(conn: Conn, info: NodeInfo) -> None:
    await conn.execute(
        """INSERT INTO nodes (identifier, session, host, pid, pid_created, os, arch, cpu, cores,
                              ram_bytes, app_version, ffmpeg_version, ffmpeg_fingerprint,
                              encoders, tags, slots, heartbeat_s, lease_s, state,
                              state_reason, started_at, heartbeat_at)
           VALUES (%(identifier)s, %(session)s, %(host)s, %(pid)s, %(pid_created)s, %(os)s,
                   %(arch)s, %(cpu)s, %(cores)s, %(ram_bytes)s, %(app_version)s,
                   %(ffmpeg_version)s, %(ffmpeg_fingerprint)s, %(encoders)s, %(tags)s,
                   %(slots)s, %(heartbeat_s)s, %(lease_s)s, 'online', NULL, now(), now())
           ON CONFLICT (identifier) DO UPDATE SET
               session = EXCLUDED.session, host = EXCLUDED.host, pid = EXCLUDED.pid,
               pid_created = EXCLUDED.pid_created, os = EXCLUDED.os, arch = EXCLUDED.arch,
               cpu = EXCLUDED.cpu, cores = EXCLUDED.cores, ram_bytes = EXCLUDED.ram_bytes,
               app_version = EXCLUDED.app_version, ffmpeg_version = EXCLUDED.ffmpeg_version,
               ffmpeg_fingerprint = EXCLUDED.ffmpeg_fingerprint, encoders = EXCLUDED.encoders,
               tags = EXCLUDED.tags, slots = EXCLUDED.slots,
               heartbeat_s = EXCLUDED.heartbeat_s, lease_s = EXCLUDED.lease_s, state = 'online',
               state_reason = NULL, started_at = now(), heartbeat_at = now()""",
        {**info.__dict__, "encoders": list(info.encoders), "tags": list(info.tags)},
    )
    await conn.execute(
        "INSERT INTO events (node, kind, detail) VALUES (%s, 'node-started', '{}')",
        [info.identifier],
    )
    await conn.commit()


async def set_offline(conn: Conn, identifier: str, session: str) -> None:
    await conn.execute(
        "UPDATE nodes SET state = 'offline', state_reason = 'stopped' "
        "WHERE identifier = %s AND session = %s",
        [identifier, session],
    )
    await conn.execute(
        "INSERT INTO events (node, kind, detail) VALUES (%s, 'node-stopped', '{}')", [identifier]
    )
    await conn.commit()


async def quarantine(conn: Conn, identifier: str, session: str, reason: str) -> bool:
    """The node takes itself out of work after repeated environment failures; it stays
    out until someone resumes it (``ffdesk nodes resume``, the app) or it restarts."""
    async with conn.transaction():
        cur = await conn.execute(
            """UPDATE nodes SET state = 'quarantined', state_reason = %s
                WHERE identifier = %s AND session = %s AND state <> 'offline'""",
            [reason, identifier, session],
        )
        if cur.rowcount == 1:
            await conn.execute(
                "INSERT INTO events (node, kind, detail) VALUES (%s, 'node-quarantined', %s)",
                [identifier, Jsonb({"reason": reason})],
            )
    return cur.rowcount == 1


async def publish_capabilities(
    conn: Conn,
    identifier: str,
    session: str,
    *,
    roots_read: list[str],
    roots_write: list[str],
    roots_status: dict[str, Any],
    semver: list[int] | None,
) -> None:
    """What this node can reach and run, as the claim's routing reads it."""
    await conn.execute(
        """UPDATE nodes SET roots_read = %s, roots_write = %s, roots_status = %s,
                  ffmpeg_semver = %s
            WHERE identifier = %s AND session = %s""",
        [sorted(roots_read), sorted(roots_write), Jsonb(roots_status), semver, identifier,
         session],
    )
    await conn.commit()


async def list_roots(conn: Conn) -> list[dict[str, Any]]:
    """Cluster-wide root names, each with every node's mapping and its last check."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        """SELECT r.name, r.description, r.created_at, r.created_by,
                  coalesce(jsonb_object_agg(n.identifier, n.roots_status -> r.name)
                           FILTER (WHERE n.roots_status ? r.name), '{}') AS nodes
             FROM roots r LEFT JOIN nodes n ON n.state <> 'offline'
            GROUP BY r.name ORDER BY r.name"""
    )
    rows = list(await cur.fetchall())
    await conn.commit()
    return rows


async def add_root(conn: Conn, name: str, description: str, *, by: str) -> bool:
    cur = await conn.execute(
        """INSERT INTO roots (name, description, created_by) VALUES (%s, %s, %s)
           ON CONFLICT (name) DO NOTHING""",
        [name, description, by],
    )
    await conn.commit()
    return cur.rowcount == 1


async def remove_root(conn: Conn, name: str) -> tuple[bool, int]:
    """(removed, queued or running jobs that still use it: then nothing is removed)."""
    async with conn.transaction():
        cur = await conn.execute(
            """SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')
                 AND (%s = ANY(in_roots) OR %s = ANY(out_roots))""",
            [name, name],
        )
        row = await cur.fetchone()
        using = int(row[0]) if row else 0
        if using:
            return False, using
        cur = await conn.execute("DELETE FROM roots WHERE name = %s", [name])
        return cur.rowcount == 1, 0


async def cluster_aging(conn: Conn, new_value: float | None = None) -> float:
    """The cluster's priority aging (seconds per priority step); set it when given."""
    if new_value is not None:
        await conn.execute("UPDATE cluster SET aging_s = %s", [new_value])
    cur = await conn.execute("SELECT aging_s FROM cluster")
    row = await cur.fetchone()
    await conn.commit()
    return float(row[0]) if row else 60.0


async def cluster_has_roots(conn: Conn) -> bool:
    cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM roots)")
    row = await cur.fetchone()
    await conn.commit()
    return bool(row and row[0])


async def explain_waiting(conn: Conn) -> int:
    """Write why queued jobs wait when no online node can run them ("waiting: no online
    node has hevc_nvenc") into their reason, and clear it once one can. One node at a time
    does it (a transaction-level advisory lock). Returns the number of jobs changed."""
    async with conn.transaction():
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(hashtext('ffdesk-waiting'))")
        row = await cur.fetchone()
        if not row or not row[0]:
            return 0
        cur = await conn.execute(_EXPLAIN_WAITING)
        return cur.rowcount


_EXPLAIN_WAITING = """
WITH live AS (
    SELECT identifier, roots_read, roots_write, encoders, tags, ffmpeg_semver AS semver
      FROM nodes
     WHERE state = 'online' AND now() - heartbeat_at < make_interval(secs => lease_s)
), why AS (
    SELECT j.id, CASE
        WHEN j.deps_pending > 0
            THEN 'waiting: for ' || j.deps_pending || ' dependency job(s) to succeed'
        WHEN NOT EXISTS (SELECT 1 FROM live) THEN 'waiting: no node is online'
        WHEN j.pinned_node IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM live WHERE identifier = j.pinned_node)
            THEN 'waiting: pinned to node ' || j.pinned_node || ', which is not online'
        WHEN NOT EXISTS (SELECT 1 FROM live n WHERE j.in_roots <@ n.roots_read
                                                AND j.out_roots <@ n.roots_write)
            THEN 'waiting: no online node can reach storage root '
                 || coalesce(nullif(array_to_string(ARRAY(
                        SELECT r FROM (
                            SELECT r FROM unnest(j.in_roots || j.out_roots) r
                             WHERE NOT EXISTS (SELECT 1 FROM live n WHERE r = ANY(n.roots_read))
                            UNION
                            SELECT r || ' (read-only)' FROM unnest(j.out_roots) r
                             WHERE EXISTS (SELECT 1 FROM live n WHERE r = ANY(n.roots_read))
                               AND NOT EXISTS (SELECT 1 FROM live n
                                                WHERE r = ANY(n.roots_write))) missing
                         ORDER BY r), ', '), ''),
                        array_to_string(j.in_roots || j.out_roots, ', ')
                        || ' (not all on one node)')
        WHEN NOT EXISTS (SELECT 1 FROM live n WHERE j.requires <@ n.encoders)
            THEN 'waiting: no online node has ' || array_to_string(ARRAY(
                        SELECT e FROM unnest(j.requires) e
                         WHERE NOT EXISTS (SELECT 1 FROM live n
                                            WHERE e = ANY(n.encoders))), ', ')
        WHEN NOT EXISTS (SELECT 1 FROM live n WHERE j.tags <@ n.tags)
            THEN 'waiting: no online node has the tag(s) ' || array_to_string(j.tags, ', ')
        WHEN NOT EXISTS (
                SELECT 1 FROM live n
                 WHERE (j.ffmpeg_min IS NULL
                        OR n.semver >= string_to_array(j.ffmpeg_min, '.')::int[])
                   AND (j.ffmpeg_max IS NULL
                        OR n.semver[1:cardinality(string_to_array(j.ffmpeg_max, '.'))]
                           <= string_to_array(j.ffmpeg_max, '.')::int[]))
            THEN 'waiting: no online node has FFmpeg '
                 || coalesce(j.ffmpeg_min, '') || '..' || coalesce(j.ffmpeg_max, '')
        WHEN NOT EXISTS (
                SELECT 1 FROM live n
                 WHERE (j.pinned_node IS NULL OR j.pinned_node = n.identifier)
                   AND NOT n.identifier = ANY(j.avoid_nodes)
                   AND j.in_roots <@ n.roots_read AND j.out_roots <@ n.roots_write
                   AND j.requires <@ n.encoders AND j.tags <@ n.tags)
            THEN 'waiting: no online node meets all of its requirements'
        END AS reason
      FROM jobs j
     WHERE j.state = 'queued'
)
UPDATE jobs SET reason = why.reason
  FROM why
 WHERE jobs.id = why.id AND jobs.state = 'queued'
   AND jobs.reason IS DISTINCT FROM why.reason
   AND (why.reason IS NOT NULL OR jobs.reason LIKE 'waiting: %%')
"""


# What a person should see: a node that missed two beats is "stale"; one whose leases have
# expired is "offline" even before a rescuer got round to writing that down.
_SEEN_STATE = """
    CASE WHEN n.state IN ('offline', 'quarantined') THEN n.state
         WHEN now() - n.heartbeat_at > make_interval(secs => n.lease_s) THEN 'offline'
         WHEN now() - n.heartbeat_at > make_interval(secs => 2 * n.heartbeat_s) THEN 'stale'
         ELSE n.state END"""

REMOTE_ACTIONS = {"pause": "paused", "resume": "online", "drain": "draining"}


async def list_nodes(conn: Conn) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"""SELECT n.identifier, n.session::text AS session, n.host, n.pid, n.os, n.arch,
                   n.cpu, n.cores, n.ram_bytes, n.app_version, n.ffmpeg_version,
                   n.ffmpeg_fingerprint, n.encoders, n.tags, n.slots, n.heartbeat_s, n.lease_s,
                   n.cpu_percent, n.mem_percent, n.roots_status, n.ffmpeg_semver,
                   n.state AS recorded_state, {_SEEN_STATE} AS state, n.state_reason,
                   n.started_at, n.heartbeat_at, n.revision,
                   extract(epoch FROM now() - n.heartbeat_at)::float8 AS heartbeat_age,
                   coalesce(r.running, 0) AS running, coalesce(r.job_ids, '{{}}') AS job_ids,
                   r.fps
              FROM nodes n
              LEFT JOIN LATERAL (
                  SELECT count(*) AS running, array_agg(j.id ORDER BY j.id) AS job_ids,
                         sum(j.fps) AS fps
                    FROM jobs j WHERE j.node_session = n.session AND j.state = 'running'
              ) r ON true
             ORDER BY n.identifier"""
    )
    rows = list(await cur.fetchall())
    await conn.commit()
    return rows


async def request_state(conn: Conn, identifier: str, action: str, *, by: str) -> str | None:
    """Remote control: pause, resume or drain a node. Returns its previous state, or None if
    there is no such node. The node learns it from NOTIFY, or at its next heartbeat."""
    target = REMOTE_ACTIONS[action]
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT state FROM nodes WHERE identifier = %s FOR UPDATE", [identifier]
        )
        row = await cur.fetchone()
        if row is None:
            return None
        previous = row[0]
        if previous not in ("offline",) and previous != target:
            await conn.execute(
                "UPDATE nodes SET state = %s, state_reason = %s WHERE identifier = %s",
                [target, f"{action} by {by}", identifier],
            )
            await conn.execute(
                "INSERT INTO events (node, kind, detail) VALUES (%s, %s, %s)",
                [identifier, f"node-{action}", Jsonb({"by": by, "from": previous})],
            )
    return previous
