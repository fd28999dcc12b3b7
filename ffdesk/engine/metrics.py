"""Prometheus metrics of a node: ``ffdesk node --metrics-port P`` serves ``GET /metrics``.

Text exposition format 0.0.4, served by a tiny HTTP/1.1 responder on the node's own event
loop (``asyncio.start_server``; no thread, no dependency). Two kinds of numbers:

* cluster-wide, read from the database in one statement (:mod:`ffdesk.db.metrics`) and kept
  for ``CACHE_SECONDS``, so any number of scrapers costs PostgreSQL at most one query per
  cache period per node: jobs by state, queue depth, running jobs and fps per node, time in
  queue, attempts by failure kind and outcome, nodes by state. Every node serves them: scrape
  one node, or aggregate with ``max``;
* this node's own, always there even while the database is away: its version and FFmpeg,
  its slots and the jobs it finished since it started.

``ffdesk_up`` is 1 when the database answered (cluster numbers present), 0 when it did not.
Only counts and durations leave the node this way, never paths or job details; still, it
binds to 127.0.0.1 unless ``--metrics-host`` says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import psycopg
from psycopg_pool import PoolTimeout

from ffdesk import __version__
from ffdesk.core.errors import ConfigError
from ffdesk.db import metrics as msql

if TYPE_CHECKING:
    from ffdesk.engine.node import Node

log = logging.getLogger("ffdesk.node")
clog = logging.getLogger("ffdesk.cluster")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CACHE_SECONDS = 1.5  # a scrape storm costs one query per this many seconds
DB_TIMEOUT = 3.0  # a scrape during an outage answers ffdesk_up 0 within this
READ_TIMEOUT = 5.0  # for the request line and headers
MAX_LINE = 16 * 1024
MAX_HEADERS = 100

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}

# --------------------------------------------------------------------------- text format


@dataclass
class Family:
    """One metric family: its ``# HELP``, its ``# TYPE`` and its samples."""

    name: str
    kind: str  # counter, gauge, histogram, untyped
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: object) -> Family:
        self.samples.append((suffix, {k: str(v) for k, v in labels.items()}, value))
        return self


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def format_le(bound: float) -> str:
    """A bucket bound as Prometheus' client libraries write it: 0.05, 1.0, +Inf."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def render(families: Iterable[Family]) -> str:
    """The text exposition format 0.0.4 of ``families`` (each name at most once)."""
    out: list[str] = []
    seen: set[str] = set()
    for fam in families:
        if not _METRIC_NAME.match(fam.name) or fam.name in seen:
            raise ValueError(f"bad or repeated metric name {fam.name!r}")
        seen.add(fam.name)
        out.append(f"# HELP {fam.name} {escape_help(fam.help)}")
        out.append(f"# TYPE {fam.name} {fam.kind}")
        allowed = _SUFFIXES.get(fam.kind, ("",))
        for suffix, labels, value in fam.samples:
            if suffix not in allowed:
                raise ValueError(f"{fam.name}: suffix {suffix!r} does not go with {fam.kind}")
            for key in labels:
                if not _LABEL_NAME.match(key) or key.startswith("__"):
                    raise ValueError(f"{fam.name}: bad label name {key!r}")
            text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            out.append(
                f"{fam.name}{suffix}{{{text}}} {format_value(value)}"
                if text
                else f"{fam.name}{suffix} {format_value(value)}"
            )
    return "\n".join(out) + "\n" if out else ""


def histogram(
    name: str,
    help_text: str,
    cumulative: Sequence[tuple[float, int]],
    total: float,
    count: int,
    **labels: object,
) -> Family:
    """A histogram from cumulative bucket counts ``[(le, observations <= le), ...]`` (as SQL
    computes them); the ``+Inf`` bucket is ``count``, as the format demands."""
    fam = Family(name, "histogram", help_text)
    previous = 0
    last_le = -math.inf
    for le, n in cumulative:
        if le <= last_le or n < previous or n > count:
            raise ValueError(f"{name}: buckets must be cumulative with ascending bounds")
        if math.isinf(le):
            continue  # added below, always equal to count
        fam.add(n, "_bucket", **labels, le=format_le(le))
        previous, last_le = n, le
    fam.add(count, "_bucket", **labels, le="+Inf")
    fam.add(total, "_sum", **labels)
    fam.add(count, "_count", **labels)
    return fam


# --------------------------------------------------------------------------- the numbers


@dataclass
class LocalInfo:
    """What this node says about itself (no database needed)."""

    node: str
    ffmpeg: str
    slots: int
    finished: Mapping[str, int]  # result -> jobs finished here since start


def local_families(info: LocalInfo, *, up: bool) -> list[Family]:
    fams = [
        Family(
            "ffdesk_up",
            "gauge",
            "1 if the database answered this scrape, 0 if not "
            "(then only this node's own metrics are present).",
        ).add(1 if up else 0),
        Family(
            "ffdesk_node_info", "gauge", "This node: identifier, ffdesk and FFmpeg version."
        ).add(1, node=info.node, version=__version__, ffmpeg=info.ffmpeg),
        Family("ffdesk_node_slots", "gauge", "FFmpeg processes this node runs at once.").add(
            info.slots, node=info.node
        ),
    ]
    finished = Family(
        "ffdesk_node_jobs_finished_total",
        "counter",
        "Jobs this node finished since it started, by result (retried: a "
        "failure sent back to the queue; lost: taken away from this node; "
        "requeued: given back unspent, e.g. on pause).",
    )
    for result, n in info.finished.items():
        finished.add(n, node=info.node, result=result)
    fams.append(finished)
    return fams


def cluster_families(m: msql.ClusterMetrics) -> list[Family]:
    jobs = Family("ffdesk_jobs", "gauge", "Jobs in the queue by state.")
    for state, n in m.jobs.items():
        jobs.add(n, state=state)
    running = Family("ffdesk_jobs_running", "gauge", "Running jobs per node.")
    fps = Family(
        "ffdesk_node_fps",
        "gauge",
        "Sum of the frames per second of each node's running jobs, as last reported.",
    )
    for node, n in m.running.items():
        running.add(n, node=node)
        fps.add(m.fps.get(node, 0.0), node=node)
    attempts = Family(
        "ffdesk_attempts_total",
        "counter",
        "Finished attempts (runs) by failure kind (none: no failure) and outcome.",
    )
    for (kind, outcome), n in m.attempts.items():
        attempts.add(n, kind=kind, outcome=outcome)
    nodes = Family(
        "ffdesk_nodes",
        "gauge",
        "Registered nodes by state (as 'ffdesk nodes' "
        "shows it: stale after two missed heartbeats, offline after a lease).",
    )
    for state, n in m.nodes.items():
        nodes.add(n, state=state)
    return [
        jobs,
        Family(
            "ffdesk_queue_depth",
            "gauge",
            "Queued jobs that are due (not waiting out a retry backoff).",
        ).add(m.queue_depth),
        running,
        fps,
        histogram(
            "ffdesk_time_in_queue_seconds",
            "Seconds from submit to (latest) claim of the jobs claimed in the last hour.",
            m.wait_buckets,
            m.wait_sum,
            m.wait_count,
        ),
        attempts,
        nodes,
    ]


# --------------------------------------------------------------------------- the server


class MetricsServer:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.server: asyncio.Server | None = None
        self.url = ""
        self._lock = asyncio.Lock()
        self._cached: tuple[float, msql.ClusterMetrics | None] | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._db_error_logged = False

    async def start(self, host: str, port: int) -> None:
        try:
            self.server = await asyncio.start_server(self._handle, host, port, limit=MAX_LINE)
        except OSError as exc:
            # asyncio's own message repeats the address; the system's reason is enough
            if isinstance(exc, socket.gaierror) or not exc.errno:
                why = exc.strerror or str(exc) or exc.__class__.__name__
            else:
                why = os.strerror(exc.errno)
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {why}; "
                "choose another --metrics-port (or --metrics-host)"
            ) from None
        bound = self.server.sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.url = f"http://{shown}:{bound[1]}/metrics"

    async def serve(self) -> None:
        """Runs as one of the node's tasks; cancelling it (the node stops) closes the port."""
        assert self.server is not None
        try:
            await asyncio.Event().wait()
        finally:
            self.server.close()
            for writer in list(self._clients):
                writer.transport.abort()
            await self.server.wait_closed()

    # ---------------------------------------------------------------- numbers

    async def cluster(self) -> msql.ClusterMetrics | None:
        """The cluster-wide numbers, at most CACHE_SECONDS old; None if the database is away.
        One query at a time: scrapes arriving meanwhile wait for its answer."""
        async with self._lock:
            cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
                return cached[1]
            pool = self.node.pool
            result: msql.ClusterMetrics | None = None
            try:
                if pool is not None:
                    result = await asyncio.wait_for(pool.run(msql.cluster_metrics), DB_TIMEOUT)
                if self._db_error_logged:
                    clog.info("metrics: database answering again")
                self._db_error_logged = False
            except (psycopg.Error, PoolTimeout, TimeoutError, OSError) as exc:
                text = " ".join(str(exc).split())[:200] or exc.__class__.__name__
                if not self._db_error_logged:
                    clog.warning(
                        "metrics: cluster numbers unavailable (%s): serving ffdesk_up 0", text
                    )
                self._db_error_logged = True
            self._cached = (time.monotonic(), result)
            return result

    def local_info(self) -> LocalInfo:
        node = self.node
        stats = node.stats
        return LocalInfo(
            node=node.identifier,
            ffmpeg=node.tools.identity.version if node.tools is not None else "",
            slots=node.settings.slots,
            finished={
                "succeeded": stats.succeeded,
                "failed": stats.failed,
                "retried": stats.retried,
                "lost": stats.lost,
                "requeued": stats.requeued,
            },
        )

    async def exposition(self) -> str:
        cluster = await self.cluster()
        families = local_families(self.local_info(), up=cluster is not None)
        if cluster is not None:
            families += cluster_families(cluster)
        return render(families)

    # ---------------------------------------------------------------- HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            status, body, extra, head_only = await self._respond(reader)
            head = [
                f"HTTP/1.1 {status}",
                f"Content-Type: {CONTENT_TYPE if status.startswith('200') else _PLAIN}",
                f"Content-Length: {len(body)}",
                "Connection: close",
                *extra,
            ]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("ascii"))
            if not head_only:
                writer.write(body)
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a client that went away or never spoke
        finally:
            self._clients.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[str, bytes, list[str], bool]:
        """(status line, body, extra headers, HEAD request) for one request."""
        try:
            line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
            for _ in range(MAX_HEADERS):  # headers: read and ignored
                header = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
                if header in (b"\r\n", b"\n", b""):
                    break
            else:
                return "431 Request Header Fields Too Large", b"too many headers\n", [], False
        except ValueError:  # a line longer than MAX_LINE
            return "431 Request Header Fields Too Large", b"line too long\n", [], False
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", b"bad request\n", [], False
        method, target, _version = parts
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"GET or HEAD only\n", ["Allow: GET, HEAD"], False
        if urlsplit(target).path != "/metrics":
            return "404 Not Found", b"not found: ffdesk serves /metrics only\n", [], head
        return "200 OK", (await self.exposition()).encode("utf-8"), [], head


_PLAIN = "text/plain; charset=utf-8"


async def start_metrics(node: Node) -> MetricsServer | None:
    """Open ``GET /metrics`` if ``metrics_port`` is set (after registration, so the pool is
    open); the node's task list owns it, so stopping the node closes the port. A port that
    cannot be had is a ConfigError: one line, and the node does not start."""
    port = node.settings.metrics_port
    if not port:
        return None
    server = MetricsServer(node)
    await server.start(node.settings.metrics_host, port)
    node._spawn(server.serve(), "metrics")
    log.info("metrics at %s", server.url)
    return server
