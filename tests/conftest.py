"""Shared fixtures: real PostgreSQL servers (embedded 18, Debian 15), real FFmpeg clips,
and helpers to run the real ``ffdesk`` CLI and node processes."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from ffdesk.db.embedded import EmbeddedServer

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")


# --------------------------------------------------------------------------- waiting


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(interval)


# --------------------------------------------------------------------------- databases


class PgServer:
    """A real server for the whole session; each test gets its own fresh database."""

    _counter = itertools.count(1)

    def __init__(self, root: Path, bindir: Path | None, label: str) -> None:
        self.label = label
        self.server = EmbeddedServer(root, bindir=bindir)
        self.server.acquire()
        self.admin_url = self.server.url(database="postgres")

    def fresh_database(self) -> str:
        name = f"t{next(self._counter)}_{os.getpid()}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.server.url(database=name)

    def close(self) -> None:
        self.server.release()


@pytest.fixture(scope="session")
def server_root() -> Iterator[Path]:
    # Not under pytest's tmp dir: every pytest session resets /tmp/pytest-of-<user> to 0700,
    # which would lock the unprivileged server user (used when tests run as root) out of a
    # server another session started.
    root = Path(tempfile.mkdtemp(prefix="ffdesk-test-pg-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg18(server_root: Path) -> Iterator[PgServer]:
    server = PgServer(server_root / "pg18", None, "embedded-18")
    yield server
    server.close()


@pytest.fixture(scope="session")
def pg15(server_root: Path) -> Iterator[PgServer]:
    if not (PG15_BIN / "initdb").exists():
        pytest.skip("Debian's PostgreSQL 15 is not installed (apt-get install postgresql-15)")
    server = PgServer(server_root / "pg15", PG15_BIN, "debian-15")
    yield server
    server.close()


@pytest.fixture
def db_url(pg18: PgServer) -> str:
    """A fresh database on the embedded PostgreSQL 18."""
    return pg18.fresh_database()


@pytest.fixture(params=["pg18", "pg15"])
def any_db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on each supported server: embedded 18 and Debian's 15."""
    server: PgServer = request.getfixturevalue(request.param)
    return server.fresh_database()


# --------------------------------------------------------------------------- media


def make_clip(
    path: Path,
    *,
    seconds: float = 1.0,
    video: bool = True,
    audio: bool = True,
    size: str = "160x120",
    rate: int = 10,
) -> Path:
    assert FFMPEG, "ffmpeg must be installed for the tests"
    argv = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y"]
    if video:
        argv += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    if video:
        argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        argv += ["-c:a", "aac", "-b:a", "64k"]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([*argv, str(path)], check=True, stdin=subprocess.DEVNULL)
    return path


@dataclass
class Clips:
    folder: Path
    good: Path
    audio_only: Path
    zero_bytes: Path
    random_bytes: Path
    truncated: Path
    long: Path  # several seconds of realtime-paced work for cancel / shutdown tests
    weird: list[Path] = field(default_factory=list)


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    folder = tmp_path_factory.mktemp("clips")
    good = make_clip(folder / "good.mp4")
    audio_only = make_clip(folder / "audio only.m4a", video=False)
    zero = folder / "zero.mp4"
    zero.write_bytes(b"")
    rnd = folder / "random.mp4"
    rnd.write_bytes(random.Random(7).randbytes(64 * 1024))
    truncated = folder / "truncated.mp4"
    # +faststart is off: the moov atom sits at the end, so the first half has none.
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    long = make_clip(folder / "long.mp4", seconds=30, size="64x48", rate=5)
    weird = [
        make_clip(folder / name)
        for name in (
            "with space.mp4",
            'quote\'s "double".mp4',
            "dollar $HOME;x.mp4",
            "ünïcødé 日本.mp4",
        )
    ]
    return Clips(folder, good, audio_only, zero, rnd, truncated, long, weird)


def probe_json(path: Path) -> dict:
    assert FFPROBE
    import json

    out = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


# --------------------------------------------------------------------------- processes


def ffdesk_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ffdesk", *args]


@dataclass
class Cli:
    home: Path
    database: str | None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FFDESK_")}
        env["FFDESK_HOME"] = str(self.home)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def base(self, *args: str) -> list[str]:
        extra = ["--database", self.database] if self.database else []
        return ffdesk_cmd(*args, *extra)

    def run(
        self, *args: str, check: bool = True, timeout: float = 120, with_db: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = self.base(*args) if with_db else ffdesk_cmd(*args)
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ffdesk {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def submit(
        self, *paths: Path, preset: str = "h264-mp4", extra: tuple[str, ...] = ()
    ) -> list[int]:
        out = self.run("submit", "--preset", preset, *extra, *map(str, paths)).stdout
        return [int(line) for line in out.split()]

    def start_node(
        self, identifier: str, *args: str, slots: int = 2, log_name: str | None = None
    ) -> NodeProcess:
        log_path = self.home / f"{log_name or identifier}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fh = log_path.open("ab")
        argv = self.base(
            "node", "--identifier", identifier, "--slots", str(slots), "--poll", "1", *args
        )
        proc = subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, env=self.env(), stdin=subprocess.DEVNULL
        )
        fh.close()
        return NodeProcess(proc, log_path, identifier)


@dataclass
class NodeProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    identifier: str

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture
def cli(tmp_path: Path, db_url: str) -> Iterator[Cli]:
    """The ffdesk CLI in its own home, on a fresh database of the session's server."""
    c = Cli(tmp_path / "home", db_url)
    yield c


def ffmpeg_children(pid: int) -> list[psutil.Process]:
    """The FFmpeg processes a node process started (they run in their own process group)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c for c in children if "ffmpeg" in c.name()]


@pytest.fixture
def nodes() -> Iterator[list[NodeProcess]]:
    """Node processes a test started: killed at teardown whatever happened."""
    started: list[NodeProcess] = []
    yield started
    for node in started:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait(10)


def query(url: str, sql: str, params: Any = None) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def with_conn(url: str, fn: Callable[[Any], Any]) -> Any:
    """Run one async query function on a fresh connection to ``url`` (schema migrated)."""
    from ffdesk.db import migrate
    from ffdesk.db.connect import connect_async
    from ffdesk.engine.loop import run

    async def go() -> Any:
        conn = await connect_async(url)
        try:
            await migrate.migrate(conn)
            return await fn(conn)
        finally:
            await conn.close()

    return run(go())


def new_jobs(n: int, priority: int = 0) -> list:
    """``n`` jobs for queue-level tests (the paths need not exist: nothing runs them)."""
    from ffdesk.core.model import NewJob

    return [NewJob(f"/in/{i}.mp4", f"/out/{i}.mp4", "h264-mp4", ["-i", "{input}", "{output}"],
                   priority=priority) for i in range(n)]


def job_states(url: str) -> dict[int, str]:
    return dict(query(url, "SELECT id, state FROM jobs ORDER BY id"))


def make_unwritable(folder: Path) -> Callable[[], None]:
    """Make ``folder`` refuse new files even for root (chattr +i); return the undo."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
        return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o555)
    return lambda: folder.chmod(0o755)
