"""``ffdesk webhooks``: POST the cluster's events to HTTP receivers (add, list, remove,
deliveries, test).

A webhook's secret signs every request (see :mod:`ffdesk.engine.webhooks`); it is printed
once when the webhook is added and never shown again.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from ffdesk.core.config import Settings
from ffdesk.core.errors import ConfigError, FfdeskError
from ffdesk.core.places import Places
from ffdesk.core.secrets import mask_url

RunDb = Callable[[Settings, Places, Callable[[Any], Any]], Any]

MIN_SECRET = 16
# The public event names (as ffdesk.db.webhooks.EVENTS; kept here so that building the
# parser does not import the database driver).
EVENTS = (
    "job.succeeded",
    "job.failed",
    "job.dead",
    "batch.finished",
    "node.offline",
    "node.quarantined",
)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    hooks = sub.add_parser(
        "webhooks",
        parents=[common],
        help="webhooks: POST job, batch and node events to a URL (signed)",
        description="Webhooks: the cluster POSTs events (job.succeeded, job.failed, job.dead, "
        "batch.finished, node.offline, node.quarantined) to a URL, signed with a secret, "
        "retried until the receiver answers 2xx. Plain 'webhooks' lists them.",
    )
    hooks.add_argument("--json", action="store_true")
    actions = hooks.add_subparsers(dest="webhooks_command", metavar="ACTION")
    add = actions.add_parser("add", parents=[common], help="add a webhook")
    add.add_argument("url", metavar="URL", help="http(s) URL that receives the POSTs")
    add.add_argument(
        "--event",
        action="append",
        dest="wh_events",
        choices=EVENTS,
        metavar="EVENT",
        help=f"an event to send (repeatable; default: all of {', '.join(EVENTS)})",
    )
    add.add_argument(
        "--preset",
        dest="wh_preset",
        metavar="NAME",
        help="only events of jobs with this preset (node and batch events are not sent)",
    )
    add.add_argument(
        "--secret",
        dest="wh_secret",
        metavar="S",
        help="the signing secret ('-': read it from stdin; default: generate one, printed once)",
    )
    add.add_argument(
        "--max-attempts",
        dest="wh_max_attempts",
        type=int,
        default=8,
        metavar="N",
        help="give a delivery up after N attempts (default 8)",
    )
    add.add_argument(
        "--retry-base",
        dest="wh_retry_base",
        default="10s",
        metavar="T",
        help="wait after the first failed attempt, doubling each time (default 10s)",
    )
    lst = actions.add_parser("list", parents=[common], help="the webhooks (never their secrets)")
    lst.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    remove = actions.add_parser("remove", parents=[common], help="remove a webhook")
    remove.add_argument("wh_id", type=int, metavar="ID")
    test = actions.add_parser("test", parents=[common], help="queue a 'ping' delivery")
    test.add_argument("wh_id", type=int, metavar="ID")
    deliveries = actions.add_parser(
        "deliveries", parents=[common], help="delivery attempts, newest last"
    )
    deliveries.add_argument("--webhook", dest="wh_id", type=int, metavar="ID")
    deliveries.add_argument("--limit", dest="wh_limit", type=int, default=50, metavar="N")
    deliveries.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


def command(run_db: RunDb, submitter: Callable[[], str]):
    def cmd_webhooks(args: argparse.Namespace, settings: Settings, places: Places) -> int:
        from ffdesk.db import webhooks as hooks_sql

        action = getattr(args, "webhooks_command", None) or "list"
        if action == "add":
            return _add(args, settings, places, run_db, submitter)
        if action == "list":
            rows = run_db(settings, places, hooks_sql.list_webhooks)
            _print_webhooks(rows, as_json=bool(getattr(args, "json", False)))
            return 0
        if action == "remove":
            if not run_db(settings, places, lambda c: hooks_sql.remove(c, args.wh_id)):
                raise FfdeskError(f"no webhook {args.wh_id}")
            print(f"webhook {args.wh_id} removed (with its deliveries)")
            return 0
        if action == "test":
            delivery = run_db(settings, places, lambda c: hooks_sql.queue_ping(c, args.wh_id))
            if delivery is None:
                raise FfdeskError(f"no webhook {args.wh_id}")
            print(f"ping queued: delivery {delivery} (see 'ffdesk webhooks deliveries')")
            return 0
        if args.wh_limit <= 0:
            raise ConfigError("--limit must be at least 1")
        rows = run_db(
            settings,
            places,
            lambda c: hooks_sql.list_attempts(c, webhook_id=args.wh_id, limit=args.wh_limit),
        )
        _print_deliveries(rows, as_json=bool(getattr(args, "json", False)))
        return 0

    return cmd_webhooks


def check_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"bad URL {mask_url(url)!r}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"a webhook URL is http:// or https:// with a host, not {mask_url(url)!r}"
        )
    return url


def _add(
    args: argparse.Namespace,
    settings: Settings,
    places: Places,
    run_db: RunDb,
    submitter: Callable[[], str],
) -> int:
    from ffdesk.cli_watch import parse_seconds
    from ffdesk.db import webhooks as hooks_sql

    url = check_url(args.url)
    events = list(dict.fromkeys(args.wh_events or EVENTS))
    if not 1 <= args.wh_max_attempts <= 50:
        raise ConfigError("--max-attempts must be between 1 and 50")
    retry_base = parse_seconds(args.wh_retry_base, "--retry-base")
    if retry_base <= 0:
        raise ConfigError("--retry-base must be above 0")
    generated = args.wh_secret is None
    secret = args.wh_secret
    if secret == "-":
        secret = sys.stdin.readline().strip()
    if secret is None:
        secret = secrets.token_urlsafe(32)
    if len(secret) < MIN_SECRET:
        raise ConfigError(f"a webhook secret has at least {MIN_SECRET} characters")
    preset = args.wh_preset
    if preset is not None:
        _warn_unknown_preset(preset, settings, places)
        job_only = [e for e in events if e.startswith("job.")]
        if not job_only:
            raise ConfigError("--preset webhooks get job events only (job.succeeded, ...)")
        events = job_only
    webhook_id = run_db(
        settings,
        places,
        lambda c: hooks_sql.add(
            c,
            url,
            events,
            secret=secret,
            preset=preset,
            max_attempts=args.wh_max_attempts,
            retry_base_s=retry_base,
            by=submitter(),
        ),
    )
    scope = f" of preset {preset}" if preset else ""
    print(f"webhook {webhook_id}: {', '.join(events)}{scope} -> {mask_url(url)}")
    if generated:
        print(f"secret (shown only now; it signs X-Ffdesk-Signature): {secret}")
    return 0


def _warn_unknown_preset(name: str, settings: Settings, places: Places) -> None:
    from ffdesk.cli_presets import load_all

    try:
        known = load_all(places, settings, need=name)
    except FfdeskError:
        return
    if name not in known:
        print(
            f"warning: preset '{name}' is unknown on this machine; the webhook gets events "
            "of jobs with exactly this preset name",
            file=sys.stderr,
        )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)] + [row[-1]]
        print("  ".join(cells).rstrip())


def _json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def _print_webhooks(rows: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        _json(
            [
                {
                    "id": r["id"],
                    "url": mask_url(r["url"]),
                    "events": list(r["events"]),
                    "preset": r["preset"],
                    "enabled": r["enabled"],
                    "max_attempts": r["max_attempts"],
                    "retry_base_s": r["retry_base_s"],
                    "created_at": _iso(r["created_at"]),
                    "created_by": r["created_by"],
                    "pending": r["pending"],
                    "delivered": r["delivered"],
                    "failed": r["failed"],
                    "last_finished_at": _iso(r["last_finished_at"]),
                }
                for r in rows
            ]
        )
        return
    if not rows:
        print("no webhooks (add one: ffdesk webhooks add URL)")
        return
    table = [("ID", "PRESET", "PENDING", "DELIVERED", "FAILED", "EVENTS", "URL")]
    for r in rows:
        table.append(
            (
                str(r["id"]),
                r["preset"] or "(all)",
                str(r["pending"]),
                str(r["delivered"]),
                str(r["failed"]),
                ",".join(r["events"]),
                mask_url(r["url"]) + ("" if r["enabled"] else "  (disabled)"),
            )
        )
    _table(table)


def _result(r: dict[str, Any]) -> str:
    if r["attempt"] is None:
        return "waiting"
    if r["finished_at"] is None:
        return f"lost (node {r['node']})" if r["lost"] else f"sending (node {r['node']})"
    if r["error"]:
        return r["error"]
    return str(r["http_status"])


def _print_deliveries(rows: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        _json(
            [
                {
                    "at": _iso(r["at"]),
                    "delivery": r["delivery_id"],
                    "webhook": r["webhook_id"],
                    "event": r["event"],
                    "job": r["job_id"],
                    "attempt": r["attempt"],
                    "max_attempts": r["max_attempts"],
                    "node": r["node"],
                    "http_status": r["http_status"],
                    "error": r["error"],
                    "duration_ms": None if r["duration_ms"] is None else round(r["duration_ms"], 1),
                    "result": _result(r),
                    "state": r["state"],
                    "next_at": _iso(r["next_at"]) if r["state"] == "pending" else None,
                }
                for r in rows
            ]
        )
        return
    if not rows:
        print("no deliveries yet")
        return
    table = [("TIME", "DELIVERY", "HOOK", "EVENT", "JOB", "TRY", "MS", "STATE", "RESULT")]
    for r in rows:
        table.append(
            (
                _when(r["at"]),
                str(r["delivery_id"]),
                str(r["webhook_id"]),
                r["event"],
                str(r["job_id"] or "-"),
                f"{r['attempt']}/{r['max_attempts']}" if r["attempt"] else "-",
                f"{r['duration_ms']:.0f}" if r["duration_ms"] is not None else "-",
                r["state"],
                _result(r),
            )
        )
    _table(table)
