"""Acceptance: real node processes encoding real clips on a real PostgreSQL."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    Cli,
    Clips,
    ffmpeg_children,
    job_states,
    make_clip,
    probe_json,
    query,
    wait_for,
)

pytestmark = pytest.mark.integration

# Realtime-paced encode (-re): a 30 s clip takes 30 s, so a test can act while it runs.
SLOW_PRESET = """
[slow-h264]
description = "realtime-paced H.264, for tests"
args = ["-re", "-i", "{input}", "-c:v", "libx264", "-preset", "ultrafast", "-an", "{output}"]
output = "{stem}-slow.mp4"
needs = ["video"]
"""


def add_slow_preset(cli: Cli) -> None:
    config = cli.home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "presets.toml").write_text(SLOW_PRESET, encoding="utf-8")


def part_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".part" in p.name]


def all_done(url: str, n: int) -> bool:
    states = job_states(url)
    return len(states) == n and all(s in ("succeeded", "failed", "dead") for s in states.values())


def test_end_to_end_submit_node_and_verify_outputs(cli: Cli, clips: Clips, nodes, tmp_path):
    inputs = [clips.good, *clips.weird]
    out = tmp_path / "out put"
    ids = cli.submit(*inputs, extra=("--output-dir", str(out)))
    assert len(ids) == len(inputs)
    nodes.append(cli.start_node("solo", slots=2))
    wait_for(lambda: all_done(cli.database, len(ids)), 60, message="all jobs finished")
    assert set(job_states(cli.database).values()) == {"succeeded"}, nodes[0].log_text()
    for src in inputs:
        result = out / f"{src.stem}-h264.mp4"
        info = probe_json(result)
        kinds = {s["codec_type"]: s["codec_name"] for s in info["streams"]}
        assert kinds == {"video": "h264", "audio": "aac"}
        src_duration = float(probe_json(src)["format"]["duration"])
        assert abs(float(info["format"]["duration"]) - src_duration) < 0.2
    assert part_files(out) == []
    # The audit trail names the exact argv, the FFmpeg identity and keeps the whole stderr.
    detail = cli.run("job", str(ids[0]), "--json").stdout
    import json

    job = json.loads(detail)
    (attempt,) = job["attempts"]
    assert attempt["outcome"] == "succeeded"
    assert attempt["argv"][0].endswith("ffmpeg")
    assert str(clips.good) in attempt["argv"]
    assert attempt["ffmpeg_version"].startswith("ffmpeg version")
    assert len(attempt["ffmpeg_sha256"]) == 64
    assert "Output #0" in attempt["stderr"]
    # The input as FFmpeg described it (no separate ffprobe before the run).
    probe = attempt["input_probe"]
    assert abs(probe["duration"] - 1.0) < 0.1
    assert sorted(s["kind"] for s in probe["streams"]) == ["audio", "video"]
    assert abs(job["duration_s"] - 1.0) < 0.1
    assert job["queue_seconds"] >= 0 and job["run_seconds"] > 0


def test_two_nodes_sixty_jobs_each_runs_exactly_once(cli: Cli, tmp_path, nodes):
    src = tmp_path / "src"
    files = [make_clip(src / f"clip {i:02d}.mp4", seconds=0.5, size="64x48") for i in range(60)]
    out = tmp_path / "out"
    ids = cli.submit(*files, preset="remux-mp4", extra=("--output-dir", str(out)))
    assert len(ids) == 60
    nodes.append(cli.start_node("alpha", slots=2))
    nodes.append(cli.start_node("beta", slots=2))
    wait_for(lambda: all_done(cli.database, 60), 120, message="60 jobs finished")
    rows = query(cli.database, "SELECT state, attempt, node FROM jobs")
    assert {r[0] for r in rows} == {"succeeded"}
    assert {r[1] for r in rows} == {1}
    per_node = {n: sum(1 for r in rows if r[2] == n) for n in ("alpha", "beta")}
    assert per_node["alpha"] > 0 and per_node["beta"] > 0, per_node
    runs = query(cli.database, "SELECT job_id, count(*) FROM attempts GROUP BY job_id")
    assert all(count == 1 for _, count in runs) and len(runs) == 60
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{f.stem}-remux.mp4" for f in files)


def test_cancel_running_job_stops_ffmpeg_fast_and_leaves_no_temp(
    cli: Cli, clips: Clips, nodes, tmp_path
):
    add_slow_preset(cli)
    out = tmp_path / "out"
    (job_id,) = cli.submit(clips.long, preset="slow-h264", extra=("--output-dir", str(out)))
    node = cli.start_node("canceller", slots=1)
    nodes.append(node)
    wait_for(lambda: job_states(cli.database).get(job_id) == "running", 30)
    wait_for(lambda: ffmpeg_children(node.proc.pid), 10, message="ffmpeg started")
    wait_for(lambda: part_files(out), 10, message="temp output written")
    (ffmpeg,) = ffmpeg_children(node.proc.pid)
    t0 = time.monotonic()
    cli.run("cancel", str(job_id))
    wait_for(
        lambda: not ffmpeg.is_running() or ffmpeg.status() == psutil.STATUS_ZOMBIE,
        2,
        interval=0.02,
        message="ffmpeg gone within 2 s",
    )
    gone_after = time.monotonic() - t0
    print(f"ffmpeg stopped {gone_after * 1000:.0f} ms after 'ffdesk cancel' returned")
    wait_for(lambda: not part_files(out), 5, message="temp file removed")
    assert job_states(cli.database)[job_id] == "canceled"
    outcome = query(cli.database, "SELECT outcome FROM attempts WHERE job_id = %s", [job_id])
    assert outcome == [("lost",)]
    assert not (out / "long-slow.mp4").exists()
    assert node.proc.poll() is None  # the node carries on


def test_sigterm_gives_jobs_back_without_spending_attempts(cli: Cli, clips: Clips, nodes, tmp_path):
    add_slow_preset(cli)
    out = tmp_path / "out"
    first = make_clip(tmp_path / "four a.mp4", seconds=4, size="64x48", rate=5)
    second = make_clip(tmp_path / "four b.mp4", seconds=4, size="64x48", rate=5)
    ids = cli.submit(first, second, preset="slow-h264", extra=("--output-dir", str(out)))
    assert len(ids) == 2
    node = cli.start_node("leaver", "--grace", "1", slots=2)
    nodes.append(node)
    wait_for(lambda: set(job_states(cli.database).values()) == {"running"}, 30)
    wait_for(lambda: len(ffmpeg_children(node.proc.pid)) == 2, 10)
    assert node.stop(signal.SIGTERM, timeout=30) == 0
    rows = query(cli.database, "SELECT state, attempt, node_session FROM jobs ORDER BY id")
    assert rows == [("queued", 0, None), ("queued", 0, None)]
    assert part_files(out) == []
    counted = query(cli.database, "SELECT outcome, counted FROM attempts ORDER BY id")
    assert counted == [("interrupted", False), ("interrupted", False)]
    # A new node finishes them, each with its first counted attempt.
    nodes.append(cli.start_node("finisher", slots=2))
    wait_for(lambda: all_done(cli.database, 2), 90, message="jobs finished by the new node")
    rows = query(cli.database, "SELECT state, attempt, node FROM jobs ORDER BY id")
    assert rows == [("succeeded", 1, "finisher"), ("succeeded", 1, "finisher")]


def test_kill_9_and_restart_recovers_stranded_jobs(cli: Cli, clips: Clips, nodes, tmp_path):
    add_slow_preset(cli)
    out = tmp_path / "out"
    short = make_clip(tmp_path / "short.mp4", seconds=3, size="64x48", rate=5)
    (job_id,) = cli.submit(short, preset="slow-h264", extra=("--output-dir", str(out)))
    node = cli.start_node("phoenix", slots=1)
    nodes.append(node)
    wait_for(lambda: job_states(cli.database).get(job_id) == "running", 30)
    wait_for(lambda: part_files(out), 10, message="temp output written")
    children = ffmpeg_children(node.proc.pid)
    node.proc.kill()
    node.proc.wait(10)
    for child in children:  # an orphaned ffmpeg would still be writing: end it like a reboot
        child.kill()
    assert job_states(cli.database)[job_id] == "running"  # stranded
    again = cli.start_node("phoenix", slots=1, log_name="phoenix-2")
    nodes.append(again)
    wait_for(
        lambda: job_states(cli.database)[job_id] == "succeeded",
        60,
        message="stranded job finished after restart",
    )
    attempts = query(
        cli.database, "SELECT seq, outcome FROM attempts WHERE job_id = %s ORDER BY id", [job_id]
    )
    assert attempts == [(1, "lost"), (2, "succeeded")]
    assert "took back 1 job" in again.log_text()
    assert part_files(out) == []
    assert probe_json(out / "short-slow.mp4")["streams"][0]["codec_name"] == "h264"


def test_second_live_node_with_same_identifier_is_refused(cli: Cli, nodes):
    cli.run("db", "migrate")
    first = cli.start_node("twin", slots=1)
    nodes.append(first)
    wait_for(lambda: query(cli.database, "SELECT 1 FROM nodes WHERE identifier = 'twin'"), 30)
    proc = cli.run("node", "--identifier", "twin", "--exit-when-idle", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0
    assert "another node named 'twin' is running" in proc.stderr


def test_unwritable_output_folder_at_run_time_ends_the_job_dead(
    cli: Cli, clips: Clips, nodes, tmp_path
):
    from tests.conftest import make_unwritable

    out = tmp_path / "locked"
    out.mkdir()
    (job_id,) = cli.submit(clips.good, extra=("--output-dir", str(out)))
    undo = make_unwritable(out)  # became read-only after submit
    try:
        nodes.append(cli.start_node("writer", "--retry-base", "0.05", slots=1))
        wait_for(lambda: all_done(cli.database, 1), 30)
        state, kind, reason = query(
            cli.database, "SELECT state, failure_kind, reason FROM jobs WHERE id = %s", [job_id]
        )[0]
        # This node cannot write there and no other node could try: retried, then dead.
        assert (state, kind) == ("dead", "environment")
        assert "not writable" in reason
    finally:
        undo()
    assert list(out.iterdir()) == []


def test_hardware_preset_waits_and_says_why_when_no_node_has_the_encoder(
    cli: Cli, clips: Clips, nodes, tmp_path
):
    """NVENC cannot run here, and the node's encoder probe knows it: the claim's routing
    never gives it the job, which waits with its reason instead of failing on every node."""
    (job_id,) = cli.submit(
        clips.good, preset="h264-nvenc", extra=("--output-dir", str(tmp_path / "o"))
    )
    (good_id,) = cli.submit(clips.good, extra=("--output-dir", str(tmp_path / "o")))
    nodes.append(cli.start_node("cpu-only", "--heartbeat", "0.5", slots=1))
    wait_for(lambda: job_states(cli.database).get(good_id) == "succeeded", 60)
    wait_for(
        lambda: query(cli.database, "SELECT reason FROM jobs WHERE id = %s", [job_id])[0][0],
        15,
        message="a waiting reason",
    )
    state, reason, attempts = query(
        cli.database,
        "SELECT state, reason, (SELECT count(*) FROM attempts WHERE job_id = jobs.id) "
        "FROM jobs WHERE id = %s",
        [job_id],
    )[0]
    assert (state, reason, attempts) == (
        "queued", "waiting: no online node has h264_nvenc", 0
    )
    assert os.listdir(tmp_path / "o") == ["good-h264.mp4"]
    assert nodes[0].proc.poll() is None
