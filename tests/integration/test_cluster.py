"""Cluster acceptance: several real node processes, real failures (kill -9, SIGSTOP, a
restarted PostgreSQL, a killed listener), remote control and a shared embedded database."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from ffdesk.db.embedded import EmbeddedServer
from tests.conftest import Cli, NodeProcess, make_clip, probe_json, query, wait_for
from tests.integration.test_node import add_slow_preset, all_done, ffmpeg_children, part_files

pytestmark = pytest.mark.integration

HB = "1"  # heartbeat seconds for these tests: lease = 3 s


def start(cli: Cli, nodes: list, name: str, *args: str, slots: int = 2) -> NodeProcess:
    node = cli.start_node(name, "--heartbeat", HB, *args, slots=slots)
    nodes.append(node)
    return node


def node_jobs(url: str, node: str) -> list[int]:
    rows = query(url, "SELECT id FROM jobs WHERE state = 'running' AND node = %s", [node])
    return [r[0] for r in rows]


def test_kill_9_fails_over_and_every_job_succeeds_exactly_once(cli: Cli, nodes, tmp_path):
    add_slow_preset(cli)
    src = tmp_path / "src"
    files = [make_clip(src / f"c{i:02d}.mp4", seconds=0.6, size="64x48", rate=5) for i in range(60)]
    out = tmp_path / "out"
    ids = cli.submit(*files, preset="slow-h264", extra=("--output-dir", str(out)))
    for name in ("n1", "n2", "n3"):
        start(cli, nodes, name)
    victim = nodes[0]
    wait_for(lambda: len(node_jobs(cli.database, "n1")) == 2, 60, message="n1 busy")
    wait_for(lambda: ffmpeg_children(victim.proc.pid), 10)
    stranded = node_jobs(cli.database, "n1")
    children = ffmpeg_children(victim.proc.pid)
    victim.proc.kill()
    (killed_at,) = query(cli.database, "SELECT clock_timestamp()")[0]
    victim.proc.wait(10)
    for child in children:  # its orphaned ffmpeg would write on; the machine "died"
        child.kill()
    wait_for(lambda: all_done(cli.database, 60), 120, message="all 60 jobs done")
    rows = query(cli.database, "SELECT id, state, node FROM jobs ORDER BY id")
    assert {r[1] for r in rows} == {"succeeded"}
    succeeded = query(
        cli.database,
        "SELECT job_id, count(*) FROM attempts WHERE outcome = 'succeeded' GROUP BY job_id",
    )
    assert len(succeeded) == 60 and {c for _, c in succeeded} == {1}
    for job_id in stranded:
        attempts = query(
            cli.database,
            "SELECT node, outcome, claimed_at FROM attempts WHERE job_id = %s ORDER BY id",
            [job_id],
        )
        assert attempts[0][:2] == ("n1", "lost")
        assert attempts[-1][0] in ("n2", "n3") and attempts[-1][1] == "succeeded"
        delay = (attempts[-1][2] - killed_at).total_seconds()
        print(f"job #{job_id}: running again on {attempts[-1][0]} {delay:.2f} s after kill -9")
        assert delay <= 3 * float(HB) + 1, delay
    for f in files:
        info = probe_json(out / f"{f.stem}-slow.mp4")
        assert info["streams"][0]["codec_name"] == "h264"
        assert abs(float(info["format"]["duration"]) - 0.6) < 0.3
    assert part_files(out) == []
    events = query(cli.database, "SELECT job_id FROM events WHERE kind = 'rescue'")
    assert sorted(e[0] for e in events) == sorted(stranded)
    lost = query(cli.database, "SELECT state, state_reason FROM nodes WHERE identifier = 'n1'")
    assert lost[0][0] == "offline" and "lost" in lost[0][1]
    assert ids


def test_zombie_node_writes_nothing_after_losing_its_job(cli: Cli, nodes, tmp_path):
    add_slow_preset(cli)
    clip = make_clip(tmp_path / "zombie.mp4", seconds=6, size="64x48", rate=5)
    out = tmp_path / "out"
    (job_id,) = cli.submit(clip, preset="slow-h264", extra=("--output-dir", str(out)))
    zombie = start(cli, nodes, "zombie", slots=1)
    wait_for(lambda: node_jobs(cli.database, "zombie") == [job_id], 30)
    (old_ffmpeg,) = wait_for(lambda: ffmpeg_children(zombie.proc.pid), 10)
    zombie.proc.send_signal(signal.SIGSTOP)  # frozen: no heartbeat, no writes
    try:
        start(cli, nodes, "rescuer", slots=1)
        wait_for(
            lambda: node_jobs(cli.database, "rescuer") == [job_id],
            30,
            message="the job moved to the rescuer",
        )
    finally:
        zombie.proc.send_signal(signal.SIGCONT)
    wait_for(
        lambda: not old_ffmpeg.is_running() or old_ffmpeg.status() == "zombie",
        10,
        message="the zombie's ffmpeg stopped",
    )
    wait_for(lambda: all_done(cli.database, 1), 60)
    assert query(cli.database, "SELECT state, node FROM jobs") == [("succeeded", "rescuer")]
    attempts = query(cli.database, "SELECT node, outcome FROM attempts ORDER BY id")
    assert attempts == [("zombie", "lost"), ("rescuer", "succeeded")]
    info = probe_json(out / "zombie-slow.mp4")  # the new owner's output, intact
    assert abs(float(info["format"]["duration"]) - 6.0) < 0.5
    assert part_files(out) == []
    assert zombie.proc.poll() is None  # the zombie lives on as a healthy node
    wait_for(lambda: f"job #{job_id}: stopped, not ours any more" in zombie.log_text(), 10)


def test_cancel_from_another_process_stops_ffmpeg_within_a_second(cli: Cli, clips, nodes, tmp_path):
    add_slow_preset(cli)
    (job_id,) = cli.submit(
        clips.long, preset="slow-h264", extra=("--output-dir", str(tmp_path / "o"))
    )
    node = start(cli, nodes, "owner", slots=1)
    (ffmpeg,) = wait_for(lambda: ffmpeg_children(node.proc.pid), 30)
    t0 = time.monotonic()
    cli.run("cancel", str(job_id))
    wait_for(
        lambda: not ffmpeg.is_running() or ffmpeg.status() == "zombie",
        1.0,
        interval=0.01,
        message="ffmpeg stopped within 1 s",
    )
    print(f"cancel -> ffmpeg gone: {(time.monotonic() - t0) * 1000:.0f} ms (via NOTIFY)")


def test_cancel_reaches_a_deaf_node_within_one_heartbeat(cli: Cli, clips, nodes, tmp_path):
    """No LISTEN at all (--poll-only): the heartbeat's lease renewal finds the cancel."""
    add_slow_preset(cli)
    (job_id,) = cli.submit(
        clips.long, preset="slow-h264", extra=("--output-dir", str(tmp_path / "o"))
    )
    node = start(cli, nodes, "deaf", "--poll-only", slots=1)
    (ffmpeg,) = wait_for(lambda: ffmpeg_children(node.proc.pid), 30)
    t0 = time.monotonic()
    cli.run("cancel", str(job_id))
    wait_for(
        lambda: not ffmpeg.is_running() or ffmpeg.status() == "zombie",
        float(HB) + 1.5,
        interval=0.02,
        message="ffmpeg stopped within one heartbeat",
    )
    print(f"cancel -> ffmpeg gone without NOTIFY: {(time.monotonic() - t0) * 1000:.0f} ms")


def test_pause_drain_resume_from_another_process(cli: Cli, nodes, tmp_path):
    add_slow_preset(cli)
    clips = [make_clip(tmp_path / f"p{i}.mp4", seconds=3, size="64x48", rate=5) for i in range(3)]
    ids = cli.submit(*clips, preset="slow-h264", extra=("--output-dir", str(tmp_path / "o")))
    node = start(cli, nodes, "desk", slots=2)
    wait_for(lambda: len(node_jobs(cli.database, "desk")) == 2, 30)
    assert cli.run("nodes", "pause", "desk").stdout.strip() == "desk: online -> paused"
    # Paused: running jobs go back at once, without spending their attempt.
    wait_for(lambda: not ffmpeg_children(node.proc.pid), 3, message="ffmpeg stopped")
    wait_for(
        lambda: set(s for _, s in query(cli.database, "SELECT id, state FROM jobs")) == {"queued"},
        5,
    )
    assert {r[0] for r in query(cli.database, "SELECT attempt FROM jobs")} == {0}
    listed = json.loads(cli.run("nodes", "--json").stdout)
    assert listed[0]["state"] == "paused" and listed[0]["running"] == 0
    # Drain: claims nothing new.
    cli.run("nodes", "drain", "desk")
    cli.run("nodes", "resume", "desk")
    wait_for(lambda: len(node_jobs(cli.database, "desk")) == 2, 10, message="resumed")
    cli.run("nodes", "drain", "desk")
    wait_for(
        lambda: (
            sum(1 for r in query(cli.database, "SELECT state FROM jobs") if r[0] == "succeeded")
            == 2
        ),
        30,
        message="running jobs finished",
    )
    assert [
        r[0] for r in query(cli.database, "SELECT state FROM jobs WHERE id = %s", [ids[2]])
    ] == ["queued"]  # draining: not claimed
    cli.run("nodes", "resume", "desk")
    wait_for(lambda: all_done(cli.database, 3), 30)
    kinds = [
        r[0]
        for r in query(
            cli.database, "SELECT kind FROM events WHERE kind LIKE 'node-%%' ORDER BY id"
        )
    ]
    assert kinds[1:] == ["node-pause", "node-drain", "node-resume", "node-drain", "node-resume"]
    missing = cli.run("nodes", "pause", "nobody", check=False)
    assert missing.returncode != 0 and "no node named 'nobody'" in missing.stderr


def test_priority_change_reorders_the_queue(cli: Cli, clips, nodes, tmp_path):
    ids = cli.submit(
        clips.good,
        clips.folder / "with space.mp4",
        preset="remux-mp4",
        extra=("--output-dir", str(tmp_path / "o")),
    )
    assert cli.run("priority", "50", str(ids[1])).stdout.strip() == f"{ids[1]}: priority 50"
    start(cli, nodes, "p", slots=1)
    wait_for(lambda: all_done(cli.database, 2), 30)
    order = [r[0] for r in query(cli.database, "SELECT job_id FROM attempts ORDER BY id")]
    assert order == [ids[1], ids[0]]


def test_killed_listener_reconnects_and_still_wakes_the_node(cli: Cli, clips, nodes, tmp_path):
    # Poll every 60 s: only NOTIFY can make the node start a job quickly.
    node = start(cli, nodes, "ear", "--poll", "60", slots=1)
    wait_for(
        lambda: query(
            cli.database, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'ffdesk-listen'"
        ),
        30,
    )
    killed = query(
        cli.database,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'ffdesk-listen'",
    )
    assert killed == [(True,)]
    wait_for(lambda: "listener reconnected" in node.log_text(), 10)
    t0 = time.monotonic()
    cli.submit(clips.good, extra=("--output-dir", str(tmp_path / "o")))
    wait_for(lambda: all_done(cli.database, 1), 10, message="woken by NOTIFY, not by the poll")
    assert time.monotonic() - t0 < 10


def test_postgres_restart_while_jobs_run(tmp_path, nodes):
    """The whole server goes away and comes back: nodes keep FFmpeg running, retry, and
    report their results; nothing is lost or duplicated."""
    server = EmbeddedServer(tmp_path / "own-pg")
    url = server.acquire()
    try:
        cli = Cli(tmp_path / "home", url)
        add_slow_preset(cli)
        files = [
            make_clip(tmp_path / f"r{i}.mp4", seconds=3, size="64x48", rate=5) for i in range(6)
        ]
        ids = cli.submit(*files, preset="slow-h264", extra=("--output-dir", str(tmp_path / "o")))
        consumer = BusConsumer(url)  # a console in another thread, through the outage
        a = start(cli, nodes, "ra", slots=2)
        start(cli, nodes, "rb", slots=2)
        wait_for(lambda: len(query(url, "SELECT 1 FROM jobs WHERE state = 'running'")) == 4, 30)
        server._stop()
        time.sleep(2)  # the outage itself: the thing under test is its length, not a wait
        server._start()
        wait_for(lambda: all_done(url, 6), 90, message="all jobs done after the restart")
        assert {r[0] for r in query(url, "SELECT state FROM jobs")} == {"succeeded"}
        per_job = query(
            url, "SELECT job_id, count(*) FROM attempts WHERE outcome = 'succeeded' GROUP BY job_id"
        )
        assert len(per_job) == 6 and {c for _, c in per_job} == {1}
        # The node told the user it lost the database: from a heartbeat ("database
        # unavailable") or, when the outage fits into one heartbeat's wait, from its listener.
        assert re.search(r"database unavailable|cannot connect to the database", a.log_text())
        assert "Traceback" not in a.log_text()
        # The event consumer lost its connections too, reconnected, and caught up.
        wait_for(
            lambda: all(consumer.states.get(i) == "succeeded" for i in ids),
            30,
            message="the event consumer saw every final state",
        )
        assert consumer.bus.reconnects >= 1
        # Per job, changes arrive in order (a stale one is never delivered after a newer
        # one). Across jobs, a transaction that drew a lower revision and committed later
        # is delivered later: revisions are drawn before commit (ffdesk/db/changes.py).
        for job_revisions in consumer.revisions.values():
            assert job_revisions == sorted(set(job_revisions))
    finally:
        for node in nodes:
            node.stop(timeout=60)
        if "consumer" in locals():
            consumer.close()
        server.release()
        server.stop()


class BusConsumer:
    """An EventBus on its own thread and loop, recording every job's latest state."""

    def __init__(self, url: str) -> None:
        import asyncio
        import threading

        from ffdesk.engine.events import EventBus, JobChanged
        from ffdesk.engine.loop import run

        self.states: dict[int, str] = {}
        self.revisions: dict[int, list[int]] = {}

        def on_event(event) -> None:
            if isinstance(event, JobChanged):
                self.states[event.job.id] = str(event.job.state)
                self.revisions.setdefault(event.job.id, []).append(event.job.revision)

        self.bus = EventBus(
            url, on_event=on_event, start_from_revision=0, ping_interval=1, poll_interval=1
        )
        self.loop: asyncio.AbstractEventLoop | None = None

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.bus.run()

        self.thread = threading.Thread(target=lambda: run(main()), daemon=True)
        self.thread.start()
        wait_for(lambda: self.bus.connected, 30, message="event bus connected")

    def close(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.bus.stop)
        self.thread.join(15)


def test_shared_embedded_database_over_tcp_needs_the_password(tmp_path, nodes, clips):
    owner = Cli(tmp_path / "owner", None)
    port = _free_port()
    out = owner.run("db", "share", "--port", str(port)).stdout
    join = re.search(r"'(postgresql://[^']+)'", out).group(1)
    join = re.sub(r"@[^:/]+:", "@127.0.0.1:", join)  # this test's "other machine" is local
    local = owner.start_node("owner-node", slots=1)
    nodes.append(local)
    try:
        wait_for(lambda: json.loads(owner.run("db", "status", "--json").stdout)["users"], 30)
        remote = Cli(tmp_path / "remote", join)
        (job_id,) = remote.submit(
            clips.good, preset="remux-mp4", extra=("--output-dir", str(tmp_path / "o"))
        )
        remote_node = remote.start_node("remote-node", slots=1)
        nodes.append(remote_node)
        wait_for(lambda: all_done(join, 1), 30)
        nopw = Cli(tmp_path / "thief", re.sub(r"ffdesk:[^@]*@", "ffdesk@", join))
        refused = nopw.run("jobs", check=False)
        assert refused.returncode != 0
        assert "password" in refused.stderr
        assert query(join, "SELECT state FROM jobs WHERE id = %s", [job_id]) == [("succeeded",)]
        status = owner.run("db", "status").stdout
        assert f"port {port}" in status
        secret = (tmp_path / "owner" / "data" / "postgres" / "password").read_text().strip()
        assert secret not in status
        assert (
            "scram-sha-256"
            in (tmp_path / "owner" / "data" / "postgres" / "pgdata" / "pg_hba.conf").read_text()
        )
        assert "trust" not in _hba_rules(tmp_path / "owner")
    finally:
        for node in nodes:
            node.stop(timeout=60)
        owner.run("db", "unshare")
        EmbeddedServer(tmp_path / "owner" / "data" / "postgres").stop()


def _hba_rules(home: Path) -> str:
    text = (home / "data" / "postgres" / "pgdata" / "pg_hba.conf").read_text()
    return "\n".join(line for line in text.splitlines() if line and not line.startswith("#"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nodes_lists_live_nodes_with_heartbeat_age(cli: Cli, nodes):
    start(cli, nodes, "lister", "--tags", "gpu,big-mem", slots=3)
    rows = wait_for(lambda: json.loads(cli.run("nodes", "--json").stdout), 30)
    (row,) = rows
    assert row["identifier"] == "lister" and row["state"] == "online"
    assert row["slots"] == 3 and row["tags"] == ["big-mem", "gpu"]
    assert row["heartbeat_age"] < 3
    assert "libx264" in row["encoders"] and "h264_nvenc" not in row["encoders"]
    assert row["ffmpeg_version"].startswith("ffmpeg version")
    text = cli.run("nodes").stdout
    assert text.splitlines()[0].split()[:3] == ["NODE", "STATE", "HEARTBEAT"]
    nodes[0].stop()
    assert json.loads(cli.run("nodes", "--json").stdout)[0]["state"] == "offline"


def test_a_claim_whose_reply_was_lost_is_given_back(cli: Cli, clips, nodes, tmp_path):
    """The claim committed but its reply never reached the node (connection cut right after
    COMMIT): the job is "running" in the node's name with no FFmpeg. The heartbeat notices
    such orphans and gives them back, so the job runs after all."""
    from ffdesk.db import jobs as jobs_sql
    from tests.conftest import with_conn

    cli.run("db", "migrate")
    node = start(cli, nodes, "forgetful", "--poll", "60", slots=1)
    (session,) = wait_for(
        lambda: query(
            cli.database, "SELECT session::text FROM nodes WHERE identifier = 'forgetful'"
        ),
        30,
    )[0]
    cli.run("nodes", "pause", "forgetful")  # so that only the test claims the job
    wait_for(lambda: "online -> paused" in node.log_text(), 10)
    cli.submit(clips.good, preset="remux-mp4", extra=("--output-dir", str(tmp_path / "o")))
    # Claim in the node's name, as if its own claim's reply had been lost.
    with_conn(
        cli.database,
        lambda c: jobs_sql.claim(
            c, node="forgetful", session=session, host="h", limit=1, lease_seconds=30
        ),
    )
    assert query(cli.database, "SELECT state, node FROM jobs") == [("running", "forgetful")]
    cli.run("nodes", "resume", "forgetful")
    wait_for(lambda: all_done(cli.database, 1), 20, message="orphan given back and run")
    attempts = query(cli.database, "SELECT outcome, counted FROM attempts ORDER BY id")
    assert attempts == [("interrupted", False), ("succeeded", True)]
    assert "claimed but never started here" in node.log_text()
