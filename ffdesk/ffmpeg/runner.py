"""Run one ffmpeg process: progress, whole stderr, graceful cancel, and safe output files."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ffdesk.core.errors import FfdeskError, FfmpegNotFound
from ffdesk.ffmpeg.locate import child_env, popen_flags
from ffdesk.ffmpeg.probe import ProbeError, ProbeResult, output_from_log, probe_as
from ffdesk.ffmpeg.progress import Progress, ProgressParser

log = logging.getLogger(__name__)

_WINDOWS = sys.platform == "win32"
KILL_WAIT_S = 2.0  # after SIGTERM, before SIGKILL
FAST_QUIT_S = 1.5  # cap on the "q" phase when the caller needs the process gone soon


class OutputError(FfdeskError):
    """The finished output could not be moved into place."""


def build_argv(ffmpeg: Path, args: list[str]) -> list[str]:
    """Full argv: our fixed supervision flags, then the rendered preset arguments.

    ``level+info`` prefixes every stderr line with its level (classification needs it, and
    "Conversion failed!" is info); ``-nostats`` keeps carriage-return status lines out of
    stderr since progress comes from ``-progress pipe:1``; ``-y`` because without it an
    existing output makes ffmpeg ask "Overwrite? [y/N]" on our stdin pipe and hang.
    """
    return [
        str(ffmpeg),
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "level+info",
        "-progress",
        "pipe:1",
        "-stats_period",
        "0.5",
        "-y",
        *args,
    ]


@dataclass
class RunResult:
    exit_code: int | None
    stderr: str  # all of it, utf-8 decoded with errors="replace"
    canceled: bool  # ffdesk asked it to stop (cancel() or kill()); rc may still be 0
    signal: int | None  # set when the process was killed by a signal (POSIX rc < 0)
    pid: int
    argv: list[str]
    started_at: float  # time.time()
    ended_at: float
    last_progress: Progress | None = None
    stderr_raw: bytes = b""  # exactly what FFmpeg wrote (the audit trail stores this)


class FfmpegProcess:
    """One supervised ffmpeg child.

    Threads: one drains stdout into a :class:`ProgressParser` and calls ``on_progress``; one
    drains stderr (both must be drained or ffmpeg blocks on a full pipe); a waiter joins them,
    reaps the child and calls ``on_exit``. Callbacks run on those threads, never the caller's:
    hand results to an event loop with ``call_soon_threadsafe``.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        on_progress: Callable[[Progress], None] | None = None,
        on_exit: Callable[[RunResult], None] | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self._on_progress = on_progress
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = False
        self._canceled = False
        self._escalation: threading.Thread | None = None
        self._stderr: list[bytes] = []
        self._result: RunResult | None = None
        self._started_at = 0.0
        self.last_progress: Progress | None = None
        self.last_progress_at: float | None = None  # time.monotonic(), for stall watchdogs

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Spawn ffmpeg. If cancel() came first, nothing is spawned and on_exit still fires."""
        with self._lock:
            if self._started:
                raise RuntimeError("FfmpegProcess.start() called twice")
            self._started = True
            self._started_at = time.time()
            if self._canceled:
                canceled_early = True
            else:
                canceled_early = False
                try:
                    self._proc = subprocess.Popen(
                        self.argv,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        env=child_env(),
                        **popen_flags(),
                    )
                except OSError as exc:
                    self._done.set()
                    raise FfmpegNotFound(
                        f"cannot start {self.argv[0]}: {exc.strerror or exc}"
                    ) from exc
        if canceled_early:
            self._finish(None, pid=0)
            return
        readers = [
            threading.Thread(target=self._read_stdout, name="ffmpeg-progress", daemon=True),
            threading.Thread(target=self._read_stderr, name="ffmpeg-stderr", daemon=True),
        ]
        for thread in readers:
            thread.start()
        threading.Thread(
            target=self._wait_child, args=(readers,), name="ffmpeg-waiter", daemon=True
        ).start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._started and not self._done.is_set()

    @property
    def canceled(self) -> bool:
        return self._canceled

    def wait(self, timeout: float | None = None) -> RunResult:
        """Block until ffmpeg has exited and both pipes are drained.

        Raises TimeoutError when ``timeout`` passes first. Never call it from on_progress
        (that thread must finish before the result exists).
        """
        if not self._started:
            raise RuntimeError("FfmpegProcess.wait() before start()")
        if not self._done.wait(timeout):
            raise TimeoutError(f"ffmpeg (pid {self.pid}) still running after {timeout} s")
        assert self._result is not None
        return self._result

    def cancel(self, grace: float = 5.0, *, fast: bool = False) -> None:
        """Graceful stop, returns at once: "q" on stdin, then SIGTERM, then SIGKILL.

        "q" lets ffmpeg write the trailer (and answers on Windows, where signals cannot reach
        a console-less child); it may take long on slow encoders, hence the escalation on a
        background thread. ``fast`` caps the "q" phase at 1.5 s for callers that need the
        process gone within ~2 s. Idempotent.
        """
        with self._lock:
            if self._done.is_set() and self._started:
                return
            self._canceled = True
            if self._proc is None or self._escalation is not None:
                return
            wait_q = min(grace, FAST_QUIT_S) if fast else grace
            self._escalation = threading.Thread(
                target=self._escalate, args=(wait_q,), name="ffmpeg-cancel", daemon=True
            )
        self._escalation.start()

    def kill(self) -> None:
        """Immediate SIGKILL of ffmpeg's process group (counts as canceled)."""
        with self._lock:
            if self._done.is_set() and self._started:
                return
            self._canceled = True
        self._signal(signal.SIGKILL if not _WINDOWS else None)

    # --- internals -----------------------------------------------------------------------

    def _escalate(self, wait_q: float) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            proc.stdin.write(b"q\n")
            proc.stdin.flush()
        except (OSError, ValueError):
            pass  # already gone (broken pipe) or stdin closed by the waiter
        if self._done.wait(wait_q):
            return
        log.info("ffmpeg pid %s ignored 'q' for %.1f s; terminating", proc.pid, wait_q)
        # One SIGTERM only: more than 3 signals make ffmpeg hard-exit without a trailer.
        self._signal(signal.SIGTERM if not _WINDOWS else None)
        if self._done.wait(KILL_WAIT_S):
            return
        log.warning("ffmpeg pid %s ignored SIGTERM; killing", proc.pid)
        self._signal(signal.SIGKILL if not _WINDOWS else None)

    def _signal(self, sig: signal.Signals | None) -> None:
        """Signal the process group (POSIX) or TerminateProcess (Windows, sig None)."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return  # reaped: its pid (= group id) may already belong to someone else
        try:
            if sig is None:
                proc.kill()
            else:
                os.killpg(proc.pid, sig)
        except OSError:
            pass  # exited between the check and the signal

    def _read_stdout(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        parser = ProgressParser()
        for raw in proc.stdout:
            progress = parser.feed(raw.decode("utf-8", errors="replace"))
            if progress is None:
                continue
            self.last_progress = progress
            self.last_progress_at = time.monotonic()
            if self._on_progress is not None:
                try:
                    self._on_progress(progress)
                except Exception:
                    # Keep draining: a dead reader would fill the pipe and freeze ffmpeg.
                    log.exception("on_progress callback failed")

    def stderr_text(self) -> str:
        """What FFmpeg has written to stderr so far (its input banner comes first)."""
        return b"".join(list(self._stderr)).decode("utf-8", errors="replace")

    def _read_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        while chunk := proc.stderr.read1(65536):
            self._stderr.append(chunk)

    def _wait_child(self, readers: list[threading.Thread]) -> None:
        proc = self._proc
        assert proc is not None
        for thread in readers:
            thread.join()
        exit_code = proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        self._finish(exit_code, pid=proc.pid)

    def _finish(self, exit_code: int | None, *, pid: int) -> None:
        raw = b"".join(self._stderr)
        result = RunResult(
            exit_code=exit_code,
            stderr=raw.decode("utf-8", errors="replace"),
            stderr_raw=raw,
            canceled=self._canceled,
            signal=-exit_code if exit_code is not None and exit_code < 0 else None,
            pid=pid,
            argv=list(self.argv),
            started_at=self._started_at,
            ended_at=time.time(),
            last_progress=self.last_progress,
        )
        self._result = result
        self._done.set()
        if self._on_exit is not None:
            try:
                self._on_exit(result)
            except Exception:
                log.exception("on_exit callback failed")


# --- output files ------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_PART_RE = re.compile(r"^\.(?P<stem>.*)\.(?P<token>[A-Za-z0-9_-]+)\.part(?:\.[^.]*)?$")


def temp_output_path(final: Path, token: str) -> Path:
    """``dir/.{stem}.{token}.part{suffix}``: same folder (so the final rename is atomic and
    never crosses devices), hidden (watchers skip dot files), real extension last (ffmpeg
    picks the muxer from it)."""
    if not _TOKEN_RE.match(token):
        raise ValueError(f"token must be letters, digits, '_' or '-': {token!r}")
    return final.with_name(f".{final.stem}.{token}.part{final.suffix}")


def _retry_permission(action: Callable[[], None]) -> None:
    # Windows refuses to replace/delete a file while any process (indexer, antivirus, an SMB
    # client) holds a handle on it; those handles are usually released within a second.
    # On POSIX a PermissionError is a real permission problem: no point waiting.
    attempts = 6 if _WINDOWS else 1
    delay = 0.1
    for attempt in range(attempts):
        try:
            action()
            return
        except PermissionError:
            if attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay *= 2


def _fsync_path(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_output(temp: Path, final: Path, *, replace: bool = True) -> None:
    """Atomically put the finished ``temp`` in place of ``final`` (durable on POSIX).

    ``replace=False`` never overwrites: if ``final`` exists (even if it appeared a moment
    ago) it raises FileExistsError and ``temp`` stays where it is.
    """
    try:
        # Data first, then the rename: otherwise a crash can leave a complete-looking name
        # pointing at missing blocks. O_RDWR because Windows refuses to flush read handles.
        _fsync_path(temp, os.O_RDWR | getattr(os, "O_BINARY", 0))
        if replace:
            _retry_permission(lambda: os.replace(temp, final))
        else:
            _move_no_clobber(temp, final)
    except FileExistsError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputError(f"cannot move output into place ({final}): {reason}") from exc
    if not _WINDOWS:
        # Makes the rename itself durable. Some network filesystems refuse fsync on a
        # directory; the rename stands anyway.
        with contextlib.suppress(OSError):
            _fsync_path(final.parent, os.O_RDONLY)


def _move_no_clobber(temp: Path, final: Path) -> None:
    if _WINDOWS:
        os.rename(temp, final)  # refuses an existing target
        return
    try:
        # link() fails atomically on an existing name, unlike rename(), which replaces.
        os.link(temp, final)
    except FileExistsError:
        raise
    except OSError:
        # Filesystems without hard links (FAT, some SMB mounts): check, then rename. A file
        # created in the gap between the two would be replaced; nothing better exists there.
        if os.path.lexists(final):
            raise FileExistsError(final) from None
        os.rename(temp, final)
        return
    os.unlink(temp)


def free_name(final: Path, taken: Callable[[Path], bool] | None = None) -> Path:
    """``final`` itself if free, else ``stem (2).ext``, ``stem (3).ext``, ... (keep-both)."""
    exists = taken or (lambda p: os.path.lexists(p))
    if not exists(final):
        return final
    n = 2
    while True:
        candidate = final.with_name(f"{final.stem} ({n}){final.suffix}")
        if not exists(candidate):
            return candidate
        n += 1


# Options after which the output is meant to be shorter (or longer) than the input.
_DURATION_OPTIONS = re.compile(
    r"^-(?:t|to|ss|sseof|fs|shortest|frames(?::\w+)?|[vad]frames|stream_loop|itsscale)$"
)


def expected_streams(
    args: list[str] | tuple[str, ...], needs: tuple[str, ...], source: ProbeResult | None
) -> tuple[str, ...]:
    """Stream kinds the output must have: what the preset needs, plus every kind the input
    has that the arguments do not drop (-vn, -an) or choose explicitly (-map). An encode
    that silently lost the soundtrack is a failure, not a success."""
    kinds = list(needs)
    if source is not None and "-map" not in args:
        for kind, present, drop in (
            ("video", source.has_video, "-vn"),
            ("audio", source.has_audio, "-an"),
        ):
            if present and drop not in args and kind not in kinds:
                kinds.append(kind)
    return tuple(kinds)


def changes_duration(args: list[str] | tuple[str, ...]) -> bool:
    """True when the arguments cut, loop or stretch: the output's duration is not the
    input's, so verification checks streams only."""
    return any(_DURATION_OPTIONS.match(arg) for arg in args)


def discard_earlier_parts(final: Path, job_id: int, keep_token: str) -> list[Path]:
    """Remove temp outputs of earlier runs of job ``job_id`` (e.g. of a node that died
    mid-encode), keeping ``keep_token``'s. Names are compared as strings, not globbed:
    file names may contain ``[``, ``*`` or ``?``."""
    prefix, suffix = f".{final.stem}.{job_id}-", f".part{final.suffix}"
    keep = temp_output_path(final, keep_token).name
    removed = []
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if name.startswith(prefix) and name.endswith(suffix) and name != keep:
            with contextlib.suppress(OSError):  # a zombie's file on Windows may be open
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def discard_output(temp: Path) -> None:
    """Delete a temp output; missing is fine, a stuck file is left for sweep_stale_parts."""
    try:
        _retry_permission(lambda: temp.unlink(missing_ok=True))
    except OSError as exc:
        log.warning("could not delete temp output %s: %s", temp, exc)


def sweep_stale_parts(directory: Path, keep: set[str]) -> list[Path]:
    """Delete ``.*.{token}.part*`` files whose token is not in ``keep``; returns them."""
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _PART_RE.match(entry.name)
        if not match or match.group("token") in keep or not entry.is_file():
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not delete stale temp output %s: %s", entry, exc)
    return removed


_ERROR_LINE = re.compile(r"^(?:\[[^\]]+\] )?\[(?:error|fatal|panic)\] ", re.MULTILINE)


def duration_tolerance(duration: float, tolerance: float | None) -> float:
    """Allowed |output - input| duration: the preset's, else max(0.5 s, 2 %)."""
    return tolerance if tolerance is not None else max(0.5, 0.02 * duration)


def verify_from_log(
    result: RunResult,
    path: Path,
    *,
    expect: ProbeResult | None,
    needs: tuple[str, ...],
    tolerance: float | None = None,
) -> str | None:
    """Check an output from FFmpeg's own account of the run, without another process.

    None when the log proves it good: exit 0, no error lines (5.1 exits 0 on a full disk
    but logs the error), a non-empty file, an ``Output #0`` with the needed streams and a
    final ``out_time`` matching the input's duration (within max(0.5 s, 2 %)) - the check
    that catches truncated outputs. Otherwise the doubt, and the caller asks ffprobe.
    """
    if result.exit_code != 0 or result.canceled:
        return "ffmpeg did not finish cleanly"
    if _ERROR_LINE.search(result.stderr):
        return "ffmpeg logged errors"
    try:
        if path.stat().st_size == 0:
            return "the output file is empty"
    except OSError:
        return "the output file is missing"
    described = output_from_log(result.stderr)
    if described is None:
        return "the log does not describe the output"
    for kind in needs:
        if not any(s.kind == kind and not s.attached_pic for s in described.streams):
            return f"the output has no {kind} stream"
    last = result.last_progress
    if last is None or not last.done or last.out_time_s is None:
        return "no final progress report"
    wanted = expect.duration if expect is not None else None
    if wanted and abs(last.out_time_s - wanted) > duration_tolerance(wanted, tolerance):
        return f"ffmpeg wrote {last.out_time_s:.2f} s but the input lasts {wanted:.2f} s"
    return None


def verify_output(
    path: Path,
    *,
    expect: ProbeResult | None,
    needs: tuple[str, ...],
    ffprobe: Path | None,
    ffmpeg: Path,
    tolerance: float | None = None,
) -> str | None:
    """None if ``path`` is a readable media file with the needed streams and the input's
    duration (within the tolerance); otherwise the reason. Rc 0 alone proves nothing
    (5.1 exits 0 on a full disk). Pass ``expect=None`` when the preset cuts (-t, -ss)."""
    return probe_and_verify(
        path, expect=expect, needs=needs, ffprobe=ffprobe, ffmpeg=ffmpeg, tolerance=tolerance
    )[0]


def probe_and_verify(
    path: Path,
    *,
    expect: ProbeResult | None,
    needs: tuple[str, ...],
    ffprobe: Path | None,
    ffmpeg: Path,
    tolerance: float | None = None,
) -> tuple[str | None, ProbeResult | None]:
    """:func:`verify_output` that also returns the probe (for the audit trail)."""
    try:
        result = probe_as(path, ffprobe=ffprobe, ffmpeg=ffmpeg, role="output")
    except ProbeError as exc:
        return exc.reason, None
    if "video" in needs and not result.has_video:
        return "output has no video stream", result
    if "audio" in needs and not result.has_audio:
        return "output has no audio stream", result
    wanted, got = (expect.duration if expect else None), result.duration
    if wanted and got is not None and abs(got - wanted) > duration_tolerance(wanted, tolerance):
        return f"output lasts {got:.2f} s but the input {wanted:.2f} s", result
    return None, result
