"""``ffdesk`` command line: node, submit, jobs, job, cancel, retry, presets, db, demo.

Every error a person can cause ends as one readable line on stderr and a non-zero exit code;
unexpected ones too (the traceback goes to the log file, never to the terminal).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from ffdesk import __version__, cli_autostart, cli_roots, cli_webhooks, selftest
from ffdesk.core.config import Settings, load_settings
from ffdesk.core.errors import ConfigError, FfdeskError
from ffdesk.core.logsetup import setup_logging
from ffdesk.core.model import JobState
from ffdesk.core.places import Places
from ffdesk.core.roots import parse_root_mappings
from ffdesk.core.secrets import mask_url

log = logging.getLogger("ffdesk.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse's usage dump is two lines or more; ours is one.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _common_options() -> argparse.ArgumentParser:
    """Options valid before and after the sub-command (defaults suppressed so neither
    position overwrites the other)."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "--home",
        metavar="DIR",
        help="keep config, data, logs and cache under DIR (env FFDESK_HOME)",
    )
    common.add_argument(
        "--database",
        metavar="URL",
        help="PostgreSQL URL (env FFDESK_DATABASE); default: embedded server",
    )
    common.add_argument(
        "--debug",
        metavar="AREAS",
        help="debug logging for areas: db,queue,ffmpeg,cluster,node,cli or all",
    )
    return common


def _build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = _Parser(
        prog="ffdesk", parents=[common], description="FFmpeg cluster on one PostgreSQL queue."
    )
    parser.add_argument("--version", action="version", version=f"ffdesk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_text: str,
            *extra: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common, *extra], help=help_text,
                              description=help_text)

    # What a node needs: `ffdesk node` and the desktop app (which runs a node too).
    node_opts = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    node_opts.add_argument("--identifier", help="node name (default: the host name)")
    node_opts.add_argument("--slots", type=int, help="FFmpeg processes at once")
    node_opts.add_argument("--tags", help="comma separated labels, e.g. gpu,big-mem")
    node_opts.add_argument("--ffmpeg", metavar="PATH", help="ffmpeg binary to use")
    node_opts.add_argument("--ffprobe", metavar="PATH", help="ffprobe binary to use")
    node_opts.add_argument("--grace", type=float, metavar="S",
                           help="on SIGTERM, let running jobs finish this long (default 30)")
    node_opts.add_argument("--heartbeat", type=float, metavar="S", help="heartbeat interval")
    node_opts.add_argument("--poll", type=float, dest="poll_interval", metavar="S",
                           help="fallback poll interval (default 5)")
    node_opts.add_argument("--poll-only", action="store_true",
                           help="do not LISTEN for notifications; only poll")
    node_opts.add_argument("--verify", choices=["auto", "probe"],
                           help="check outputs from FFmpeg's log, probing when in doubt "
                                "(auto, default), or always with ffprobe (probe)")
    node_opts.add_argument("--stall-timeout", type=float, metavar="S",
                           help="stop FFmpeg after S seconds without progress (default 120)")
    node_opts.add_argument("--memory-limit", metavar="SIZE",
                           help="stop FFmpeg above this memory, e.g. 4G (default: no limit)")
    node_opts.add_argument("--retry-base", type=float, metavar="S",
                           help="first retry delay after a transient failure (default 10)")
    node_opts.add_argument("--quarantine-after", type=int, metavar="N",
                           help="stop claiming after N environment failures in a row (3)")
    node_opts.add_argument("--full-hash", action="store_true", default=None,
                           help="hash whole inputs and outputs for the audit trail")
    node_opts.add_argument("--root", action="append", dest="root_flags", metavar="NAME=PATH",
                           help="this machine's path for a storage root (repeatable; "
                                "overrides the settings file's [roots] for that name)")

    node = add("node", "run a headless worker node", node_opts)
    node.add_argument("--exit-when-idle", action="store_true",
                      help="exit once the queue is empty and no job runs")
    node.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                      help="serve Prometheus metrics at http://HOST:PORT/metrics (0: off)")
    node.add_argument("--metrics-host", default=None, metavar="HOST",
                      help="address for --metrics-port (default 127.0.0.1; elsewhere anyone "
                           "who can reach it sees the queue's counts, never paths)")

    submit = add("submit", "queue files (folders expand to the media files inside)")
    submit.add_argument("--preset", required=True, help="preset name (see 'ffdesk presets')")
    submit.add_argument(
        "--output-dir", metavar="DIR", help="where outputs go (default: next to each input)"
    )
    submit.add_argument("--priority", type=int, default=0, help="higher runs first")
    submit.add_argument("--max-attempts", type=int, default=None, metavar="N")
    submit.add_argument("--tag", action="append", default=[], metavar="TAG",
                        help="run only on nodes with this tag (repeatable)")
    submit.add_argument("--pin", metavar="NODE", help="run only on this node")
    submit.add_argument("--batch-name", metavar="NAME", help="a name for this submission's batch")
    submit.add_argument("--after", type=int, action="append", default=[], metavar="ID",
                        help="run only after job ID succeeded (repeatable)")
    submit.add_argument("--root", action="append", dest="root_flags", metavar="NAME=PATH",
                        help="this machine's path for a storage root (repeatable)")
    submit.add_argument("--ffmpeg-min", metavar="VERSION", help="e.g. 6.0")
    submit.add_argument("--ffmpeg-max", metavar="VERSION", help="e.g. 7.1 (7.1.x included)")
    submit.add_argument("--json", action="store_true")
    submit.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")

    jobs = add("jobs", "list jobs")
    jobs.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in JobState],
        help="only jobs in this state (repeatable)",
    )
    jobs.add_argument("--limit", type=int, default=None)
    jobs.add_argument("--json", action="store_true")

    job = add("job", "show one job's audit trail: every attempt, its argv and stderr, events")
    job.add_argument("id", type=int)
    job.add_argument("--json", action="store_true", help="everything, as JSON")
    job.add_argument("--stderr", action="store_true",
                     help="print one attempt's FFmpeg stderr exactly as it was written")
    job.add_argument("--attempt", type=int, metavar="N",
                     help="with --stderr: attempt N (1 = first; default: the latest)")

    cancel = add("cancel", "cancel queued or running jobs")
    cancel.add_argument("ids", type=int, nargs="*", metavar="ID")
    cancel.add_argument("--batch", type=int, metavar="BATCH", help="every job of a batch")
    retry = add("retry", "reprocess: put failed, dead or canceled jobs back in the queue")
    retry.add_argument("ids", type=int, nargs="*", metavar="ID")
    retry.add_argument("--batch", type=int, metavar="BATCH", help="every job of a batch")
    batches = add("batches", "list batches with their progress, or show one")
    batches.add_argument("id", type=int, nargs="?", metavar="BATCH")
    batches.add_argument("--json", action="store_true")
    retry.add_argument("--state", action="append", choices=["failed", "dead", "canceled"],
                       help="every job in this state (repeatable; default with --since: all "
                            "three)")
    retry.add_argument("--since", metavar="AGE",
                       help="only jobs that ended within AGE, e.g. 90s, 30m, 1h, 2d")

    priority = add("priority", "change the priority of queued or running jobs")
    priority.add_argument("priority", type=int, help="new priority (higher runs first)")
    priority.add_argument("ids", type=int, nargs="+", metavar="ID")

    cli_roots.add_parser(sub, common)
    cli_webhooks.add_parser(sub, common)
    selftest.add_parser(sub, common)
    cli_autostart.add_parser(sub, common)
    top = add("top", "move queued jobs to the top of the queue (run next)")
    top.add_argument("ids", type=int, nargs="+", metavar="ID")
    cluster = add("cluster", "cluster-wide settings every node shares")
    cluster.add_argument("--aging", type=float, metavar="S",
                         help="a queued job gains one priority step per S seconds waited")

    nodes_cmd = add("nodes", "list the nodes, or pause / resume / drain one")
    nodes_cmd.add_argument("--json", action="store_true")
    nodes_sub = nodes_cmd.add_subparsers(
        dest="nodes_command", metavar="ACTION", parser_class=_Parser
    )
    for action, text in (
        ("pause", "stop claiming and give running jobs back now"),
        ("resume", "claim jobs again"),
        ("drain", "stop claiming; let running jobs finish"),
    ):
        act = nodes_sub.add_parser(action, parents=[common], help=text)
        act.add_argument("identifier", metavar="NAME")

    presets = add("presets", "list the presets; show, add, edit, remove, copy, import, export")
    from ffdesk.cli_presets import add_arguments as add_preset_arguments

    add_preset_arguments(presets, common, _Parser)

    from ffdesk.cli_watch import add_arguments as add_watch_arguments

    add_watch_arguments(add("watch", "watchfolders: add, list, remove, pause, resume"),
                        common, _Parser)

    db = add("db", "the database: status, url, stop, migrate")
    db_sub = db.add_subparsers(
        dest="db_command", metavar="ACTION", parser_class=_Parser, required=True
    )
    status = db_sub.add_parser("status", parents=[common], help="where it is and if it runs")
    status.add_argument("--json", action="store_true")
    url = db_sub.add_parser("url", parents=[common], help="print the connection URL")
    url.add_argument("--show-password", action="store_true")
    db_sub.add_parser("stop", parents=[common], help="stop the embedded server")
    share = db_sub.add_parser(
        "share", parents=[common], help="let other machines use this machine's embedded database"
    )
    share.add_argument(
        "--port", type=int, default=None, help="TCP port to listen on (default 5432)"
    )
    db_sub.add_parser("unshare", parents=[common], help="stop listening on the network")
    db_sub.add_parser("migrate", parents=[common], help="apply pending schema migrations")

    gui = add("gui", "open the desktop app (the default without a command)", node_opts)
    gui.add_argument("--minimized", action="store_true", help="start in the system tray")
    gui.add_argument("--quit", choices=["now", "drain"], default=None,
                     help="ask the running app to quit: 'now' hands running jobs back, "
                          "'drain' finishes them first")
    gui.add_argument("files", nargs="*", metavar="FILE_OR_DIR",
                     help="files or folders to queue (opens the queue dialog)")

    demo = add("demo", "generate three short clips, queue them and encode them here")
    demo.add_argument(
        "--dir",
        metavar="DIR",
        help="where to put the clips (default: a folder in the data directory)",
    )
    return parser


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain "ffdesk": the desktop app
        args = parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "gui"])
    try:
        places = Places.resolve(getattr(args, "home", None))
        flags = {k: v for k, v in vars(args).items() if k in Settings.__dataclass_fields__}
        if getattr(args, "poll_only", False):
            flags["listen"] = False
        settings = load_settings(places, flags)
        if getattr(args, "root_flags", None):
            settings.roots = {
                **settings.roots,
                **parse_root_mappings(";".join(args.root_flags), "--root"),
            }
        places.ensure()
        console_level_info = args.command in ("node", "demo", "gui")
        setup_logging(places.log_file, settings.debug, console=True)
        if not console_level_info and not settings.debug:
            _quiet_console()
        return COMMANDS[args.command](args, settings, places)
    except FfdeskError as exc:
        _fail(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _fail("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line here, the whole story in the log
        log.error("unexpected error", exc_info=True)
        _fail(
            f"internal error: {mask_url(str(exc)) or exc.__class__.__name__} "
            "(details in the log file)"
        )
        return EXIT_FAILURE


def _fail(message: str) -> None:
    print(f"ffdesk: error: {mask_url(message)}", file=sys.stderr)


def _quiet_console() -> None:
    for handler in logging.getLogger("ffdesk").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
            handler.setLevel(logging.WARNING)


def _run_db(
    settings: Settings, places: Places, fn: Callable[[Any], Any], *, migrate_first: bool = True
) -> Any:
    """Open the database (embedded or --database), migrate, run ``fn(conn)``, close."""
    from ffdesk.db import migrate
    from ffdesk.db.connect import connect_async, database
    from ffdesk.engine.loop import run

    async def go(url: str) -> Any:
        conn = await connect_async(url)
        try:
            if migrate_first:
                await migrate.migrate(conn)
            return await fn(conn)
        finally:
            await conn.close()

    with database(settings, places) as db:
        return run(go(db.url))


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


# --------------------------------------------------------------------------- commands


def cmd_node(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db.connect import database
    from ffdesk.engine.loop import run
    from ffdesk.engine.node import Node

    with database(settings, places) as db:
        node = Node(
            settings,
            db.url,
            exit_when_idle=args.exit_when_idle,
            cache_dir=places.cache_dir,
            data_dir=places.data_dir,
        )

        async def main() -> None:
            import asyncio

            loop = asyncio.get_running_loop()
            _install_stop_handlers(loop, node)
            await node.run()

        run(main())
    return EXIT_OK


def _install_stop_handlers(loop: Any, node: Any) -> None:
    def stop(signum: int, _frame: Any = None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        loop.call_soon_threadsafe(node.request_stop)

    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop, signum)
        except (NotImplementedError, RuntimeError):  # Windows
            signal.signal(signum, stop)


def cmd_submit(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.core.roots import RootMap
    from ffdesk.db import jobs as jobs_sql
    from ffdesk.db import nodes as nodes_sql
    from ffdesk.engine.routing import Placement
    from ffdesk.engine.submit import SubmitRequest, is_url, plan_jobs, submitter

    presets = _load_presets(places, settings, need=args.preset)
    from ffdesk.ffmpeg.presets import get_preset

    preset = get_preset(presets, args.preset)
    out_dir = args.output_dir or settings.output_dir
    # Flag > preset > setting: a preset knows best how often its kind of work may fail.
    max_attempts = args.max_attempts or preset.policy.max_attempts or settings.max_attempts
    if max_attempts < 1:
        raise ConfigError("--max-attempts must be at least 1")
    request = SubmitRequest(
        preset=preset,
        paths=[Path(p) for p in args.paths if not is_url(p)],
        urls=[p for p in args.paths if is_url(p)],
        output_dir=Path(out_dir) if out_dir else None,
        priority=args.priority,
        max_attempts=max_attempts,
        tags=args.tag,
        pin=args.pin,
        ffmpeg_min=_version_arg(args.ffmpeg_min, "--ffmpeg-min"),
        ffmpeg_max=_version_arg(args.ffmpeg_max, "--ffmpeg-max"),
    )
    plan_jobs(request)  # before starting the database: bad input fails fast, queues nothing

    async def enqueue(conn):
        # Where this machine's paths sit among the cluster's storage roots decides how the
        # jobs store them and whether they are pinned here.
        placement = Placement(
            RootMap(dict(settings.roots)),
            await nodes_sql.cluster_has_roots(conn),
            settings.identifier,
        )
        planned = plan_jobs(dataclasses.replace(request, placement=placement))
        if args.after:
            planned = [dataclasses.replace(j, depends_on=list(args.after)) for j in planned]
        try:
            ids = await jobs_sql.enqueue(
                conn, planned, submitted_by=submitter(), batch=True, batch_name=args.batch_name
            )
        except jobs_sql.DependencyError as exc:
            raise ConfigError(str(exc)) from None
        return planned, ids

    planned, ids = _run_db(settings, places, enqueue)
    if args.json:
        _print_json(
            [
                {"id": i, "input": j.input, "output": j.output}
                for i, j in zip(ids, planned, strict=True)
            ]
        )
    else:
        for job_id in ids:
            print(job_id)
    return EXIT_OK


def cmd_top(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import jobs as jobs_sql

    found = _run_db(
        settings, places, lambda c: jobs_sql.move_to_top(c, args.ids, by=_submitter())
    )
    return _report_action(args.ids, found, ("queued",), "moved to the top")


def cmd_cluster(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import nodes as nodes_sql

    if args.aging is not None and not args.aging > 0:
        raise ConfigError("--aging must be a number of seconds above 0")
    aging = _run_db(settings, places, lambda c: nodes_sql.cluster_aging(c, args.aging))
    print(f"priority aging: +1 priority per {aging:g} s waited")
    return EXIT_OK


def _submitter() -> str:
    from ffdesk.engine.submit import submitter

    return submitter()


def _version_arg(value: str | None, flag: str) -> str | None:
    if value is not None and not re.match(r"^\d+(\.\d+){0,2}$", value):
        raise ConfigError(f"{flag}: '{value}' is not a version such as 6.0 or 7.1.1")
    return value


def _load_presets(places: Places, settings: Settings | None = None, need: str | None = None):
    """Built-ins, the user file and (given ``settings``) the database's preset library."""
    from ffdesk.cli_presets import load_all

    return load_all(places, settings, need=need)


def cmd_presets(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.cli_presets import cmd_presets as run

    return run(args, settings, places)


def cmd_jobs(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import jobs as jobs_sql

    rows = _run_db(
        settings, places, lambda c: jobs_sql.list_jobs(c, states=args.state or (), limit=args.limit)
    )
    if args.json:
        _print_json([j.to_dict() for j in rows])
        return EXIT_OK
    if not rows:
        print("no jobs")
        return EXIT_OK
    table = [("ID", "STATE", "PROGRESS", "ATTEMPT", "NODE", "PRESET", "QUEUED", "RAN", "INPUT")]
    now = datetime.now(UTC)
    for j in rows:
        state = str(j.state)
        if j.state == JobState.QUEUED and j.not_before and j.not_before > now:
            state = f"retry in {_seconds((j.not_before - now).total_seconds())}"
        elif j.failure_kind and j.state in (JobState.FAILED, JobState.DEAD):
            state = f"{j.state} ({j.failure_kind})"
        table.append(
            (
                str(j.id),
                state,
                f"{j.progress:.0f}%" if j.progress is not None else "",
                f"{j.attempt}/{j.max_attempts}",
                j.node or "",
                j.preset,
                _seconds(j.queue_seconds),
                _seconds(j.run_seconds),
                j.input,
            )
        )
    _print_table(table)
    return EXIT_OK


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)] + [row[-1]]
        print("  ".join(cells).rstrip())


def cmd_job(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import jobs as jobs_sql

    if args.attempt is not None and not args.stderr:
        raise ConfigError("--attempt goes with --stderr")
    if args.stderr:
        return _print_stderr(args, settings, places)

    async def fetch(conn):
        job = await jobs_sql.get_job(conn, args.id)
        if job is None:
            return None
        return (
            job,
            await jobs_sql.get_attempts(conn, args.id),
            await jobs_sql.get_events(conn, args.id),
        )

    found = _run_db(settings, places, fetch)
    if found is None:
        raise FfdeskError(f"no job with id {args.id}")
    job, attempts, events = found
    if args.json:
        _print_json(
            {
                **job.to_dict(),
                "attempts": [
                    {"number": n, **a.to_dict()} for n, a in enumerate(attempts, start=1)
                ],
                "events": events,
            }
        )
        return EXIT_OK
    headline = f"Job {job.id}: {job.state}"
    if job.failure_kind and job.state != "succeeded":
        headline += f" ({job.failure_kind})"
    print(headline + (f" — {job.reason}" if job.reason else ""))
    for label, value in (
        ("input", job.input),
        ("output", job.output),
        ("written", job.written or "-"),
        ("preset", job.preset),
        ("priority", job.priority),
        ("attempt", f"{job.attempt}/{job.max_attempts}"),
        ("node", job.node or "-"),
        ("avoids nodes", ", ".join(job.avoid_nodes) or "-"),
        ("needs", _needs_text(job)),
        ("next try", _when(job.not_before) if job.state == "queued" else "-"),
        ("submitted", _when(job.created_at) + (f" by {job.submitted_by}" if job.submitted_by
                                               else "")),
        ("claimed", _when(job.claimed_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
        ("time in queue", _seconds(job.queue_seconds) or "-"),
        ("run time", _seconds(job.run_seconds) or "-"),
        ("progress", f"{job.progress:.1f}%" if job.progress is not None else "-"),
    ):
        print(f"  {label:<14}{value}")
    for number, a in enumerate(attempts, start=1):
        print()
        outcome = a.outcome or "running"
        if a.kind and outcome != "succeeded":
            outcome += f" ({a.kind})"
        print(
            f"Attempt {number} (claim {a.id}) on {a.node} [{a.host or '?'}]: {outcome}"
            + ("" if a.counted else " (not counted)")
        )
        print(
            f"  claimed {_when(a.claimed_at)}  started {_when(a.started_at)}  "
            f"finished {_when(a.finished_at)}  exit code {a.exit_code}"
            + (f"  pid {a.pid}" if a.pid else "")
        )
        if a.reason:
            print(f"  reason: {a.reason}")
        if a.retry_at:
            print(f"  retry after: {_when(a.retry_at)}")
        if a.ffmpeg_version:
            print(f"  ffmpeg: {a.ffmpeg_version} (sha256 {a.ffmpeg_sha256})")
        if a.argv:
            print(f"  argv: {json.dumps(a.argv, ensure_ascii=False)}")
        if a.input_hash:
            print(
                f"  input: {a.input_size} bytes, modified {_when(a.input_mtime)}, "
                f"blake2b-edges {a.input_hash}"
                + (f", blake2b {a.input_full_hash}" if a.input_full_hash else "")
            )
        if a.output_hash:
            print(
                f"  output: {a.output_path or '-'}, {a.output_size} bytes, "
                f"blake2b-edges {a.output_hash}"
                + (f", blake2b {a.output_full_hash}" if a.output_full_hash else "")
            )
        if a.stderr is not None:
            print(f"  stderr: {a.stderr_bytes} bytes (ffdesk job {job.id} --stderr "
                  f"--attempt {number})")
    if events:
        print()
        print("Events:")
        for event in events:
            detail = ", ".join(
                f"{k}={v}" for k, v in event["detail"].items() if v not in (None, "")
            )
            who = f" [{event['node']}]" if event["node"] else ""
            print(f"  {_when(event['at'])}  {event['kind']}{who}  {detail}".rstrip())
    return EXIT_OK


def _needs_text(job: Any) -> str:
    """What a node must have to run the job (routing), one line."""
    parts = [f"root {r}" for r in dict.fromkeys([*job.in_roots, *job.out_roots])]
    parts += job.requires
    parts += [f"tag {t}" for t in job.tags]
    if job.pinned_node:
        parts.append(f"node {job.pinned_node}")
    if job.ffmpeg_min or job.ffmpeg_max:
        parts.append(f"FFmpeg {job.ffmpeg_min or ''}..{job.ffmpeg_max or ''}")
    return ", ".join(parts) or "-"


def _print_stderr(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    """The stored stderr, byte for byte, on stdout (pipe it to a file or grep)."""
    from ffdesk.db import jobs as jobs_sql

    async def fetch(conn):
        if await jobs_sql.get_job(conn, args.id) is None:
            return "no job"
        return await jobs_sql.get_stderr(conn, args.id, args.attempt)

    found = _run_db(settings, places, fetch)
    if found == "no job":
        raise FfdeskError(f"no job with id {args.id}")
    if found is None:
        which = f"attempt {args.attempt}" if args.attempt else "any attempt"
        raise FfdeskError(f"job {args.id} has no stderr stored for {which}")
    number, data = found
    if data is None:
        raise FfdeskError(
            f"attempt {number} of job {args.id} stored no stderr (FFmpeg never ran)"
        )
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return EXIT_OK


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def cmd_cancel(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import jobs as jobs_sql
    from ffdesk.engine.submit import submitter

    ids = _batch_or_ids(args, settings, places)

    found = _run_db(settings, places, lambda c: jobs_sql.cancel(c, ids, by=submitter()))
    if args.batch is not None:
        todo = [i for i, state in found.items() if state in ("queued", "running")]
        print(f"batch {args.batch}: {len(todo)} job(s) canceled")
        return EXIT_OK
    return _report_action(ids, found, ("queued", "running"), "canceled")


def _batch_or_ids(args: argparse.Namespace, settings: Settings, places: Places) -> list[int]:
    from ffdesk.db import jobs as jobs_sql

    if args.batch is None:
        if not args.ids:
            raise ConfigError("say which jobs: IDs or --batch BATCH")
        return list(args.ids)
    if args.ids:
        raise ConfigError("give either job IDs or --batch, not both")
    ids = _run_db(settings, places, lambda c: jobs_sql.batch_jobs(c, args.batch))
    if not ids:
        raise FfdeskError(f"no batch {args.batch} (or it has no jobs)")
    return ids


def cmd_batches(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import jobs as jobs_sql

    rows = _run_db(settings, places, lambda c: jobs_sql.list_batches(c, args.id))
    if args.id is not None and not rows:
        raise FfdeskError(f"no batch {args.id}")
    if args.json:
        _print_json(rows if args.id is None else rows[0])
        return EXIT_OK
    if not rows:
        print("no batches")
        return EXIT_OK
    table = [("BATCH", "NAME", "STATE", "DONE", "FAILED", "CANCELED", "RUNNING", "QUEUED",
              "TOTAL", "SUBMITTED")]
    for r in rows:
        table.append((str(r["id"]), r["name"] or "", r["state"], str(r["done"]),
                      str(r["failed"]), str(r["canceled"]), str(r["running"]),
                      str(r["queued"]), str(r["total"]), _when(r["created_at"])))
    _print_table(table)
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import jobs as jobs_sql
    from ffdesk.engine.submit import submitter

    if args.batch is not None:
        ids = _batch_or_ids(args, settings, places)
        found = _run_db(settings, places, lambda c: jobs_sql.retry(c, ids, by=submitter()))
        again = [i for i, state in found.items() if state in ("failed", "dead", "canceled")]
        print(f"batch {args.batch}: {len(again)} job(s) queued again")
        return EXIT_OK
    if not args.ids and not args.state and not args.since:
        raise ConfigError("say which jobs: IDs, --state STATE or --since AGE")
    if args.ids and (args.state or args.since):
        raise ConfigError("give either job IDs or --state/--since, not both")
    since = parse_age(args.since) if args.since else None
    found = _run_db(
        settings,
        places,
        lambda c: jobs_sql.retry(
            c, args.ids, by=submitter(), states=args.state or (), since_seconds=since
        ),
    )
    if args.ids:
        return _report_action(args.ids, found, ("failed", "dead", "canceled"), "queued again")
    for job_id, state in found.items():
        print(f"{job_id}: queued again (was {state})")
    if not found:
        print("no jobs matched", file=sys.stderr)
    return EXIT_OK


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float:
    """Seconds from "90s", "30m", "1h", "2d", "1w" (a bare number is seconds)."""
    found = _AGE.match(text)
    if not found:
        raise ConfigError(f"--since: '{text}' is not an age such as 30m, 1h or 2d")
    return float(found.group(1)) * _AGE_UNITS[(found.group(2) or "s").lower()]


def _report_action(
    ids: list[int], found: dict[int, str], allowed: tuple[str, ...], verb: str
) -> int:
    code = EXIT_OK
    for job_id in ids:
        state = found.get(job_id)
        if state is None:
            _fail(f"no job with id {job_id}")
            code = EXIT_FAILURE
        elif state in allowed:
            print(f"{job_id}: {verb}")
        else:
            _fail(f"job {job_id} is {state}; only {', '.join(allowed)} jobs can be {verb}")
            code = EXIT_FAILURE
    return code


def cmd_priority(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import jobs as jobs_sql
    from ffdesk.engine.submit import submitter

    found = _run_db(
        settings,
        places,
        lambda c: jobs_sql.set_priority(c, args.ids, args.priority, by=submitter()),
    )
    return _report_action(args.ids, found, ("queued", "running"), f"priority {args.priority}")


def cmd_nodes(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db import nodes as nodes_sql
    from ffdesk.engine.submit import submitter

    action = getattr(args, "nodes_command", None)
    if action:
        previous = _run_db(
            settings,
            places,
            lambda c: nodes_sql.request_state(c, args.identifier, action, by=submitter()),
        )
        if previous is None:
            raise FfdeskError(f"no node named '{args.identifier}'")
        target = nodes_sql.REMOTE_ACTIONS[action]
        if previous == "offline":
            raise FfdeskError(f"node '{args.identifier}' is offline")
        print(
            f"{args.identifier}: {previous} -> {target}"
            if previous != target
            else f"{args.identifier}: already {target}"
        )
        return EXIT_OK
    rows = _run_db(settings, places, nodes_sql.list_nodes)
    if getattr(args, "json", False):
        _print_json(rows)
        return EXIT_OK
    if not rows:
        print("no nodes")
        return EXIT_OK
    table = [("NODE", "STATE", "HEARTBEAT", "SLOTS", "JOBS", "FPS", "HOST", "FFMPEG", "ENCODERS")]
    for n in rows:
        table.append(
            (
                n["identifier"],
                n["state"]
                + (
                    f" ({n['state_reason']})"
                    if n["state"] != "online" and n["state_reason"]
                    else ""
                ),
                f"{n['heartbeat_age']:.0f}s ago",
                f"{n['running']}/{n['slots']}",
                ",".join(f"#{i}" for i in n["job_ids"]) or "-",
                f"{n['fps']:.0f}" if n["fps"] else "-",
                f"{n['host']} ({n['os']})",
                (n["ffmpeg_version"] or "").removeprefix("ffmpeg version ").split(" ")[0],
                ",".join(n["encoders"]) or "-",
            )
        )
    _print_table(table)
    return EXIT_OK


def cmd_db(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.db.embedded import EmbeddedServer

    server = EmbeddedServer(places.embedded_dir)
    action = args.db_command
    if action == "migrate":
        from ffdesk.db import migrate

        applied = _run_db(settings, places, migrate.migrate, migrate_first=False)
        print(
            f"schema is at version {migrate.latest_version()}"
            + (f" (applied {', '.join(map(str, applied))})" if applied else "")
        )
        return EXIT_OK
    if settings.database and action in ("status", "url"):
        return _external_db(action, args, settings, places)
    if settings.database and action in ("stop", "share", "unshare"):
        raise FfdeskError(
            f"'db {action}' works on the embedded server only; this command was given --database"
        )
    if action == "share":
        info = server.share(args.port)
        print(
            f"the embedded database listens on port {info.port} (password required, scram-sha-256)"
        )
        print("join another machine with:")
        print(f"  ffdesk node --database '{info.join_url}'")
        print(
            "it is reachable while ffdesk runs on this machine (a node or the app); keep the "
            "URL secret; 'ffdesk db unshare' closes it again"
        )
        return EXIT_OK
    if action == "unshare":
        print(
            "no longer listening on the network"
            if server.unshare()
            else "the embedded database was not shared"
        )
        return EXIT_OK
    if action == "stop":
        print("embedded server stopped" if server.stop() else "embedded server was not running")
        return EXIT_OK
    if action == "url":
        if not server.status().running:
            raise FfdeskError(
                f"the embedded server is not running ({server.root}); start a "
                "node or run any ffdesk command that uses the database"
            )
        print(server.url(with_password=args.show_password))
        return EXIT_OK
    st = server.status()
    if args.json:
        _print_json(
            {
                "kind": "embedded",
                "root": str(st.root),
                "initialized": st.initialized,
                "running": st.running,
                "pid": st.pid,
                "host": st.host,
                "port": st.port,
                "users": st.users,
                "version": st.version,
                "url": server.url(with_password=False) if st.running else None,
            }
        )
        return EXIT_OK
    print(f"embedded PostgreSQL {st.version or ''} in {st.root}".replace("  ", " "))
    if not st.initialized:
        print("  not created yet (it is created on first use)")
    elif st.running:
        print(f"  running: pid {st.pid}, {st.host}:{st.port}, {st.users} ffdesk process(es)")
        print(f"  url: {server.url(with_password=False)}")
    else:
        print("  not running (it starts on first use)")
    if st.shared_port:
        print(f"  shared on the network, port {st.shared_port} ('ffdesk db unshare' to stop)")
    return EXIT_OK


def _external_db(action: str, args: argparse.Namespace, settings: Settings, places: Places) -> int:
    url = settings.database or ""
    if action == "url":
        print(url if args.show_password else mask_url(url))
        return EXIT_OK

    async def version(conn) -> str:
        cur = await conn.execute("SHOW server_version")
        row = await cur.fetchone()
        return row[0]

    ver = _run_db(settings, places, version)
    if getattr(args, "json", False):
        _print_json({"kind": "external", "url": mask_url(url), "running": True, "version": ver})
    else:
        print(f"external PostgreSQL {ver} at {mask_url(url)}: reachable")
    return EXIT_OK


def cmd_gui(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    try:
        from ffdesk.ui.app import run_gui
    except ImportError as exc:  # PySide6 missing or its system libraries
        raise FfdeskError(f"the desktop app cannot start: {exc}") from None
    if args.quit:
        from ffdesk.ui.single_instance import ask_running_app

        if not ask_running_app(places.data_dir, {"quit": args.quit}):
            raise FfdeskError("no running ffdesk app to quit")
        return EXIT_OK
    return run_gui(settings, places, files=args.files, minimized=args.minimized)


def cmd_demo(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.engine.demo import run_demo

    folder = Path(args.dir) if args.dir else places.data_dir / "demo"
    return run_demo(settings, places, folder)


def cmd_watch(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.cli_watch import cmd_watch as run

    return run(args, settings, places)


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings, Places], int]] = {
    "node": cmd_node,
    "submit": cmd_submit,
    "jobs": cmd_jobs,
    "job": cmd_job,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "presets": cmd_presets,
    "watch": cmd_watch,
    "priority": cmd_priority,
    "nodes": cmd_nodes,
    "batches": lambda a, s, p: cmd_batches(a, s, p),
    "top": lambda a, s, p: cmd_top(a, s, p),
    "cluster": lambda a, s, p: cmd_cluster(a, s, p),
    "roots": cli_roots.command(lambda s, p, fn: _run_db(s, p, fn), lambda: _submitter()),
    "webhooks": cli_webhooks.command(lambda s, p, fn: _run_db(s, p, fn), lambda: _submitter()),
    "db": cmd_db,
    "demo": cmd_demo,
    "gui": cmd_gui,
    "selftest": selftest.cmd_selftest,
    "autostart": cli_autostart.cmd_autostart,
}


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
