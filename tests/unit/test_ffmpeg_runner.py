"""FfmpegProcess and output-file helpers with real ffmpeg processes."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ffdesk.core.errors import FfmpegNotFound
from ffdesk.ffmpeg.presets import load_presets
from ffdesk.ffmpeg.probe import probe
from ffdesk.ffmpeg.progress import Progress
from ffdesk.ffmpeg.runner import (
    FfmpegProcess,
    OutputError,
    RunResult,
    build_argv,
    commit_output,
    discard_output,
    sweep_stale_parts,
    temp_output_path,
    verify_output,
)

DEBIAN_FFMPEG = Path("/usr/bin/ffmpeg")
DEBIAN_FFPROBE = Path("/usr/bin/ffprobe")
imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
BUNDLED_FFMPEG = Path(imageio_ffmpeg.get_ffmpeg_exe())
BINARIES = pytest.mark.parametrize("ffmpeg", [DEBIAN_FFMPEG, BUNDLED_FFMPEG], ids=["5.1", "9.0"])


def lavfi(seconds: float, *, audio: bool = True, rate: int = 10, realtime: bool = False) -> list:
    re_ = ["-re"] if realtime else []
    args = [*re_, "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate={rate}:duration={seconds}"]
    if audio:
        args += [*re_, "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    return args


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class Recorder:
    """Collects callbacks, which arrive on the runner's threads."""

    def __init__(self) -> None:
        self.progress: list[Progress] = []
        self.exits: list[RunResult] = []
        self.first_progress = threading.Event()

    def on_progress(self, p: Progress) -> None:
        self.progress.append(p)
        self.first_progress.set()

    def on_exit(self, result: RunResult) -> None:
        self.exits.append(result)


def start(ffmpeg: Path, args: list[str], rec: Recorder | None = None) -> FfmpegProcess:
    rec = rec or Recorder()
    proc = FfmpegProcess(build_argv(ffmpeg, args), on_progress=rec.on_progress,
                         on_exit=rec.on_exit)
    proc.start()
    return proc


def test_build_argv() -> None:
    assert build_argv(Path("/x/ffmpeg"), ["-i", "a b.mp4", "o.mp4"]) == [
        "/x/ffmpeg", "-hide_banner", "-nostats", "-loglevel", "level+info",
        "-progress", "pipe:1", "-stats_period", "0.5", "-y", "-i", "a b.mp4", "o.mp4",
    ]


@BINARIES
def test_encode_reports_progress_to_the_end(ffmpeg: Path, tmp_path: Path) -> None:
    rec = Recorder()
    out = tmp_path / "out.mp4"
    proc = start(ffmpeg, [*lavfi(2), "-c:v", "libx264", "-c:a", "aac", str(out)], rec)
    assert proc.pid and proc.running
    result = proc.wait(timeout=30)
    assert not proc.running
    assert result.exit_code == 0 and not result.canceled and result.signal is None
    assert result.pid == proc.pid and result.argv == proc.argv
    assert result.started_at <= result.ended_at
    assert rec.progress and rec.progress[-1].done
    assert rec.progress[-1].percent(2.0) >= 99
    assert result.last_progress == rec.progress[-1]
    assert "[info]" in result.stderr and "Output #0" in result.stderr
    assert rec.exits == [result]  # on_exit once, with the same result
    assert out.stat().st_size > 1000


@BINARIES
def test_whole_stderr_is_kept_even_when_huge(ffmpeg: Path) -> None:
    # -debug_ts logs every packet: ~1 MB, far beyond a 64 KiB pipe buffer.
    proc = start(ffmpeg, [*lavfi(10, audio=False, rate=100), "-debug_ts", "-f", "null", "-"])
    result = proc.wait(timeout=30)
    assert result.exit_code == 0
    assert len(result.stderr) > 500_000
    # First and last lines made it, and every one of the 1000 frames in between.
    assert result.stderr.startswith("[info] ffmpeg stats and -progress period set to 0.5.")
    assert result.stderr.count("pts_time:") >= 2000
    assert "video:" in result.stderr[-2000:]  # the final summary made it too


@BINARIES
def test_cancel_stops_a_realtime_encode_fast(ffmpeg: Path, tmp_path: Path) -> None:
    rec = Recorder()
    out = tmp_path / "long.mp4"
    proc = start(ffmpeg, [*lavfi(30, realtime=True), "-c:v", "libx264", "-c:a", "aac",
                          str(out)], rec)
    assert rec.first_progress.wait(10)
    began = time.monotonic()
    proc.cancel(fast=True)
    proc.cancel(fast=True)  # idempotent
    assert time.monotonic() - began < 0.5  # returns at once; escalation is in the background
    result = proc.wait(timeout=2.0)
    assert time.monotonic() - began < 2.0
    assert result.canceled and result.exit_code == 0  # "q" ends ffmpeg normally
    assert gone(result.pid)
    assert rec.progress[-1].done  # progress=end even though it was canceled
    assert rec.progress[-1].percent(30.0) < 50
    assert rec.exits == [result]


def test_cancel_escalates_when_q_is_ignored(tmp_path: Path) -> None:
    # -nostdin makes ffmpeg ignore "q": after the grace period comes one SIGTERM.
    rec = Recorder()
    proc = start(DEBIAN_FFMPEG, ["-nostdin", *lavfi(30, audio=False, realtime=True),
                                 "-c:v", "libx264", str(tmp_path / "x.mp4")], rec)
    assert rec.first_progress.wait(10)
    began = time.monotonic()
    proc.cancel(grace=0.3)
    result = proc.wait(timeout=5)
    assert time.monotonic() - began < 2.5
    assert result.canceled and result.exit_code == 255
    assert "Exiting normally, received signal 15." in result.stderr


def test_kill_is_immediate(tmp_path: Path) -> None:
    rec = Recorder()
    proc = start(DEBIAN_FFMPEG, [*lavfi(30, audio=False, realtime=True), "-c:v", "libx264",
                                 str(tmp_path / "x.mp4")], rec)
    assert rec.first_progress.wait(10)
    proc.kill()
    result = proc.wait(timeout=2)
    assert result.canceled and result.exit_code == -9 and result.signal == 9
    assert gone(result.pid)


def test_cancel_before_start_runs_nothing() -> None:
    rec = Recorder()
    proc = FfmpegProcess(["/definitely/not/ffmpeg"], on_exit=rec.on_exit)
    proc.cancel()
    proc.start()
    result = proc.wait(timeout=1)
    assert result.canceled and result.exit_code is None and result.pid == 0
    assert rec.exits == [result]


def test_missing_binary_is_a_user_error() -> None:
    proc = FfmpegProcess(["/definitely/not/ffmpeg", "-version"])
    with pytest.raises(FfmpegNotFound, match="cannot start /definitely/not/ffmpeg"):
        proc.start()


def test_callback_errors_do_not_stall_the_run(tmp_path: Path) -> None:
    def boom(_p: Progress) -> None:
        raise RuntimeError("callback bug")

    proc = FfmpegProcess(build_argv(DEBIAN_FFMPEG, [*lavfi(1), str(tmp_path / "o.mp4")]),
                         on_progress=boom, on_exit=lambda r: 1 / 0)
    proc.start()
    assert proc.wait(timeout=30).exit_code == 0


@BINARIES
def test_odd_file_names(ffmpeg: Path, tmp_path: Path) -> None:
    folder = tmp_path / "dir with spaces; $PATH 'quoted' \"double\""
    folder.mkdir()
    src = folder / "it's a $HOME; rm -rf ~ – ünïcødé 日本 `x` a:b.mp4"
    subprocess.run([str(DEBIAN_FFMPEG), "-v", "error", "-nostdin", "-y", *lavfi(1),
                    "-c:v", "libx264", "-c:a", "aac", str(src)], check=True)
    preset = load_presets()["h264-mp4"]
    final = folder / preset.output_name(src)
    temp = temp_output_path(final, "job-7")
    proc = FfmpegProcess(build_argv(ffmpeg, preset.render(input=src, output=temp)))
    proc.start()
    result = proc.wait(timeout=30)
    assert result.exit_code == 0, result.stderr[-500:]
    commit_output(temp, final)
    assert final.name == "it's a $HOME; rm -rf ~ – ünïcødé 日本 `x` a:b-h264.mp4"
    assert probe(final, ffprobe=DEBIAN_FFPROBE, ffmpeg=ffmpeg).has_audio
    assert sorted(p.name for p in folder.iterdir()) == sorted([src.name, final.name])


def test_temp_path_commit_and_discard(tmp_path: Path) -> None:
    final = tmp_path / "My Movie.v2.mp4"
    temp = temp_output_path(final, "job42-a1")
    assert temp == tmp_path / ".My Movie.v2.job42-a1.part.mp4"
    assert temp.suffix == ".mp4"  # ffmpeg chooses the muxer from it
    with pytest.raises(ValueError, match="token"):
        temp_output_path(final, "bad.token")

    # A real encode into the temp name produces an mp4.
    proc = FfmpegProcess(build_argv(DEBIAN_FFMPEG, [*lavfi(1), str(temp)]))
    proc.start()
    assert proc.wait(timeout=30).exit_code == 0
    assert probe(temp, ffprobe=DEBIAN_FFPROBE, ffmpeg=DEBIAN_FFMPEG).format_name.startswith(
        "mov,mp4"
    )
    final.write_bytes(b"old version")  # replaced atomically
    commit_output(temp, final)
    assert not temp.exists() and final.stat().st_size > 1000

    other = temp_output_path(final, "job43")
    other.write_bytes(b"partial")
    discard_output(other)
    discard_output(other)  # already gone: fine
    assert not other.exists()

    with pytest.raises(OutputError, match="cannot move output into place"):
        commit_output(tmp_path / ".x.job1.part.mp4", tmp_path / "x.mp4")


def test_sweep_stale_parts(tmp_path: Path) -> None:
    names = [
        ".a.job1.part.mp4",  # leased: keep
        ".b.job2.part.mkv",  # stale
        ".c.d.job3.part.mp4",  # stale, dotted stem
        ".noext.job4.part",  # stale, no extension
        "visible.job2.part.mp4",  # not ours (no leading dot)
        ".hidden",
        "movie.mp4",
    ]
    for name in names:
        (tmp_path / name).write_text("x")
    (tmp_path / ".dir.job5.part.mp4").mkdir()  # never delete folders
    removed = sweep_stale_parts(tmp_path, keep={"job1"})
    assert sorted(p.name for p in removed) == [
        ".b.job2.part.mkv", ".c.d.job3.part.mp4", ".noext.job4.part"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".a.job1.part.mp4", "visible.job2.part.mp4", ".hidden", "movie.mp4",
         ".dir.job5.part.mp4"]
    )
    assert sweep_stale_parts(tmp_path / "missing", keep=set()) == []


def test_verify_output(tmp_path: Path) -> None:
    def encode(name: str, *args: str) -> Path:
        path = tmp_path / name
        subprocess.run([str(DEBIAN_FFMPEG), "-v", "error", "-nostdin", "-y", *args, str(path)],
                       check=True)
        return path

    src = encode("src.mp4", *lavfi(2))
    expect = probe(src, ffprobe=DEBIAN_FFPROBE, ffmpeg=DEBIAN_FFMPEG)
    same = encode("same.mp4", "-i", str(src))
    short = encode("short.mp4", "-i", str(src), "-t", "1")
    silent = encode("silent.mp4", "-i", str(src), "-an")
    data = same.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])

    for ffprobe in (DEBIAN_FFPROBE, None):  # also the ffprobe-less fallback
        def check(path: Path, needs: tuple[str, ...] = ("video", "audio")) -> str | None:
            return verify_output(path, expect=expect, needs=needs, ffprobe=ffprobe,  # noqa: B023
                                 ffmpeg=DEBIAN_FFMPEG)

        assert check(same) is None
        assert check(short) == "output lasts 1.00 s but the input 2.00 s"
        assert check(silent) == "output has no audio stream"
        assert check(silent, needs=("video",)) is None
        assert check(cut) == "output is truncated: moov atom not found"
        assert check(tmp_path / "none.mp4") == f"output file not found: {tmp_path / 'none.mp4'}"
        # Without an expectation (presets that cut), only readability and streams count.
        assert verify_output(short, expect=None, needs=("video",), ffprobe=ffprobe,
                             ffmpeg=DEBIAN_FFMPEG) is None


def test_discard_earlier_parts_only_touches_that_jobs_old_runs(tmp_path):
    from ffdesk.ffmpeg.runner import discard_earlier_parts, temp_output_path

    final = tmp_path / "clip [final]*.mp4"
    old = temp_output_path(final, "7-3")
    current = temp_output_path(final, "7-9")
    other_job = temp_output_path(final, "8-4")
    other_file = temp_output_path(tmp_path / "clip.mp4", "7-2")
    for path in (old, current, other_job, other_file):
        path.write_bytes(b"x")
    removed = discard_earlier_parts(final, 7, "7-9")
    assert removed == [old]
    assert current.exists() and other_job.exists() and other_file.exists()
