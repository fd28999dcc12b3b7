"""Versioned SQL migrations, applied at start under an advisory lock.

Several nodes may start at the same moment on a fresh database: the first one to take the lock
applies the pending files in one transaction; the others wait, then find nothing to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ffdesk import __version__
from ffdesk.core.errors import DatabaseError

log = logging.getLogger("ffdesk.db")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any 64-bit constant works; this one is "ffdesk" in ASCII, unlikely to collide.
ADVISORY_LOCK_KEY = 0x666664657368


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    return found


def latest_version() -> int:
    return max(m.version for m in available_migrations())


async def current_version(conn: psycopg.AsyncConnection) -> int:
    cur = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def _check_not_newer(version: int) -> None:
    if version > latest_version():
        raise DatabaseError(
            f"the database schema is version {version}, newer than this ffdesk {__version__} "
            f"understands (up to {latest_version()}); upgrade ffdesk on this machine"
        )


async def migrate(conn: psycopg.AsyncConnection) -> list[int]:
    """Bring the schema up to date; return the versions this call applied.

    ``conn`` must not be inside a transaction. The work runs in one transaction holding a
    transaction-level advisory lock, so a crash half-way leaves nothing half-applied.
    """
    version = await current_version(conn)
    await conn.rollback()
    _check_not_newer(version)
    if version == latest_version():
        return []  # the common case: no lock, no writes
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_version (
                   version     int PRIMARY KEY,
                   name        text NOT NULL,
                   app_version text NOT NULL,
                   applied_at  timestamptz NOT NULL DEFAULT now())"""
        )
        version = await current_version(conn)  # someone else may have migrated meanwhile
        _check_not_newer(version)
        for migration in available_migrations():
            if migration.version <= version:
                continue
            log.info("applying database migration %04d_%s", migration.version, migration.name)
            await conn.execute(migration.sql)  # type: ignore[arg-type]  # trusted file
            await conn.execute(
                "INSERT INTO schema_version (version, name, app_version) VALUES (%s, %s, %s)",
                [migration.version, migration.name, __version__],
            )
            applied.append(migration.version)
    return applied
