"""Overhead on real work: ffdesk vs. the same FFmpeg commands run by ``xargs -P``.

40 short clips (2 s 320x240 testsrc2 + sine, made once), preset h264-mp4, 2 slots.

* ffdesk: ``ffdesk submit`` the clips (not timed), then time ``ffdesk node --slots 2
  --exit-when-idle`` from Popen to exit. Also reported: the span from the first job's
  started_at to the last job's finished_at (excludes node start-up and exit).
* baseline: exactly the argv lists ffdesk ran (``attempts.argv`` of an untimed first ffdesk
  run), fed to ``xargs -0 -n <k> -P 2 <ffmpeg>`` from a NUL-separated file (no shell, no
  quoting); ffmpeg's progress output goes to /dev/null, its stderr to a file.

Every timed run uses a fresh database and an empty output folder; the two sides alternate.
The verdict compares the medians of the wall times: ffdesk / xargs, goal <= 1.05.

To explain the result, each run also reports CPU time: of the timed process tree (node or
xargs with all their ffmpeg/ffprobe children), of the private PostgreSQL, and of every other
process on the machine (a disturbed run shows there). The last table times ffdesk's extras
(input probe, output verification, output commit, node start-up) one by one.

    .venv/bin/python bench/overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    FFMPEG,
    CpuMeter,
    Workspace,
    add_diagnosis_options,
    make_clip,
    ms,
    percentile,
    print_machine,
    print_table,
    query,
    run_main,
    workspace_from,
)

from ffdesk.ffmpeg.locate import find_ffprobe
from ffdesk.ffmpeg.probe import probe
from ffdesk.ffmpeg.runner import commit_output, verify_output

GOAL_RATIO = 1.05


@dataclass
class RunResult:
    side: str
    wall: float
    span: float | None = None  # first started_at -> last finished_at
    head: float | None = None  # node Popen -> first started_at
    tail: float | None = None  # last finished_at -> node exit
    cpu: float = 0.0  # user + sys CPU seconds of the timed process and all its children
    db_cpu: float = 0.0  # CPU seconds PostgreSQL spent meanwhile
    others: float = 0.0  # CPU seconds other processes on the machine used meanwhile
    per_job: dict[str, list[float]] = field(default_factory=dict)
    counted: bool = True


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Overhead on real work: ffdesk node vs. xargs -P running the same FFmpeg argv."
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 clips, 1 repetition")
    parser.add_argument("--clips", type=int, default=None, metavar="N", help="default 40")
    parser.add_argument("--reps", type=int, default=None, metavar="N", help="default 3")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length (default 2)")
    parser.add_argument("--size", default="320x240", help="clip size (default 320x240)")
    parser.add_argument("--rate", type=int, default=25, help="clip frame rate (default 25)")
    parser.add_argument("--preset", default="h264-mp4")
    add_diagnosis_options(parser)
    args = parser.parse_args()
    if args.clips is None:
        args.clips = 8 if args.quick else 40
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    return args


# --------------------------------------------------------------------------- the two sides


def children_cpu() -> float:
    """CPU seconds of every reaped descendant (ffmpeg and ffprobe are reaped by the node or
    xargs, which we reap: their time is included)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


def ffdesk_run(
    ws: Workspace, n: int, clips: list[Path], out_dir: Path, args: argparse.Namespace
) -> tuple[RunResult, list[list[str]]]:
    """Submit, then time one node from start to --exit-when-idle exit."""
    clear(out_dir)
    url = ws.fresh_database(f"overhead_{n}")
    ws.cli(
        "submit",
        "--preset",
        args.preset,
        "--output-dir",
        str(out_dir),
        *map(str, clips),
        database=url,
    )
    with CpuMeter(ws) as meter:
        cpu0, db0 = children_cpu(), ws.server_cpu()
        node = ws.start_node(
            f"bench-{n}", "--slots", str(args.slots), "--exit-when-idle", database=url
        )
        rc = node.proc.wait(timeout=120 + 60 * len(clips))
        wall = time.perf_counter() - node.started_perf
        exited = time.time()
        cpu, db_cpu = children_cpu() - cpu0, ws.server_cpu() - db0
    if rc != 0:
        raise RuntimeError(f"node exited {rc}:\n{node.log_tail()}")
    rows = query(
        url,
        """SELECT j.id, j.state, j.reason, extract(epoch FROM j.claimed_at),
                  extract(epoch FROM j.started_at), extract(epoch FROM j.finished_at), a.argv
             FROM jobs j JOIN attempts a ON a.id = j.claim ORDER BY j.id""",
    )
    bad = [(r[0], r[1], r[2]) for r in rows if r[1] != "succeeded"]
    if bad or len(rows) != len(clips):
        raise RuntimeError(f"ffdesk run {n}: {len(rows)} jobs, not succeeded: {bad}")
    claimed = sorted(float(r[3]) for r in rows)
    started = [float(r[4]) for r in rows]
    finished = sorted(float(r[5]) for r in rows)
    # Slot hand-off: the (i + slots)-th claim follows the i-th job to finish.
    handoff = [c - f for c, f in zip(claimed[args.slots :], finished, strict=False)]
    result = RunResult(
        "ffdesk",
        wall,
        span=max(finished) - min(started),
        head=min(started) - node.started_wall,
        tail=exited - max(finished),
        cpu=cpu,
        db_cpu=db_cpu,
        others=meter.others,
        per_job={
            "claim -> started (probe, folder check, Popen, mark_started)": [
                float(r[4]) - float(r[3]) for r in rows
            ],
            "started -> finished (FFmpeg, verify probe, fsync, commit)": [
                float(r[5]) - float(r[4]) for r in rows
            ],
            "slot hand-off (job finished -> next claim)": handoff,
        },
    )
    outputs = [p for p in out_dir.iterdir() if not p.name.startswith(".")]
    if len(outputs) != len(clips):
        raise RuntimeError(f"ffdesk run {n}: {len(outputs)} outputs for {len(clips)} clips")
    return result, [list(r[6]) for r in rows]


def xargs_run(
    ws: Workspace, n: int, argvs: list[list[str]], out_dir: Path, slots: int
) -> RunResult:
    """The same argv lists through xargs -P: one NUL-separated file, k args per command."""
    clear(out_dir)
    ffmpeg = argvs[0][0]
    k = len(argvs[0]) - 1
    if any(a[0] != ffmpeg or len(a) - 1 != k for a in argvs):
        raise RuntimeError("the jobs' argv lists differ in binary or length; xargs -n needs both")
    args_file = ws.root / "xargs-args.bin"
    args_file.write_bytes(b"".join(a.encode() + b"\0" for argv in argvs for a in argv[1:]))
    stderr_file = ws.root / f"xargs-{n}.stderr"
    argv = ["xargs", "-0", "-a", str(args_file), "-n", str(k), "-P", str(slots), ffmpeg]
    with stderr_file.open("wb") as err, CpuMeter(ws) as meter:
        cpu0, db0 = children_cpu(), ws.server_cpu()
        t0 = time.perf_counter()
        proc = ws.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        rc = proc.wait(timeout=120 + 60 * len(argvs))
        wall = time.perf_counter() - t0
        cpu, db_cpu = children_cpu() - cpu0, ws.server_cpu() - db0
    if rc != 0:
        tail = stderr_file.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"xargs run {n} exited {rc}:\n{tail}")
    outputs = list(out_dir.iterdir())
    if len(outputs) != len(argvs):
        raise RuntimeError(f"xargs run {n}: {len(outputs)} outputs for {len(argvs)} jobs")
    return RunResult("xargs", wall, cpu=cpu, db_cpu=db_cpu, others=meter.others)


def fixed_costs(
    ws: Workspace, clip: Path, argv: list[str], reps: int
) -> list[tuple[str, float, float]]:
    """(label, median wall s, median CPU s) of ffdesk's per-job and per-run extras, each
    timed alone here with ffdesk's own functions while nothing else of ours runs."""
    ffmpeg = Path(FFMPEG)
    ffprobe = find_ffprobe(None, ffmpeg)
    out = Path(argv[-1])
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=True)
    expect = probe(clip, ffprobe=ffprobe, ffmpeg=ffmpeg)
    samples: dict[str, list[tuple[float, float]]] = {}

    def timed(label: str, fn) -> None:
        c0, t0 = children_cpu(), time.perf_counter()
        fn()
        samples.setdefault(label, []).append((time.perf_counter() - t0, children_cpu() - c0))

    final = out.with_name("final.mp4")
    for _ in range(reps):
        timed("ffprobe of the input (probe)", lambda: probe(clip, ffprobe=ffprobe, ffmpeg=ffmpeg))
        timed(
            "ffprobe of the output (verify_output)",
            lambda: verify_output(
                out, expect=expect, needs=("video",), ffprobe=ffprobe, ffmpeg=ffmpeg
            ),
        )
        timed("commit_output (fsync, rename, fsync dir)", lambda: commit_output(out, final))
        final.replace(out)
    for i in range(max(1, reps // 4)):
        for fresh in (False, True):
            url = ws.fresh_database(f"idle_{i}_{int(fresh)}")
            ident = f"idle-{i}-{'fresh' if fresh else 'warm'}"
            home = ws.path("fresh-homes", ident) if fresh else None

            def idle_node(url: str = url, ident: str = ident, home: Path | None = home) -> None:
                node = ws.start_node(
                    ident, "--slots", "2", "--exit-when-idle", database=url, home=home
                )
                if node.proc.wait(timeout=120) != 0:
                    raise RuntimeError(f"idle node exited {node.proc.returncode}")

            label = (
                "ffdesk node, empty queue, fresh --home (start -> exit)"
                if fresh
                else "ffdesk node, empty queue, same --home as the runs"
            )
            timed(label, idle_node)
    out.unlink(missing_ok=True)
    return [
        (
            label,
            statistics.median(v[0] for v in values),
            statistics.median(v[1] for v in values),
        )
        for label, values in samples.items()
    ]


# --------------------------------------------------------------------------- report


def sec(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def report(
    runs: list[RunResult],
    fixed: list[tuple[str, float, float]],
    args: argparse.Namespace,
    clip_info: str,
) -> None:
    rows = []
    for i, r in enumerate(runs):
        rows.append(
            (
                str(i) if r.counted else f"{i} (warm-up, not counted)",
                r.side,
                sec(r.wall),
                sec(r.cpu),
                sec(r.db_cpu),
                f"{r.others:.1f}",
                sec(r.span),
                sec(r.head),
                sec(r.tail),
            )
        )
    print_table(
        f"Runs ({args.clips} clips, {clip_info}, preset {args.preset}, {args.slots} slots; s)",
        (
            "run",
            "side",
            "wall",
            "cpu",
            "db cpu",
            "others' cpu",
            "first start->last finish",
            "node start->first start",
            "last finish->exit",
        ),
        rows,
    )

    counted = [r for r in runs if r.counted]
    xr = [r for r in counted if r.side == "xargs"]
    fr = [r for r in counted if r.side == "ffdesk"]
    x_wall = statistics.median(r.wall for r in xr)
    f_wall = statistics.median(r.wall for r in fr)
    f_span = statistics.median(r.span for r in fr if r.span is not None)
    x_cpu = statistics.median(r.cpu for r in xr)
    f_cpu = statistics.median(r.cpu for r in fr)
    x_db = statistics.median(r.db_cpu for r in xr)
    f_db = statistics.median(r.db_cpu for r in fr)
    ratio = f_wall / x_wall
    n = args.clips
    rows = [
        (
            f"xargs -0 -n k -P {args.slots} ffmpeg",
            len(xr),
            sec(x_wall),
            "1.000",
            sec(x_cpu),
            f"{x_cpu / n * 1000:.0f}",
            sec(x_db),
        ),
        (
            f"ffdesk node --slots {args.slots} --exit-when-idle",
            len(fr),
            sec(f_wall),
            f"{ratio:.3f}",
            sec(f_cpu),
            f"{f_cpu / n * 1000:.0f}",
            sec(f_db),
        ),
        (
            "ffdesk, first start -> last finish only",
            len(fr),
            sec(f_span),
            f"{f_span / x_wall:.3f}",
            "",
            "",
            "",
        ),
    ]
    print_table(
        "Medians",
        ("side", "runs", "wall s", "wall vs xargs", "cpu s", "cpu ms/job", "db cpu s"),
        rows,
    )
    print(
        f"\nGoal: ffdesk / xargs <= {GOAL_RATIO:.2f}: {ratio:.3f}  =>  "
        f"{'PASS' if ratio <= GOAL_RATIO else 'FAIL'}"
    )
    print(
        f"  extra per job: {(f_wall - x_wall) / n * 1000:.0f} ms of wall time, "
        f"{(f_cpu - x_cpu) / n * 1000:.0f} ms of CPU in ffdesk's processes and "
        f"{(f_db - x_db) / n * 1000:.0f} ms in PostgreSQL ({args.slots} slots, "
        f"{os.cpu_count()} cores)"
    )

    rows = []
    for key in fr[0].per_job:
        values = [v for r in fr for v in r.per_job[key]]
        rows.append((key, ms(percentile(values, 50)), ms(percentile(values, 90)), ms(max(values))))
    for label, values in (
        ("node start -> first started_at (per run)", [r.head for r in fr]),
        ("last finished_at -> node exit (per run)", [r.tail for r in fr]),
    ):
        got = [v for v in values if v is not None]
        rows.append((label, ms(statistics.median(got)), "", ms(max(got))))
    print_table(
        "ffdesk per job and per run (timed runs, from the database; ms)",
        ("part", "p50", "p90", "max"),
        rows,
    )
    print_table(
        "ffdesk's extras, each timed alone (nothing else of the benchmark running; median; ms)",
        ("step", "wall", "cpu"),
        [(label, ms(w), ms(c)) for label, w, c in fixed],
    )


# --------------------------------------------------------------------------- main


def main() -> int:
    args = parse_args()
    clip_info = f"{args.seconds:g} s {args.size} {args.rate} fps testsrc2 + sine"
    with workspace_from("overhead", args) as ws:
        print(f"[bench] making {args.clips} clips ({clip_info})", flush=True)
        clips = [
            make_clip(
                ws.root / "clips" / f"clip{i:03d}.mp4",
                seconds=args.seconds,
                size=args.size,
                rate=args.rate,
            )
            for i in range(args.clips)
        ]
        out_dir = ws.root / "out"
        runs: list[RunResult] = []

        print("[bench] warm-up ffdesk run (not counted; gives the argv for xargs)", flush=True)
        warm, argvs = ffdesk_run(ws, 0, clips, out_dir, args)
        warm.counted = False
        runs.append(warm)
        for rep in range(args.reps):
            order = ("xargs", "ffdesk") if rep % 2 == 0 else ("ffdesk", "xargs")
            for side in order:
                n = len(runs)
                if side == "xargs":
                    result = xargs_run(ws, n, argvs, out_dir, args.slots)
                else:
                    result, _ = ffdesk_run(ws, n, clips, out_dir, args)
                runs.append(result)
                print(f"[bench] run {n}: {side} {result.wall:.3f} s", flush=True)
        print("[bench] timing ffdesk's extras alone", flush=True)
        fixed = fixed_costs(ws, clips[0], argvs[0], reps=4 if args.quick else 12)
        clear(out_dir)
        print_machine(ws.admin_url)
        report(runs, fixed, args, clip_info)
        ws.print_node_problems()
    return 0


if __name__ == "__main__":
    run_main(main)
