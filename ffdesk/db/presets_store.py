"""SQL for the preset library: the presets users saved for the whole cluster.

A row is one preset table in the builtin.toml format (validation happens before a table gets
here, in ``ffdesk.ffmpeg.presets``). Built-ins never live in this table. Every save takes a
new revision from the global ``ffdesk_revision`` sequence: an edit may name the revision it
started from and is refused when the row moved on meanwhile. Each change is also recorded in
the event log (job_id NULL) with who made it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ffdesk.core.errors import FfdeskError

Conn = psycopg.AsyncConnection[Any]

_COLUMNS = (
    "name, description, args, output, needs, policy, created_at, created_by, updated_at, "
    "updated_by, revision"
)
_TABLE_KEYS = ("description", "args", "output", "needs")


class PresetStoreError(FfdeskError):
    """A save the library refused: the name is unknown, or the preset moved on meanwhile."""


class PresetExists(PresetStoreError):
    """The library already has a preset of that name."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"a preset named '{name}' is already in the library; choose another name "
            f"(or 'ffdesk presets edit {name}' to change it)"
        )
        self.name = name


@dataclass(frozen=True)
class StoredPreset:
    name: str
    description: str
    args: list[str]
    output: str
    needs: list[str]
    policy: dict[str, Any]
    created_at: datetime
    created_by: str | None
    updated_at: datetime
    updated_by: str | None
    revision: int

    def table(self) -> dict[str, Any]:
        """The preset table (builtin.toml format) this row holds."""
        return {
            "description": self.description,
            "args": list(self.args),
            "output": self.output,
            "needs": list(self.needs),
            **self.policy,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **self.table(),
            "revision": self.revision,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "updated_at": self.updated_at.isoformat(),
            "updated_by": self.updated_by,
        }


def _row(row: Mapping[str, Any]) -> StoredPreset:
    return StoredPreset(**{**row, "needs": list(row["needs"] or [])})


def _params(name: str, table: Mapping[str, Any], by: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": table.get("description", ""),
        "args": Jsonb(list(table["args"])),
        "output": table["output"],
        "needs": list(table.get("needs", [])),
        "policy": Jsonb({k: v for k, v in table.items() if k not in _TABLE_KEYS}),
        "by": by,
    }


async def _event(conn: Conn, kind: str, detail: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO events (job_id, node, kind, detail) VALUES (NULL, NULL, %s, %s)",
        [kind, Jsonb(detail)],
    )


async def list_presets(conn: Conn) -> list[StoredPreset]:
    """Every stored preset, by name."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM presets ORDER BY name")
        rows = await cur.fetchall()
    await conn.commit()
    return [_row(r) for r in rows]


async def get_preset(conn: Conn, name: str) -> StoredPreset | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM presets WHERE name = %s", [name])
        row = await cur.fetchone()
    await conn.commit()
    return _row(row) if row else None


async def add_presets(
    conn: Conn, tables: Mapping[str, Mapping[str, Any]], *, by: str, replace: bool = False
) -> list[StoredPreset]:
    """Insert (validated) preset tables, all or none, in one transaction. A name already in
    the library is refused, unless ``replace``: then that preset's table is replaced."""
    saved: list[StoredPreset] = []
    async with conn.transaction():
        for name, table in tables.items():
            conflict = (
                """DO UPDATE SET description = EXCLUDED.description, args = EXCLUDED.args,
                       output = EXCLUDED.output, needs = EXCLUDED.needs,
                       policy = EXCLUDED.policy, updated_at = now(),
                       updated_by = EXCLUDED.updated_by,
                       revision = nextval('ffdesk_revision')"""
                if replace
                else "DO NOTHING"
            )
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    f"""INSERT INTO presets (name, description, args, output, needs, policy,
                                            created_by, updated_by)
                        VALUES (%(name)s, %(description)s, %(args)s, %(output)s, %(needs)s,
                                %(policy)s, %(by)s, %(by)s)
                        ON CONFLICT (name) {conflict}
                        RETURNING {_COLUMNS}""",
                    _params(name, table, by),
                )
                row = await cur.fetchone()
            if row is None:
                raise PresetExists(name)
            stored = _row(row)
            saved.append(stored)
            await _event(
                conn, "preset-saved", {"preset": name, "by": by, "revision": stored.revision}
            )
    return saved


async def update_preset(
    conn: Conn,
    name: str,
    table: Mapping[str, Any],
    *,
    by: str,
    expected_revision: int | None = None,
) -> StoredPreset:
    """Replace a stored preset's table. With ``expected_revision``, only if nobody saved it
    since that revision (optimistic check); raises PresetStoreError otherwise."""
    async with conn.transaction():
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"""UPDATE presets
                       SET description = %(description)s, args = %(args)s, output = %(output)s,
                           needs = %(needs)s, policy = %(policy)s, updated_at = now(),
                           updated_by = %(by)s, revision = nextval('ffdesk_revision')
                     WHERE name = %(name)s
                       AND (%(expected)s::bigint IS NULL OR revision = %(expected)s::bigint)
                 RETURNING {_COLUMNS}""",
                {**_params(name, table, by), "expected": expected_revision},
            )
            row = await cur.fetchone()
        if row is None:
            cur2 = await conn.execute(
                "SELECT revision, updated_by, updated_at FROM presets WHERE name = %s", [name]
            )
            now = await cur2.fetchone()
            if now is None:
                raise PresetStoreError(f"no preset named '{name}' in the library")
            revision, who, when = now
            raise PresetStoreError(
                f"preset '{name}' was changed meanwhile (revision {revision}, saved by "
                f"{who or '?'} at {when.astimezone():%Y-%m-%d %H:%M:%S}; you edited revision "
                f"{expected_revision}); look at it again ('ffdesk presets show {name}') and "
                "redo your edit, or add --force to overwrite it"
            )
        stored = _row(row)
        await _event(conn, "preset-saved", {"preset": name, "by": by, "revision": stored.revision})
    return stored


async def delete_preset(conn: Conn, name: str, *, by: str) -> StoredPreset | None:
    """Remove a stored preset; the removed row, or None when there was none."""
    async with conn.transaction():
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(f"DELETE FROM presets WHERE name = %s RETURNING {_COLUMNS}", [name])
            row = await cur.fetchone()
        if row is None:
            return None
        await _event(conn, "preset-removed", {"preset": name, "by": by})
    return _row(row)
