"""Acceptance: the bad input corpus through a real node process and real FFmpeg (5.1 and 9.0).

Every failing case must end with the right class (jobs.failure_kind and attempts.kind), a
clear one-line reason, the class's policy (input/config: failed after 1 attempt; environment
with a single node and transient: retried, then dead after 3), no temp file left in the output
folder, and a node that still encodes a good clip afterwards (after ``ffdesk nodes resume``
when three environment failures in a row quarantined it, which is the intended behaviour).
Bad names (spaces, quotes, ``$``, unicode) must succeed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    Cli,
    Clips,
    NodeProcess,
    job_states,
    make_clip,
    make_unwritable,
    probe_json,
    query,
    wait_for,
)

pytestmark = pytest.mark.integration

NODE = "bad-inputs"
RETRY = ("--retry-base", "0.05")


def _imageio_ffmpeg() -> str | None:
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        return None


# (id, path, what `ffmpeg -version` starts with)
_BUILDS = [
    ("ffmpeg-5.1", "/usr/bin/ffmpeg", "ffmpeg version 5.1"),
    ("ffmpeg-9.0", _imageio_ffmpeg(), "ffmpeg version n9.0"),
]


@pytest.fixture(params=[b[0] for b in _BUILDS])
def ffmpeg(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(path, expected version prefix) of each FFmpeg build the node is started with."""
    _, path, prefix = next(b for b in _BUILDS if b[0] == request.param)
    if not path or not os.access(path, os.X_OK):
        pytest.skip(f"{request.param} is not installed")
    version = subprocess.run(
        [path, "-version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    assert version.startswith(prefix), version
    return path, prefix


# User presets: a preset mistake (config), an encoder no build has (environment).
PRESETS = """
[bad-option]
description = "a preset with an option FFmpeg does not know"
args = ["-i", "{input}", "-nosuchoption", "1", "-c:v", "libx264", "{output}"]
output = "{stem}-badopt.mp4"
needs = []

[no-encoder]
description = "a preset naming an encoder that does not exist"
args = ["-i", "{input}", "-c:v", "nosuchcodec", "{output}"]
output = "{stem}-noenc.mp4"
needs = ["video"]
"""


def add_presets(cli: Cli) -> None:
    config = cli.home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "presets.toml").write_text(PRESETS, encoding="utf-8")


def finished(url: str, ids: list[int]) -> bool:
    states = job_states(url)
    return all(states.get(i) in ("succeeded", "failed", "dead") for i in ids)


def job_row(url: str, job_id: int) -> dict:
    (row,) = query(
        url,
        "SELECT state, failure_kind, reason, attempt, exit_code FROM jobs WHERE id = %s",
        [job_id],
    )
    row = dict(zip(("state", "kind", "reason", "attempt", "exit_code"), row, strict=True))
    print(f"job #{job_id}: {row}")  # shown with -s: what each FFmpeg version led to
    return row


def attempts_of(url: str, job_id: int) -> list[tuple]:
    """(outcome, kind, argv[0] or None) of each attempt, oldest first."""
    return query(
        url,
        "SELECT outcome, kind, argv->>0 FROM attempts WHERE job_id = %s ORDER BY id",
        [job_id],
    )


def node_state(url: str, identifier: str) -> tuple[str, str | None]:
    (row,) = query(url, "SELECT state, state_reason FROM nodes WHERE identifier = %s", [identifier])
    return row


def leftovers(folder: Path, keep: set[str] = frozenset()) -> list[str]:
    """Everything in the output folder but the expected outputs: .part files, write tests."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def assert_one_line(reason: str | None, *words: str) -> None:
    assert reason, "no reason recorded"
    assert "\n" not in reason and len(reason) <= 400, reason
    for word in words:
        assert word in reason, (word, reason)


def ffmpeg_children(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c for c in children if "ffmpeg" in c.name() and c.status() != psutil.STATUS_ZOMBIE]


def assert_encodes_good_clip(cli: Cli, node: NodeProcess, clips: Clips, out: Path) -> None:
    """The node is alive, left no FFmpeg behind, and still turns a good clip into a verified
    output."""
    assert node.proc.poll() is None, node.log_text()
    assert ffmpeg_children(node.proc.pid) == []
    (job_id,) = cli.submit(clips.good, extra=("--output-dir", str(out)))
    wait_for(lambda: finished(cli.database, [job_id]), 60, message="the good clip finished")
    row = job_row(cli.database, job_id)
    assert (row["state"], row["attempt"]) == ("succeeded", 1), (row, node.log_text())
    kinds = {s["codec_type"]: s["codec_name"] for s in probe_json(out / "good-h264.mp4")["streams"]}
    assert kinds == {"video": "h264", "audio": "aac"}
    assert leftovers(out, {"good-h264.mp4"}) == []
    assert node.proc.poll() is None


def assert_dead_after_three(cli: Cli, job_id: int, kind: str, ffmpeg_path: str | None) -> dict:
    row = job_row(cli.database, job_id)
    assert (row["state"], row["kind"], row["attempt"]) == ("dead", kind, 3), row
    runs = attempts_of(cli.database, job_id)
    assert [(o, k) for o, k, _ in runs] == [("failed", kind)] * 3, runs
    if ffmpeg_path is not None:  # FFmpeg ran each time, the build the node was told to use
        assert {argv0 for _, _, argv0 in runs} == {ffmpeg_path}, runs
    return row


def assert_quarantined_then_resumed(
    cli: Cli, node: NodeProcess, clips: Clips, out: Path, *words: str
) -> None:
    """Three environment failures in a row quarantine the node (correct); resumed, it works."""
    wait_for(
        lambda: node_state(cli.database, NODE)[0] == "quarantined",
        15,
        message="the node quarantined itself",
    )
    _, why = node_state(cli.database, NODE)
    assert_one_line(why, "3 environment failures in a row", *words)
    assert node.proc.poll() is None, node.log_text()  # quarantined, not crashed
    cli.run("nodes", "resume", NODE)
    assert_encodes_good_clip(cli, node, clips, out)
    assert node_state(cli.database, NODE)[0] == "online"


# --------------------------------------------------------------------------- input / config

# file name -> (class, key words of the reason); all fail at once, attempt 1 of 3.
INPUT_CASES = {
    "truncated.mp4": ("input", ("input is truncated", "moov atom not found")),
    "random.mp4": ("input", ("input is not a media file",)),
    "zero.mp4": ("input", ("input file is empty",)),
    "notes.mkv": ("input", ("input is not a valid Matroska file",)),
    "audio only.m4a": ("input", ("input has no video stream", "h264-mp4")),
    "vanished.mp4": ("input", ("input file not found", "vanished.mp4")),
    "good.mp4": ("config", ("unknown ffmpeg option -nosuchoption", "preset")),  # bad-option
}


def test_input_and_config_failures_fail_at_once_and_odd_names_succeed(
    cli: Cli, clips: Clips, nodes, tmp_path: Path, ffmpeg: tuple[str, str]
):
    ffmpeg_path, version = ffmpeg
    add_presets(cli)
    src = tmp_path / "src"
    src.mkdir()
    text = src / "notes.mkv"  # a text file renamed .mkv
    text.write_text("Meeting notes\nnot a video at all\n" * 40, encoding="utf-8")
    vanished = src / "vanished.mp4"
    shutil.copyfile(clips.good, vanished)
    out = tmp_path / "out"
    bad = [clips.truncated, clips.random_bytes, clips.zero_bytes, text, clips.audio_only, vanished]
    ids = cli.submit(*bad, *clips.weird, extra=("--output-dir", str(out)))
    ids += cli.submit(clips.good, preset="bad-option", extra=("--output-dir", str(out)))
    vanished.unlink()  # deleted after submit, before any node saw it
    by_name = {
        Path(path).name: job_id
        for job_id, path in query(cli.database, "SELECT id, input FROM jobs ORDER BY id")
    }
    assert len(by_name) == len(ids) == len(INPUT_CASES) + len(clips.weird)

    node = cli.start_node(NODE, "--ffmpeg", ffmpeg_path, *RETRY, slots=2)
    nodes.append(node)
    wait_for(lambda: finished(cli.database, ids), 60, message="the corpus finished")

    for name, (kind, words) in INPUT_CASES.items():
        row = job_row(cli.database, by_name[name])
        # input / config: retrying cannot help, so failed at once after exactly 1 attempt
        assert (row["state"], row["kind"], row["attempt"]) == ("failed", kind, 1), (name, row)
        assert_one_line(row["reason"], *words)
        runs = attempts_of(cli.database, by_name[name])
        assert [(o, k) for o, k, _ in runs] == [("failed", kind)], (name, runs)
        if name not in ("zero.mp4", "vanished.mp4"):  # those two never reach FFmpeg
            assert runs[0][2] == ffmpeg_path, (name, runs)
    for clip in clips.weird:
        row = job_row(cli.database, by_name[clip.name])
        assert (row["state"], row["attempt"], row["kind"]) == ("succeeded", 1, None), (
            clip.name,
            row,
            node.log_text(),
        )
    versions = {v for (v,) in query(cli.database, "SELECT ffmpeg_version FROM attempts")} - {None}
    assert len(versions) == 1 and versions.pop().startswith(version)

    produced = {f"{c.stem}-h264.mp4" for c in clips.weird}
    assert sorted(os.listdir(out)) == sorted(produced)  # no .part, no write test, no failures
    for name in produced:
        assert probe_json(out / name)["streams"][0]["codec_name"] == "h264"
    # Input and config failures say nothing about the node: it was not quarantined.
    assert node_state(cli.database, NODE)[0] == "online"
    assert_encodes_good_clip(cli, node, clips, tmp_path / "after")


# --------------------------------------------------------------------------- environment


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: an output folder that fills up during the encode."""
    mount_point = tmp_path / "tiny disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs as a full disk needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount_point
    finally:
        # Lazy: a node still being torn down may hold a file open there.
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_unwritable_output_folder_is_environment_dead_and_quarantines(
    cli: Cli, clips: Clips, nodes, tmp_path: Path, ffmpeg: tuple[str, str]
):
    ffmpeg_path, _ = ffmpeg
    out = tmp_path / "locked"
    (job_id,) = cli.submit(clips.good, extra=("--output-dir", str(out)))
    undo = make_unwritable(out)  # became read-only after submit
    try:
        node = cli.start_node(NODE, "--ffmpeg", ffmpeg_path, *RETRY, slots=1)
        nodes.append(node)
        wait_for(lambda: finished(cli.database, [job_id]), 30, message="the job finished")
        # The pre-run write test catches it: FFmpeg is never started (no argv recorded).
        row = assert_dead_after_three(cli, job_id, "environment", None)
        assert_one_line(row["reason"], "output folder is not writable", str(out))
        assert leftovers(out) == []
    finally:
        undo()
    assert leftovers(out) == []
    assert_quarantined_then_resumed(
        cli, node, clips, tmp_path / "after", "not writable", f"#{job_id}"
    )


def test_full_disk_is_environment_dead_and_quarantines(
    cli: Cli, clips: Clips, nodes, tmp_path: Path, tiny_disk: Path, ffmpeg: tuple[str, str]
):
    ffmpeg_path, _ = ffmpeg
    # ~95 KB of H.264 from this clip: it cannot fit in 64 KiB.
    big = make_clip(tmp_path / "big.mp4", seconds=2, size="320x240", rate=25)
    (job_id,) = cli.submit(big, extra=("--output-dir", str(tiny_disk)))
    node = cli.start_node(NODE, "--ffmpeg", ffmpeg_path, *RETRY, slots=1)
    nodes.append(node)
    wait_for(lambda: finished(cli.database, [job_id]), 60, message="the job finished")
    row = assert_dead_after_three(cli, job_id, "environment", ffmpeg_path)
    assert_one_line(row["reason"], "disk full", "No space left on device")
    assert leftovers(tiny_disk) == []  # the partial output was removed every time
    assert shutil.disk_usage(tiny_disk).used < 16 * 1024
    assert_quarantined_then_resumed(cli, node, clips, tmp_path / "after", "disk full")


def test_missing_encoder_is_environment_dead_without_quarantine(
    cli: Cli, clips: Clips, nodes, tmp_path: Path, ffmpeg: tuple[str, str]
):
    """An encoder this build lacks is this node's problem (another node's build may have it):
    with no other node, retried here, then dead. It says nothing about the node's health,
    so the node is not quarantined (a preset with a typo must not take a cluster down)."""
    ffmpeg_path, _ = ffmpeg
    add_presets(cli)
    out = tmp_path / "out"
    (job_id,) = cli.submit(clips.good, preset="no-encoder", extra=("--output-dir", str(out)))
    node = cli.start_node(NODE, "--ffmpeg", ffmpeg_path, *RETRY, slots=1)
    nodes.append(node)
    wait_for(lambda: finished(cli.database, [job_id]), 30, message="the job finished")
    row = assert_dead_after_three(cli, job_id, "environment", ffmpeg_path)
    assert_one_line(row["reason"], "encoder nosuchcodec is not available")
    assert leftovers(out) == []
    assert node_state(cli.database, NODE)[0] == "online"
    assert_encodes_good_clip(cli, node, clips, tmp_path / "after")


# --------------------------------------------------------------------------- transient


def test_stalled_input_is_transient_retried_then_dead(
    cli: Cli, clips: Clips, nodes, tmp_path: Path, ffmpeg: tuple[str, str]
):
    """A FIFO nobody writes to: FFmpeg waits forever without a byte of progress."""
    ffmpeg_path, _ = ffmpeg
    src = tmp_path / "src"
    src.mkdir()
    fifo = src / "stalled.mp4"
    shutil.copyfile(clips.good, fifo)
    out = tmp_path / "out"
    (job_id,) = cli.submit(fifo, extra=("--output-dir", str(out)))
    fifo.unlink()  # submit takes regular files only: the FIFO replaces the file after submit
    os.mkfifo(fifo)
    node = cli.start_node(NODE, "--ffmpeg", ffmpeg_path, "--stall-timeout", "1", *RETRY, slots=1)
    nodes.append(node)
    wait_for(lambda: finished(cli.database, [job_id]), 30, message="the job finished")
    row = assert_dead_after_three(cli, job_id, "transient", ffmpeg_path)
    assert_one_line(row["reason"], "stalled: no progress from FFmpeg for 1 s")
    assert leftovers(out) == []
    # A stall says nothing about the node: not quarantined, and it carries on.
    assert node_state(cli.database, NODE)[0] == "online"
    assert_encodes_good_clip(cli, node, clips, tmp_path / "after")
