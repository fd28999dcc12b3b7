"""explain_failure on real stderr: captured files (tests/data/capture_failures.py) and live runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ffdesk.ffmpeg.failure import Failure, classify_failure, explain_failure, last_error_line
from ffdesk.ffmpeg.runner import FfmpegProcess, build_argv

STDERR = Path(__file__).resolve().parent.parent / "data" / "stderr"
EXIT_CODES: dict[str, dict[str, int]] = json.loads((STDERR / "exit-codes.json").read_text())
DEBIAN_FFMPEG = Path("/usr/bin/ffmpeg")
imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
BUNDLED_FFMPEG = Path(imageio_ffmpeg.get_ffmpeg_exe())
CLIP = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1"]

# case -> (kind, reason); "{path}" stands for the input path written into the capture.
EXPECTED = {
    "truncated-mp4": ("input", "input is truncated: moov atom not found"),
    "random-bytes": (
        "input", "input is not a media file: Invalid data found when processing input"
    ),
    "missing-input": ("input", "input file not found: /tmp/ffdesk-capture/missing.mp4"),
    "nvenc": (
        "environment", "encoder h264_nvenc cannot run on this node: Cannot load libcuda.so.1"
    ),
    "bad-option": ("config", "unknown ffmpeg option -bogus (check the preset)"),
    "output-dir-missing": (
        "environment", "output folder does not exist: No such file or directory"
    ),
    "unknown-encoder": ("environment", "encoder nosuchcodec is not available in this ffmpeg build"),
    "unknown-filter": ("environment", "filter nosuchfilter is not available in this ffmpeg build"),
    "bad-preset-value": ("config", "invalid encoder setting: x264: invalid preset 'bogus'"),
    "codec-not-in-container": (
        "config",
        "a stream's codec cannot be stored in this container: Could not find tag for codec "
        "subrip in stream #2, codec not currently supported in container",
    ),
    "unknown-extension": (
        "config", "cannot tell the output format from the file name (use a known extension or -f)"
    ),
    "disk-full": ("environment", "disk full: No space left on device"),
    "permission-denied": ("environment", "output folder is not writable: Permission denied"),
    "sigterm": ("transient", "ffmpeg was stopped by signal 15"),
    "killed": ("transient", "ffmpeg was killed by signal 9 (SIGKILL)"),
    # Bad input corpus. Neither build says "empty": to the demuxer a 0-byte file is garbage.
    "zero-bytes": (
        "input", "input is not a media file: Invalid data found when processing input"
    ),
    "text-as-mkv": (
        "input", "input is not a valid Matroska file: EBML header parsing failed"
    ),
    # 9.0 prints "Stream map '' matches no streams." and names the map one line later.
    "map-matches-nothing": (
        "config", "the stream selection matches nothing: no stream matches -map 0:s"
    ),
    # ffmpeg's error says "5XX"; the status is in the warning before it.
    "http-503": ("transient", "network error: server replied 503 Service Unavailable"),
    "http-404": ("input", "input not found on the server: Server returned 404 Not Found"),
    "http-refused": ("transient", "network error: Connection refused"),
}
CAPTURES = sorted(STDERR.glob("*-ffmpeg-*.txt"))


@pytest.mark.parametrize("path", CAPTURES, ids=[p.stem for p in CAPTURES])
def test_captured_stderr(path: Path) -> None:
    case, version = path.stem.rsplit("-ffmpeg-", 1)
    rc = EXIT_CODES[case][version]
    failure = classify_failure(rc, path.read_text())
    assert (failure.kind, failure.reason) == EXPECTED[case]
    assert explain_failure(rc, path.read_text()) == failure.reason


def test_captures_cover_every_case_on_both_builds() -> None:
    names = {p.stem for p in CAPTURES}
    for case in EXPECTED:
        assert {f"{case}-ffmpeg-5.1", f"{case}-ffmpeg-9.0"} <= names


def test_exit_codes_say_little() -> None:
    # Why stderr decides: up to 6.x nearly everything is 1, and a full disk can even be 0 on
    # 5.1; from 7.x the code is the AVERROR's low byte, and 255 is both nvenc and a signal.
    # A negative code is no exit code: the process was killed (Popen's -signum).
    codes_51 = {case: by_version["5.1"] for case, by_version in EXIT_CODES.items()}
    assert {rc for rc in codes_51.values() if rc >= 0} == {0, 1, 255}
    assert codes_51["disk-full"] == 0
    codes_90 = {case: by_version["9.0"] for case, by_version in EXIT_CODES.items()}
    assert codes_90["nvenc"] == codes_90["sigterm"] == 255
    assert codes_90["truncated-mp4"] == codes_90["random-bytes"] == 183
    assert codes_90["zero-bytes"] == codes_90["text-as-mkv"] == 183
    assert codes_90["disk-full"] == 228
    # 8 is a bag: a missing encoder and every HTTP error (a retryable 503, a final 404).
    assert codes_90["unknown-encoder"] == codes_90["http-503"] == codes_90["http-404"] == 8
    assert codes_90["http-refused"] == 145
    assert EXIT_CODES["killed"] == {"5.1": -9, "9.0": -9}


def _live_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    good = tmp / "good.mp4"
    subprocess.run([str(DEBIAN_FFMPEG), "-v", "error", "-nostdin", "-y", *CLIP, str(good)],
                   check=True)
    data = good.read_bytes()
    (tmp / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp / "random.mp4").write_bytes(bytes((i * 7919 + 13) % 251 for i in range(20000)))
    (tmp / "zero.mp4").write_bytes(b"")
    (tmp / "notes.mkv").write_text("Shopping list\n- milk\n- bread\n")
    out = str(tmp / "out.mp4")
    return {
        "truncated": (["-i", str(tmp / "truncated.mp4"), out], EXPECTED["truncated-mp4"][1]),
        "random": (["-i", str(tmp / "random.mp4"), out], EXPECTED["random-bytes"][1]),
        "nvenc": ([*CLIP, "-c:v", "h264_nvenc", out], EXPECTED["nvenc"][1]),
        "bad-option": ([*CLIP, "-bogus", "1", out], EXPECTED["bad-option"][1]),
        "no-dir": ([*CLIP, str(tmp / "missing" / "out.mp4")], EXPECTED["output-dir-missing"][1]),
        "zero": (["-i", str(tmp / "zero.mp4"), out], EXPECTED["zero-bytes"][1]),
        "text-mkv": (["-i", str(tmp / "notes.mkv"), out], EXPECTED["text-as-mkv"][1]),
        "map": (["-i", str(good), "-map", "0:s", out], EXPECTED["map-matches-nothing"][1]),
    }


@pytest.mark.skipif(not DEBIAN_FFMPEG.exists(), reason="needs /usr/bin/ffmpeg")
@pytest.mark.parametrize("ffmpeg", [DEBIAN_FFMPEG, BUNDLED_FFMPEG], ids=["5.1", "9.0"])
def test_live_failures(ffmpeg: Path, tmp_path: Path) -> None:
    for name, (args, expected) in _live_cases(tmp_path).items():
        proc = FfmpegProcess(build_argv(ffmpeg, args))
        proc.start()
        result = proc.wait(timeout=30)
        if name == "nvenc" and result.exit_code == 0:
            continue  # a machine with a working NVIDIA GPU
        assert result.exit_code != 0, name
        assert explain_failure(result.exit_code, result.stderr) == expected, name


def test_cancel_and_signals() -> None:
    assert explain_failure(0, "", canceled=True) == "canceled"
    assert explain_failure(255, "[info] Exiting normally, received signal 15.", canceled=True) \
        == "canceled"
    killed = classify_failure(-9, "")
    assert (killed.kind, killed.reason) == ("transient", "ffmpeg was killed by signal 9 (SIGKILL)")
    assert explain_failure(123, "[fatal] Received > 3 system signals, hard exiting") == (
        "ffmpeg was hard-stopped after repeated signals"
    )


def test_fallback_names_the_code_and_last_error_line() -> None:
    stderr = (
        "[info] Input #0, lavfi, from 'x':\n"
        "[error] first odd thing\n"
        "[warning] a warning is not an error\n"
        "[vost#0:0 @ 0x1] [error] something unexpected broke\n"
        "[info] Conversion failed!\n"
    )
    assert explain_failure(1, stderr) == "ffmpeg exited with code 1: something unexpected broke"
    assert explain_failure(251, "") == "ffmpeg exited with code 251 (I/O error)"
    assert explain_failure(None, "") == "ffmpeg did not report an exit code"
    assert classify_failure(1, stderr).kind == "unknown"
    # Without -loglevel level+info there are no level tags: fall back to wording.
    assert last_error_line("Stream mapping:\nsomething failed badly\nother\n") == (
        "something failed badly"
    )


def test_non_fatal_decode_errors_do_not_mask_the_cause() -> None:
    stderr = (
        "[h264 @ 0x1] [error] Invalid NAL unit size (1 > 0).\n"
        "[vist#0:0/h264 @ 0x2] [error] Decoding error: Invalid data found when processing input\n"
        "[out#0/mp4 @ 0x3] [error] Error writing trailer: No space left on device\n"
    )
    assert explain_failure(228, stderr) == "disk full: No space left on device"
    # Decode errors alone are not "not a media file".
    reason = explain_failure(1, stderr.splitlines()[1])
    assert not reason.startswith("input is not a media file")
    assert reason.startswith("ffmpeg exited with code 1: Decoding error")


def test_input_side_permission_and_gpu_session_limit() -> None:
    assert explain_failure(243, "[in#0 @ 0x1] [error] Error opening input: Permission denied") \
        == "input file is not readable: Permission denied"
    # FFmpeg <= 6: the same "PATH: reason" line; before any "Input #" dump it is the input.
    assert explain_failure(1, "[error] /m/a.mp4: Permission denied") == (
        "input file is not readable: Permission denied"
    )
    nvenc_busy = (
        "[h264_nvenc @ 0x1] [error] OpenEncodeSessionEx failed: out of memory (10): (no details)\n"
        "[h264_nvenc @ 0x1] [error] No capable devices found\n"
    )
    busy = classify_failure(1, nvenc_busy)
    assert busy.kind == "transient"
    assert busy.reason.startswith("encoder h264_nvenc has no free GPU session")


def test_network_reasons_without_the_http_warning() -> None:
    # With -loglevel error the "HTTP error 503 ..." warning is gone: say what ffmpeg said.
    only_error = "[error] http://h/clip.mp4: Server returned 5XX Server Error reply\n"
    assert classify_failure(1, only_error) == Failure(
        "transient", "network error: Server returned 5XX Server Error reply"
    )
    # A 503 warning followed by some other fatal error is not a network failure.
    other = "[warning] HTTP error 503 Service Unavailable\n[error] x: Invalid argument\n"
    assert not explain_failure(234, other).startswith("network error")
    timed_out = "[tcp @ 0x1] [error] Connection to tcp://h:80 failed: Connection timed out"
    assert explain_failure(146, timed_out) == "network error: Connection timed out"
    # Other maps that match nothing keep ffmpeg's own words.
    graph = "[fatal] Stream specifier ':s' in filtergraph description [0:s]null matches no streams."
    assert explain_failure(1, graph) == (
        "the stream selection matches nothing: "
        "Stream specifier ':s' in filtergraph description [0:s]null matches no streams."
    )


@pytest.mark.parametrize("version", ["5.1", "9.0"])
def test_only_node_problems_count_against_the_node(version: str) -> None:
    """A disk, permission or GPU problem says the node is unwell (quarantine counts it); an
    encoder or filter this build lacks only sends that one job to another node."""

    def failure(case: str):
        text = (STDERR / f"{case}-ffmpeg-{version}.txt").read_text(errors="replace")
        return classify_failure(EXIT_CODES[case][version], text)

    for case in ("unknown-encoder", "unknown-filter"):
        assert (failure(case).kind, failure(case).node_fault) == ("environment", False), case
    for case in ("disk-full", "nvenc", "permission-denied"):
        found = failure(case)
        assert found.kind == "environment" and found.node_fault, (case, found)
