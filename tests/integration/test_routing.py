"""Acceptance: routing on a real cluster (storage roots, tags, pinning, FFmpeg versions),
priority aging and "move to top", with real node processes and real FFmpeg."""

from __future__ import annotations

import itertools
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Cli, job_states, make_clip, query, wait_for
from tests.integration.test_node import all_done

pytestmark = pytest.mark.integration

BEAT = ("--heartbeat", "0.5")


def node_state(url: str, identifier: str) -> str | None:
    rows = query(url, "SELECT state FROM nodes WHERE identifier = %s", [identifier])
    return rows[0][0] if rows else None


def reason_of(url: str, job_id: int) -> str | None:
    return query(url, "SELECT reason FROM jobs WHERE id = %s", [job_id])[0][0]


def attempt_nodes(url: str, job_id: int) -> list[str]:
    rows = query(url, "SELECT node FROM attempts WHERE job_id = %s ORDER BY id", [job_id])
    return [r[0] for r in rows]


def tiny_clips(folder: Path, prefix: str, n: int) -> list[Path]:
    return [make_clip(folder / f"{prefix} {i}.mp4", seconds=0.5, size="64x48") for i in range(n)]


# --------------------------------------------------------------------------- storage roots


def test_root_references_run_only_on_nodes_that_have_the_root(cli: Cli, tmp_path, nodes):
    """Two paths to one folder: the submitter's (A: storage/media) and node b's (B: a
    symlink view-b -> storage). Jobs store ``media:...``; b runs them through its own path;
    c (no such root) and d (root mapped to a missing folder) are online all along and claim
    nothing."""
    path_a = tmp_path / "storage" / "media"
    files = tiny_clips(path_a / "in", "clip", 3)
    (tmp_path / "view-b").symlink_to(tmp_path / "storage", target_is_directory=True)
    path_b = tmp_path / "view-b" / "media"
    assert path_b.is_dir() and path_a.resolve() == path_b.resolve()
    cli.run("roots", "add", "media")

    ids = cli.submit(
        *files,
        preset="remux-mp4",
        extra=("--root", f"media={path_a}", "--output-dir", str(path_a / "out")),
    )
    assert len(ids) == 3
    stored = query(
        cli.database,
        "SELECT input, output, in_roots, out_roots, pinned_node FROM jobs ORDER BY id",
    )
    assert stored == [
        (f"media:in/clip {i}.mp4", f"media:out/clip {i}-remux.mp4", ["media"], ["media"], None)
        for i in range(3)
    ]

    # c has no root at all; d maps it to a folder that does not exist.
    nodes.append(cli.start_node("c", *BEAT, slots=2))
    nodes.append(
        cli.start_node("d", *BEAT, "--root", f"media={tmp_path / 'nowhere' / 'media'}", slots=2)
    )
    # Both are online and have looked at the queue: the waiting reason says nobody can reach
    # the root (written by a node's periodic explain_waiting pass, after its claim loop began).
    for job_id in ids:
        wait_for(
            lambda job_id=job_id: reason_of(cli.database, job_id)
            == "waiting: no online node can reach storage root media",
            20,
            message="waiting reason naming the root",
        )
    assert {node_state(cli.database, n) for n in ("c", "d")} == {"online"}
    (status,) = query(
        cli.database, "SELECT roots_read, roots_write, roots_status FROM nodes WHERE identifier='d'"
    )
    assert status[0] == [] and status[1] == []
    assert status[2] == {
        "media": {
            "path": str(tmp_path / "nowhere" / "media"),
            "read": False,
            "write": False,
            "error": "not found",
        }
    }
    assert set(job_states(cli.database).values()) == {"queued"}
    assert query(cli.database, "SELECT count(*) FROM attempts") == [(0,)]

    nodes.append(cli.start_node("b", *BEAT, "--root", f"media={path_b}", slots=2))
    wait_for(lambda: all_done(cli.database, 3), 60, message="jobs finished on b")
    assert set(job_states(cli.database).values()) == {"succeeded"}, nodes[-1].log_text()
    (b_status,) = query(
        cli.database, "SELECT roots_read, roots_write FROM nodes WHERE identifier = 'b'"
    )
    assert b_status == (["media"], ["media"])
    for i, job_id in enumerate(ids):
        assert attempt_nodes(cli.database, job_id) == ["b"]
        (argv,) = query(cli.database, "SELECT argv FROM attempts WHERE job_id = %s", [job_id])[0]
        assert str(path_b / "in" / f"clip {i}.mp4") in argv, argv
        assert not any(str(path_a) in arg for arg in argv), argv
        assert any(str(path_b / "out") in arg for arg in argv), argv
        assert (path_a / "out" / f"clip {i}-remux.mp4").stat().st_size > 0
        assert reason_of(cli.database, job_id) is None
    # c and d never claimed anything and are still running.
    assert query(cli.database, "SELECT DISTINCT node FROM attempts") == [("b",)]
    assert all(n.proc.poll() is None for n in nodes)


def test_local_path_outside_every_root_pins_the_job_to_the_submitting_node(
    cli: Cli, tmp_path, nodes
):
    """Once the cluster has roots, a file under none of them runs only on the node named
    like the submitting machine (settings ``identifier``)."""
    cli.run("roots", "add", "media")
    config = cli.home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "settings.toml").write_text('identifier = "here"\n', encoding="utf-8")
    (src,) = tiny_clips(tmp_path / "local", "loose", 1)
    (job_id,) = cli.submit(src, preset="remux-mp4", extra=("--output-dir", str(tmp_path / "o")))
    assert query(cli.database, "SELECT input, pinned_node FROM jobs") == [(str(src), "here")]
    nodes.append(cli.start_node("elsewhere", *BEAT, slots=1))
    wait_for(
        lambda: (reason_of(cli.database, job_id) or "").startswith(
            "waiting: pinned to node here"
        ),
        20,
        message="pinned waiting reason",
    )
    nodes.append(cli.start_node("here", *BEAT, slots=1))
    wait_for(lambda: all_done(cli.database, 1), 30)
    assert job_states(cli.database) == {job_id: "succeeded"}
    assert attempt_nodes(cli.database, job_id) == ["here"]


# --------------------------------------------------------------------------- capabilities


def test_tags_pins_and_ffmpeg_versions_route_jobs_and_explain_waiting(
    cli: Cli, tmp_path, nodes
):
    src = tmp_path / "src"
    gpu_files = tiny_clips(src, "gpu", 4)
    plain_files = tiny_clips(src, "plain", 4)
    # Tagged jobs first: they head the queue, so the untagged node must skip them.
    tagged = cli.submit(
        *gpu_files, preset="remux-mp4", extra=("--tag", "gpu", "--output-dir", str(tmp_path / "o"))
    )
    plain = cli.submit(
        *plain_files, preset="remux-mp4", extra=("--output-dir", str(tmp_path / "o"))
    )
    assert query(cli.database, "SELECT DISTINCT tags FROM jobs WHERE id = ANY(%s)", [tagged]) == [
        (["gpu"],)
    ]
    # The untagged node alone: it runs the untagged jobs behind the tagged ones and leaves
    # those alone.
    nodes.append(cli.start_node("cpu", *BEAT, slots=1))
    wait_for(
        lambda: all(job_states(cli.database)[i] == "succeeded" for i in plain),
        60,
        message="untagged jobs finished on cpu",
    )
    for job_id in plain:
        assert attempt_nodes(cli.database, job_id) == ["cpu"]
    for job_id in tagged:
        assert job_states(cli.database)[job_id] == "queued"
        assert attempt_nodes(cli.database, job_id) == []
    # Both online, with more untagged work arriving: the tagged jobs go to the gpu node only.
    gpu = cli.start_node("gpu", *BEAT, "--tags", "gpu", slots=1)
    nodes.append(gpu)
    more = cli.submit(
        *tiny_clips(src, "more", 4), preset="remux-mp4", extra=("--output-dir", str(tmp_path / "o"))
    )
    wait_for(lambda: all_done(cli.database, 12), 60, message="12 jobs finished")
    assert set(job_states(cli.database).values()) == {"succeeded"}
    for job_id in tagged:
        assert attempt_nodes(cli.database, job_id) == ["gpu"]
    assert all(len(attempt_nodes(cli.database, job_id)) == 1 for job_id in more)

    # The gpu node leaves: a new gpu job waits, and says why.
    assert gpu.stop(signal.SIGTERM, timeout=30) == 0
    assert node_state(cli.database, "gpu") == "offline"
    out2 = ("--output-dir", str(tmp_path / "o2"))
    (late,) = cli.submit(gpu_files[0], preset="remux-mp4", extra=("--tag", "gpu", *out2))
    (pinned,) = cli.submit(plain_files[0], preset="remux-mp4", extra=("--pin", "ghost", *out2))
    (too_new,) = cli.submit(
        plain_files[1], preset="remux-mp4", extra=("--ffmpeg-min", "99", *out2)
    )
    wait_for(
        lambda: reason_of(cli.database, late) == "waiting: no online node has the tag(s) gpu",
        20,
        message="tag waiting reason",
    )
    wait_for(lambda: reason_of(cli.database, too_new), 20, message="FFmpeg waiting reason")
    wait_for(lambda: reason_of(cli.database, pinned), 20, message="pin waiting reason")
    assert reason_of(cli.database, pinned).startswith("waiting: pinned to node ghost")
    ffmpeg_reason = reason_of(cli.database, too_new)
    assert ffmpeg_reason.startswith("waiting: ") and "FFmpeg" in ffmpeg_reason, ffmpeg_reason
    assert "99" in ffmpeg_reason, ffmpeg_reason
    for job_id in (late, pinned, too_new):
        assert job_states(cli.database)[job_id] == "queued"
        assert attempt_nodes(cli.database, job_id) == []

    # The gpu node comes back: it runs the tagged job; the other two keep waiting.
    nodes.append(cli.start_node("gpu", *BEAT, "--tags", "gpu", slots=1, log_name="gpu-2"))
    wait_for(lambda: job_states(cli.database)[late] == "succeeded", 30, message="gpu job ran")
    assert attempt_nodes(cli.database, late) == ["gpu"]
    assert reason_of(cli.database, late) is None
    assert (tmp_path / "o2" / "gpu 0-remux.mp4").stat().st_size > 0
    states = job_states(cli.database)
    assert (states[pinned], states[too_new]) == ("queued", "queued")
    assert reason_of(cli.database, pinned).startswith("waiting: pinned to node ghost")
    assert "FFmpeg" in reason_of(cli.database, too_new)


# --------------------------------------------------------------------------- aging

P_HIGH, P_LOW, AGING_S, BACKLOG = 10, 0, 0.5, 2


class HighStream:
    """Keeps ``BACKLOG`` priority-``P_HIGH`` remux jobs queued: copies of a template job,
    each with its own output, inserted the moment fewer are queued."""

    def __init__(self, url: str, template: int, out_dir: Path) -> None:
        self.url, self.template, self.out_dir = url, template, out_dir
        self.stop = threading.Event()
        self.count = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HighStream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.stop.is_set():
                    (queued,) = conn.execute(
                        "SELECT count(*) FROM jobs WHERE state = 'queued' AND priority = %s",
                        [P_HIGH],
                    ).fetchone()
                    for _ in range(BACKLOG - queued):
                        self.count += 1
                        conn.execute(
                            """INSERT INTO jobs (input, output, preset, preset_args, needs,
                                   priority, max_attempts, meta, policy, submitted_by)
                               SELECT input, %s, preset, preset_args, needs, priority,
                                      max_attempts, meta, policy, submitted_by
                                 FROM jobs WHERE id = %s""",
                            [str(self.out_dir / f"stream {self.count}.mp4"), self.template],
                        )
                    time.sleep(0.005)
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def max_cycle(claims: list[tuple]) -> float:
    """The longest time between two consecutive claims (one job's claim + run)."""
    times = [c[1] for c in claims]
    return max((b - a).total_seconds() for a, b in itertools.pairwise(times))


def _aging_run(cli: Cli, tmp_path: Path, nodes: list, aging_s: float, window: float) -> dict:
    """One low-priority job, then a constant stream of high-priority ones on a one-slot
    node, for ``window`` seconds or until the low job starts."""
    cli.run("db", "migrate")
    query(cli.database, "UPDATE cluster SET aging_s = %s", [aging_s])
    clip = make_clip(tmp_path / "tiny.mp4", seconds=0.2, size="32x24", rate=5, audio=False)
    out = tmp_path / "out"
    (low,) = cli.submit(
        clip, preset="remux-mp4", extra=("--priority", str(P_LOW), "--output-dir", str(out))
    )
    (template,) = cli.submit(
        clip,
        preset="remux-mp4",
        extra=("--priority", str(P_HIGH), "--output-dir", str(tmp_path / "tpl")),
    )
    with HighStream(cli.database, template, out) as stream:
        wait_for(
            lambda: query(cli.database, "SELECT count(*) FROM jobs WHERE state = 'queued' "
                          "AND priority = %s", [P_HIGH])[0][0] >= BACKLOG,
            10,
        )
        nodes.append(cli.start_node("solo", *BEAT, slots=1))
        wait_for(lambda: query(cli.database, "SELECT 1 FROM attempts"), 30, message="first claim")
        deadline = time.monotonic() + window
        while time.monotonic() < deadline and not attempt_nodes(cli.database, low):
            time.sleep(0.05)
    assert stream.error is None, stream.error
    (created,) = query(cli.database, "SELECT created_at FROM jobs WHERE id = %s", [low])[0]
    claims = query(
        cli.database,
        "SELECT a.job_id, a.claimed_at, a.started_at, j.created_at FROM attempts a "
        "JOIN jobs j ON j.id = a.job_id ORDER BY a.claimed_at, a.id",
    )
    return {"low": low, "template": template, "created": created, "claims": claims}


def test_priority_aging_bounds_the_wait_behind_a_stream_of_higher_priority_jobs(
    cli: Cli, tmp_path, nodes
):
    """The bound. A queued job's effective priority is ``priority + floor(age / aging_s)``
    and ties go to the older job. Every job ages, so a job of priority p is never overtaken
    by a priority-P job created more than (P - p) * aging_s after it: with c_h - c_low >=
    (P - p) * aging_s, floor(age_low / a) >= P - p + floor(age_h / a).

    Hence on one slot, with a stream keeping N priority-P jobs queued (queue depth N, one
    cycle = claim + run of one job <= r), the low job is claimed within
    (P - p) * aging_s + (N + 1) * r (+ claim slack) of its creation: after (P - p) * aging_s
    only the <= N queued and 1 running jobs created earlier can still go first. Here
    P - p = 10, aging_s = 0.5 s, N = 2: within 5 s + 3 r (about 5.5 s). And it cannot be
    claimed before (P - p) * aging_s = 5 s while the stream has a job queued (a fresh
    priority-10 job has effective priority >= 10 > floor(age_low / 0.5)).

    (The schema's comment says "(difference + 1) * aging_s": that holds only while the
    backlog ahead of the job drains within aging_s; deeper backlogs add their drain time.)
    """
    window = (P_HIGH - P_LOW) * AGING_S + 8
    run = _aging_run(cli, tmp_path, nodes, AGING_S, window)
    low, created, claims = run["low"], run["created"], run["claims"]
    low_claims = [c for c in claims if c[0] == low]
    assert low_claims, f"low-priority job never claimed within {window} s"
    (_, low_claimed, low_started, _) = low_claims[0]
    before = [c for c in claims if c[1] < low_claimed]
    # It did wait: high-priority jobs created after it were claimed first, steadily.
    overtaking = [c for c in before if c[3] > created]
    assert len(overtaking) >= 8, len(overtaking)
    cycle = max_cycle([*before, low_claims[0]])
    waited_claim = (low_claimed - created).total_seconds()
    waited_start = (low_started - created).total_seconds()
    bound = (P_HIGH - P_LOW) * AGING_S + (BACKLOG + 1) * cycle + 0.5
    print(
        f"low job claimed {waited_claim:.2f} s / started {waited_start:.2f} s after creation; "
        f"{len(overtaking)} newer high-priority jobs went first; max cycle {cycle:.3f} s; "
        f"bound {bound:.2f} s"
    )
    assert waited_start <= bound, (waited_start, bound)
    assert waited_claim >= (P_HIGH - P_LOW) * AGING_S, waited_claim
    assert job_states(cli.database)[low] in ("running", "succeeded")


def test_without_aging_the_stream_starves_the_low_priority_job(cli: Cli, tmp_path, nodes):
    """Control for the bound above: same setup, aging_s = 1e9 (no aging). Within the bound's
    window the low-priority job is never claimed while the high-priority stream runs."""
    window = (P_HIGH - P_LOW) * AGING_S + 1.5
    run = _aging_run(cli, tmp_path, nodes, 1e9, window)
    assert not attempt_nodes(cli.database, run["low"])
    assert job_states(cli.database)[run["low"]] == "queued"
    claims = run["claims"]
    assert len(claims) >= 8, len(claims)
    # The stream was still being served later than the aging bound would have allowed.
    last_claim = (claims[-1][1] - run["created"]).total_seconds()
    bound = (P_HIGH - P_LOW) * AGING_S + (BACKLOG + 1) * max_cycle(claims) + 0.5
    print(f"without aging: unclaimed {last_claim:.2f} s after creation (bound {bound:.2f} s)")
    assert last_claim > bound, (last_claim, bound)


# --------------------------------------------------------------------------- move to top


def test_move_to_top_beats_aged_jobs(cli: Cli, tmp_path, nodes):
    """``ffdesk top`` makes a job the next one claimed, even against jobs whose waiting
    time (priority aging) lifted them above every plain priority."""
    src = tmp_path / "src"
    old, high, new = tiny_clips(src, "job", 3)
    out = ("--output-dir", str(tmp_path / "o"))
    (old_id,) = cli.submit(old, preset="remux-mp4", extra=out)
    (high_id,) = cli.submit(high, preset="remux-mp4", extra=("--priority", "5", *out))
    (new_id,) = cli.submit(new, preset="remux-mp4", extra=out)
    # The old job has waited 10 minutes: aging (60 s a step) lifts it to 0 + 10.
    query(
        cli.database,
        "UPDATE jobs SET created_at = now() - interval '10 minutes' WHERE id = %s",
        [old_id],
    )
    assert query(cli.database, "SELECT aging_s FROM cluster") == [(60.0,)]
    assert cli.run("top", str(new_id)).stdout.strip() == f"{new_id}: moved to the top"
    nodes.append(cli.start_node("solo", *BEAT, slots=1))
    wait_for(lambda: all_done(cli.database, 3), 30)
    assert set(job_states(cli.database).values()) == {"succeeded"}
    order = [r[0] for r in query(cli.database, "SELECT job_id FROM attempts ORDER BY claimed_at")]
    assert order == [new_id, old_id, high_id], query(
        cli.database, "SELECT id, priority, created_at FROM jobs ORDER BY id"
    )
