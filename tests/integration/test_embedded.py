"""The zero-setup database: started on demand, shared by every ffdesk process of the user,
stopped by the last one, robust against crashes. Each test has its own data directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from ffdesk.db.embedded import EmbeddedServer
from tests.conftest import Cli, ffdesk_cmd, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    yield path
    server = EmbeddedServer(path / "data" / "postgres")
    server.stop()  # never leave a server behind, whatever the test did


def local(home: Path) -> Cli:
    return Cli(home, None)  # no --database: the embedded server


def status(home: Path) -> dict:
    return json.loads(local(home).run("db", "status", "--json").stdout)


def test_cli_starts_uses_and_stops_the_embedded_server(home: Path, clips):
    cli = local(home)
    assert status(home)["initialized"] is False
    (job_id,) = cli.submit(clips.good)
    st = status(home)
    assert st["initialized"] and not st["running"]  # the last user left: stopped again
    # Data survived the stop.
    listed = json.loads(cli.run("jobs", "--json").stdout)
    assert [j["id"] for j in listed] == [job_id]
    password = home / "data" / "postgres" / "password"
    assert password.stat().st_mode & 0o077 == 0  # readable by this user only


def test_node_and_cli_share_one_server_and_the_last_one_stops_it(home: Path, clips, nodes):
    cli = local(home)
    node = cli.start_node("sharer", slots=1)
    nodes.append(node)
    wait_for(lambda: status(home)["running"] and status(home)["users"] >= 1, 30)
    pid = status(home)["pid"]
    (job_id,) = cli.submit(clips.good)  # a second process: reuses, does not restart
    assert status(home)["pid"] == pid
    wait_for(lambda: json.loads(cli.run("jobs", "--json").stdout)[0]["state"] == "succeeded", 30)
    assert status(home)["pid"] == pid and status(home)["running"]
    assert node.stop(signal.SIGTERM) == 0
    assert status(home)["running"] is False
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert job_id


def test_db_url_masks_the_password_unless_asked(home: Path):
    cli = local(home)
    node = subprocess.Popen(
        ffdesk_cmd("node", "--identifier", "u", "--slots", "1"),
        env=cli.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: status(home)["users"] >= 1, 30)  # registered = database ready
        masked = cli.run("db", "url").stdout.strip()
        shown = cli.run("db", "url", "--show-password").stdout.strip()
        secret = (home / "data" / "postgres" / "password").read_text().strip()
        assert "****" in masked and secret not in masked
        assert secret in shown
        import psycopg

        with psycopg.connect(shown) as conn:  # the shown URL really works
            assert conn.execute("SELECT 1").fetchone() == (1,)
        text = cli.run("db", "status").stdout
        assert "running" in text and secret not in text
        log = (home / "log" / "ffdesk.log").read_text()
        assert secret not in log
    finally:
        node.terminate()
        node.wait(30)


def test_db_stop_stops_it_for_everyone(home: Path):
    cli = local(home)
    node = subprocess.Popen(
        ffdesk_cmd("node", "--identifier", "s", "--slots", "1"),
        env=cli.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: status(home)["users"] >= 1, 30)  # registered = database ready
        assert cli.run("db", "stop").stdout.strip() == "embedded server stopped"
        assert status(home)["running"] is False
        assert cli.run("db", "stop").stdout.strip() == "embedded server was not running"
    finally:
        node.kill()
        node.wait(30)


def test_stale_pid_file_after_a_crash_is_survived(home: Path, clips):
    cli = local(home)
    cli.run("db", "migrate")  # creates the cluster (and stops the server again)
    server = EmbeddedServer(home / "data" / "postgres")
    server.acquire()
    pgdata = home / "data" / "postgres" / "pgdata"
    postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
    pid_file = (pgdata / "postmaster.pid").read_text()
    # Power cut: every server process dies at once, nothing is cleaned up ...
    for proc in [postmaster, *postmaster.children(recursive=True)]:
        proc.kill()
    psutil.wait_procs([postmaster], timeout=10)
    # ... and after the "reboot" the PID in the stale file belongs to an unrelated program.
    sleeper = subprocess.Popen(["sleep", "60"])
    (pgdata / "postmaster.pid").write_text(
        pid_file.replace(str(postmaster.pid), str(sleeper.pid), 1)
    )
    os.chmod(pgdata / "postmaster.pid", 0o600)
    try:
        (job_id,) = cli.submit(clips.good)
        assert job_id >= 1
        assert "stale" in (home / "log" / "ffdesk.log").read_text()
    finally:
        sleeper.kill()
        sleeper.wait()
        server._registered = False  # this handle's process "died" with the crash


def test_four_processes_starting_on_a_fresh_home_share_one_server(home: Path):
    env = local(home).env()
    procs = [
        subprocess.Popen(
            ffdesk_cmd("jobs", "--json"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], results
    assert all(json.loads(out) == [] for out, _ in results)
    log = (home / "log" / "ffdesk.log").read_text()
    assert log.count("creating the embedded database cluster") == 1
    assert log.count("applying database migration 0001") == 1
    assert status(home)["running"] is False
