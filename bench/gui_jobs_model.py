"""The jobs table under load: 100 000 jobs, then 1 000 job events per second.

Offscreen Qt, the real :class:`~ffdesk.ui.jobs_view.JobsView` (model, filter proxy, delegate,
table) with its default timers (flush every 150 ms, live times every 1 s).

* **first full table**: ``model.reset(jobs)`` + ``show()`` until the table's viewport has
  processed its first paint event (building the Job objects is not timed: they come from
  the database).
* **RSS** of the process after the load (psutil), with the growth caused by the jobs.
* **event-loop stall**: for 30 s (``--quick``: 5 s) a 10 ms timer feeds 10 events per tick
  (``apply`` / ``apply_progress``: progress of running jobs, claims, finishes, new jobs),
  while a separate 10 ms heartbeat timer records how late it fires; p50 / p99 / max.

The data looks like a busy cluster: 85 % of the jobs finished long ago, ~80 running, the
rest queued; the events are generated before the measurement (in the app they are built on
the engine thread), so only the GUI thread's share is measured.

    .venv/bin/python bench/gui_jobs_model.py [--quick] [--jobs N] [--sort-progress]
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import argparse
import gc
import math
import platform
import random
import sys
import time
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psutil
from PySide6 import __version__ as pyside_version
from PySide6.QtCore import QEvent, QEventLoop, QObject, Qt, QTimer
from PySide6.QtWidgets import QApplication

from ffdesk.core.model import Job, JobState
from ffdesk.engine.events import JobProgress
from ffdesk.ui.jobs_model import Col
from ffdesk.ui.jobs_view import JobsView

GOAL_FIRST_TABLE_S = 1.5
GOAL_RSS_MB = 400
GOAL_STALL_P99_MS = 50
FEED_INTERVAL_MS = 10
EVENTS_PER_TICK = 10
HEARTBEAT_MS = 10
RUNNING = 80  # slots busy in the simulated cluster

Event = Job | JobProgress


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    data = sorted(values)
    k = (len(data) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def make_jobs(n: int, rng: random.Random) -> list[Job]:
    now = datetime.now(UTC)
    finished_share = 0.85
    presets = ["h264-mp4", "hevc-mkv", "prores-hq", "aac-m4a", "av1-webm"]
    nodes = [f"render-{i:02d}" for i in range(20)]
    jobs = []
    for i in range(1, n + 1):
        created = now - timedelta(seconds=(n - i) * 5 + 30)
        if i <= n * finished_share:
            roll = rng.random()
            state = (
                JobState.SUCCEEDED
                if roll < 0.9
                else JobState.FAILED
                if roll < 0.95
                else JobState.CANCELED
                if roll < 0.98
                else JobState.DEAD
            )
        elif i <= n * finished_share + RUNNING:
            state = JobState.RUNNING
        else:
            state = JobState.QUEUED
        claimed = None if state is JobState.QUEUED else created + timedelta(seconds=20)
        finished = state.terminal
        jobs.append(
            Job(
                id=i,
                state=state,
                priority=rng.choice((0, 0, 0, 10, -5)),
                input=f"media:/Projects/season {i % 7}/episode {i:06d} final.mov",
                output=f"media:/Deliveries/season {i % 7}/episode {i:06d}.mp4",
                preset=presets[i % len(presets)],
                preset_args=[],
                needs=["video"],
                attempt=0 if state is JobState.QUEUED else 1,
                max_attempts=3,
                claim=None if claimed is None else i,
                node=None if claimed is None else nodes[i % len(nodes)],
                node_session=None,
                lease_until=None,
                not_before=None,
                created_at=created,
                claimed_at=claimed,
                started_at=claimed,
                finished_at=created + timedelta(seconds=200) if finished else None,
                progress=100.0 if state is JobState.SUCCEEDED else None,
                fps=None,
                speed=None,
                eta_s=None,
                out_time_s=None,
                duration_s=1200.0,
                exit_code=0 if state is JobState.SUCCEEDED else None,
                reason="exit code 1" if state is JobState.FAILED else None,
                submitted_by="bench",
                meta={},
                revision=i,
            )
        )
    return jobs


def make_events(jobs: list[Job], ticks: int, rng: random.Random) -> list[list[Event]]:
    """Per feed tick: 7 progress reports, 1 finish, 1 claim (keeps 80 running), 1 new job."""
    current = {job.id: job for job in jobs}
    running = [job.id for job in jobs if job.state is JobState.RUNNING]
    queued = deque(job.id for job in jobs if job.state is JobState.QUEUED)
    revision = max(job.revision for job in jobs)
    next_id = max(current) + 1
    now = datetime.now(UTC)
    batches: list[list[Event]] = []
    for _ in range(ticks):
        batch: list[Event] = []
        for _ in range(EVENTS_PER_TICK - 3):
            job_id = rng.choice(running)
            job = current[job_id]
            revision += 1
            progress = min(99.9, (job.progress or 0.0) + rng.uniform(0.1, 2.0))
            event = JobProgress(job_id, progress, 48.0, 1.9, 600.0 - progress * 6, 12.0, revision)
            current[job_id] = replace(job, progress=progress, revision=revision)
            batch.append(event)
        # One finishes, the oldest queued job takes its slot, a new job is submitted.
        done_id = running.pop(rng.randrange(len(running)))
        revision += 1
        done = replace(
            current[done_id],
            state=JobState.SUCCEEDED,
            progress=100.0,
            finished_at=now,
            revision=revision,
        )
        current[done_id] = done
        batch.append(done)
        if queued:
            claim_id = queued.popleft()
            revision += 1
            claimed = replace(
                current[claim_id],
                state=JobState.RUNNING,
                node="render-01",
                attempt=1,
                claimed_at=now,
                started_at=now,
                progress=0.0,
                revision=revision,
            )
            current[claim_id] = claimed
            running.append(claim_id)
            batch.append(claimed)
        revision += 1
        new = replace(
            jobs[-1], id=next_id, state=JobState.QUEUED, created_at=now, revision=revision
        )
        current[next_id] = new
        queued.append(next_id)
        next_id += 1
        batch.append(new)
        batches.append(batch)
    return batches


class FirstPaint(QObject):
    """Notes when the watched widget has processed its first paint event."""

    def __init__(self) -> None:
        super().__init__()
        self.painted = False

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            self.painted = True
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="feed events for 5 s, not 30 s")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, help="how long to feed events")
    parser.add_argument(
        "--sort-progress",
        action="store_true",
        help="sort the table by progress (live re-sorting) during the feed",
    )
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 30.0)
    rng = random.Random(42)
    proc = psutil.Process()

    app = QApplication(sys.argv)
    view = JobsView()
    view.resize(1600, 900)
    rss_before = proc.memory_info().rss

    print(f"[bench] building {args.jobs:,} jobs", flush=True)
    jobs = make_jobs(args.jobs, rng)
    rss_data = proc.memory_info().rss

    # ---------------------------------------------------------------- first full table
    watcher = FirstPaint()
    view.table.viewport().installEventFilter(watcher)
    started = time.perf_counter()
    view.model.reset(jobs)
    view.show()
    while not watcher.painted:
        app.processEvents()
    first_table = time.perf_counter() - started
    view.table.viewport().removeEventFilter(watcher)
    assert view.proxy.rowCount() == args.jobs
    app.processEvents()
    gc.collect()
    rss_after = proc.memory_info().rss
    jobs_mb = (rss_data - rss_before) / 2**20
    gc_started = time.perf_counter()
    gc.collect()
    full_gc = time.perf_counter() - gc_started

    # Generated after the RSS reading: the pending events are bench data, not the app's.
    print(f"[bench] building {seconds:.0f} s of events", flush=True)
    ticks = int(seconds * 1000 / FEED_INTERVAL_MS) + 100  # a margin: the feed must not run dry
    batches = make_events(jobs, ticks, rng)
    gc.collect()

    if args.sort_progress:
        view.table.sortByColumn(Col.PROGRESS, Qt.SortOrder.DescendingOrder)

    # ---------------------------------------------------------------- event flood
    feed = iter(batches)
    fed = 0
    batches_fed = 0
    flood_started = time.perf_counter()
    lateness: list[float] = []
    last_beat = time.perf_counter()

    def on_feed() -> None:
        # Catch up when the loop was late: the load is 1 000 events/s of wall time, not
        # 10 events per timer callback (a slow GUI must not lower its own load).
        nonlocal fed, batches_fed
        due = int((time.perf_counter() - flood_started) * 1000 / FEED_INTERVAL_MS) + 1
        while batches_fed < due:
            batch = next(feed, None)
            if batch is None:
                return
            batches_fed += 1
            for event in batch:
                if isinstance(event, JobProgress):
                    view.model.apply_progress(event)
                else:
                    view.model.apply(event)
            fed += len(batch)

    def on_beat() -> None:
        nonlocal last_beat
        now = time.perf_counter()
        lateness.append(max(0.0, now - last_beat - HEARTBEAT_MS / 1000))
        last_beat = now

    feeder = QTimer()
    feeder.setTimerType(Qt.TimerType.PreciseTimer)
    feeder.setInterval(FEED_INTERVAL_MS)
    feeder.timeout.connect(on_feed)
    heartbeat = QTimer()
    heartbeat.setTimerType(Qt.TimerType.PreciseTimer)
    heartbeat.setInterval(HEARTBEAT_MS)
    heartbeat.timeout.connect(on_beat)

    cpu_before = proc.cpu_times()
    flood_started = time.perf_counter()
    feeder.start()
    heartbeat.start()
    last_beat = time.perf_counter()
    loop = QEventLoop()  # the real event loop, as in the app (qasync runs Qt's)
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    feeder.stop()
    heartbeat.stop()
    flood = time.perf_counter() - flood_started
    cpu_after = proc.cpu_times()
    view.model.flush()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)

    p50 = percentile(lateness, 50) * 1000
    p99 = percentile(lateness, 99) * 1000
    worst = max(lateness, default=math.nan) * 1000
    rate = fed / flood

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    rss_mb = rss_after / 2**20
    rows: list[tuple[str, str, str, str]] = [
        (
            "first full table (reset + first paint)",
            f"{first_table * 1000:.0f} ms",
            f"< {GOAL_FIRST_TABLE_S * 1000:.0f} ms",
            verdict(first_table < GOAL_FIRST_TABLE_S),
        ),
        (
            "RSS after load",
            f"{rss_mb:.0f} MB",
            f"< {GOAL_RSS_MB} MB",
            verdict(rss_mb < GOAL_RSS_MB),
        ),
        (
            f"event-loop stall p99 ({rate:,.0f} events/s, {flood:.0f} s)",
            f"{p99:.1f} ms",
            f"< {GOAL_STALL_P99_MS} ms",
            verdict(p99 < GOAL_STALL_P99_MS),
        ),
        ("event-loop stall p50", f"{p50:.1f} ms", "", "info"),
        ("event-loop stall max", f"{worst:.1f} ms", "", "info"),
        ("GUI thread CPU during the flood", f"{cpu / flood * 100:.0f} %", "", "info"),
        (f"of which the {args.jobs:,} Job objects", f"{jobs_mb:.0f} MB", "", "info"),
        ("one full gc.collect() with the jobs loaded", f"{full_gc * 1000:.0f} ms", "", "info"),
        ("rows at the end", f"{view.model.rowCount():,}", "", "info"),
    ]
    machine = (
        f"{platform.python_implementation()} {platform.python_version()}, PySide6 "
        f"{pyside_version}, {psutil.cpu_count()} CPU, {platform.system()} {platform.release()}"
    )
    sort_note = ", sorted by progress" if args.sort_progress else ""
    print(f"\nGUI jobs table: {args.jobs:,} jobs{sort_note} ({machine})")
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    headers = ("metric", "value", "goal", "result")
    width = [max(w, len(h)) for w, h in zip(width, headers, strict=True)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, width, strict=True)))
    print("  ".join("-" * w for w in width))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, width, strict=True)))
    view.close()
    app.processEvents()
    return 0 if all(r[3] != "FAIL" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
