"""Acceptance: failure handling and the audit trail with real nodes, real FFmpeg, real
PostgreSQL. Transient network errors, a node lacking an encoder, poison jobs stopped by the
stall and memory guards, exact stderr bytes, fingerprints, output conflicts and stale temp
files after a crash."""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    FFMPEG,
    Cli,
    Clips,
    NodeProcess,
    ffmpeg_children,
    job_states,
    make_clip,
    probe_json,
    query,
    wait_for,
)

pytestmark = pytest.mark.integration

DEBIAN_FFMPEG = "/usr/bin/ffmpeg"
FAST = ("--retry-base", "0.05", "--heartbeat", "0.5")
FINAL = ("succeeded", "failed", "dead", "canceled")


# --------------------------------------------------------------------------- helpers


def write_presets(cli: Cli, text: str) -> None:
    config = cli.home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "presets.toml").write_text(text, encoding="utf-8")


def job_json(cli: Cli, job_id: int) -> dict:
    return json.loads(cli.run("job", str(job_id), "--json").stdout)


def state_of(cli: Cli, job_id: int) -> str | None:
    return job_states(cli.database).get(job_id)


def wait_final(cli: Cli, job_id: int, node: NodeProcess, timeout: float = 60) -> str:
    def done() -> str | None:
        state = state_of(cli, job_id)
        if state in FINAL:
            return state
        if node.proc.poll() is not None:
            raise AssertionError(f"node exited {node.proc.returncode}:\n{node.log_text()}")
        return None

    return wait_for(done, timeout, message=f"job {job_id} finished")


def part_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".part" in p.name] if folder.exists() else []


def edge_hash(path: Path) -> str:
    """The audit trail's fast fingerprint, computed independently: blake2b-256 of the size
    (8 bytes, little endian), the first 8 MiB and the last 8 MiB."""
    data = path.read_bytes()
    edge = 8 * 1024 * 1024
    digest = hashlib.blake2b(digest_size=32)
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data[:edge])
    if len(data) > edge:
        digest.update(data[max(edge, len(data) - edge) :])
    return digest.hexdigest()


def full_hash(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=32).hexdigest()


def me() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def imageio_ffmpeg_exe() -> str:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    return imageio_ffmpeg.get_ffmpeg_exe()


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc
    err = proc.stderr.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in err and err.startswith("ffdesk: error: "), err
    return err


# --------------------------------------------------------------------------- HTTP server


class FlakyServer:
    """A real HTTP server serving files; the first ``failures`` GETs of a path get a 503.

    Supports HEAD and single ``Range: bytes=a-[b]`` requests (FFmpeg seeks in an MP4 whose
    index sits at the end).
    """

    def __init__(self, files: dict[str, bytes], failures: int) -> None:
        self.files = files
        self.failures = failures
        self.gets: dict[str, int] = {}
        self.log: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._serve(body=True)

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def _serve(self, body: bool) -> None:
                data = outer.files.get(self.path)
                with outer.lock:
                    n = outer.gets.get(self.path, 0) + (1 if body else 0)
                    outer.gets[self.path] = n
                status = self._status(data, body, n)
                with outer.lock:
                    outer.log.append((self.command, self.path, status))

            def _status(self, data: bytes | None, body: bool, n: int) -> int:
                if data is None:
                    return self._plain(404, b"not found\n", body)
                if body and n <= outer.failures:
                    return self._plain(503, b"try again later\n", body)
                start, end = 0, len(data) - 1
                found = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if found:
                    start = int(found.group(1))
                    if found.group(2):
                        end = min(end, int(found.group(2)))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return 416
                chunk = data[start : end + 1]
                self.send_response(206 if found else 200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(chunk)))
                if found:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.end_headers()
                if body:
                    # FFmpeg seeks by dropping the connection mid-transfer.
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self.wfile.write(chunk)
                return 206 if found else 200

            def _plain(self, status: int, text: bytes, body: bool) -> int:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                if body:
                    self.wfile.write(text)
                return status

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that hung up mid-transfer is no test failure

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> FlakyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# --------------------------------------------------------------------------- 1. transient


def test_transient_503_twice_then_success(cli: Cli, clips: Clips, nodes, tmp_path):
    out = tmp_path / "out"
    with FlakyServer({"/media/clip.mp4": clips.good.read_bytes()}, failures=2) as server:
        url = server.url("/media/clip.mp4")
        (job_id,) = cli.submit(url, extra=("--output-dir", str(out)))
        node = cli.start_node("web", *FAST, slots=1)
        nodes.append(node)
        assert wait_final(cli, job_id, node) == "succeeded", node.log_text()
        assert server.gets["/media/clip.mp4"] >= 3
        assert [s for m, _, s in server.log if m == "GET"][:2] == [503, 503]

    job = job_json(cli, job_id)
    assert job["state"] == "succeeded" and job["attempt"] == 3
    first, second, third = job["attempts"]  # exactly three runs
    for failed in (first, second):
        assert (failed["outcome"], failed["kind"]) == ("failed", "transient"), failed
        assert "503" in failed["reason"], failed["reason"]
        assert failed["retry_at"] is not None
        assert "503" in failed["stderr"]
    assert third["outcome"] == "succeeded" and third["kind"] is None
    assert url in third["argv"]
    kinds = [e["kind"] for e in job["events"]]
    assert kinds.count("retry-scheduled") == 2 and kinds[-1] == "succeeded"
    result = out / "clip-h264.mp4"
    assert job["written"] == str(result)
    info = probe_json(result)
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    assert abs(float(info["format"]["duration"]) - 1.0) < 0.2
    assert part_files(out) == []


# --------------------------------------------------------------------------- 2. environment


OPENH264_PRESETS = """
[openh264]
description = "H.264 through Cisco's libopenh264 (only some FFmpeg builds have it)"
args = ["-i", "{input}", "-c:v", "libopenh264", "-an", "{output}"]
output = "{stem}-oh264.mp4"
needs = ["video"]

[slow-h264]
description = "realtime-paced H.264, keeps a slot busy"
args = ["-re", "-i", "{input}", "-c:v", "libx264", "-preset", "ultrafast", "-an", "{output}"]
output = "{stem}-slow.mp4"
needs = ["video"]
"""


def test_missing_encoder_on_node_a_is_retried_on_node_b(cli: Cli, clips: Clips, nodes, tmp_path):
    """Debian's FFmpeg 5.1 lacks libopenh264, the 9.0 build has it. Made deterministic:
    B (9.0, one slot) is kept busy by a slow job while A (5.1) is the only node free to
    claim; B is online, so A's environment failure sends the job to another node."""
    if not Path(DEBIAN_FFMPEG).exists():
        pytest.skip("Debian's ffmpeg is not installed")
    write_presets(cli, OPENH264_PRESETS)
    out = tmp_path / "out"
    (blocker,) = cli.submit(clips.long, preset="slow-h264", extra=("--output-dir", str(out)))
    b = cli.start_node("node-b", "--ffmpeg", imageio_ffmpeg_exe(), *FAST, slots=1)
    nodes.append(b)
    wait_for(lambda: state_of(cli, blocker) == "running", 30, message="B busy")

    (job_id,) = cli.submit(clips.good, preset="openh264", extra=("--output-dir", str(out)))
    a = cli.start_node("node-a", "--ffmpeg", DEBIAN_FFMPEG, *FAST, slots=1)
    nodes.append(a)
    wait_for(
        lambda: (
            query(cli.database, "SELECT avoid_nodes FROM jobs WHERE id = %s", [job_id])[0][0]
            == ["node-a"]
        ),
        30,
        message="A failed the job and avoids it",
    )
    assert state_of(cli, job_id) == "queued"  # not claimed by A again, B is still busy
    cli.run("cancel", str(blocker))
    assert wait_final(cli, job_id, b) == "succeeded", b.log_text()

    job = job_json(cli, job_id)
    assert job["node"] == "node-b"
    assert job["avoid_nodes"] == ["node-a"]
    on_a, on_b = job["attempts"]
    assert on_a["node"] == "node-a" and on_a["argv"][0] == DEBIAN_FFMPEG
    assert (on_a["outcome"], on_a["kind"]) == ("failed", "environment")
    assert "libopenh264" in on_a["reason"], on_a["reason"]
    assert on_b["node"] == "node-b" and on_b["outcome"] == "succeeded"
    assert on_b["ffmpeg_version"].startswith("ffmpeg version n9.")
    (scheduled,) = [e for e in job["events"] if e["kind"] == "retry-scheduled"]
    assert scheduled["node"] == "node-a"
    assert scheduled["detail"]["avoid_node"] is True
    assert scheduled["detail"]["kind"] == "environment"
    info = probe_json(out / "good-oh264.mp4")
    assert [s["codec_name"] for s in info["streams"]] == ["h264"]
    assert part_files(out) == []


# --------------------------------------------------------------------------- 3. poison jobs


POISON_PRESETS = """
[stall-copy]
description = "stream copy, stopped after 1 s without progress"
args = ["-i", "{input}", "-c", "copy", "{output}"]
output = "{stem}-copy.mkv"
stall_timeout = 1

[memory-capped]
description = "realtime-paced H.264 allowed 8 MiB of memory"
args = ["-re", "-i", "{input}", "-c:v", "libx264", "-preset", "ultrafast", "-an", "{output}"]
output = "{stem}-capped.mp4"
needs = ["video"]
memory_limit = "8M"
"""


@pytest.mark.parametrize("guard", ["stall", "memory"])
def test_poison_job_ends_dead_and_reprocess_brings_it_back(
    guard: str, cli: Cli, clips: Clips, nodes, tmp_path
):
    write_presets(cli, POISON_PRESETS)
    out = tmp_path / "out"
    if guard == "stall":
        # A FIFO nobody writes to: FFmpeg waits forever in open(). Submit only takes regular
        # files, so the FIFO takes the file's place after the submit (a share gone stale).
        source = tmp_path / "never.mp4"
        source.write_bytes(clips.good.read_bytes())
        (job_id,) = cli.submit(source, preset="stall-copy", extra=("--output-dir", str(out)))
        source.unlink()
        os.mkfifo(source)
        expected = "stalled: no progress from FFmpeg for 1 s"
    else:
        (job_id,) = cli.submit(clips.long, preset="memory-capped", extra=("--output-dir", str(out)))
        expected = "out of memory (limit 8.0 MiB): FFmpeg used "
    node = cli.start_node("guarded", *FAST, slots=1)
    nodes.append(node)
    assert wait_final(cli, job_id, node, timeout=45) == "dead", node.log_text()
    assert node.stop(timeout=30) == 0  # nothing may claim the job once it is reprocessed

    job = job_json(cli, job_id)
    assert (job["failure_kind"], job["attempt"]) == ("transient", 3)
    assert job["reason"].startswith(expected), job["reason"]
    attempts = job["attempts"]
    assert [(a["outcome"], a["kind"]) for a in attempts] == [("failed", "transient")] * 3
    for a in attempts:
        assert a["reason"].startswith(expected), a["reason"]
        assert a["pid"] and a["argv"]
    kinds = [e["kind"] for e in job["events"]]
    assert kinds.count("retry-scheduled") == 2 and kinds[-1] == "dead"
    assert part_files(out) == []

    # Reprocess: everything dead in the last hour goes back, with a fresh attempt budget.
    proc = cli.run("retry", "--state", "dead", "--since", "1h")
    assert proc.stdout.splitlines() == [f"{job_id}: queued again (was dead)"]
    rows = query(
        cli.database,
        "SELECT state, attempt, reason, failure_kind, avoid_nodes FROM jobs WHERE id = %s",
        [job_id],
    )
    assert rows == [("queued", 0, None, None, [])]
    again = job_json(cli, job_id)
    assert [a["id"] for a in again["attempts"]] == [a["id"] for a in attempts]  # kept
    retried = again["events"][-1]
    assert retried["kind"] == "retried"
    assert retried["detail"]["by"] == me() and retried["detail"]["from"] == "dead"
    # Nothing else is dead now: say so, successfully.
    nothing = cli.run("retry", "--state", "dead", "--since", "1h")
    assert nothing.returncode == 0 and nothing.stdout == ""
    assert "no jobs matched" in nothing.stderr
    # Mistakes are one line each, never a traceback.
    assert "say which jobs" in one_line_error(cli.run("retry", check=False))
    bad_age = one_line_error(cli.run("retry", "--since", "banana", check=False))
    assert "'banana' is not an age" in bad_age
    assert state_of(cli, job_id) == "queued"


# --------------------------------------------------------------------------- 4. stderr bytes


NOT_UTF8 = b"\xff\xfe caf\xe9"

SUBS_PRESET = """
[subs-only]
description = "copy the subtitles (fails on a file without any)"
args = ["-i", "{input}", "-map", "0:s", "-c", "copy", "{output}"]
output = "{stem}-subs.mkv"
"""


def _normalised(data: bytes) -> bytes:
    return re.sub(rb"0x[0-9a-f]+", b"0xADDR", data)


def test_stderr_round_trips_byte_for_byte(cli: Cli, nodes, tmp_path):
    assert FFMPEG
    source = tmp_path / "latin1 title.mkv"
    argv: list[str | bytes] = [
        FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=5:duration=0.4",
        "-c:v", "libx264", "-preset", "ultrafast",
        "-metadata", b"title=" + NOT_UTF8, str(source),
    ]  # fmt: skip
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    write_presets(cli, SUBS_PRESET)
    out = tmp_path / "out"
    (job_id,) = cli.submit(source, preset="subs-only", extra=("--output-dir", str(out)))
    node = cli.start_node("bytes", *FAST, slots=1)
    nodes.append(node)
    assert wait_final(cli, job_id, node) == "failed", node.log_text()
    job = job_json(cli, job_id)
    assert job["failure_kind"] == "config"
    assert "0:s" in job["reason"], job["reason"]
    (attempt,) = job["attempts"]

    stored = subprocess.run(
        cli.base("job", str(job_id), "--stderr"),
        capture_output=True, env=cli.env(), stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    raw = stored.stdout
    assert NOT_UTF8 in raw  # the title exactly as written, not "\ufffd"
    assert len(raw) == attempt["stderr_bytes"]
    numbered = subprocess.run(
        cli.base("job", str(job_id), "--stderr", "--attempt", "1"),
        capture_output=True, env=cli.env(), stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert numbered.returncode == 0 and numbered.stdout == raw

    # The same argv again, by hand: FFmpeg writes the very same bytes.
    again = subprocess.run(
        attempt["argv"], stdin=subprocess.PIPE, capture_output=True, timeout=60,
        start_new_session=True,
    )  # fmt: skip
    assert again.returncode == attempt["exit_code"] != 0
    assert _normalised(raw) == _normalised(again.stderr)

    err = one_line_error(cli.run("job", str(job_id), "--stderr", "--attempt", "9", check=False))
    assert "attempt 9" in err
    assert part_files(out) == []


# --------------------------------------------------------------------------- 5. audit trail


AUDIT_PRESET = """
[paced-h264]
description = "realtime-paced H.264, so progress milestones are reported"
args = ["-re", "-i", "{input}", "-c:v", "libx264", "-preset", "ultrafast", "-an", "{output}"]
output = "{stem}-paced.mp4"
needs = ["video"]
"""


def _check_input_audit(attempt: dict, source: Path) -> None:
    st = source.stat()
    assert attempt["input_size"] == st.st_size
    assert attempt["input_hash"] == edge_hash(source)
    recorded = datetime.fromisoformat(attempt["input_mtime"]).timestamp()
    assert abs(recorded - st.st_mtime) < 1e-5


def _check_output_audit(job: dict, attempt: dict) -> Path:
    written = Path(job["written"])
    assert written == Path(job["output"]) and written.is_file()
    assert attempt["output_path"] == str(written)
    assert attempt["output_size"] == written.stat().st_size
    assert attempt["output_hash"] == edge_hash(written)
    probe = attempt["output_probe"]
    assert probe and probe["streams"], probe
    return written


def test_audit_trail_fingerprints_pid_and_events(cli: Cli, nodes, tmp_path):
    write_presets(cli, AUDIT_PRESET)
    out = tmp_path / "out"
    source = make_clip(tmp_path / "four.mp4", seconds=4, size="64x48", rate=5, audio=False)
    (job_id,) = cli.submit(source, preset="paced-h264", extra=("--output-dir", str(out)))
    node = cli.start_node("auditor", *FAST, slots=1)
    nodes.append(node)
    assert wait_final(cli, job_id, node) == "succeeded", node.log_text()
    assert node.stop(timeout=30) == 0

    job = job_json(cli, job_id)
    (attempt,) = job["attempts"]
    _check_input_audit(attempt, source)
    assert attempt["input_full_hash"] is None and attempt["output_full_hash"] is None
    written = _check_output_audit(job, attempt)
    assert [s["kind"] for s in attempt["output_probe"]["streams"]] == ["video"]
    assert [s["codec_name"] for s in probe_json(written)["streams"]] == ["h264"]
    assert isinstance(attempt["pid"], int) and attempt["pid"] > 0
    events = job["events"]
    kinds = [e["kind"] for e in events]
    assert kinds == ["submitted", "claimed", "started", *["progress"] * 3, "succeeded"], kinds
    assert [e["detail"]["percent"] for e in events if e["kind"] == "progress"] == [25, 50, 75]
    assert events[0]["detail"]["by"] == me()
    assert events[2]["detail"]["pid"] == attempt["pid"]
    assert events[-1]["detail"]["written"] == str(written)
    times = [datetime.fromisoformat(e["at"]) for e in events]
    assert times == sorted(times)

    # --full-hash: whole-file hashes of input and output too.
    remux_out = tmp_path / "remux"
    (second,) = cli.submit(source, preset="remux-mp4", extra=("--output-dir", str(remux_out)))
    hasher = cli.start_node("hasher", "--full-hash", *FAST, slots=1)
    nodes.append(hasher)
    assert wait_final(cli, second, hasher) == "succeeded", hasher.log_text()
    job = job_json(cli, second)
    (attempt,) = job["attempts"]
    _check_input_audit(attempt, source)
    assert attempt["input_full_hash"] == full_hash(source)
    written = _check_output_audit(job, attempt)
    assert attempt["output_full_hash"] == full_hash(written)


# --------------------------------------------------------------------------- 6. on_conflict


CONFLICT_PRESETS = """
[remux-replace]
description = "remux, replacing an existing output"
args = ["-i", "{input}", "-map", "0", "-c", "copy", "{output}"]
output = "{stem}-remux.mp4"
on_conflict = "replace"

[remux-skip]
description = "remux, leaving an existing output alone"
args = ["-i", "{input}", "-map", "0", "-c", "copy", "{output}"]
output = "{stem}-remux.mp4"
on_conflict = "skip"
"""

FOREIGN = b"somebody else's file, not ffdesk's\n"


def _foreign(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(FOREIGN)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    return path


def test_existing_output_keep_both_replace_and_skip(cli: Cli, clips: Clips, nodes, tmp_path):
    write_presets(cli, CONFLICT_PRESETS)
    name = "good-remux.mp4"
    keep_dir, replace_dir, skip_dir = tmp_path / "keep", tmp_path / "replace", tmp_path / "skip"
    keep_file, replace_file, skip_file = (
        _foreign(d, name) for d in (keep_dir, replace_dir, skip_dir)
    )
    (keep,) = cli.submit(clips.good, preset="remux-mp4", extra=("--output-dir", str(keep_dir)))
    (replace,) = cli.submit(
        clips.good, preset="remux-replace", extra=("--output-dir", str(replace_dir))
    )
    (skip,) = cli.submit(clips.good, preset="remux-skip", extra=("--output-dir", str(skip_dir)))
    node = cli.start_node("careful", *FAST, slots=2)
    nodes.append(node)
    for job_id in (keep, replace, skip):
        assert wait_final(cli, job_id, node) == "succeeded", node.log_text()

    # keep-both (the default): the foreign file stays, ours is "name (2).ext".
    job = job_json(cli, keep)
    both = keep_dir / "good-remux (2).mp4"
    assert job["written"] == str(both)
    assert job["reason"] == f"{name} existed: kept both"
    assert keep_file.read_bytes() == FOREIGN and keep_file.stat().st_mtime == 1_000_000_000
    assert {s["codec_type"] for s in probe_json(both)["streams"]} == {"video", "audio"}
    assert job["attempts"][0]["output_path"] == str(both)
    assert sorted(p.name for p in keep_dir.iterdir()) == sorted([name, both.name])

    # replace: ours took the name.
    job = job_json(cli, replace)
    assert job["written"] == str(replace_file) and job["reason"] is None
    assert {s["codec_type"] for s in probe_json(replace_file)["streams"]} == {"video", "audio"}
    assert [p.name for p in replace_dir.iterdir()] == [name]

    # skip: done without running FFmpeg, the file untouched.
    job = job_json(cli, skip)
    assert job["written"] == str(skip_file)
    assert "already exists (on_conflict = skip)" in job["reason"]
    kinds = [e["kind"] for e in job["events"]]
    assert kinds == ["submitted", "claimed", "succeeded"], kinds
    (attempt,) = job["attempts"]
    assert attempt["argv"] is None and attempt["stderr"] is None and attempt["pid"] is None
    assert skip_file.read_bytes() == FOREIGN and skip_file.stat().st_mtime == 1_000_000_000
    assert [p.name for p in skip_dir.iterdir()] == [name]
    for folder in (keep_dir, replace_dir, skip_dir):
        assert part_files(folder) == []


# --------------------------------------------------------------------------- 7. stale temps


SLOW_PRESET = """
[slow-h264]
description = "realtime-paced H.264, for tests"
args = ["-re", "-i", "{input}", "-c:v", "libx264", "-preset", "ultrafast", "-an", "{output}"]
output = "{stem}-slow.mp4"
needs = ["video"]
"""


def test_stale_temp_files_of_a_crashed_node_are_removed_at_restart(cli: Cli, nodes, tmp_path):
    """Two jobs run when the machine crashes. Meanwhile someone cancels one of them. At the
    restart the node takes the other back (its temp file removed with it) and sweeps the
    canceled one's temp file from its journal, saying so; the taken-back job completes."""
    write_presets(cli, SLOW_PRESET)
    out = tmp_path / "out"
    kept = make_clip(tmp_path / "kept.mp4", seconds=3, size="64x48", rate=5, audio=False)
    dropped = make_clip(tmp_path / "dropped.mp4", seconds=3, size="64x48", rate=5, audio=False)
    kept_id, dropped_id = cli.submit(
        kept, dropped, preset="slow-h264", extra=("--output-dir", str(out))
    )
    node = cli.start_node("crashy", *FAST, slots=2)
    nodes.append(node)
    parts = wait_for(
        lambda: len(part_files(out)) == 2 and part_files(out),
        30,
        message="both temp outputs written",
    )
    (kept_part,) = [p for p in parts if p.name.startswith(f".kept-slow.{kept_id}-")]
    (dropped_part,) = [p for p in parts if p.name.startswith(f".dropped-slow.{dropped_id}-")]
    children = wait_for(
        lambda: len(ffmpeg_children(node.proc.pid)) == 2 and ffmpeg_children(node.proc.pid),
        10,
        message="both ffmpeg running",
    )
    # The machine "crashes": the node and its FFmpegs (each in a process group of its own).
    node.proc.kill()
    node.proc.wait(10)
    for child in children:
        os.killpg(child.pid, signal.SIGKILL)
    wait_for(
        lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children),
        10,
        message="ffmpeg gone",
    )
    assert kept_part.exists() and dropped_part.exists()
    assert job_states(cli.database) == {kept_id: "running", dropped_id: "running"}  # stranded
    assert cli.run("cancel", str(dropped_id)).stdout.strip() == f"{dropped_id}: canceled"

    again = cli.start_node("crashy", *FAST, slots=2, log_name="crashy-2")
    nodes.append(again)
    assert wait_final(cli, kept_id, again) == "succeeded", again.log_text()
    log_text = again.log_text()
    assert f"took back 1 job(s) a previous run of this node left running: {kept_id}" in log_text
    assert (
        f"removed 1 temp file(s) a previous run of this node left behind: {dropped_part}"
        in log_text
    ), log_text
    assert not kept_part.exists() and not dropped_part.exists()
    attempts = query(
        cli.database, "SELECT seq, outcome FROM attempts WHERE job_id = %s ORDER BY id", [kept_id]
    )
    assert attempts == [(1, "lost"), (2, "succeeded")]
    assert state_of(cli, dropped_id) == "canceled"
    # The canceled job's run had no owner left: its attempt is closed, not "running" forever.
    dropped_attempts = query(
        cli.database, "SELECT outcome, reason FROM attempts WHERE job_id = %s", [dropped_id]
    )
    assert dropped_attempts == [("lost", "node crashy restarted after a crash")]
    assert part_files(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["kept-slow.mp4"]
    assert probe_json(out / "kept-slow.mp4")["streams"][0]["codec_name"] == "h264"
