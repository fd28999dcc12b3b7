"""Dispatch latency: enqueue -> FFmpeg process started, on an idle node.

One ``ffdesk node --slots 1`` per mode, samples taken one at a time: enqueue one tiny job
(0.2 s 64x48 clip, preset remux-mp4) through ``ffdesk.db.jobs.enqueue``, wait until it has
finished (the node is idle again), wait a random time (decorrelates the next enqueue from the
node's poll timer), repeat. All latencies come from the database, one clock:

* total = started_at - created_at (created_at: now() of the enqueue transaction; started_at:
  clock_timestamp() written right after the node's FFmpeg Popen returned)
* claim = claimed_at - created_at (wake-up + claim statement)
* start = started_at - claimed_at (ffprobe of the input, output-folder check, Popen, the
  mark_started write)

Modes:

* NOTIFY: default node flags, --poll 5; random wait 0-1 s. This is the one the goal is for.
* poll-only: --poll-only --poll 5 (the BitBonsai design). The node restarts its poll timer
  whenever a job finishes, so here the random wait spans a whole poll interval (0-5 s): the
  enqueue then lands uniformly in the poll cycle, as jobs arriving at random do.
* NOTIFY --debug (diagnostic, not part of the goal): like NOTIFY with ``--debug`` logging;
  the node's log timestamps split the start part into its steps.

    .venv/bin/python bench/dispatch_latency.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
from common import (
    FFMPEG,
    CpuMeter,
    NodeProcess,
    add_diagnosis_options,
    make_clip,
    ms,
    percentile,
    print_machine,
    print_table,
    run_async,
    run_main,
    wait_node_ready,
    workspace_from,
)

from ffdesk.core.model import NewJob
from ffdesk.db import jobs as jobs_sql
from ffdesk.ffmpeg.locate import find_ffprobe
from ffdesk.ffmpeg.presets import Preset, get_preset, load_presets
from ffdesk.ffmpeg.probe import probe
from ffdesk.ffmpeg.runner import FfmpegProcess, build_argv

GOAL_P50 = 0.050
GOAL_P99 = 0.250
POLL = 5.0
DEBUG_AREAS = "queue,ffmpeg,cluster"  # the areas logging 'claimed', 'starting', 'ffmpeg pid'


@dataclass
class Sample:
    job_id: int
    created: datetime
    claimed: datetime
    started: datetime

    @property
    def total(self) -> float:
        return (self.started - self.created).total_seconds()

    @property
    def claim(self) -> float:
        return (self.claimed - self.created).total_seconds()

    @property
    def start(self) -> float:
        return (self.started - self.claimed).total_seconds()


@dataclass
class Mode:
    key: str
    label: str
    flags: list[str]
    samples: int
    max_wait: float  # random wait after each job, seconds
    listening: bool
    results: list[Sample] = field(default_factory=list)
    wall: float = 0.0  # seconds spent sampling (without warm-up)
    node_log: Path | None = None
    load: str = ""  # what other processes on the machine did meanwhile


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Dispatch latency: enqueue -> FFmpeg started, on an idle node."
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: ~20 + ~5 samples")
    parser.add_argument("--notify-samples", type=int, default=None, metavar="N")
    parser.add_argument("--poll-samples", type=int, default=None, metavar="N")
    parser.add_argument("--debug-samples", type=int, default=None, metavar="N")
    parser.add_argument("--warmup", type=int, default=None, metavar="N", help="uncounted jobs")
    parser.add_argument("--preset", default="remux-mp4", help="remux-mp4 (default) or h264-mp4")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random waits")
    add_diagnosis_options(parser)
    args = parser.parse_args()
    quick = args.quick
    if args.notify_samples is None:
        args.notify_samples = 20 if quick else 200
    if args.poll_samples is None:
        args.poll_samples = 5 if quick else 40
    if args.debug_samples is None:
        args.debug_samples = 10 if quick else 50
    if args.warmup is None:
        args.warmup = 1 if quick else 3
    return args


# --------------------------------------------------------------------------- sampling


async def sample_mode(
    url: str,
    node: NodeProcess,
    mode: Mode,
    *,
    clip: Path,
    out_dir: Path,
    preset: Preset,
    warmup: int,
    rng: random.Random,
) -> None:
    suffix = Path(preset.output_name(clip)).suffix
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        began = time.perf_counter()
        for i in range(warmup + mode.samples):
            if i == warmup:
                began = time.perf_counter()
            output = out_dir / f"{mode.key}-{i:05d}{suffix}"
            job = NewJob(
                input=str(clip),
                output=str(output),
                preset=preset.name,
                preset_args=list(preset.args),
                needs=list(preset.needs),
                max_attempts=1,
            )
            [job_id] = await jobs_sql.enqueue(conn, [job], submitted_by="bench")
            state, reason, created, claimed, started = await _wait_finished(
                conn, job_id, node, limit_s=POLL + 60
            )
            if state != "succeeded":
                raise RuntimeError(f"job {job_id} ended {state}: {reason}\n{node.log_tail()}")
            if i >= warmup:
                mode.results.append(Sample(job_id, created, claimed, started))
                done = len(mode.results)
                if done % 20 == 0 or done == mode.samples:
                    p50 = statistics.median(s.total for s in mode.results)
                    print(
                        f"  {mode.label}: {done}/{mode.samples}, p50 so far {ms(p50)} ms",
                        flush=True,
                    )
            output.unlink(missing_ok=True)
            await asyncio.sleep(rng.uniform(0, mode.max_wait))
        mode.wall = time.perf_counter() - began
    finally:
        await conn.close()


async def _wait_finished(conn, job_id: int, node: NodeProcess, *, limit_s: float) -> tuple:
    deadline = time.monotonic() + limit_s
    while True:
        cur = await conn.execute(
            "SELECT state, reason, created_at, claimed_at, started_at FROM jobs WHERE id = %s",
            [job_id],
        )
        row = await cur.fetchone()
        if row[0] in ("succeeded", "failed", "dead", "canceled"):
            return row
        node.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {row[0]} after {limit_s:.0f} s")
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- breakdowns

_LOG_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+\s+ffdesk\.\w+: (.*)$")


def node_steps(log: Path) -> dict[int, dict[str, datetime]]:
    """Per job: when the node logged 'claimed', 'starting' and 'ffmpeg pid' (ms resolution,
    local time of this machine, the clock PostgreSQL uses too)."""
    steps: dict[int, dict[str, datetime]] = {}
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _LOG_RE.match(line)
        if not m:
            continue
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone()
        msg = m.group(2)
        if msg.startswith("claimed "):
            for job_id in re.findall(r"#(\d+)", msg.split(" (")[0]):
                steps.setdefault(int(job_id), {})["claimed"] = at
        elif mm := re.match(r"job #(\d+): (starting|ffmpeg pid) ", msg):
            key = "starting" if mm.group(2) == "starting" else "pid"
            steps.setdefault(int(mm.group(1)), {})[key] = at
    return steps


def node_breakdown(mode: Mode) -> list[tuple[str, float]]:
    assert mode.node_log is not None
    steps = node_steps(mode.node_log)
    parts: dict[str, list[float]] = {}
    labels = [
        ("created_at -> claimed_at: NOTIFY, wake-up, claim statement starts", "created", "db"),
        ("claimed_at -> 'claimed' logged: claim statement + commit", "db", "claimed"),
        ("'claimed' -> 'starting' logged: job task scheduled", "claimed", "starting"),
        ("'starting' -> 'ffmpeg pid' logged: probe, folder check, Popen", "starting", "pid"),
        ("'ffmpeg pid' -> started_at: pool checkout + mark_started UPDATE", "pid", "started"),
    ]
    for s in mode.results:
        points = {"created": s.created, "db": s.claimed, "started": s.started}
        points.update(steps.get(s.job_id, {}))
        if not all(k in points for k in ("claimed", "starting", "pid")):
            continue
        for label, a, b in labels:
            parts.setdefault(label, []).append((points[b] - points[a]).total_seconds())
    return [(label, statistics.median(parts[label])) for label, _, _ in labels if label in parts]


def start_steps(clip: Path, preset: Preset, reps: int) -> list[tuple[str, float]]:
    """Median cost of the steps between 'starting' and 'ffmpeg pid', each run here alone the
    way JobRun runs them (same functions, same binaries), while no node is running."""
    ffmpeg = Path(FFMPEG)
    ffprobe = find_ffprobe(None, ffmpeg)
    probe_t, folder_t, popen_t = [], [], []
    with tempfile.TemporaryDirectory(prefix="ffdesk-bench-start-") as tmp:
        folder = Path(tmp) / "out"
        for i in range(reps):
            t0 = time.perf_counter()
            probe(clip, ffprobe=ffprobe, ffmpeg=ffmpeg)
            probe_t.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            folder.mkdir(parents=True, exist_ok=True)  # what job_run._check_output_dir does
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".ffdesk-write-test-"):
                pass
            folder_t.append(time.perf_counter() - t0)

            out = folder / f".clip.{i}-{i}.part.mp4"
            proc = FfmpegProcess(build_argv(ffmpeg, preset.render(input=clip, output=out)))
            t0 = time.perf_counter()
            proc.start()
            popen_t.append(time.perf_counter() - t0)
            result = proc.wait(60)
            if result.exit_code != 0:
                raise RuntimeError(f"ffmpeg failed: {result.stderr[-500:]}")
            out.unlink(missing_ok=True)
    return [
        ("ffprobe of the input (ffdesk.ffmpeg.probe.probe)", statistics.median(probe_t)),
        ("output folder write test (mkdir + temp file)", statistics.median(folder_t)),
        ("FfmpegProcess.start() (Popen + 3 threads)", statistics.median(popen_t)),
    ]


# --------------------------------------------------------------------------- report


def report(
    modes: list[Mode],
    in_node: list[tuple[str, float]],
    alone: list[tuple[str, float]],
    preset: str,
) -> None:
    rows = []
    parts = (
        ("total  started - created", lambda s: s.total),
        ("claim  claimed - created", lambda s: s.claim),
        ("start  started - claimed", lambda s: s.start),
    )
    for mode in modes:
        for n, (label, get) in enumerate(parts):
            values = [get(s) for s in mode.results]
            rows.append(
                (
                    mode.label if n == 0 else "",
                    str(len(values)) if n == 0 else "",
                    label,
                    ms(percentile(values, 50)),
                    ms(percentile(values, 90)),
                    ms(percentile(values, 99)),
                    ms(max(values)),
                )
            )
    print_table(
        f"Dispatch latency, enqueue -> FFmpeg started (ms; 1 idle node, --slots 1, {preset})",
        ("mode", "n", "part", "p50", "p90", "p99", "max"),
        rows,
    )
    for mode in modes:
        per = mode.wall / len(mode.results) if mode.results else 0
        print(
            f"  {mode.label}: {len(mode.results)} samples, random wait 0-{mode.max_wait:g} s "
            f"after each job, {per:.2f} s per sample; meanwhile {mode.load}"
        )
    poll = next((m for m in modes if m.key == "poll"), None)
    if poll is not None:
        print(
            f"  {poll.label}: fewer samples because each waits for the poll timer "
            f"(~{POLL / 2:g} s on average); with n={len(poll.results)}, p99 is "
            "interpolated between the two largest samples"
        )

    notify = next((m for m in modes if m.key == "notify"), None)
    if notify is not None:
        totals = [s.total for s in notify.results]
        p50, p99 = percentile(totals, 50), percentile(totals, 99)
        ok50, ok99 = p50 < GOAL_P50, p99 < GOAL_P99
        print(
            f"\nGoal ({notify.label}): p50 < {GOAL_P50 * 1000:.0f} ms: {ms(p50)} ms "
            f"{'PASS' if ok50 else 'FAIL'};  p99 < {GOAL_P99 * 1000:.0f} ms: {ms(p99)} ms "
            f"{'PASS' if ok99 else 'FAIL'}  =>  {'PASS' if ok50 and ok99 else 'FAIL'}"
        )

    debug = next((m for m in modes if m.key == "debug"), None)
    if debug is not None and not in_node:
        print(
            f"\n(no in-node breakdown: the {debug.label} node log has no 'claimed' / 'starting'"
            " / 'ffmpeg pid' lines for the sampled jobs; did the log format change?)"
        )
    if in_node and debug is not None:
        rows = [(label, ms(v)) for label, v in in_node]
        rows.append(("sum (p50 of each step)", ms(sum(v for _, v in in_node))))
        rows.append(("total p50 of that run", ms(percentile([s.total for s in debug.results], 50))))
        print_table(
            f"Where the time goes in the node ({debug.label} run, p50 per step; ms)",
            ("step", "ms"),
            rows,
        )
    known = sum(v for _, v in alone)
    rows = [(label, ms(v)) for label, v in alone]
    rows.append(("sum", ms(known)))
    print_table(
        "The probe/Popen step split up (each step timed alone in this process, median; ms)",
        ("step", "ms"),
        rows,
    )


# --------------------------------------------------------------------------- main


def main() -> int:
    args = parse_args()
    rng = random.Random(args.seed)
    preset = get_preset(load_presets(), args.preset)
    modes = [
        Mode("notify", "NOTIFY", ["--poll", str(POLL)], args.notify_samples, 1.0, True),
        Mode(
            "poll",
            "poll-only",
            ["--poll-only", "--poll", str(POLL)],
            args.poll_samples,
            POLL,
            False,
        ),
    ]
    if args.debug_samples > 0:
        modes.append(
            Mode(
                "debug",
                "NOTIFY --debug",
                ["--poll", str(POLL), "--debug", DEBUG_AREAS],
                args.debug_samples,
                1.0,
                True,
            )
        )
    modes = [m for m in modes if m.samples > 0]
    with workspace_from("dispatch", args) as ws:
        clip = make_clip(ws.root / "clips" / "tiny.mp4", seconds=0.2, size="64x48", rate=25)
        out_dir = ws.path("out")
        info_url = ""
        for mode in modes:
            url = ws.fresh_database(f"dispatch_{mode.key}")
            info_url = url
            node = ws.start_node(f"bench-{mode.key}", "--slots", "1", *mode.flags, database=url)
            mode.node_log = node.log
            wait_node_ready(url, node, listening=mode.listening)
            time.sleep(0.5)  # let the node settle into its idle wait
            print(
                f"[bench] {mode.label}: {args.warmup} warm-up + {mode.samples} samples",
                flush=True,
            )
            with CpuMeter(ws) as meter:
                run_async(
                    sample_mode(
                        url,
                        node,
                        mode,
                        clip=clip,
                        out_dir=out_dir,
                        preset=preset,
                        warmup=args.warmup,
                        rng=rng,
                    )
                )
                node.stop()  # reaped inside the meter: the node's CPU counts as ours
            mode.load = meter.describe()
            if node.proc.returncode != 0:
                print(f"[bench] warning: node exited {node.proc.returncode}", file=sys.stderr)
        debug = next((m for m in modes if m.key == "debug"), None)
        in_node = node_breakdown(debug) if debug is not None else []
        alone = start_steps(clip, preset, reps=5 if args.quick else 20)
        print_machine(info_url)
        report(modes, in_node, alone, preset.name)
        ws.print_node_problems()
    return 0


if __name__ == "__main__":
    run_main(main)
