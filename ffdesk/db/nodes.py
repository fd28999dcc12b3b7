"""SQL for the node registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

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
                              encoders, tags, slots, state, state_reason, started_at,
                              heartbeat_at)
           VALUES (%(identifier)s, %(session)s, %(host)s, %(pid)s, %(pid_created)s, %(os)s,
                   %(arch)s, %(cpu)s, %(cores)s, %(ram_bytes)s, %(app_version)s,
                   %(ffmpeg_version)s, %(ffmpeg_fingerprint)s, %(encoders)s, %(tags)s,
                   %(slots)s, 'online', NULL, now(), now())
           ON CONFLICT (identifier) DO UPDATE SET
               session = EXCLUDED.session, host = EXCLUDED.host, pid = EXCLUDED.pid,
               pid_created = EXCLUDED.pid_created, os = EXCLUDED.os, arch = EXCLUDED.arch,
               cpu = EXCLUDED.cpu, cores = EXCLUDED.cores, ram_bytes = EXCLUDED.ram_bytes,
               app_version = EXCLUDED.app_version, ffmpeg_version = EXCLUDED.ffmpeg_version,
               ffmpeg_fingerprint = EXCLUDED.ffmpeg_fingerprint, encoders = EXCLUDED.encoders,
               tags = EXCLUDED.tags, slots = EXCLUDED.slots, state = 'online',
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


async def list_nodes(conn: Conn) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        """SELECT n.*, extract(epoch FROM now() - heartbeat_at) AS heartbeat_age,
                  (SELECT count(*) FROM jobs j WHERE j.node_session = n.session
                                                 AND j.state = 'running') AS running
             FROM nodes n ORDER BY identifier"""
    )
    rows = list(await cur.fetchall())
    await conn.commit()
    return rows
