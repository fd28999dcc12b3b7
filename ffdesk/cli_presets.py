"""``ffdesk presets``: the preset catalogue and the cluster's preset library.

What a cluster sees is the built-in presets (read-only), the database's library (add, edit,
remove, copy, import, export) and, on a machine that has one, the legacy user
``presets.toml`` file (read-only here). One table format everywhere: the one of
``resources/presets/builtin.toml``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ffdesk.cli import EXIT_OK, _print_json, _run_db
from ffdesk.core.config import Settings
from ffdesk.core.errors import FfdeskError, FfmpegNotFound
from ffdesk.core.places import Places
from ffdesk.ffmpeg.presets import (
    Preset,
    PresetError,
    check_for_save,
    dump_presets,
    load_presets,
    preset_from_table,
)

ACTIONS = ("show", "add", "edit", "remove", "copy", "import", "export")
_REVISION_NOTE = re.compile(r"^#\s*revision\s+(\d+)\b")
_TABLE_HEADER = re.compile(r'^\[\s*(?:"([^"\\]+)"|([A-Za-z0-9_.-]+))\s*\]\s*(?:#.*)?$')


def add_arguments(
    presets: argparse.ArgumentParser, common: argparse.ArgumentParser, parser_class: type
) -> None:
    """The ``presets`` command's options and actions (plain ``presets`` lists)."""
    presets.add_argument("--json", action="store_true", help="as JSON")
    sub = presets.add_subparsers(
        dest="presets_command", metavar="ACTION", parser_class=parser_class
    )

    def action(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=text, description=text)

    show = action("show", "one preset in full: arguments, output, policy, revision")
    show.add_argument("name", metavar="NAME")
    # SUPPRESS: "presets --json show X" and "presets show X --json" both work.
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="as JSON")
    add = action("add", "save a new preset to the database from a TOML table")
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--file",
        required=True,
        metavar="FILE",
        help="TOML with the preset's table ('-': standard input)",
    )
    edit = action("edit", "replace a database preset with a TOML table")
    edit.add_argument("name", metavar="NAME")
    edit.add_argument(
        "--file",
        required=True,
        metavar="FILE",
        help="TOML with the preset's table ('-': standard input)",
    )
    edit.add_argument(
        "--if-revision",
        type=int,
        metavar="N",
        help="refuse if the preset is no longer at revision N (default: the "
        "revision noted in a file made by 'presets export')",
    )
    edit.add_argument(
        "--force", action="store_true", help="save even if someone changed the preset meanwhile"
    )
    remove = action("remove", "remove a database preset (queued jobs keep their copy)")
    remove.add_argument("name", metavar="NAME")
    copy = action("copy", "save a copy of any preset (built-ins too) under a new name")
    copy.add_argument("source", metavar="SRC")
    copy.add_argument("new", metavar="NEW")
    imp = action("import", "save every preset of a TOML file to the database, all or none")
    imp.add_argument("file", metavar="FILE", help="TOML file, one table per preset ('-': stdin)")
    imp.add_argument(
        "--replace",
        action="store_true",
        help="replace database presets of the same names (built-ins never)",
    )
    exp = action("export", "write presets as TOML (default: every database preset)")
    exp.add_argument("names", nargs="*", metavar="NAME")
    exp.add_argument("--to", metavar="FILE", help="file to write (default: standard output)")


# --------------------------------------------------------------------------- loading


def _local_presets(places: Places) -> dict[str, Preset]:
    """Built-ins and the legacy user file: what needs no database."""
    extra = [places.user_presets_file] if places.user_presets_file.exists() else []
    return load_presets(extra)


def _has_database(settings: Settings, places: Places) -> bool:
    """An embedded server never created holds no presets: no need to create it to list."""
    if settings.database:
        return True
    from ffdesk.db.embedded import EmbeddedServer

    return (EmbeddedServer(places.embedded_dir).pgdata / "PG_VERSION").exists()


def _merge(places: Places, rows: list[Any], problems: list[str]) -> dict[str, Preset]:
    extra = [places.user_presets_file] if places.user_presets_file.exists() else []
    return load_presets(extra, stored=[(r.name, r.table()) for r in rows], problems=problems)


def load_all(
    places: Places, settings: Settings | None = None, *, need: str | None = None
) -> dict[str, Preset]:
    """Every preset this machine sees: built-ins, the user file, the database's library.

    Without ``settings`` (or when ``need`` is a built-in or file preset) the database is not
    asked. Database presets that cannot be used here are left out (logged)."""
    local = _local_presets(places)
    if settings is None or (need is not None and need in local):
        return local
    if not _has_database(settings, places):
        return local
    from ffdesk.db import presets_store

    rows = _run_db(settings, places, presets_store.list_presets)
    problems: list[str] = []
    presets = _merge(places, rows, problems)
    if problems:
        import logging

        for problem in problems:
            logging.getLogger("ffdesk.cli").warning("%s", problem)
    return presets


# --------------------------------------------------------------------------- commands


def cmd_presets(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    action = getattr(args, "presets_command", None)
    if action is None:
        return _list(args, settings, places)
    handler = {
        "show": _show,
        "add": _add,
        "edit": _edit,
        "remove": _remove,
        "copy": _copy,
        "import": _import,
        "export": _export,
    }[action]
    return handler(args, settings, places)


def _by() -> str:
    from ffdesk.engine.submit import submitter

    return submitter()


def _origin(preset: Preset) -> str:
    if preset.builtin:
        return "built-in"
    return preset.source or "user file"


def _list(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import presets_store

    rows: list[Any] = []
    problems: list[str] = []
    if _has_database(settings, places):
        try:
            rows = _run_db(settings, places, presets_store.list_presets)
        except FfdeskError as exc:  # the catalogue without the library beats nothing
            problems.append(f"database presets not shown: {exc}")
    presets = _merge(places, rows, problems)
    revisions = {r.name: r.revision for r in rows}
    for problem in problems:
        print(f"ffdesk: warning: {problem}", file=sys.stderr)
    if args.json:
        _print_json(
            [
                {
                    "name": p.name,
                    "description": p.description,
                    "args": list(p.args),
                    "output": p.output,
                    "needs": list(p.needs),
                    "encoders": list(p.encoders),
                    "builtin": p.builtin,
                    "source": _origin(p),
                    "revision": revisions.get(p.name) if p.source == "database" else None,
                }
                for p in presets.values()
            ]
        )
        return EXIT_OK
    width = max(len(n) for n in presets)
    for p in presets.values():
        tag = "" if p.builtin else ("  [database]" if p.source == "database" else "  [user]")
        print(f"{p.name:<{width}}  {p.description}{tag}")
    return EXIT_OK


def _show(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import presets_store

    name = args.name
    local = _local_presets(places)
    row = None
    if name not in local:
        known: list[str] = sorted(local)
        if _has_database(settings, places):

            async def fetch(conn):
                found = await presets_store.get_preset(conn, name)
                names = [] if found else [r.name for r in await presets_store.list_presets(conn)]
                return found, names

            row, stored_names = _run_db(settings, places, fetch)
            known = sorted({*known, *stored_names})
        if row is None:
            raise PresetError(f"unknown preset '{name}'; known: {', '.join(known) or 'none'}")
    problem = None
    preset: Preset | None
    if name in local:
        preset = local[name]
        table = preset.to_table()
    else:
        table = row.table()
        try:
            preset = preset_from_table(name, table, "the database", origin="database")
        except PresetError as exc:
            preset, problem = None, str(exc)
    source = _origin(preset) if preset else "database"
    if getattr(args, "json", False):
        _print_json(
            {
                "name": name,
                "source": source,
                "builtin": bool(preset and preset.builtin),
                **table,
                "encoders": list(preset.encoders) if preset else [],
                "revision": row.revision if row else None,
                "created_at": row.created_at.isoformat() if row else None,
                "created_by": row.created_by if row else None,
                "updated_at": row.updated_at.isoformat() if row else None,
                "updated_by": row.updated_by if row else None,
                "problem": problem,
            }
        )
        return EXIT_OK
    read_only = " (read-only)" if source != "database" else ""
    lines = [
        ("name", name),
        ("source", source + read_only),
        ("description", table.get("description", "")),
        ("args", _shown_args(table["args"])),
        ("output", table["output"]),
        ("needs", ", ".join(table.get("needs") or []) or "-"),
        ("encoders", ", ".join(preset.encoders) if preset and preset.encoders else "-"),
    ]
    policy = {k: v for k, v in table.items() if k not in ("description", "args", "output", "needs")}
    lines.append(("policy", ", ".join(f"{k}={_toml_like(v)}" for k, v in policy.items()) or "-"))
    if row is not None:
        lines += [
            ("revision", str(row.revision)),
            ("created", f"{_when(row.created_at)} by {row.created_by or '?'}"),
            ("updated", f"{_when(row.updated_at)} by {row.updated_by or '?'}"),
        ]
    if problem:
        lines.append(("problem", problem))
    for label, value in lines:
        print(f"{label:<13}{value}")
    return EXIT_OK


def _shown_args(args: list[str]) -> str:
    import json

    return json.dumps(list(args), ensure_ascii=False)


def _toml_like(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _when(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


# --------------------------------------------------------------------------- saving


def _read_toml(spec: str) -> tuple[dict[str, Any], str, str]:
    """(data, label for messages, raw text) of a TOML file, or stdin for ``-``."""
    if spec == "-":
        label = "standard input"
        raw = sys.stdin.buffer.read()
    else:
        label = spec
        try:
            raw = Path(spec).read_bytes()
        except FileNotFoundError:
            raise PresetError(f"no such file: {spec}") from None
        except OSError as exc:
            raise PresetError(f"cannot read {spec}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PresetError(f"{label} is not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{label} is not valid TOML: {exc}") from None
    return data, label, text


def _one_table(data: dict[str, Any], name: str, label: str) -> dict[str, Any]:
    """The preset table in ``data``: the top level itself (``args = [...]`` without a
    header), its only table, or the table named ``name``."""
    if not data:
        raise PresetError(f"{label} holds no preset table")
    if not all(isinstance(v, dict) for v in data.values()):
        return data  # a bare table: description, args, ... at the top level
    if len(data) == 1:
        return next(iter(data.values()))
    if name in data:
        return data[name]
    raise PresetError(
        f"{label} holds {len(data)} presets ({', '.join(data)}) and none is named '{name}'; "
        "use 'ffdesk presets import' for several"
    )


def _revision_notes(text: str) -> dict[str, int]:
    """Revisions noted by 'presets export' above each table ("# revision 42, ...")."""
    notes: dict[str, int] = {}
    pending: int | None = None
    for line in text.splitlines():
        found = _REVISION_NOTE.match(line.strip())
        if found:
            pending = int(found.group(1))
            continue
        header = _TABLE_HEADER.match(line.strip())
        if header:
            if pending is not None:
                notes[header.group(1) or header.group(2)] = pending
            pending = None
        elif line.strip() and not line.strip().startswith("#"):
            pending = None
    return notes


def _ffmpeg(settings: Settings) -> Path | None:
    """The FFmpeg in use here, to check output formats; None when there is none."""
    from ffdesk.ffmpeg.locate import find_ffmpeg

    try:
        return find_ffmpeg(settings.ffmpeg)
    except FfmpegNotFound:
        if settings.ffmpeg:
            raise
        return None


def _read_only(name: str, local: Mapping[str, Preset], verb: str) -> None:
    preset = local.get(name)
    if preset is None:
        return
    if preset.builtin:
        raise PresetError(
            f"'{name}' is a built-in preset: built-ins are read-only and cannot be {verb}; "
            f"'ffdesk presets copy {name} NEW' makes an editable copy"
        )
    raise PresetError(
        f"'{name}' comes from the preset file {preset.source} on this machine, which ffdesk "
        f"does not change; edit that file, or import it into the database under other names"
    )


def _name_free(name: str, local: Mapping[str, Preset]) -> None:
    preset = local.get(name)
    if preset is None:
        return
    where = "a built-in preset" if preset.builtin else f"defined in {preset.source}"
    raise PresetError(f"'{name}' is already {where}; choose another name")


def _validated(name: str, table: Any, label: str, ffmpeg: Path | None) -> Preset:
    """A table as the library stores it: every load-time check plus the save-time ones."""
    preset = preset_from_table(name, table, label, origin="database")
    check_for_save(preset, ffmpeg)
    return preset


def _add(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import presets_store

    data, label, _text = _read_toml(args.file)
    local = _local_presets(places)
    _name_free(args.name, local)
    preset = _validated(args.name, _one_table(data, args.name, label), label, _ffmpeg(settings))
    saved = _run_db(
        settings,
        places,
        lambda c: presets_store.add_presets(c, {preset.name: preset.to_table()}, by=_by()),
    )
    print(f"added preset '{preset.name}' (revision {saved[0].revision})")
    return EXIT_OK


def _edit(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import presets_store

    local = _local_presets(places)
    _read_only(args.name, local, "edited")
    data, label, text = _read_toml(args.file)
    preset = _validated(args.name, _one_table(data, args.name, label), label, _ffmpeg(settings))
    expected = args.if_revision
    if expected is None and not args.force:
        expected = _revision_notes(text).get(args.name)
    saved = _run_db(
        settings,
        places,
        lambda c: presets_store.update_preset(
            c, preset.name, preset.to_table(), by=_by(), expected_revision=expected
        ),
    )
    print(f"saved preset '{preset.name}' (revision {saved.revision})")
    return EXIT_OK


def _remove(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import presets_store

    _read_only(args.name, _local_presets(places), "removed")
    removed = _run_db(
        settings, places, lambda c: presets_store.delete_preset(c, args.name, by=_by())
    )
    if removed is None:
        raise PresetError(f"no preset named '{args.name}' in the library")
    print(f"removed preset '{args.name}' (queued jobs keep their own copy of its arguments)")
    return EXIT_OK


def _copy(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import presets_store

    local = _local_presets(places)
    _name_free(args.new, local)
    ffmpeg = _ffmpeg(settings)

    async def copy(conn):
        if args.source in local:
            table = local[args.source].to_table()
        else:
            row = await presets_store.get_preset(conn, args.source)
            if row is None:
                names = sorted({*local, *(r.name for r in await presets_store.list_presets(conn))})
                raise PresetError(
                    f"unknown preset '{args.source}'; known: {', '.join(names) or 'none'}"
                )
            table = row.table()
        preset = _validated(args.new, table, f"the copy of '{args.source}'", ffmpeg)
        return await presets_store.add_presets(conn, {preset.name: preset.to_table()}, by=_by())

    saved = _run_db(settings, places, copy)
    print(f"copied '{args.source}' to '{args.new}' (revision {saved[0].revision})")
    return EXIT_OK


def _import(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import presets_store

    data, label, _text = _read_toml(args.file)
    if not data:
        raise PresetError(f"{label} holds no presets")
    if not all(isinstance(v, dict) for v in data.values()):
        raise PresetError(
            f"{label} is one preset table without a name; use 'ffdesk presets add NAME "
            f"--file {args.file}', or put it under a [name] header"
        )
    local = _local_presets(places)
    taken = [name for name in data if name in local]
    if taken:
        first = local[taken[0]]
        where = "built-in" if first.builtin else f"in {first.source}"
        raise PresetError(
            f"nothing imported: {', '.join(taken)} already exist{'s' if len(taken) == 1 else ''}"
            f" ('{taken[0]}' is {where}); rename them in {label}"
        )
    ffmpeg = _ffmpeg(settings)
    tables: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    for name, table in data.items():
        try:
            tables[name] = _validated(name, table, label, ffmpeg).to_table()
        except PresetError as exc:
            errors.append(str(exc))
    if errors:
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise PresetError(f"nothing imported: {errors[0]}{more}")
    try:
        saved = _run_db(
            settings,
            places,
            lambda c: presets_store.add_presets(c, tables, by=_by(), replace=args.replace),
        )
    except presets_store.PresetExists as exc:
        raise PresetError(
            f"nothing imported: a preset named '{exc.name}' is already in the library "
            "(--replace replaces the library's presets of the same names)"
        ) from None
    print(f"imported {len(saved)} preset(s): {', '.join(s.name for s in saved)}")
    return EXIT_OK


def _export(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import presets_store

    local = _local_presets(places)
    rows = (
        _run_db(settings, places, presets_store.list_presets)
        if _has_database(settings, places)
        else []
    )
    by_name = {r.name: r for r in rows}
    names = list(dict.fromkeys(args.names)) or [r.name for r in rows]
    unknown = [n for n in names if n not in local and n not in by_name]
    if unknown:
        known = sorted({*local, *by_name})
        raise PresetError(f"unknown preset '{unknown[0]}'; known: {', '.join(known)}")
    tables: dict[str, dict[str, Any]] = {}
    notes: dict[str, str] = {}
    for name in names:
        if name in local:
            tables[name] = local[name].to_table()
            notes[name] = f"{_origin(local[name])} preset"
        else:
            row = by_name[name]
            tables[name] = row.table()
            notes[name] = (
                f"revision {row.revision}, saved {_when(row.updated_at)} by {row.updated_by or '?'}"
            )
    header = (
        f"ffdesk presets, exported {datetime.now().astimezone():%Y-%m-%d %H:%M:%S} by {_by()}\n"
        "Load with: ffdesk presets import FILE (edit one: ffdesk presets edit NAME --file FILE)"
    )
    text = dump_presets(tables, notes=notes, header=header)
    if not args.to or args.to == "-":
        sys.stdout.write(text)
        return EXIT_OK
    try:
        Path(args.to).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise PresetError(f"cannot write {args.to}: {exc.strerror or exc}") from None
    print(f"exported {len(tables)} preset(s) to {args.to}")
    return EXIT_OK
