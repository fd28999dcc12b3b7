"""Watchfolders through real node processes, real files and real clips: a file is queued once
it is complete, exactly once across nodes, restarts, rescans and a folder that went away."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from tests.conftest import Cli, NodeProcess, make_clip, query, wait_for

pytestmark = pytest.mark.integration

HB = "0.5"
FAST = ("--interval", "0.3", "--stable-scans", "2")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four small clips of different sizes (different content for "re-added" files)."""
    folder = tmp_path_factory.mktemp("watch-src")
    return [
        make_clip(folder / f"clip{i}.mp4", seconds=0.4 + 0.3 * i, size="64x48", rate=5)
        for i in range(4)
    ]


def start(cli: Cli, nodes: list, name: str) -> NodeProcess:
    node = cli.start_node(name, "--heartbeat", HB, slots=1)
    nodes.append(node)
    return node


def with_root(cli: Cli, folder: Path, name: str = "media") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cli.run("roots", "add", name)
    cli.run("roots", "map", name, str(folder))


def scan_count(url: str, name: str) -> int:
    return query(url, "SELECT scan_count FROM watchfolders WHERE name = %s", [name])[0][0]


def wait_scans(url: str, name: str, n: int, timeout: float = 20) -> None:
    """Let ``n`` more scans of ``name`` happen (observed in the database, not slept)."""
    target = scan_count(url, name) + n
    wait_for(lambda: scan_count(url, name) >= target, timeout, message=f"{n} scans of {name}")


def watch_jobs(url: str, name: str) -> list[tuple]:
    return query(
        url,
        "SELECT id, input, state FROM jobs WHERE meta->>'watchfolder' = %s ORDER BY id",
        [name],
    )


def watch_files(url: str, name: str) -> dict[str, tuple]:
    rows = query(
        url,
        """SELECT rel_path, state, queue_count, queued_size, job_id FROM watch_files
            WHERE watchfolder = %s""",
        [name],
    )
    return {r[0]: r[1:] for r in rows}


def watch_row(url: str, name: str) -> dict:
    rows = query(
        url,
        "SELECT error, last_scanned_by, scan_count FROM watchfolders WHERE name = %s",
        [name],
    )
    error, by, count = rows[0]
    return {"error": error, "by": by, "count": count}


def test_slowly_written_file_is_queued_only_when_complete(cli: Cli, nodes, tmp_path, sources):
    drop, out = tmp_path / "drop", tmp_path / "out"
    drop.mkdir()
    # A folder under no root: stored as this machine's path, pinned to this machine's node.
    cli.run(
        "watch",
        "add",
        str(drop),
        "--preset",
        "h264-mp4",
        "--output-dir",
        str(out),
        "--name",
        "drop",
        "--min-age",
        "1",
        *FAST,
    )
    (row,) = query(cli.database, "SELECT folder, pinned_node FROM watchfolders")
    identifier = row[1]
    assert row[0] == str(drop) and identifier
    start(cli, nodes, identifier)
    wait_scans(cli.database, "drop", 1)
    data = sources[3].read_bytes()
    target = drop / "growing.mp4"
    chunks = [data[i : i + len(data) // 6 + 1] for i in range(0, len(data), len(data) // 6 + 1)]
    assert len(chunks) >= 5
    for chunk in chunks:
        with target.open("ab") as fh:
            fh.write(chunk)
        # The next scan sees the new size; nothing may be queued while the file grows.
        wait_scans(cli.database, "drop", 1)
        assert watch_jobs(cli.database, "drop") == []
        assert watch_files(cli.database, "drop")["growing.mp4"][0] == "pending"
    final = target.stat().st_size
    assert final == len(data)
    wait_for(lambda: watch_jobs(cli.database, "drop"), 20, message="the job")
    ((job_id, job_input, _),) = watch_jobs(cli.database, "drop")
    assert job_input == str(target)
    assert watch_files(cli.database, "drop")["growing.mp4"][:3] == ("queued", 1, final)
    wait_for(lambda: watch_jobs(cli.database, "drop")[0][2] == "succeeded", 60, message="done")
    (input_size,) = query(
        cli.database, "SELECT input_size FROM attempts WHERE job_id = %s", [job_id]
    )[0]
    assert input_size == final
    assert (out / "growing-h264.mp4").stat().st_size > 0
    (pinned,) = query(cli.database, "SELECT pinned_node FROM jobs WHERE id = %s", [job_id])[0]
    assert pinned == identifier


def test_two_nodes_queue_each_file_once_and_restarts_queue_nothing(
    cli: Cli, nodes, tmp_path, sources
):
    media = tmp_path / "media"
    with_root(cli, media)
    incoming = media / "incoming"
    incoming.mkdir()
    (incoming / "sub").mkdir()
    cli.run(
        "watch",
        "add",
        str(incoming),
        "--preset",
        "h264-mp4",
        "--output-dir",
        str(media / "out"),
        *FAST,
    )
    assert query(cli.database, "SELECT folder, root, pinned_node FROM watchfolders") == [
        ("media:incoming", "media", None)
    ]
    start(cli, nodes, "w1")
    start(cli, nodes, "w2")
    names = ["a.mp4", "b.mp4", "sub/c.mp4"]
    for name, src in zip(names, sources, strict=False):
        shutil.copy(src, incoming / name)
    wait_for(lambda: len(watch_jobs(cli.database, "incoming")) == 3, 30, message="3 jobs")
    # Both nodes take part (one scan at a time, each scan by whichever claims it), and keep
    # rescanning the same files for a while.
    start_count, scanners = scan_count(cli.database, "incoming"), set()

    def both_scanned() -> bool:
        scanners.add(watch_row(cli.database, "incoming")["by"])
        return scanners == {"w1", "w2"} and scan_count(cli.database, "incoming") >= start_count + 8

    wait_for(both_scanned, 20, interval=0.02, message="scans by both nodes")
    jobs = watch_jobs(cli.database, "incoming")
    assert sorted(j[1] for j in jobs) == [f"media:incoming/{n}" for n in sorted(names)]
    assert {rel: f[:2] for rel, f in watch_files(cli.database, "incoming").items()} == {
        n: ("queued", 1) for n in names
    }
    wait_for(
        lambda: {j[2] for j in watch_jobs(cli.database, "incoming")} == {"succeeded"},
        60,
        message="jobs done",
    )

    # Restart both nodes (one crashed); a file that arrived meanwhile is queued, nothing else
    # again.
    assert nodes[0].stop(signal.SIGKILL) == -signal.SIGKILL  # a crash, wherever it was
    assert nodes[1].stop() == 0
    nodes.clear()
    shutil.copy(sources[3], incoming / "d.mp4")
    start(cli, nodes, "w1")
    start(cli, nodes, "w2")
    wait_for(lambda: len(watch_jobs(cli.database, "incoming")) == 4, 30, message="the 4th job")
    wait_scans(cli.database, "incoming", 6)
    jobs = watch_jobs(cli.database, "incoming")
    assert sorted(j[1] for j in jobs) == [f"media:incoming/{n}" for n in sorted([*names, "d.mp4"])]
    assert {f[1] for f in watch_files(cli.database, "incoming").values()} == {1}
    wait_for(
        lambda: {j[2] for j in watch_jobs(cli.database, "incoming")} == {"succeeded"},
        60,
        message="jobs done",
    )
    # Outputs of jobs do not count as new inputs, and the temp files never did.
    assert sorted(p.name for p in (media / "out").iterdir()) == [
        "a-h264.mp4",
        "b-h264.mp4",
        "c-h264.mp4",
        "d-h264.mp4",
    ]


def test_readded_file_is_queued_again_only_with_requeue_changed(cli: Cli, nodes, tmp_path, sources):
    media = tmp_path / "media"
    with_root(cli, media)
    for name, extra in (("req", ["--requeue-changed"]), ("noreq", [])):
        (media / name).mkdir()
        cli.run(
            "watch",
            "add",
            f"media:{name}",
            "--preset",
            "h264-mp4",
            "--output-dir",
            f"media:{name}-out",
            *FAST,
            *extra,
        )
    start(cli, nodes, "w1")
    for name in ("req", "noreq"):
        shutil.copy(sources[0], media / name / "a.mp4")
    for name in ("req", "noreq"):
        wait_for(lambda name=name: watch_jobs(cli.database, name), 20, message=f"{name} job")
    for name in ("req", "noreq"):
        (media / name / "a.mp4").unlink()
    for name in ("req", "noreq"):
        wait_for(
            lambda name=name: watch_files(cli.database, name)["a.mp4"][0] == "gone",
            20,
            message=f"{name}: a.mp4 gone",
        )
        shutil.copy(sources[2], media / name / "a.mp4")  # same name, other content
    new_size = sources[2].stat().st_size
    wait_for(lambda: len(watch_jobs(cli.database, "req")) == 2, 20, message="req queued again")
    assert watch_files(cli.database, "req")["a.mp4"][:3] == ("queued", 2, new_size)
    # Without requeue_changed: the new content is noted (size) and never queued.
    wait_for(lambda: watch_files(cli.database, "noreq")["a.mp4"][2] is not None, 5)
    wait_scans(cli.database, "noreq", 5)
    assert len(watch_jobs(cli.database, "noreq")) == 1
    assert watch_files(cli.database, "noreq")["a.mp4"][:2] == ("queued", 1)
    # Changed in place after it was queued: the same rule.
    shutil.copy(sources[1], media / "req" / "a.mp4")
    shutil.copy(sources[1], media / "noreq" / "a.mp4")
    wait_for(lambda: len(watch_jobs(cli.database, "req")) == 3, 20, message="req changed")
    wait_scans(cli.database, "noreq", 5)
    assert len(watch_jobs(cli.database, "noreq")) == 1


def test_missing_folder_is_an_error_and_its_return_queues_nothing(
    cli: Cli, nodes, tmp_path, sources
):
    media = tmp_path / "media"
    with_root(cli, media)
    cams = media / "cams"
    cams.mkdir()
    for i in range(2):
        shutil.copy(sources[i], cams / f"c{i}.mp4")
    # No output folder: the outputs land next to the inputs and must never count as new files.
    cli.run("watch", "add", "media:cams", "--preset", "h264-mp4", *FAST)
    start(cli, nodes, "w1")
    wait_for(lambda: len(watch_jobs(cli.database, "cams")) == 2, 20, message="2 jobs")
    wait_for(lambda: {j[2] for j in watch_jobs(cli.database, "cams")} == {"succeeded"}, 30)
    assert sorted(p.name for p in cams.iterdir()) == [
        "c0-h264.mp4",
        "c0.mp4",
        "c1-h264.mp4",
        "c1.mp4",
    ]
    wait_scans(cli.database, "cams", 3)
    before = watch_files(cli.database, "cams")
    assert sorted(before) == ["c0.mp4", "c1.mp4"]

    cams.rename(media / "cams.away")  # the share is gone
    wait_for(lambda: watch_row(cli.database, "cams")["error"], 20, message="an error")
    error = watch_row(cli.database, "cams")["error"]
    assert "media:cams" in error and "not found" in error and "w1" in error
    wait_scans(cli.database, "cams", 3)
    assert watch_files(cli.database, "cams") == before  # nothing marked gone
    listed = json.loads(cli.run("watch", "list", "--json").stdout)
    assert listed[0]["error"] == error and listed[0]["last_scanned_by"] == "w1"
    table = cli.run("watch").stdout
    assert "cams" in table and "error" in table and "not found" in table

    (media / "cams.away").rename(cams)  # back, same files
    wait_for(lambda: watch_row(cli.database, "cams")["error"] is None, 20, message="no error")
    wait_scans(cli.database, "cams", 4)
    assert len(watch_jobs(cli.database, "cams")) == 2
    assert watch_files(cli.database, "cams") == before


def test_watch_commands(cli: Cli, tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    bad = cli.run("watch", "add", str(tmp_path / "nope"), "--preset", "h264-mp4", check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "no such folder" in bad.stderr
    bad = cli.run("watch", "add", str(drop), "--preset", "nope", check=False)
    assert bad.returncode != 0 and "unknown preset" in bad.stderr
    bad = cli.run("watch", "add", str(drop), "--preset", "h264-mp4", "--interval", "x", check=False)
    assert bad.returncode != 0 and "--interval" in bad.stderr
    out = cli.run("watch", "add", str(drop), "--preset", "h264-mp4", "--include", "*.mov").stdout
    assert out.startswith("drop: watching") and "scanned by node" in out
    again = cli.run("watch", "add", str(drop), "--preset", "h264-mp4", check=False)
    assert again.returncode != 0 and "exists already" in again.stderr
    assert cli.run("watch", "pause", "drop").stdout.strip() == "drop: paused"
    assert cli.run("watch", "pause", "drop").stdout.strip() == "drop: already paused"
    assert "paused" in cli.run("watch", "list").stdout
    assert cli.run("watch", "resume", "drop").stdout.strip() == "drop: watching"
    (row,) = json.loads(cli.run("watch", "list", "--json").stdout)
    assert row["include_globs"] == ["*.mov"] and row["enabled"] and row["pinned_node"]
    assert cli.run("watch", "remove", "drop").returncode == 0
    gone = cli.run("watch", "remove", "drop", check=False)
    assert gone.returncode != 0 and "no watchfolder named 'drop'" in gone.stderr
    assert cli.run("watch").stdout.strip() == "no watchfolders"
