"""``ffdesk watch``: watchfolders the cluster scans (add, list, remove, pause, resume).

The folder (and output folder) are stored as root references when they are under one of
this machine's storage roots: any node with that root then scans the folder, one at a time.
Otherwise they are stored as this machine's paths and the watchfolder, and its jobs, are
pinned to this machine's node.
"""

from __future__ import annotations

import argparse
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from ffdesk.cli import EXIT_OK, _load_presets, _print_json, _print_table, _run_db
from ffdesk.core.config import Settings
from ffdesk.core.errors import ConfigError, FfdeskError
from ffdesk.core.places import Places
from ffdesk.core.roots import RootMap, is_ref

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_seconds(text: str, flag: str) -> float:
    """Seconds from "0.5", "10s", "2m", "1h", "500ms"."""
    found = _DURATION.match(text)
    if not found:
        raise ConfigError(f"{flag}: '{text}' is not a duration such as 0.5, 10s, 2m or 1h")
    return float(found.group(1)) * _UNITS[(found.group(2) or "s").lower()]


def add_arguments(
    watch: argparse.ArgumentParser, common: argparse.ArgumentParser, parser_class: type
) -> None:
    """The ``watch`` command's options and actions (plain ``watch`` lists)."""
    watch.add_argument("--json", action="store_true")
    sub = watch.add_subparsers(dest="watch_command", metavar="ACTION", parser_class=parser_class)

    def action(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=text, description=text)

    add = action("add", "watch a folder: queue each media file once it is complete")
    add.add_argument("folder", metavar="FOLDER", help="a folder, or a root reference media:dir")
    add.add_argument("--preset", required=True, help="preset name (see 'ffdesk presets')")
    add.add_argument(
        "--output-dir",
        dest="watch_output",
        metavar="DIR",
        help="where outputs go (default: next to each input)",
    )
    add.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="only files matching (repeatable): '*.mov', 'cam*/*.mxf'",
    )
    add.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip files (or folders, for a name without '/') matching (repeatable)",
    )
    add.add_argument(
        "--no-recursive",
        dest="recursive",
        action="store_false",
        help="only the folder itself, not its sub-folders",
    )
    add.add_argument(
        "--interval", default="10s", metavar="S", help="seconds between scans (default 10s)"
    )
    add.add_argument(
        "--stable-scans",
        type=int,
        default=3,
        metavar="K",
        help="a file is ready once K scans in a row saw the same size and mtime (default 3)",
    )
    add.add_argument(
        "--min-age",
        default="0",
        metavar="T",
        help="and it has not changed for T seconds (default 0)",
    )
    add.add_argument(
        "--requeue-changed",
        action="store_true",
        help="queue a file again when it changes after it was queued",
    )
    add.add_argument("--name", help="watchfolder name (default: the folder's name)")
    add.add_argument("--priority", type=int, default=0, help="priority of its jobs")
    add.add_argument("--max-attempts", type=int, default=None, metavar="N")
    add.add_argument(
        "--root",
        action="append",
        dest="root_flags",
        metavar="NAME=PATH",
        help="this machine's path for a storage root (repeatable; default: "
        "the settings file's [roots])",
    )
    lst = action("list", "the watchfolders, their last scan and errors")
    lst.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    for name, text in (
        ("remove", "stop watching (its queued jobs stay)"),
        ("pause", "stop scanning for now"),
        ("resume", "scan again"),
    ):
        action(name, text).add_argument("name", metavar="NAME")


def cmd_watch(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    action = getattr(args, "watch_command", None) or "list"
    if action == "add":
        return _add(args, settings, places)
    if action == "list":
        return _list(args, settings, places)
    from ffdesk.db import watch as wsql

    if action == "remove":
        if not _run_db(settings, places, lambda c: wsql.remove(c, args.name)):
            raise FfdeskError(f"no watchfolder named '{args.name}'")
        print(f"{args.name}: removed (its jobs stay in the queue)")
        return EXIT_OK
    enable = action == "resume"
    was = _run_db(settings, places, lambda c: wsql.set_enabled(c, args.name, enable))
    if was is None:
        raise FfdeskError(f"no watchfolder named '{args.name}'")
    state = "watching" if enable else "paused"
    print(f"{args.name}: {state}" if was != enable else f"{args.name}: already {state}")
    return EXIT_OK


def _add(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import watch as wsql
    from ffdesk.engine.routing import Placement
    from ffdesk.engine.submit import check_output_dir, submitter
    from ffdesk.engine.watch import new_watchfolder
    from ffdesk.ffmpeg.presets import get_preset

    interval = parse_seconds(args.interval, "--interval")
    min_age = parse_seconds(args.min_age, "--min-age")
    presets = _load_presets(places, settings, need=args.preset)
    preset = get_preset(presets, args.preset)
    output = args.watch_output or settings.output_dir
    max_attempts = args.max_attempts or preset.policy.max_attempts or settings.max_attempts
    roots = RootMap(dict(settings.roots))
    placement = Placement(roots=roots, node=settings.identifier)
    if output:
        local_out = roots.to_local(output) if is_ref(output) else os.path.abspath(output)
        if local_out is not None:
            check_output_dir(Path(local_out))
    new = new_watchfolder(
        folder=args.folder,
        preset=preset,
        placement=placement,
        output=output,
        name=args.name,
        include=args.include,
        exclude=args.exclude,
        recursive=args.recursive,
        interval=interval,
        stable_scans=args.stable_scans,
        min_age=min_age,
        requeue_changed=args.requeue_changed,
        max_attempts=max_attempts,
        priority=args.priority,
    )
    if not _run_db(settings, places, lambda c: wsql.add(c, new, by=submitter())):
        raise FfdeskError(f"a watchfolder named '{new.name}' exists already; give --name")
    if new.pinned_node:
        who = (
            f"scanned by node '{new.pinned_node}' only (a path under no storage root; "
            "its jobs run there too)"
        )
    else:
        who = f"scanned by any node with storage root '{new.root}'"
    print(
        f"{new.name}: watching {new.folder} with preset {new.preset} -> "
        f"{new.output or 'next to each file'}; {who}"
    )
    return EXIT_OK


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 100:
        return f"{seconds:.1f}s ago" if seconds < 10 else f"{seconds:.0f}s ago"
    if seconds < 6000:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _list(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import watch as wsql

    rows = _run_db(settings, places, wsql.list_watchfolders)
    if args.json:
        _print_json([_json_row(r) for r in rows])
        return EXIT_OK
    if not rows:
        print("no watchfolders")
        return EXIT_OK
    table = [("NAME", "STATE", "FOLDER", "OUTPUT", "PRESET", "NODE", "LAST SCAN", "FILES", "ERROR")]
    for r in rows:
        state = "paused" if not r["enabled"] else "error" if r["error"] else "watching"
        scanned = _ago(r["last_scan_age"])
        if r["last_scanned_by"]:
            scanned += f" by {r['last_scanned_by']}"
        files = f"{r['queued']} queued, {r['pending']} pending"
        if r["gone"]:
            files += f", {r['gone']} gone"
        table.append(
            (
                r["name"],
                state,
                r["folder"],
                r["output"] or "(next to input)",
                r["preset"],
                r["pinned_node"] or f"any with {r['root']}",
                scanned,
                files,
                r["error"] or "",
            )
        )
    _print_table(table)
    return EXIT_OK
