"""ABR ladder: renditions as separate jobs across nodes, a master playlist that depends on
them; a node killed mid-rendition costs only that rendition."""

from __future__ import annotations

import json
import signal
import subprocess

import psutil
import pytest

from tests.conftest import FFPROBE, Cli, job_states, make_clip, query, wait_for

pytestmark = pytest.mark.integration


def _kill_with_ffmpeg(pid: int) -> None:
    """A crash of the machine: the node and its FFmpeg (own process group) die together."""
    children = psutil.Process(pid).children(recursive=True)
    for proc in [psutil.Process(pid), *children]:
        proc.send_signal(signal.SIGKILL)


def test_ladder_survives_a_killed_node_and_the_master_playlist_plays(cli: Cli, nodes,
                                                                      tmp_path):
    src = make_clip(tmp_path / "talk show.mp4", seconds=12, size="1280x720", rate=25)
    out = tmp_path / "out"
    ids = cli.submit(src, preset="hls-ladder", extra=("--output-dir", str(out)))
    assert len(ids) == 4  # three renditions and the master playlist
    *renditions, master = ids
    deps = query(cli.database, "SELECT depends_on, deps_pending FROM jobs WHERE id = %s",
                 [master])[0]
    assert deps == (renditions, 3)
    a = cli.start_node("node-a", "--heartbeat", "0.5", slots=1)
    b = cli.start_node("node-b", "--heartbeat", "0.5", slots=1)
    nodes.extend([a, b])
    # Kill node-a while it encodes a rendition (it has written progress).
    victim = wait_for(
        lambda: query(cli.database, "SELECT id FROM jobs WHERE node = 'node-a' AND "
                                    "state = 'running' AND progress > 0"),
        60, message="node-a encoding a rendition",
    )[0][0]
    _kill_with_ffmpeg(a.proc.pid)
    a.proc.wait(10)
    wait_for(lambda: set(job_states(cli.database).values()) == {"succeeded"}, 120,
             message="the ladder finished on node-b")
    runs = dict(query(cli.database, "SELECT job_id, count(*) FROM attempts GROUP BY job_id"))
    assert runs[victim] == 2  # lost on node-a, then done on node-b
    assert all(runs[j] == 1 for j in ids if j != victim)  # nothing else ran twice
    outcomes = query(cli.database, "SELECT node, outcome FROM attempts WHERE job_id = %s "
                                   "ORDER BY id", [victim])
    assert outcomes == [("node-a", "lost"), ("node-b", "succeeded")]
    folder = out / "talk show-hls"
    text = (folder / "master.m3u8").read_text()
    assert [ln for ln in text.splitlines() if not ln.startswith("#")] == [
        "1080p.m3u8", "720p.m3u8", "480p.m3u8"]
    assert "RESOLUTION=1280x720" in text and "RESOLUTION=854x480" in text
    probed = json.loads(subprocess.run(
        [FFPROBE, "-v", "error", "-print_format", "json", "-show_programs",
         str(folder / "master.m3u8")], capture_output=True, text=True, check=True).stdout)
    heights = sorted(
        s["height"] for p in probed["programs"] for s in p["streams"] if "height" in s)
    assert heights == [480, 720, 720]  # 1080p is never upscaled from a 720p source
    assert [p.name for p in folder.iterdir() if ".part" in p.name] == []
