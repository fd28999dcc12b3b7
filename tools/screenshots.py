"""Screenshots of the real desktop app with a small live cluster, for people to look at.

    .venv/bin/python tools/screenshots.py [--out screenshots/]

Starts Xvfb when there is no display, an embedded PostgreSQL in a temporary home, two
headless node processes, and jobs in every state (succeeded, failed, canceled, dead, running,
queued); then runs the app itself and saves PNGs of the main window (whole screen), the jobs
view, a failed job's details, the nodes view, the graphs, the queue dialog, the settings
dialog and the tray menu.

Failure handling is staged with real runs, nothing faked:

* node "gpu-02" starts first, alone, and gets two NVENC jobs; this machine has no NVIDIA
  driver, so FFmpeg fails with "Cannot load libcuda.so.1" (an environment failure) and the
  node quarantines itself after two in a row: ``nodes-view.png`` shows it, selected, with
  Resume enabled;
* the truncated camera card fails (input class); at the end the card is copied again in full,
  an earlier export takes its output name, the job is retried from the jobs view and gpu-02
  is resumed from the nodes view; it runs the job and writes "... (2).mp4":
  ``job-detail-retried.png`` (attempts with their class and the audit box),
  ``job-detail-retried-summary.png`` and ``job-detail-retried-events.png``;
* the other NVENC job fails on one node, is retried on the other (it avoids the first), waits
  out a backoff and dies: ``job-detail-environment.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))



def make_clip(path: Path, *, seconds: float, size: str, rate: int = 25) -> Path:
    """A short test-pattern clip with a tone, made by FFmpeg's own sources."""
    ffmpeg = shutil.which("ffmpeg") or "ffmpeg"
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=330:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
         str(path)],
        check=True, stdin=subprocess.DEVNULL,
    )
    return path

SLOW = """
[slow-h264]
description = "H.264 at real-time speed (demo of running jobs)"
args = ["-re", "-i", "{input}", "-c:v", "libx264", "-preset", "ultrafast", "-an", "{output}"]
output = "{stem}-slow.mp4"
needs = ["video"]
"""


def start_xvfb() -> subprocess.Popen | None:
    if os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return None
    display = f":{90 + os.getpid() % 100}"
    proc = subprocess.Popen(["Xvfb", display, "-screen", "0", "1440x900x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["DISPLAY"] = display
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{display[1:]}").exists():
        if time.monotonic() > deadline:
            raise SystemExit("Xvfb did not start")
        time.sleep(0.05)
    return proc


async def seed(url: str, media: Path, out: Path) -> None:
    """Jobs in every state, through the real queue functions."""
    from ffdesk.core.model import NewJob
    from ffdesk.db import jobs, migrate
    from ffdesk.db.connect import connect_async
    from ffdesk.engine.submit import SubmitRequest, plan_jobs
    from ffdesk.ffmpeg.presets import load_presets

    presets = load_presets([media / "presets.toml"])
    conn = await connect_async(url)
    await migrate.migrate(conn)

    def plan(preset: str, files: list[Path], **kw) -> list[NewJob]:
        return plan_jobs(SubmitRequest(preset=presets[preset], paths=files, output_dir=out, **kw))

    def claimed_gpu(planned: list[NewJob]) -> list[NewJob]:
        # Capability routing would keep NVENC jobs away from nodes whose probe found no
        # working NVENC (they would wait, saying so). Staged here: nodes that advertised a
        # GPU which then fails at run time, the environment failure quarantine is for.
        return [dataclasses.replace(j, requires=[]) for j in planned]

    good = sorted(media.glob("shot *.mp4"))
    await jobs.enqueue(conn, plan("h264-mp4", good[:6]), submitted_by="editor@studio-02")
    await jobs.enqueue(conn, plan("proxy-720p", [media / "truncated camera card.mp4"]),
                       submitted_by="editor@studio-02")
    await jobs.enqueue(conn, claimed_gpu(plan("h264-nvenc", good[6:7])),
                       submitted_by="editor@studio-02")
    canceled = await jobs.enqueue(conn, plan("hevc-mp4", good[7:8]), submitted_by="me@desk")
    await jobs.cancel(conn, canceled, by="me@desk")
    # A job whose only attempt died with its node: dead.
    # High priority so the "ghost" node's claim takes exactly this one.
    await jobs.enqueue(conn, plan("remux-mp4", good[8:9], max_attempts=1, priority=100),
                       submitted_by="me@desk")
    ghost = str(uuid.uuid4())
    await jobs.claim(conn, node="render-07", session=ghost, host="render-07", limit=1,
                     lease_seconds=0.1)
    await asyncio.sleep(0.3)
    await jobs.rescue_expired(conn, by="render-01")
    # For the "gpu-02" node (started first, alone): NVENC cannot run on this machine, so both
    # fail on the node's environment and the node quarantines itself. One attempt each: they
    # must not go on to fail on the other nodes too.
    await jobs.enqueue(conn, claimed_gpu(plan("h264-nvenc", good[10:12], max_attempts=1,
                                               priority=90)),
                       submitted_by="me@desk")
    await jobs.enqueue(conn, plan("slow-h264", sorted(media.glob("long *.mp4"))),
                       submitted_by="me@desk")
    await jobs.enqueue(conn, plan("hevc-mp4", good[9:]), submitted_by="me@desk")
    await conn.close()


async def wait_node_state(url: str, identifier: str, state: str, seconds: float) -> dict:
    from ffdesk.db import nodes
    from ffdesk.db.connect import connect_async

    conn = await connect_async(url)
    try:
        deadline = time.monotonic() + seconds
        while True:
            for row in await nodes.list_nodes(conn):
                if row["identifier"] == identifier and row["state"] == state:
                    return row
            if time.monotonic() > deadline:
                raise SystemExit(f"node {identifier} did not become {state}")
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def start_node(identifier: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ffdesk", "node", "--identifier", identifier, "--heartbeat", "2",
         *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
    )


def make_media(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(["beach", "drone pass", "interview A", "interview B", "b-roll",
                              "city night", "ünïcode café", "timelapse", "ghost", "credits",
                              "teaser 9x16", "rooftop"]):
        make_clip(folder / f"shot {i + 1:02d} {name}.mp4", seconds=2, size="320x180")
    for i in range(3):
        make_clip(folder / f"long take {i + 1}.mp4", seconds=150, size="160x90", rate=10)
    good = (folder / "shot 01 beach.mp4").read_bytes()
    (folder / "truncated camera card.mp4").write_bytes(good[: len(good) // 2])
    (folder / "presets.toml").write_text(SLOW, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    args = parser.parse_args()
    out_dir = args.out.absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    xvfb = start_xvfb()
    work = Path(tempfile.mkdtemp(prefix="ffdesk-shots-"))
    home, media, outputs = work / "home", work / "media", work / "out"
    os.environ["FFDESK_HOME"] = str(home)
    procs: list[subprocess.Popen] = []
    server = None
    try:
        make_media(media)
        from ffdesk.core.places import Places
        from ffdesk.db.embedded import EmbeddedServer
        from ffdesk.engine.loop import run

        places = Places.resolve(home)
        places.ensure()
        shutil.copy(media / "presets.toml", places.user_presets_file)
        server = EmbeddedServer(places.embedded_dir)
        url = server.acquire()
        run(seed(url, media, outputs))
        procs.append(start_node("gpu-02", "--slots", "1", "--tags", "gpu",
                                "--quarantine-after", "2"))
        run(wait_node_state(url, "gpu-02", "quarantined", 120))
        procs.append(start_node("render-01", "--slots", "2", "--tags", "big-mem"))
        return run_app(places, out_dir, media)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
        if server is not None:
            server.release()
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
        if xvfb is not None:
            xvfb.terminate()


def run_app(places, out_dir: Path, media: Path) -> int:
    import qasync
    from PySide6.QtCore import QPoint
    from PySide6.QtWidgets import QApplication

    from ffdesk.core.config import load_settings
    from ffdesk.core.model import JobState
    from ffdesk.ui.app import DesktopApp
    from ffdesk.ui.icons import app_icon

    qt_app = QApplication.instance() or QApplication(["ffdesk"])
    qt_app.setWindowIcon(app_icon())
    settings = load_settings(places, {"identifier": "desk", "slots": 1, "heartbeat": 2.0})
    loop = qasync.QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    app = DesktopApp(settings, places, tray=True)
    saved: list[Path] = []

    def save(widget, name: str) -> None:
        path = out_dir / f"{name}.png"
        widget.grab().save(str(path))
        saved.append(path)

    async def wait(condition, seconds: float = 60.0):
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise SystemExit("timed out preparing the screenshots")
            await asyncio.sleep(0.1)

    async def scenario() -> None:
        task = asyncio.ensure_future(app.run())
        await wait(lambda: app.node is not None and app.node.ready.is_set())
        window = app.window
        window.resize(1360, 820)
        model = window.jobs.model
        counts = lambda: model.state_counts()  # noqa: E731

        async def show_attempts(job_id: int, name: str, *, row: int | None = None,
                                more: bool = False) -> None:
            """The detail pane, enlarged, on its Attempts tab (``row``: that attempt, else
            the latest); ``more``: its Summary and Events tabs too."""
            window.tabs.setCurrentIndex(0)
            window.jobs.select_ids([job_id])
            await window.show_detail(job_id)
            window.jobs_split.setSizes([250, 550])  # room for the attempts, audit and stderr
            detail = window.detail
            detail.tabs.setCurrentIndex(1)
            if row is not None:
                detail.attempts_table.selectRow(row)
            await asyncio.sleep(0.5)
            save(detail, name)
            if more:
                for index, suffix in ((0, "summary"), (2, "events")):
                    detail.tabs.setCurrentIndex(index)
                    await asyncio.sleep(0.3)
                    save(detail, f"{name}-{suffix}")
            detail.tabs.setCurrentIndex(0)

        async def reprocess_and_resume(card) -> None:
            """The card is copied again in full and an earlier export holds the output name; a
            person retries the job in the jobs view and resumes gpu-02 in the nodes view."""
            shutil.copy(media / "shot 01 beach.mp4", card.input)
            shutil.copy(media / "shot 02 drone pass.mp4", card.output)
            window.tabs.setCurrentIndex(0)
            window.jobs.select_ids([card.id])
            window.jobs.update_actions()
            assert window.jobs.retry_action.isEnabled()
            window.jobs.retry_action.trigger()
            await wait(lambda: (j := model.job(card.id)) is not None
                       and j.state != JobState.FAILED)
            window.tabs.setCurrentIndex(1)
            assert window.nodes.select("gpu-02")
            resume = window.nodes.actions_by_name["resume"]
            assert resume.isEnabled(), "Resume is not offered for the quarantined node"
            resume.trigger()
            await wait(lambda: (j := model.job(card.id)) is not None
                       and j.state == JobState.SUCCEEDED, 120)
            await show_attempts(card.id, "job-detail-retried", more=True)

        async def environment_history() -> None:
            """The NVENC job the CPU nodes took: retried on the other node, then after a backoff,
            then dead."""
            def nvenc():
                return [j for j in model.jobs() if j.preset == "h264-nvenc" and j.max_attempts > 1]
            await wait(lambda: bool(nvenc()) and nvenc()[0].state == JobState.DEAD, 180)
            # The second run: its audit says when the job could be retried.
            await show_attempts(nvenc()[0].id, "job-detail-environment", row=1)

        # Failed: the truncated card; dead: the ghost's job and gpu-02's two NVENC jobs.
        await wait(lambda: counts().get(JobState.SUCCEEDED, 0) >= 6
                   and counts().get(JobState.FAILED, 0) >= 1
                   and counts().get(JobState.DEAD, 0) >= 3
                   and counts().get(JobState.RUNNING, 0) >= 2)
        await asyncio.sleep(45)  # samples come every 10 s: a few of them make lines
        await app.poll_samples()
        await window.load_history(300)
        failed = next(j for j in model.jobs()
                      if j.state == JobState.FAILED and "truncated" in j.input)
        window.jobs.select_ids([failed.id])
        await window.show_detail(failed.id)
        await asyncio.sleep(0.5)
        window.tabs.setCurrentIndex(0)
        await asyncio.sleep(0.3)
        if os.environ.get("DISPLAY"):
            shot = out_dir / "screen.png"
            subprocess.run(["import", "-window", "root", str(shot)], check=False)
            saved.append(shot)
        save(window, "main-window-jobs")
        save(window.jobs, "jobs-view")
        save(window.detail, "job-detail")
        window.tabs.setCurrentIndex(1)
        await app.refresh_nodes()
        assert window.nodes.select("gpu-02"), "gpu-02 is not in the nodes view"
        await asyncio.sleep(0.5)
        save(window, "nodes-view")
        window.graphs.set_window(300)
        await window.load_history(300)
        window.tabs.setCurrentIndex(2)
        await asyncio.sleep(1.5)
        save(window, "graphs")
        window.tabs.setCurrentIndex(0)
        dialog = window.open_drop_dialog([str(media)])
        await wait(lambda: not dialog.is_scanning())
        await asyncio.sleep(0.3)
        save(dialog, "drop-dialog")
        dialog.reject()
        settings_dialog = app.make_settings_dialog(window)
        settings_dialog.show()
        await asyncio.sleep(0.5)
        save(settings_dialog, "settings")
        settings_dialog.reject()
        assert app.tray is not None
        app.tray.menu.popup(QPoint(1100, 60))
        await asyncio.sleep(0.5)
        save(app.tray.menu, "tray-menu")
        app.tray.menu.hide()
        await reprocess_and_resume(failed)
        await environment_history()
        await app.request_quit("now")
        await task

    with loop:
        loop.run_until_complete(scenario())
    for path in saved:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
