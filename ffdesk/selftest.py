"""``ffdesk selftest [--json]``: does this installation (a checkout, a wheel, a frozen app)
really work here? Every part ffdesk needs is exercised for real, in order:

``python``     interpreter, OS, whether frozen
``psycopg``    which implementation loaded (a frozen app must carry ``psycopg_binary``), libpq
``qt``         the Qt platform plugin loads, a widget renders, the SVG icon and GUI modules load
``pyqtgraph``  a plot with data draws its curve
``database``   a throw-away embedded PostgreSQL in a temporary folder (never the user's data):
               start, migrate, enqueue a job, claim it, stop, remove the folder
``ffmpeg``     ffmpeg and ffprobe are found; their versions
``encode``     a one-second lavfi clip (testsrc2 + sine) encoded to mp4 through the node's own
               runner, then read back with ffprobe
``hwprobe``    the hardware encoder probe runs (no working hardware encoder is fine)

The two Qt checks run in a child process of this same executable (``selftest --qt-child FILE``)
so that a Qt crash, e.g. a missing platform plugin that aborts the process, fails those checks
instead of killing the self-test. Exit code 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ffdesk import __version__
from ffdesk.core.config import Settings
from ffdesk.core.places import Places

CHECKS = (
    "python",
    "psycopg",
    "qt",
    "pyqtgraph",
    "database",
    "ffmpeg",
    "encode",
    "hwprobe",
)
QT_CHECKS = ("qt", "pyqtgraph")
QT_CHILD_TIMEOUT_S = 60.0
ENCODE_TIMEOUT_S = 30.0
HWPROBE_TIMEOUT_S = 10.0  # per hardware encoder; a cold driver can be slow, a hung one is
WIDGET_SIZE = (240, 120)
PLOT_SIZE = (320, 200)
_ERROR_MAX = 600  # characters of one error line


@dataclass
class CheckResult:
    name: str
    ok: bool
    seconds: float
    detail: str | None = None  # one line, when it passed
    error: str | None = None  # one line, when it failed
    info: dict[str, Any] = field(default_factory=dict)  # machine-readable extras

    @property
    def text(self) -> str:
        return (self.detail if self.ok else self.error) or ""


# A check: returns (one-line detail, info) or raises with the reason it failed.
Check = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]


class CheckFailed(Exception):
    """A check's own verdict (as opposed to an unexpected exception)."""


def one_line(text: str, limit: int = _ERROR_MAX) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _describe(exc: BaseException) -> str:
    text = one_line(str(exc))
    return text if text else exc.__class__.__name__


def frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


# --------------------------------------------------------------------------- CLI wiring


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    text = "check this installation: Python, psycopg, Qt, plots, database, FFmpeg, encoders"
    parser = sub.add_parser(
        "selftest",
        parents=[common],
        help=text,
        description=text + " (uses a temporary database; your data is never touched)",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False,
        help="print one JSON document instead of one line per check",
    )
    parser.add_argument("--ffmpeg", metavar="PATH", help="ffmpeg binary to check")
    parser.add_argument("--ffprobe", metavar="PATH", help="ffprobe binary to check")
    # Internal: the Qt checks, run in a child process; results are written to FILE.
    parser.add_argument("--qt-child", metavar="FILE", default=None, help=argparse.SUPPRESS)


def cmd_selftest(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    if args.qt_child:
        return run_qt_child(Path(args.qt_child))
    return run_selftest(settings, places, as_json=args.json, home=getattr(args, "home", None))


# --------------------------------------------------------------------------- runner


def run_selftest(
    settings: Settings, places: Places, *, as_json: bool = False, home: str | None = None
) -> int:
    started = time.monotonic()
    ctx: dict[str, Any] = {"settings": settings, "places": places, "home": home}
    results: list[CheckResult] = []

    def report(result: CheckResult) -> None:
        results.append(result)
        if not as_json:
            mark = "ok" if result.ok else "FAIL"
            print(
                f"{mark:<4}  {result.name:<9}  {result.seconds:5.2f} s  {result.text}", flush=True
            )

    for name in CHECKS:
        if name == QT_CHECKS[0]:
            for result in _qt_checks(ctx):  # all Qt checks, from one child process
                report(result)
        elif name not in QT_CHECKS:
            report(_timed(name, _CHECK_FUNCTIONS[name], ctx))
    total = time.monotonic() - started
    ok = all(r.ok for r in results)
    failed = [r.name for r in results if not r.ok]
    if as_json:
        print(
            json.dumps(
                {
                    "ok": ok,
                    "version": __version__,
                    "frozen": frozen(),
                    "seconds": round(total, 2),
                    "checks": [_as_dict(r) for r in results],
                },
                indent=2,
                ensure_ascii=False,
            ),
            flush=True,
        )
    elif ok:
        print(f"selftest passed: {len(results)} checks in {total:.1f} s")
    else:
        print(
            f"selftest FAILED: {', '.join(failed)} ({len(results) - len(failed)} of "
            f"{len(results)} passed) in {total:.1f} s"
        )
    if not ok:
        print(f"ffdesk: error: selftest failed: {', '.join(failed)}", file=sys.stderr)
    return 0 if ok else 1


def _as_dict(result: CheckResult) -> dict[str, Any]:
    data = asdict(result)
    data["seconds"] = round(result.seconds, 3)
    return data


def _timed(name: str, check: Check, ctx: dict[str, Any]) -> CheckResult:
    t0 = time.monotonic()
    try:
        detail, info = check(ctx)
    except Exception as exc:
        return CheckResult(name, False, time.monotonic() - t0, error=_describe(exc))
    return CheckResult(name, True, time.monotonic() - t0, detail=one_line(detail), info=info)


# --------------------------------------------------------------------------- checks


def check_python(ctx: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    impl = platform.python_implementation()
    version = platform.python_version()
    system = f"{platform.system()} {platform.release()} {platform.machine()}".strip()
    libc = " ".join(platform.libc_ver()).strip() if sys.platform.startswith("linux") else ""
    is_frozen = frozen()
    euid = os.geteuid() if hasattr(os, "geteuid") else None
    info = {
        "implementation": impl,
        "python": version,
        "platform": platform.platform(),
        "frozen": is_frozen,
        "executable": sys.executable,
        "ffdesk": __version__,
        "root": euid == 0,
    }
    detail = (
        f"{impl} {version} on {system}"
        + (f" ({libc})" if libc else "")
        + f"; {'frozen' if is_frozen else 'not frozen'}; ffdesk {__version__}"
        + ("; running as root" if euid == 0 else "")
    )
    return detail, info


def check_psycopg(ctx: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    import psycopg

    impl = psycopg.pq.__impl__
    libpq = psycopg.pq.version()
    libpq_text = f"{libpq // 10000}.{libpq % 10000}"
    info = {"psycopg": psycopg.__version__, "impl": impl, "libpq": libpq_text}
    if frozen() and impl == "python":
        # The pure-Python implementation needs a system libpq; a frozen app must not depend
        # on one (qt-style.md section 5: bundle psycopg_binary).
        raise CheckFailed(
            f"the frozen app loaded psycopg's pure-Python implementation (libpq {libpq_text} "
            "from the system): psycopg_binary is not bundled"
        )
    return f"psycopg {psycopg.__version__}, implementation {impl}, libpq {libpq_text}", info


def check_database(ctx: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from ffdesk.db.embedded import EmbeddedServer

    # Short name: the server's Unix socket lives inside, and socket paths are limited to
    # ~100 bytes (macOS TMPDIR alone is ~50).
    root = Path(tempfile.mkdtemp(prefix="ffst-"))
    server = EmbeddedServer(root)
    steps: list[str] = []
    try:
        t0 = time.monotonic()
        url = server.acquire()
        version = server.status().version or "?"
        steps.append(f"started in {time.monotonic() - t0:.1f} s")
        job_id, claimed, schema = _queue_roundtrip(url)
        if claimed != job_id:
            raise CheckFailed(f"enqueued job {job_id} but claimed {claimed}")
        steps.append(f"migrated to schema {schema}, job {job_id} enqueued and claimed")
        server.release()
        if server.status().running:
            raise CheckFailed("the temporary server is still running after release")
        steps.append("stopped")
    finally:
        with contextlib.suppress(Exception):
            server.stop()  # after a failure half-way; a no-op when it already stopped
        _remove_tree(root)
    if root.exists():
        raise CheckFailed(f"could not remove the temporary folder {root}")
    steps.append("temp dir removed")
    info = {"postgres": version, "schema": schema, "job": job_id}
    return f"embedded PostgreSQL {version} in a temp dir: " + ", ".join(steps), info


def _queue_roundtrip(url: str) -> tuple[int, int | None, int]:
    from ffdesk.core.model import NewJob
    from ffdesk.db import jobs, migrate
    from ffdesk.db.connect import connect_async
    from ffdesk.engine.loop import run

    async def go() -> tuple[int, int | None, int]:
        conn = await connect_async(url, application_name="ffdesk-selftest")
        try:
            await migrate.migrate(conn)
            schema = await migrate.current_version(conn)
            await conn.commit()
            job = NewJob(
                input="/selftest/in.mp4",
                output="/selftest/out.mp4",
                preset="selftest",
                preset_args=[],
            )
            [job_id] = await jobs.enqueue(conn, [job], submitted_by="selftest")
            got = await jobs.claim(
                conn,
                node="selftest",
                session=str(uuid.uuid4()),
                host=socket.gethostname(),
                limit=1,
                lease_seconds=30,
            )
            return job_id, (got[0].id if got else None), schema
        finally:
            await conn.close()

    return run(go())


def _remove_tree(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    # EmbeddedServer moves the socket folder to the temp dir when the path is too long;
    # mirror its naming so that one goes too.
    digest = hashlib.sha256(str(root.absolute()).encode()).hexdigest()[:12]
    shutil.rmtree(Path(tempfile.gettempdir()) / f"ffdesk-{digest}", ignore_errors=True)


def check_ffmpeg(ctx: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from ffdesk.ffmpeg.locate import find_ffmpeg, find_ffprobe, identify

    settings: Settings = ctx["settings"]
    ffmpeg = find_ffmpeg(settings.ffmpeg)
    identity = identify(ffmpeg)
    ctx["ffmpeg"], ctx["identity"] = ffmpeg, identity
    ffprobe = find_ffprobe(settings.ffprobe, ffmpeg)
    ctx["ffprobe"] = ffprobe
    info: dict[str, Any] = {
        "ffmpeg": str(ffmpeg),
        "ffmpeg_version": identity.version,
        "ffprobe": None,
        "ffprobe_version": None,
    }
    detail = f"ffmpeg {identity.version} at {ffmpeg}; "
    if ffprobe is None:
        # Supported (outputs are then probed with ffmpeg, e.g. with imageio-ffmpeg), so not a
        # failure; said plainly because a package that meant to ship one has lost it.
        return detail + "ffprobe not found (ffmpeg probes outputs instead)", info
    probe_version = _ffprobe_version(ffprobe)
    info.update(ffprobe=str(ffprobe), ffprobe_version=probe_version)
    return detail + f"ffprobe {probe_version} at {ffprobe}", info


def _ffprobe_version(ffprobe: Path) -> str:
    from ffdesk.ffmpeg.locate import child_env, popen_flags

    try:
        proc = subprocess.run(
            [str(ffprobe), "-version"],
            capture_output=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            env=child_env(),
            check=False,
            **popen_flags(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CheckFailed(f"ffprobe at {ffprobe} does not run: {exc}") from None
    first = (proc.stdout.decode("utf-8", "replace").splitlines() or [""])[0].strip()
    if proc.returncode != 0 or not first.startswith("ffprobe version"):
        raise CheckFailed(f"{ffprobe} is not a working ffprobe (-version exited {proc.returncode})")
    # Same reading as ffmpeg's (locate.identify): "ffprobe version n7.1.1-static ..." is 7.1.1.
    tokens = first.split()
    token = tokens[2] if len(tokens) > 2 else "?"
    found = re.match(r"n?([0-9][0-9.]*)", token)
    return found.group(1).rstrip(".") if found else token


def _need_ffmpeg(ctx: dict[str, Any]) -> Path:
    if "ffmpeg" not in ctx:
        raise CheckFailed("skipped: no working ffmpeg (see the ffmpeg check)")
    return ctx["ffmpeg"]


def check_encode(ctx: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from ffdesk.ffmpeg.failure import explain_failure
    from ffdesk.ffmpeg.probe import ProbeError, probe_as
    from ffdesk.ffmpeg.runner import FfmpegProcess, build_argv

    ffmpeg = _need_ffmpeg(ctx)
    ffprobe: Path | None = ctx.get("ffprobe")
    with tempfile.TemporaryDirectory(prefix="ffdesk-selftest-") as folder:
        out = Path(folder) / "selftest.mp4"
        args = [
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25:duration=1",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=1",
            # The mp4 muxer's default codecs: h264 (libx264) when built in, else mpeg4; aac.
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(out),
        ]
        t0 = time.monotonic()
        proc = FfmpegProcess(build_argv(ffmpeg, args))
        proc.start()
        try:
            result = proc.wait(timeout=ENCODE_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            raise CheckFailed(
                f"the test encode did not finish within {ENCODE_TIMEOUT_S:g} s"
            ) from None
        encode_s = time.monotonic() - t0
        if result.exit_code != 0 or not out.exists():
            raise CheckFailed(
                "test encode failed: " + explain_failure(result.exit_code, result.stderr)
            )
        try:
            probed = probe_as(out, ffprobe=ffprobe, ffmpeg=ffmpeg, role="output")
        except ProbeError as exc:
            raise CheckFailed(f"the encoded test clip cannot be read back: {exc.reason}") from None
        size = out.stat().st_size
    if not (probed.has_video and probed.has_audio):
        raise CheckFailed(f"the test clip lacks a stream: {probed.summary()}")
    if probed.duration is None or not 0.8 <= probed.duration <= 1.5:
        raise CheckFailed(f"the test clip should last 1 s: {probed.summary()}")
    reader = "ffprobe" if ffprobe is not None else "ffmpeg (no ffprobe)"
    info = {"seconds": round(encode_s, 3), "bytes": size, "probe": probed.to_dict()}
    return (
        f"1 s lavfi clip to mp4 in {encode_s:.2f} s ({size / 1024:.0f} KiB); read by "
        f"{reader}: {probed.summary()}"
    ), info


def check_hwprobe(ctx: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from ffdesk.ffmpeg.hwprobe import probe_encoders

    ffmpeg = _need_ffmpeg(ctx)
    # No cache: the self-test asks the hardware now, and leaves the node's cache alone.
    report = probe_encoders(
        ffmpeg, identity=ctx.get("identity"), cache_dir=None, timeout=HWPROBE_TIMEOUT_S
    )
    hardware = list(report.hardware)
    info = {
        "hardware": hardware,
        "failed": dict(sorted(report.failed.items())),
        "working": list(report.working),
    }
    tested = len(hardware) + len(report.failed)
    if hardware:
        detail = f"working hardware encoders: {', '.join(hardware)} (of {tested} listed)"
    else:
        detail = (
            f"no working hardware encoder among the {tested} this ffmpeg lists "
            "(software encoding only)"
        )
    return detail, info


# Every check but the Qt ones (those run in a child process, see _qt_checks).
_CHECK_FUNCTIONS: dict[str, Check] = {
    "python": check_python,
    "psycopg": check_psycopg,
    "database": check_database,
    "ffmpeg": check_ffmpeg,
    "encode": check_encode,
    "hwprobe": check_hwprobe,
}


# --------------------------------------------------------------------------- Qt (parent side)


def ffdesk_argv(*args: str) -> list[str]:
    """Run this same ffdesk again: the frozen executable, or this Python with ``-m ffdesk``."""
    from ffdesk.cli_autostart import ffdesk_command

    return [*ffdesk_command(), *args]


def _has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def qt_child_env() -> dict[str, str]:
    """The child's environment: like a fresh launch of the app (a frozen Linux app's own
    LD_LIBRARY_PATH is undone, as for FFmpeg), offscreen when there is no display."""
    from ffdesk.ffmpeg.locate import child_env

    env = child_env()
    if not env.get("QT_QPA_PLATFORM") and not _has_display():
        env["QT_QPA_PLATFORM"] = "offscreen"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _qt_checks(ctx: dict[str, Any]) -> list[CheckResult]:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ffdesk-selftest-") as folder:
        out = Path(folder) / "qt.json"
        home = ["--home", ctx["home"]] if ctx.get("home") else []
        argv = ffdesk_argv("selftest", "--qt-child", str(out), *home)
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined]
        problem: str | None = None
        stderr = ""
        try:
            proc = subprocess.run(
                argv,
                env=qt_child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=QT_CHILD_TIMEOUT_S,
                check=False,
                **kwargs,
            )
        except subprocess.TimeoutExpired as exc:
            problem = f"the Qt child process hung (killed after {QT_CHILD_TIMEOUT_S:g} s)"
            stderr = (exc.stderr or b"").decode("utf-8", "replace")
        except OSError as exc:
            problem = f"cannot start the Qt child process {argv[0]}: {exc}"
        else:
            stderr = proc.stderr.decode("utf-8", "replace")
            if proc.returncode != 0:
                problem = f"the Qt child process {_exit_text(proc.returncode)}"
        found = _read_child_results(out)
    elapsed = time.monotonic() - t0
    tail = _stderr_tail(stderr)
    if problem and tail:
        problem += f"; its stderr: {tail}"
    results = []
    told: str | None = None  # the first check the child did not report gets the whole story
    for name in QT_CHECKS:
        result = found.get(name)
        if result is None:
            reason = problem or "the Qt child process reported nothing"
            if told:
                reason = f"not run: the Qt child process stopped first (see the {told} check)"
            result = CheckResult(name, False, elapsed, error=one_line(reason))
            told = told or name
            elapsed = 0.0  # the wait is counted once
        results.append(result)
    if found.get(QT_CHECKS[0]) is not None:
        # The first check carries the child's start-up too (imports, Qt plugins): in a frozen
        # app that is part of what is being tested.
        rest = sum(r.seconds for r in results[1:])
        results[0].seconds = max(results[0].seconds, time.monotonic() - t0 - rest)
    if problem and all(r.ok for r in results):
        # Every check passed, then the process died (at teardown): the app would crash at
        # every quit too, so this must not pass.
        first = results[0]
        results[0] = CheckResult(
            first.name,
            False,
            first.seconds,
            info=first.info,
            error=one_line(f"checks passed but {problem}"),
        )
    return results


def _exit_text(returncode: int) -> str:
    if returncode < 0:
        import signal

        with contextlib.suppress(ValueError):
            return f"crashed ({signal.Signals(-returncode).name})"
        return f"crashed (signal {-returncode})"
    return f"exited with code {returncode}"


def _stderr_tail(stderr: str, lines: int = 4) -> str:
    kept = [line.strip() for line in stderr.splitlines() if line.strip()]
    return one_line(" | ".join(kept[-lines:]), 400)


def _read_child_results(path: Path) -> dict[str, CheckResult]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    found = {}
    for item in data.get("checks", []):
        with contextlib.suppress(TypeError, KeyError):
            result = CheckResult(**item)
            found[result.name] = result
    return found


# --------------------------------------------------------------------------- Qt (child side)


def run_qt_child(out: Path) -> int:
    """``selftest --qt-child FILE``: run the Qt checks, writing results after each one (so a
    crash in the second keeps the first)."""
    results: list[CheckResult] = []

    def save() -> None:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"checks": [asdict(r) for r in results]}), encoding="utf-8")
        os.replace(tmp, out)

    t0 = time.monotonic()
    try:
        from PySide6.QtWidgets import QApplication

        app = QApplication.instance() or QApplication(["ffdesk-selftest"])
        detail, info = _qt_widget_check(app)
        results.append(
            CheckResult("qt", True, time.monotonic() - t0, detail=one_line(detail), info=info)
        )
    except Exception as exc:
        results.append(CheckResult("qt", False, time.monotonic() - t0, error=_describe(exc)))
        app = None
    save()
    t0 = time.monotonic()
    if app is None:
        results.append(
            CheckResult(
                "pyqtgraph", False, 0.0, error="skipped: Qt does not work (see the qt check)"
            )
        )
    else:
        try:
            detail, info = _pyqtgraph_check(app)
            results.append(
                CheckResult(
                    "pyqtgraph", True, time.monotonic() - t0, detail=one_line(detail), info=info
                )
            )
        except Exception as exc:
            results.append(
                CheckResult("pyqtgraph", False, time.monotonic() - t0, error=_describe(exc))
            )
    save()
    if app is not None:
        app.processEvents()
    return 0


def _show_offscreen(widget: Any, size: tuple[int, int]) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    widget.resize(*size)
    # Rendered and laid out like a shown window, never mapped on a real screen.
    widget.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen, True)
    widget.show()
    QApplication.processEvents()


def _image_array(image: Any) -> Any:
    """(height, width, 4) uint8 array, BGRA order, of a QImage."""
    import numpy as np
    from PySide6.QtGui import QImage

    image = image.convertToFormat(QImage.Format.Format_RGB32)
    width, height, stride = image.width(), image.height(), image.bytesPerLine()
    raw = np.frombuffer(image.constBits(), dtype=np.uint8, count=image.sizeInBytes())
    return raw.reshape(height, stride)[:, : width * 4].reshape(height, width, 4).copy()


def _qt_widget_check(app: Any) -> tuple[str, dict[str, Any]]:
    import importlib

    import PySide6
    from PySide6.QtCore import qVersion
    from PySide6.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

    platform_name = app.platformName()
    widget = QWidget()
    widget.setWindowTitle("ffdesk selftest")
    layout = QVBoxLayout(widget)
    layout.addWidget(QLabel("ffdesk selftest: the quick brown fox"))
    layout.addWidget(QPushButton("OK"))
    _show_offscreen(widget, WIDGET_SIZE)
    pixmap = widget.grab()
    if pixmap.isNull():
        raise CheckFailed(f"grabbing a widget gave an empty image (platform {platform_name})")
    logical = pixmap.deviceIndependentSize()
    got = (round(logical.width()), round(logical.height()))
    if got != WIDGET_SIZE:
        raise CheckFailed(
            f"the grabbed widget is {got[0]}x{got[1]}, expected {WIDGET_SIZE[0]}x{WIDGET_SIZE[1]}"
        )
    pixels = _image_array(pixmap.toImage())
    colours = len({tuple(p) for p in pixels.reshape(-1, 4)[::7].tolist()})
    if colours < 2:
        raise CheckFailed("the grabbed widget is one flat colour: nothing was drawn")
    widget.close()
    widget.deleteLater()

    # The app icon is SVG: it needs Qt's svg image-format / icon-engine plugins, which a frozen
    # app must carry.
    from ffdesk.ui.icons import app_icon

    icon = app_icon().pixmap(32, 32)
    if icon.isNull():
        from ffdesk.ffmpeg.resources import resource_path

        svg = resource_path("icons", "ffdesk.svg")
        raise CheckFailed(
            f"the SVG app icon does not render ({svg}): Qt's svg plugins or the resources "
            "are missing"
        )
    # Every module the desktop app imports (a frozen build may have dropped one).
    for module in ("qasync", "ffdesk.ui.app"):
        importlib.import_module(module)
    info = {
        "platform": platform_name,
        "qt": qVersion(),
        "pyside6": PySide6.__version__,
        "dpr": pixmap.devicePixelRatio(),
        "colours": colours,
    }
    return (
        f"Qt {qVersion()} (PySide6 {PySide6.__version__}), platform {platform_name}: "
        f"{WIDGET_SIZE[0]}x{WIDGET_SIZE[1]} widget rendered ({colours} colours, dpr "
        f"{pixmap.devicePixelRatio():g}), SVG icon and GUI modules load"
    ), info


def _pyqtgraph_check(app: Any) -> tuple[str, dict[str, Any]]:
    import numpy as np
    import pyqtgraph as pg

    plot = pg.PlotWidget(background="w")
    x = np.linspace(0, 4 * np.pi, 200)
    plot.plot(x, np.sin(x), pen=pg.mkPen((255, 0, 0), width=3))
    _show_offscreen(plot, PLOT_SIZE)
    pixmap = plot.grab()
    if pixmap.isNull():
        raise CheckFailed("grabbing the plot gave an empty image")
    pixels = _image_array(pixmap.toImage()).astype(np.int16)
    blue, green, red = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    drawn = int(np.count_nonzero((pixels[..., :3] != 255).any(axis=-1)))
    curve = int(np.count_nonzero((red > 180) & (green < 110) & (blue < 110)))
    plot.close()
    plot.deleteLater()
    if curve < 50:
        raise CheckFailed(
            f"the plot's curve did not draw ({curve} curve pixels, {drawn} non-background pixels)"
        )
    info = {"pyqtgraph": pg.__version__, "curve_pixels": curve, "drawn_pixels": drawn}
    return (
        f"pyqtgraph {pg.__version__}: {PLOT_SIZE[0]}x{PLOT_SIZE[1]} plot drew {curve} curve "
        f"pixels ({drawn} non-background)"
    ), info
