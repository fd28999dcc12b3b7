"""The desktop app against a real PostgreSQL, real FFmpeg and real node processes.

Each test runs the real ``DesktopApp`` (engine thread, event bus, local node) on a qasync loop
inside the test, offscreen, and drives it the way a person would: drops, tray, context menu,
quit. The last tests run the app as its own process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import psutil
import pytest
import qasync
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from ffdesk.core.config import load_settings
from ffdesk.core.places import Places
from ffdesk.ui.app import DesktopApp
from tests.conftest import Cli, ffdesk_cmd, make_clip, query, wait_for
from tests.integration.test_node import SLOW_PRESET, add_slow_preset, ffmpeg_children

pytestmark = pytest.mark.integration

Scenario = Callable[[DesktopApp], Awaitable[Any]]


async def until(condition: Callable[[], Any], seconds: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def run_app(qapp, tmp_path: Path, db_url: str):
    """Run ``scenario(app)`` against a started app; always shut it down afterwards."""

    def runner(scenario: Scenario, *, tray: bool = False) -> None:
        home = tmp_path / "desk-home"
        places = Places.resolve(home)
        places.ensure()
        (places.config_dir / "presets.toml").write_text(SLOW_PRESET, encoding="utf-8")
        settings = load_settings(
            places,
            {"database": db_url, "identifier": "desk", "slots": 1, "heartbeat": 1.0,
             "poll_interval": 1.0},
            environ={},
        )
        loop = qasync.QEventLoop(qapp)
        asyncio.set_event_loop(loop)
        app = DesktopApp(settings, places, tray=tray)

        async def main() -> None:
            running = asyncio.ensure_future(app.run())
            try:
                await until(lambda: app.node is not None and app.node.ready.is_set()
                            and app.bus is not None and app.bus.connected, 30, "app ready")
                await scenario(app)
            finally:
                await app.shutdown()
                await asyncio.wait_for(running, 30)

        with loop:
            loop.run_until_complete(main())
        app.window.deleteLater()
        if app.tray is not None:
            app.tray.deleteLater()
        app.deleteLater()  # its timers must not outlive the closed loop
        qapp.processEvents()

    return runner


def db_rows(url: str, sql: str, params: Any = None) -> list[tuple]:
    return query(url, sql, params)


def test_dropped_files_and_folders_are_queued(run_app, db_url: str, clips, tmp_path: Path):
    folder = tmp_path / "drop me"
    (folder / "inner").mkdir(parents=True)
    a = make_clip(folder / "a clip.mp4")
    b = make_clip(folder / "inner" / "b clip.mkv")
    (folder / "readme.txt").write_text("not media")
    single = clips.weird[0]

    async def scenario(app: DesktopApp) -> None:
        await app.set_accepting(False)  # only queue here; nothing should run
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(folder)), QUrl.fromLocalFile(str(single))])
        event = QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, mime,
                           Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
        app.window.dropEvent(event)
        assert event.isAccepted() and event.dropAction() == Qt.DropAction.CopyAction
        dialog = await until(lambda: getattr(app.window, "last_drop_dialog", None))
        await until(lambda: not dialog.is_scanning(), what="folder scan")
        assert dialog.scan_result().skipped == 1  # readme.txt
        dialog.accept()
        await until(lambda: len(db_rows(db_url, "SELECT id FROM jobs")) == 3, what="3 jobs")
        # The queued jobs show up in the view through the event bus.
        await until(lambda: app.window.jobs.model.rowCount() == 3, what="rows in the view")

    run_app(scenario)
    inputs = sorted(r[0] for r in db_rows(db_url, "SELECT input FROM jobs"))
    assert inputs == sorted(str(p) for p in (a, b, single))
    assert {r[0] for r in db_rows(db_url, "SELECT state FROM jobs")} == {"queued"}


def test_tray_toggle_stops_and_starts_claiming(run_app, db_url: str, tmp_path: Path):
    clip = make_clip(tmp_path / "toggle.mp4", seconds=8, size="64x48", rate=5)

    async def scenario(app: DesktopApp) -> None:
        assert app.tray is not None
        ids = await app.call(app.console.submit(app.presets()["slow-h264"], [clip],
                                                tmp_path / "out"))
        await until(lambda: app.local_running() == 1, what="the local node runs the job")
        accept = next(a for a in app.tray.menu.actions()
                      if a.text() == "Accept jobs on this computer")
        assert accept.isChecked()
        accept.trigger()  # off: the job goes back to the queue, nothing is claimed
        await until(lambda: app.local_running() == 0, 10, "job handed back")
        await until(lambda: db_rows(db_url, "SELECT state, attempt FROM jobs")
                    == [("queued", 0)], 10, "queued again, attempt not spent")
        assert db_rows(db_url, "SELECT state FROM nodes WHERE identifier = 'desk'") == [
            ("paused",)]
        await asyncio.sleep(2.5)  # two poll intervals: it really does not claim
        assert db_rows(db_url, "SELECT state FROM jobs") == [("queued",)]
        app.tray._rebuild()  # as when the menu opens again
        accept = next(a for a in app.tray.menu.actions()
                      if a.text() == "Accept jobs on this computer")
        assert not accept.isChecked()
        accept.trigger()  # on again
        await until(lambda: db_rows(db_url, "SELECT state, node FROM jobs WHERE id = %s",
                                    [ids[0]]) == [("running", "desk")], 10, "claimed again")

    run_app(scenario, tray=True)


def test_change_by_another_node_process_reaches_the_view_fast(run_app, db_url: str, clips,
                                                               tmp_path: Path, nodes):
    cli = Cli(tmp_path / "other-home", db_url)
    latencies: list[float] = []

    async def scenario(app: DesktopApp) -> None:
        await app.set_accepting(False)
        nodes.append(cli.start_node("other", slots=1))
        await until(lambda: any(r[0] == "other" for r in db_rows(
            db_url, "SELECT identifier FROM nodes WHERE state = 'online'")), 30, "other node")
        model = app.window.jobs.model
        for _ in range(3):
            (job_id,) = cli.submit(clips.good, preset="remux-mp4",
                                   extra=("--output-dir", str(tmp_path / "o" / str(_))))

            def shown_done(job_id: int = job_id) -> bool:
                job = model.job(job_id)
                return job is not None and job.state == "succeeded"

            await until(shown_done, 30, "the other node's result in the view")
            seen = time.time()
            (finished,) = db_rows(db_url, "SELECT extract(epoch FROM finished_at) FROM jobs "
                                          "WHERE id = %s", [job_id])[0]
            latencies.append(seen - float(finished))

    run_app(scenario)
    print("commit -> view latency (s):", [round(x, 3) for x in latencies])
    assert max(latencies) < 0.5


def test_cancel_from_the_context_menu_stops_the_other_node(run_app, db_url: str, clips,
                                                           tmp_path: Path, nodes):
    cli = Cli(tmp_path / "other-home", db_url)
    add_slow_preset(cli)

    async def scenario(app: DesktopApp) -> None:
        await app.set_accepting(False)
        node = cli.start_node("worker", slots=1)
        nodes.append(node)
        (job_id,) = cli.submit(clips.long, preset="slow-h264",
                               extra=("--output-dir", str(tmp_path / "o")))
        (ffmpeg,) = await until(lambda: ffmpeg_children(node.proc.pid), 30, "remote ffmpeg")
        view = app.window.jobs
        await until(lambda: view.model.job(job_id) is not None
                    and view.model.job(job_id).state == "running", 10, "running in the view")
        view.select_ids([job_id])
        assert view.cancel_action.isEnabled()
        view.cancel_action.trigger()
        await until(lambda: not ffmpeg.is_running() or ffmpeg.status() == psutil.STATUS_ZOMBIE,
                    3, "the other node's ffmpeg stopped")
        await until(lambda: view.model.job(job_id).state == "canceled", 5, "canceled in view")

    run_app(scenario)
    assert db_rows(db_url, "SELECT state FROM jobs") == [("canceled",)]


@pytest.mark.parametrize("choice", ["now", "drain"])
def test_quit_with_running_jobs_follows_the_choice(run_app, db_url: str, tmp_path: Path,
                                                   choice: str):
    clip = make_clip(tmp_path / "q.mp4", seconds=3, size="64x48", rate=5)
    asked: list[int] = []

    async def scenario(app: DesktopApp) -> None:
        await app.call(app.console.submit(app.presets()["slow-h264"], [clip],
                                          tmp_path / "out"))
        await until(lambda: app.local_running() == 1, 10, "running here")

        def ask(running: int) -> str:
            asked.append(running)
            return choice

        await app.request_quit("ask", ask=ask)

    run_app(scenario)
    assert asked == [1]
    state, attempt = db_rows(db_url, "SELECT state, attempt FROM jobs")[0]
    if choice == "now":
        assert (state, attempt) == ("queued", 0)  # handed back, attempt not spent
    else:
        assert state == "succeeded"  # finished before quitting
    assert db_rows(db_url, "SELECT state FROM nodes WHERE identifier = 'desk'") == [("offline",)]


def _node_online(url: str, identifier: str) -> bool:
    import psycopg

    try:
        return bool(db_rows(url, "SELECT 1 FROM nodes WHERE identifier = %s AND state = 'online'",
                            [identifier]))
    except psycopg.errors.UndefinedTable:  # the app has not migrated the new database yet
        return False


def _gui_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FFDESK_")}
    env.update(FFDESK_HOME=str(home), QT_QPA_PLATFORM="offscreen", PYTHONUNBUFFERED="1")
    return env


def test_app_process_quits_cleanly_and_hands_over_to_one_instance(db_url: str, clips,
                                                                  tmp_path: Path):
    home = tmp_path / "gui-home"
    env = _gui_env(home)
    app = subprocess.Popen(ffdesk_cmd("gui", "--database", db_url, "--identifier", "guiproc"),
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _node_online(db_url, "guiproc"), 40, message="the app's node online")
        # A second launch hands its file to the first and exits at once.
        second = subprocess.run(ffdesk_cmd("gui", str(clips.good)), env=env,
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 0, second.stderr
        log = home / "log" / "ffdesk.log"
        wait_for(lambda: "queue dialog opened for 1" in log.read_text(), 10,
                 message="the first instance opened the queue dialog")
        quit_ = subprocess.run(ffdesk_cmd("gui", "--quit", "now"), env=env,
                               capture_output=True, text=True, timeout=30)
        assert quit_.returncode == 0, quit_.stderr
        _, err = app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
    assert app.returncode == 0, err
    assert "Fatal Python error" not in err
    assert "Traceback" not in err
    assert db_rows(db_url, "SELECT state FROM nodes WHERE identifier = 'guiproc'") == [
        ("offline",)]
    nobody = subprocess.run(ffdesk_cmd("gui", "--quit", "now"), env=env, capture_output=True,
                            text=True, timeout=30)
    assert nobody.returncode != 0 and "no running ffdesk app" in nobody.stderr
