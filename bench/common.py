"""Shared helpers for the ffdesk benchmarks (``bench/*.py``).

Every benchmark runs inside a :class:`Workspace`: a temp directory holding a private embedded
PostgreSQL server, the clips, the outputs and the node homes. The workspace stops every process
it started and removes the directory on any exit, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

from ffdesk import __version__
from ffdesk.db import migrate
from ffdesk.db.embedded import EmbeddedServer
from ffdesk.engine.loop import run as run_async  # a SelectorEventLoop, like the node

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


# --------------------------------------------------------------------------- processes


def ffdesk_cli() -> list[str]:
    """argv prefix of the ``ffdesk`` CLI of this interpreter (the venv's console script)."""
    script = Path(sys.executable).parent / "ffdesk"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ffdesk"]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FFDESK_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_for(
    condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class NodeProcess:
    """One ``ffdesk node`` child; ``started_wall`` / ``started_perf`` are taken just before
    ``Popen`` (time.time() shares its clock with PostgreSQL's timestamps on this machine)."""

    proc: subprocess.Popen[bytes]
    identifier: str
    log: Path
    started_wall: float
    started_perf: float

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def problems(self) -> list[str]:
        """WARNING / ERROR lines of the node's console log (printed by the benchmarks: a
        benchmark number means little if the node was unhappy meanwhile)."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in text if " WARNING " in line or " ERROR " in line]

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(
                f"node {self.identifier} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        """SIGTERM (stop claiming, finish running jobs), a second SIGTERM (give them back at
        once), then SIGKILL; each step only if the previous one did not end it."""
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)


# --------------------------------------------------------------------------- workspace


class Workspace:
    """Temp directory + private embedded PostgreSQL + the processes a benchmark starts.

    Use as a context manager. Each benchmark phase gets its own database
    (:meth:`fresh_database`), so runs never see each other's jobs or nodes.
    """

    def __init__(
        self, name: str, *, keep_logs: Path | None = None, node_flags: Sequence[str] = ()
    ) -> None:
        """``keep_logs``: copy the node logs there before the temp dir goes (diagnosis);
        ``node_flags``: extra flags for every node (e.g. ``--debug cluster``)."""
        self.name = name
        self.keep_logs = keep_logs
        self.node_flags = list(node_flags)
        self.root = Path(tempfile.mkdtemp(prefix=f"ffdesk-bench-{name}-"))
        self.server = EmbeddedServer(self.root / "postgres")
        self.admin_url = ""
        self._children: list[subprocess.Popen[bytes]] = []
        self._nodes: list[NodeProcess] = []
        self._counter = itertools.count(1)
        self._old_sigterm: Any = None

    # ----------------------------------------------------------------- life cycle

    def __enter__(self) -> Workspace:
        global _code_at_start
        _code_at_start = _code_version()  # the code can change while a long benchmark runs
        self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        try:
            print(f"[bench] starting a private PostgreSQL in {self.root}", flush=True)
            self.server.acquire()
            self.admin_url = self.server.url(database="postgres")
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        # Another Ctrl-C or SIGTERM must not interrupt this and leave a server or node behind.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            for node in self._nodes:
                node.stop()
            for proc in self._children:
                _kill_group(proc)
            with contextlib.suppress(Exception):
                self.server.release()
            with contextlib.suppress(Exception):
                self.server.stop()  # whatever release() decided: this server is ours alone
            if self.keep_logs is not None:
                with contextlib.suppress(OSError):
                    self.keep_logs.mkdir(parents=True, exist_ok=True)
                    for node in self._nodes:
                        shutil.copy2(node.log, self.keep_logs / node.log.name)
            shutil.rmtree(self.root, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old_int)
            # Back to what was there before __enter__ (or before this call, if run twice).
            restore = self._old_sigterm if self._old_sigterm is not None else old_term
            signal.signal(signal.SIGTERM, restore)
            self._old_sigterm = None

    # ----------------------------------------------------------------- databases

    def fresh_database(self, label: str) -> str:
        """A new, migrated database on the private server; returns its URL."""
        name = f"{label}_{next(self._counter)}".replace("-", "_").lower()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.server.url(database=name)
        run_async(_migrate(url))
        return url

    def server_cpu(self) -> float:
        """CPU seconds the private PostgreSQL has used so far: the postmaster, its live
        processes and the backends that already exited (reaped by the postmaster)."""
        pid = self.server.status().pid
        if pid is None:
            return 0.0
        try:
            master = psutil.Process(pid)
            t = master.cpu_times()
            total = t.user + t.system + t.children_user + t.children_system
            children = master.children()
        except psutil.Error:
            return 0.0
        for child in children:
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        return total

    # ----------------------------------------------------------------- processes

    def path(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def cli(self, *args: str, database: str, timeout: float = 300) -> str:
        """Run one ffdesk CLI command to completion; returns stdout."""
        argv = [*ffdesk_cli(), *args, "--home", str(self.path("home")), "--database", database]
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ffdesk {args[0]} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def start_node(
        self, identifier: str, *flags: str, database: str, home: Path | None = None
    ) -> NodeProcess:
        """Start ``ffdesk node`` in its own session (Ctrl-C reaches only the benchmark, which
        then stops the node in order); its console output goes to a log file.

        All nodes share one ``--home`` unless ``home`` is given, like successive node runs
        of one user on one machine (they share e.g. the encoder-probe cache).
        """
        home = home or self.path("home")
        log = self.path("logs") / f"{identifier}.log"
        argv = [
            *ffdesk_cli(),
            "node",
            "--home",
            str(home),
            "--database",
            database,
            "--identifier",
            identifier,
            *flags,
            *self.node_flags,
        ]
        with log.open("ab") as fh:
            started_wall, started_perf = time.time(), time.perf_counter()
            proc = subprocess.Popen(
                argv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(),
                start_new_session=True,
            )
        node = NodeProcess(proc, identifier, log, started_wall, started_perf)
        self._nodes.append(node)
        return node

    def node_problems(self) -> list[str]:
        """Every node's WARNING / ERROR lines, each prefixed with the node's name."""
        return [f"{n.identifier}: {line}" for n in self._nodes for line in n.problems()]

    def print_node_problems(self) -> None:
        found = self.node_problems()
        print(f"\nNode log warnings/errors: {len(found) or 'none'}")
        for line in found[:20]:
            print(f"  {line}")
        if len(found) > 20:
            print(f"  ... and {len(found) - 20} more")

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Any other child (xargs), in its own process group so cleanup can end all of it."""
        proc = subprocess.Popen(list(argv), start_new_session=True, env=child_env(), **kwargs)
        self._children.append(proc)
        return proc


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)  # the group we created (start_new_session)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


async def _migrate(url: str) -> None:
    conn = await psycopg.AsyncConnection.connect(url)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()


def query(url: str, sql: str, params: Any = None) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def wait_node_ready(url: str, node: NodeProcess, *, listening: bool, timeout: float = 60) -> None:
    """Until the node is registered online and, if ``listening``, its LISTEN is in place."""

    def ready() -> bool:
        node.check_alive()
        rows = query(
            url,
            "SELECT pid FROM nodes WHERE identifier = %s AND state = 'online'",
            [node.identifier],
        )
        if not rows or rows[0][0] != node.proc.pid:
            return False
        if not listening:
            return True
        return bool(
            query(
                url,
                """SELECT 1 FROM pg_stat_activity
                    WHERE datname = current_database() AND query ILIKE 'LISTEN %%'""",
            )
        )

    wait_for(ready, timeout=timeout, what=f"node {node.identifier} to come online")


# --------------------------------------------------------------------------- media


def make_clip(path: Path, *, seconds: float, size: str, rate: int = 25, audio: bool = True) -> Path:
    """A synthetic clip (testsrc2 + sine) encoded fast; ``path``'s folder is created."""
    argv = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    argv += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        argv += ["-c:a", "aac", "-b:a", "64k"]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*argv, str(path)], check=True, stdin=subprocess.DEVNULL)
    return path


# --------------------------------------------------------------------------- numbers


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); p in [0, 100]."""
    if not values:
        return math.nan
    data = sorted(values)
    k = (len(data) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        out = [row[0].ljust(widths[0])]
        out += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(f"\n{title}")
    print(format_table(headers, rows))


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True, env={"LC_ALL": "C"}
        ).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _ffmpeg_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        out = subprocess.run(
            [FFMPEG, "-version"], capture_output=True, text=True, check=True
        ).stdout
        return " ".join(out.splitlines()[0].split()[:3])
    return "?"


_code_at_start: str | None = None


def _code_version() -> str:
    """ffdesk's version, git commit and whether ffdesk/ had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "ffdesk", "resources"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        extra = f" + uncommitted changes in {len(dirty)} file(s) under ffdesk/" if dirty else ""
        return f"{__version__}, git {head}{extra}"
    return __version__


def machine_info(url: str) -> list[tuple[str, str]]:
    pg = query(url, "SHOW server_version")[0][0]
    return [
        ("date", datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")),
        ("cores (nproc)", str(len(os.sched_getaffinity(0)))),
        ("cpu", _cpu_model()),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("ffmpeg", f"{_ffmpeg_version()} ({FFMPEG})"),
        ("postgresql", f"{pg} (embedded, private, unix socket)"),
        ("python", platform.python_version()),
        ("ffdesk", f"{_code_at_start} (at start)" if _code_at_start else _code_version()),
    ]


def print_machine(url: str) -> None:
    print()
    for key, value in machine_info(url):
        print(f"{key + ':':<15}{value}")


class CpuMeter:
    """Where the machine's CPU went during a ``with`` block: ours (this process, its reaped
    descendants, the private PostgreSQL) and everybody else's (the rest of the busy time),
    plus steal time. Descendants still running at the end count as everybody else's: stop
    (reap) them inside the block.

    On a shared machine, ``others`` tells whether a wall-clock number was disturbed.
    """

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.wall = self.ours = self.others = self.steal = 0.0

    @staticmethod
    def _system() -> tuple[float, float]:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)
        return busy, getattr(t, "steal", 0.0)

    def _ours(self) -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + self.ws.server_cpu()

    def __enter__(self) -> CpuMeter:
        self._t0 = time.perf_counter()
        self._busy0, self._steal0 = self._system()
        self._ours0 = self._ours()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, steal = self._system()
        self.wall = time.perf_counter() - self._t0
        self.ours = self._ours() - self._ours0
        self.others = max(0.0, (busy - self._busy0) - self.ours)
        self.steal = steal - self._steal0

    def describe(self) -> str:
        cores = len(os.sched_getaffinity(0))
        share = self.others / (self.wall * cores) * 100 if self.wall else 0.0
        return (
            f"other processes used {self.others:.1f} CPU-s in {self.wall:.0f} s "
            f"({share:.0f}% of {cores} cores), steal {self.steal:.1f} s"
        )


def add_diagnosis_options(parser: Any) -> None:
    """Options that change nothing measured unless used: for looking into odd results."""
    group = parser.add_argument_group("diagnosis (numbers taken with these are not comparable)")
    group.add_argument(
        "--node-debug", metavar="AREAS", help="pass --debug AREAS to every node (e.g. cluster)"
    )
    group.add_argument(
        "--keep-logs", metavar="DIR", type=Path, help="copy the node logs to DIR at the end"
    )


def workspace_from(name: str, args: Any) -> Workspace:
    flags = ["--debug", args.node_debug] if args.node_debug else []
    return Workspace(name, keep_logs=args.keep_logs, node_flags=flags)


def run_main(main: Callable[[], int]) -> None:
    """Exit with ``main()``'s code; 130 with one line (no traceback) on Ctrl-C / SIGTERM."""
    try:
        code = main()
    except KeyboardInterrupt:
        print("\n[bench] interrupted; everything cleaned up", file=sys.stderr)
        code = 130
    sys.exit(code)
