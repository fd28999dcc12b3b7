"""Verifying an output from FFmpeg's own log (no ffprobe), on real runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ffdesk.ffmpeg.probe import input_from_log, output_from_log
from ffdesk.ffmpeg.runner import FfmpegProcess, build_argv, verify_from_log

FFMPEG = Path(shutil.which("ffmpeg") or "ffmpeg")


def encode(tmp_path: Path, *args: str, name: str = "out.mp4"):
    out = tmp_path / name
    argv = build_argv(FFMPEG, [*args, str(out)])
    proc = FfmpegProcess(argv)
    proc.start()
    return proc.wait(60), out


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("verify")
    result, out = encode(folder, "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=2",
                         "-f", "lavfi", "-i", "sine=duration=2", "-c:v", "libx264",
                         "-c:a", "aac", "-shortest", name="clip.mp4")
    assert result.exit_code == 0
    return out


def test_a_good_run_is_proven_by_its_log(clip: Path, tmp_path: Path):
    result, out = encode(tmp_path, "-i", str(clip), "-c:v", "libx264", "-c:a", "aac")
    info = input_from_log(result.stderr)
    assert info is not None and abs(info.duration - 2.0) < 0.1
    assert sorted(s.kind for s in info.streams) == ["audio", "video"]
    described = output_from_log(result.stderr)
    assert described is not None and described.format_name == "mp4"
    assert verify_from_log(result, out, expect=info, needs=("video",)) is None


def test_a_cut_output_is_doubted(clip: Path, tmp_path: Path):
    result, out = encode(tmp_path, "-i", str(clip), "-t", "0.5", "-c:v", "libx264")
    info = input_from_log(result.stderr)
    doubt = verify_from_log(result, out, expect=info, needs=("video",))
    assert doubt is not None and "input lasts 2.00 s" in doubt


def test_a_missing_needed_stream_is_doubted(clip: Path, tmp_path: Path):
    result, out = encode(tmp_path, "-i", str(clip), "-vn", "-c:a", "aac", name="a.m4a")
    info = input_from_log(result.stderr)
    assert verify_from_log(result, out, expect=info, needs=("video",)) == (
        "the output has no video stream")


def test_error_lines_or_a_failed_run_are_doubted(clip: Path, tmp_path: Path):
    result, out = encode(tmp_path, "-i", str(clip), "-c:v", "libx264")
    info = input_from_log(result.stderr)
    with_error = result.__class__(**{**result.__dict__,
                                     "stderr": result.stderr + "[error] disk trouble\n"})
    assert verify_from_log(with_error, out, expect=info, needs=()) == "ffmpeg logged errors"
    out.write_bytes(b"")
    assert verify_from_log(result, out, expect=info, needs=()) == "the output file is empty"
    failed, out2 = encode(tmp_path, "-i", str(tmp_path / "nope.mp4"), name="x.mp4")
    assert verify_from_log(failed, out2, expect=None, needs=()) == "ffmpeg did not finish cleanly"
