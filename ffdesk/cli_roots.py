"""``ffdesk roots``: the cluster's storage roots and this machine's path for each.

The names live in the database (every node sees the same list); the paths live in each
machine's settings file (``[roots]``), because only that machine knows where the share is
mounted there.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from ffdesk.core.config import Settings, write_settings_file
from ffdesk.core.errors import ConfigError, FfdeskError
from ffdesk.core.places import Places
from ffdesk.core.roots import check_root_name

RunDb = Callable[[Settings, Places, Callable[[Any], Any]], Any]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    roots = sub.add_parser(
        "roots",
        parents=[common],
        help="storage roots: cluster-wide names, this machine's paths",
        description="Storage roots: a name for each share (cluster-wide) and this machine's "
        "path to it (settings file). Jobs under a root run on any node that has it.",
    )
    roots.add_argument("--json", action="store_true")
    actions = roots.add_subparsers(dest="roots_command", metavar="ACTION")
    add = actions.add_parser("add", parents=[common], help="register a root name")
    add.add_argument("name")
    add.add_argument("--description", default="")
    remove = actions.add_parser("remove", parents=[common], help="unregister a root name")
    remove.add_argument("name")
    mapping = actions.add_parser("map", parents=[common], help="set this machine's path")
    mapping.add_argument("name")
    mapping.add_argument("path")
    unmap = actions.add_parser("unmap", parents=[common], help="forget this machine's path")
    unmap.add_argument("name")


def command(run_db: RunDb, submitter: Callable[[], str]):
    def cmd_roots(args: argparse.Namespace, settings: Settings, places: Places) -> int:
        from ffdesk.db import nodes as nodes_sql

        action = getattr(args, "roots_command", None)
        if action in ("add", "remove", "map", "unmap"):
            check_root_name(args.name)
        if action == "add":
            if not run_db(
                settings,
                places,
                lambda c: nodes_sql.add_root(c, args.name, args.description, by=submitter()),
            ):
                raise FfdeskError(f"root '{args.name}' already exists")
            print(f"root '{args.name}' added; map it on each machine: ffdesk roots map "
                  f"{args.name} PATH")
            return 0
        if action == "remove":
            removed, using = run_db(settings, places, lambda c: nodes_sql.remove_root(c, args.name))
            if using:
                raise FfdeskError(
                    f"root '{args.name}' is used by {using} queued or running job(s); "
                    "it stays until they end"
                )
            if not removed:
                raise FfdeskError(f"no root named '{args.name}'")
            print(f"root '{args.name}' removed")
            return 0
        if action in ("map", "unmap"):
            roots = dict(settings.roots)
            if action == "map":
                roots[args.name] = args.path
            elif roots.pop(args.name, None) is None:
                raise ConfigError(f"root '{args.name}' is not mapped on this machine")
            write_settings_file(places.settings_file, {"roots": roots})
            print(f"{args.name} -> {args.path}" if action == "map" else f"{args.name} unmapped")
            print("running nodes pick this up at their next start")
            return 0
        rows = run_db(settings, places, nodes_sql.list_roots)
        if args.json:
            print(json.dumps(
                [{**r, "local_path": settings.roots.get(r["name"])} for r in rows],
                indent=2, default=str, ensure_ascii=False,
            ))
            return 0
        if not rows and not settings.roots:
            print("no storage roots; add one with: ffdesk roots add NAME")
            return 0
        for r in rows:
            here = settings.roots.get(r["name"])
            print(f"{r['name']}  {r['description']}".rstrip())
            print(f"  this machine: {here or '(not mapped)'}")
            for node, status in sorted(r["nodes"].items()):
                state = "ok" if status.get("write") else (
                    "read-only" if status.get("read") else status.get("error") or "unreachable")
                print(f"  {node}: {status.get('path')} ({state})")
        unknown = sorted(set(settings.roots) - {r["name"] for r in rows})
        for name in unknown:
            print(f"{name}  (mapped here but not registered: ffdesk roots add {name})")
        return 0

    return cmd_roots
