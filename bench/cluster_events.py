"""Event latency: a job change committed by one process -> JobChanged in another process's bus.

A **consumer** process (this script with ``--consumer``) runs an :class:`EventBus` at its
default settings (ping 5 s, fallback poll 5 s, coalesce 30 ms) and records, for every
JobChanged, the wall time it was delivered to ``on_event``. The **producer** (this process,
like any other node or console) changes one queued job at a time with
``ffdesk.db.jobs.set_priority`` (its own transaction and commit, one NOTIFY) and records the
wall time right after the COMMIT returned; a random gap follows each change. Each sample
gives its job a new, unique priority, so the consumer's event for it is unambiguous.
latency = delivered - committed (both ``time.time()`` on this machine, one clock).

Modes:

* **NOTIFY**: the bus as shipped. 200 samples, gaps 0-100 ms. The goal is for this one.
* **poll only** (contrast): the same bus code, but it LISTENs on a channel nobody notifies
  (``ffdesk.engine.events.CHANNEL`` is set to another name in the consumer before the bus
  starts); its self-pings still work, so the session stays healthy and only its fallback poll
  (every 5 s) delivers changes. Gaps 0-1 s, so the samples spread over several poll cycles.

To split the NOTIFY latency, the consumer also runs a plain LISTEN connection on the real
channel in a thread (when the NOTIFY reached a listener) and times every catch-up read of the
bus (the function is wrapped; its work is unchanged).

    .venv/bin/python bench/cluster_events.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from common import (
    CpuMeter,
    add_diagnosis_options,
    ms,
    percentile,
    print_machine,
    print_table,
    run_async,
    run_main,
    wait_for,
    workspace_from,
)

from ffdesk.core.model import NewJob
from ffdesk.db import jobs as jobs_sql

GOAL_P99 = 0.250
UNHEARD_CHANNEL = "ffdesk_bench_nobody_notifies_this"


@dataclass
class Mode:
    key: str
    label: str
    samples: int
    max_gap: float
    committed: dict[tuple[int, int], float] = field(default_factory=dict)  # (job, prio) -> t
    delivered: dict[tuple[int, int], float] = field(default_factory=dict)
    notified: dict[int, float] = field(default_factory=dict)  # job -> first NOTIFY heard
    catchups: list[float] = field(default_factory=list)  # seconds per catch-up read
    counters: dict[str, int] = field(default_factory=dict)
    cpu: str = ""  # what else used the machine meanwhile

    def latencies(self) -> list[float]:
        return [self.delivered[k] - t for k, t in self.committed.items() if k in self.delivered]

    def notify_latencies(self) -> list[float]:
        return [self.notified[j] - t for (j, _), t in self.committed.items() if j in self.notified]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 30 + 8 samples")
    parser.add_argument("--samples", type=int, default=None, metavar="N", help="NOTIFY mode")
    parser.add_argument("--poll-samples", type=int, default=None, metavar="N")
    parser.add_argument("--seed", type=int, default=1)
    add_diagnosis_options(parser)
    # Internal: how the consumer process is started.
    parser.add_argument("--consumer", nargs=3, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.samples is None:
        args.samples = 30 if args.quick else 200
    if args.poll_samples is None:
        args.poll_samples = 8 if args.quick else 60
    return args


# --------------------------------------------------------------------------- consumer


def consumer_main(url: str, out: str, mode: str) -> int:
    """Runs in the consumer process: the bus, a raw listener, and the records."""
    from ffdesk.db import changes
    from ffdesk.engine import events

    if mode == "poll":
        events.CHANNEL = UNHEARD_CHANNEL  # the bus listens where nobody notifies: deaf

    delivered: list[tuple[float, int, int]] = []
    notified: list[tuple[float, int]] = []
    catchups: list[float] = []

    real_catch_up = changes.catch_up

    async def timed_catch_up(*a, **kw):
        t0 = time.perf_counter()
        try:
            return await real_catch_up(*a, **kw)
        finally:
            catchups.append(time.perf_counter() - t0)

    changes.catch_up = timed_catch_up

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.JobChanged):
            delivered.append((time.time(), event.job.id, event.job.priority))

    bus = events.EventBus(url, on_event=on_event)

    def raw_listener(ready: threading.Event, stop: threading.Event) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("LISTEN ffdesk")
            ready.set()
            while not stop.is_set():
                for note in conn.notifies(timeout=0.2):
                    now = time.time()
                    payload = json.loads(note.payload)
                    if payload.get("k") == "job":
                        for job_id, _state in payload.get("ids") or []:
                            notified.append((now, job_id))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener_ready, listener_stop = threading.Event(), threading.Event()
        listener = threading.Thread(
            target=raw_listener, args=(listener_ready, listener_stop), daemon=True
        )
        listener.start()
        running = asyncio.ensure_future(bus.run())
        deadline = time.monotonic() + 30
        while not (bus.connected and listener_ready.is_set()):
            if time.monotonic() > deadline:
                raise RuntimeError("the consumer's bus did not connect within 30 s")
            await asyncio.sleep(0.01)
        stop = asyncio.Event()

        def wait_stdin() -> None:
            sys.stdin.readline()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_stdin, daemon=True).start()
        print("ready", flush=True)
        await stop.wait()
        bus.stop()
        await running
        listener_stop.set()
        listener.join(5)

    run_async(main())
    counters = {
        "notifications": bus.notifications,
        "catchups": bus.catchups,
        "pings": bus.pings,
        "pings_echoed": bus.pings_echoed,
        "sessions": bus.sessions,
        "events_emitted": bus.events_emitted,
    }
    Path(out).write_text(
        json.dumps(
            {"delivered": delivered, "notified": notified, "catchups": catchups,
             "counters": counters}
        ),
        encoding="utf-8",
    )
    return 0


# --------------------------------------------------------------------------- producer


async def produce(url: str, job_ids: list[int], mode: Mode, rng: random.Random) -> None:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        for i in range(mode.samples):
            job_id = job_ids[i % len(job_ids)]
            priority = 1000 + i  # unique per sample
            await jobs_sql.set_priority(conn, [job_id], priority, by="bench")
            mode.committed[(job_id, priority)] = time.time()
            await asyncio.sleep(rng.uniform(0, mode.max_gap))
    finally:
        await conn.close()


async def enqueue_jobs(url: str, n: int) -> list[int]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        jobs = [
            NewJob(input=f"/nonexistent/in-{i}.mp4", output=f"/nonexistent/out-{i}.mp4",
                   preset="remux-mp4", preset_args=["-i", "{input}", "-c", "copy", "{output}"])
            for i in range(n)
        ]
        return await jobs_sql.enqueue(conn, jobs, submitted_by="bench")
    finally:
        await conn.close()


def run_mode(ws, mode: Mode, rng: random.Random) -> str:
    url = ws.fresh_database(f"events_{mode.key}")
    # No node runs: the jobs stay queued, so set_priority always changes them.
    job_ids = run_async(enqueue_jobs(url, mode.samples))
    out = ws.root / f"consumer-{mode.key}.json"
    proc = ws.popen(
        [sys.executable, __file__, "--consumer", url, str(out), mode.key],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline().decode().strip()
    if line != "ready":
        raise RuntimeError(f"consumer did not start (said {line!r}, exit {proc.poll()})")
    time.sleep(0.5)  # past the bus's first ping and catch-up
    print(f"[bench] {mode.label}: {mode.samples} changes, gaps 0-{mode.max_gap:g} s", flush=True)
    run_async(produce(url, job_ids, mode, rng))
    # The last change needs up to one poll interval in the poll-only mode.
    time.sleep(6.0 if mode.key == "poll" else 1.0)
    proc.stdin.write(b"stop\n")
    proc.stdin.flush()
    proc.wait(30)
    wait_for(out.exists, timeout=5, what="the consumer's records")
    data = json.loads(out.read_text(encoding="utf-8"))
    for t, job_id, priority in data["delivered"]:
        mode.delivered.setdefault((job_id, priority), t)
    for t, job_id in data["notified"]:
        mode.notified.setdefault(job_id, t)
    mode.catchups = data["catchups"]
    mode.counters = data["counters"]
    return url


# --------------------------------------------------------------------------- report


def report(modes: list[Mode]) -> None:
    rows = []
    for mode in modes:
        lat = mode.latencies()
        missing = len(mode.committed) - len(lat)
        rows.append(
            (
                mode.label,
                f"{len(lat)}" + (f" ({missing} lost)" if missing else ""),
                ms(min(lat)) if lat else "-",
                ms(percentile(lat, 50)),
                ms(percentile(lat, 90)),
                ms(percentile(lat, 99)),
                ms(max(lat)) if lat else "-",
            )
        )
    print_table(
        "Event latency, COMMIT in the producer -> JobChanged delivered in the consumer (ms)",
        ("mode", "n", "min", "p50", "p90", "p99", "max"),
        rows,
    )
    notify = next(m for m in modes if m.key == "notify")
    note_lat = notify.notify_latencies()
    rows = [
        ("COMMIT -> NOTIFY heard by a plain LISTEN connection", ms(percentile(note_lat, 50)),
         ms(percentile(note_lat, 99))),
        ("bus coalesce wait after a NOTIFY (setting)", "30.0", "30.0"),
        ("catch-up read (changes.catch_up, all reads)", ms(percentile(notify.catchups, 50)),
         ms(percentile(notify.catchups, 99))),
        ("COMMIT -> JobChanged delivered (total)", ms(percentile(notify.latencies(), 50)),
         ms(percentile(notify.latencies(), 99))),
    ]
    print_table(f"Where the time goes ({notify.label} mode; ms)", ("part", "p50", "p99"), rows)
    for mode in modes:
        c = mode.counters
        per = len(mode.committed) / max(1, c.get("catchups", 1))
        print(
            f"  {mode.label}: {c.get('notifications', 0)} notifications heard by the bus, "
            f"{c.get('catchups', 0)} catch-up reads ({per:.1f} changes per read), "
            f"{c.get('pings_echoed', 0)}/{c.get('pings', 0)} pings echoed, "
            f"{c.get('sessions', 0)} session(s)"
        )
        print(f"  {mode.label}: while it ran, {mode.cpu}")
    lat = notify.latencies()
    p99 = percentile(lat, 99)
    complete = len(lat) == len(notify.committed)
    ok = p99 < GOAL_P99 and complete
    print(
        f"\nGoal ({notify.label}): p99 < {GOAL_P99 * 1000:.0f} ms: {ms(p99)} ms"
        f"{'' if complete else ', but some changes were never delivered'}"
        f"  =>  {'PASS' if ok else 'FAIL'}"
    )


def main() -> int:
    args = parse_args()
    if args.consumer:
        return consumer_main(*args.consumer)
    rng = random.Random(args.seed)
    modes = [
        Mode("notify", "NOTIFY", args.samples, 0.100),
        Mode("poll", "poll only (5 s)", args.poll_samples, 1.0),
    ]
    modes = [m for m in modes if m.samples > 0]
    with workspace_from("events", args) as ws:
        url = ""
        for mode in modes:
            with CpuMeter(ws) as meter:
                url = run_mode(ws, mode, rng)
            mode.cpu = meter.describe()
        print_machine(url)
        report(modes)
    return 0


if __name__ == "__main__":
    run_main(main)
