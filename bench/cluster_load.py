"""Database load: (a) what idle nodes cost the server, (b) 50 simulated nodes on one server.

The private server runs with ``shared_preload_libraries = 'pg_stat_statements'`` (set with
ALTER SYSTEM, then the server is restarted), so statements are counted by the server itself.

**(a) idle nodes.** N=5 ``ffdesk node`` processes at default settings (heartbeat 5 s, poll 5 s,
default slots), an empty queue. After they settle, the counters are reset and read again
after 60 s: top-level statements executed in the benchmark database (pg_stat_statements
``calls``; statements run inside PL/pgSQL triggers are not counted) and transactions (the
COMMIT / ROLLBACK statements; ``pg_stat_database.xact_commit + xact_rollback`` of that
database is printed as a cross-check). "Work statements" leave
out BEGIN / COMMIT / ROLLBACK: psycopg sends BEGIN as a statement of its own, so each of the
node's transactions costs one work statement plus two round trips of transaction control.
Goal: <= 1 work statement and <= 1 transaction per second per idle node.

**(b) 50 simulated nodes.** 5 000 fake jobs are enqueued up front; 50 simulated nodes run as
asyncio tasks in ``--procs`` processes (default 2), each with one connection of its own
(non-autocommit, like the node's pool) guarded by a lock, registered in ``nodes``. Per node:
claim up to 2 jobs with ``jobs.claim`` (again at once when a slot frees, as the node does);
per job ``mark_started``, "work" 0.2-1 s (sleep, no FFmpeg), one ``report_progress`` half way,
then ``lock_for_finish`` + ``finish`` in one transaction. Every 5 s the node's beat:
``renew_leases`` and a ``rescue`` round, and ``samples.record`` every other beat, as the real
node's heartbeat and rescuer do. Measured: the claim call's latency (statement + COMMIT as
the simulated node sees it, its own lock already held), jobs/s, and CPU of the PostgreSQL
process tree, of the simulator processes and of the whole machine (psutil), all over the
steady part of the run (10 % -> 90 % of the jobs finished). No goal: it reports.
``--work 0.01 0.05`` (with ``--skip-idle``) shortens the simulated jobs so that the database
and this machine, not the sleeps, set the pace.

    .venv/bin/python bench/cluster_load.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
import psycopg.sql
from common import (
    CpuMeter,
    Workspace,
    add_diagnosis_options,
    ms,
    percentile,
    print_machine,
    print_table,
    query,
    run_async,
    run_main,
    wait_node_ready,
    workspace_from,
)

from ffdesk.core.model import JobState, Lease, NewJob
from ffdesk.db import jobs as jobs_sql
from ffdesk.db import nodes as nodes_sql
from ffdesk.db import samples

GOAL_PER_NODE = 1.0
SLOTS = 2
BEAT = 5.0
LEASE = 3 * BEAT
CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|START TRANSACTION)\b", re.IGNORECASE)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 15 s idle window, 10 nodes x 500 jobs")
    parser.add_argument("--idle-nodes", type=int, default=5, metavar="N")
    parser.add_argument("--idle-seconds", type=float, default=None, metavar="S")
    parser.add_argument("--settle", type=float, default=None, metavar="S",
                        help="seconds between the nodes' start and the idle window")
    parser.add_argument("--sim-nodes", type=int, default=None, metavar="N")
    parser.add_argument("--jobs", type=int, default=None, metavar="N")
    parser.add_argument("--procs", type=int, default=2, metavar="N", help="simulator processes")
    parser.add_argument("--work", type=float, nargs=2, default=(0.2, 1.0), metavar=("MIN", "MAX"),
                        help="simulated job length, seconds (default 0.2 1.0)")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    add_diagnosis_options(parser)
    parser.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="diagnosis: ALTER SYSTEM SET this on the private server "
                        "(e.g. synchronous_commit=off); repeatable")
    # Internal: how a simulator process is started.
    parser.add_argument("--sim", nargs=7, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick = args.quick
    if args.idle_seconds is None:
        args.idle_seconds = 15.0 if quick else 60.0
    if args.settle is None:
        args.settle = 8.0 if quick else 20.0
    if args.sim_nodes is None:
        args.sim_nodes = 10 if quick else 50
    if args.jobs is None:
        args.jobs = 500 if quick else 5000
    return args


# --------------------------------------------------------------------------- server setup


def enable_pg_stat_statements(ws: Workspace, extra: list[str]) -> None:
    with psycopg.connect(ws.admin_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        conn.execute("ALTER SYSTEM SET pg_stat_statements.track = 'top'")
        for item in extra:
            name, _, value = item.partition("=")
            if not re.fullmatch(r"[a-z_.]+", name):
                raise SystemExit(f"--pg-setting: bad name {name!r}")
            conn.execute(f"ALTER SYSTEM SET {name} = {psycopg.sql.quote(value)}")
            print(f"[bench] diagnosis: server setting {name} = {value}", flush=True)
    ws.server.stop()
    ws.server.acquire()
    ws.admin_url = ws.server.url(database="postgres")
    with psycopg.connect(ws.admin_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def reset_statements(ws: Workspace) -> None:
    query(ws.admin_url, "SELECT pg_stat_statements_reset()")


def statements(ws: Workspace, database: str) -> list[tuple[str, int, float, float]]:
    """(query, calls, total ms, mean ms) of one database, most calls first."""
    return query(
        ws.admin_url,
        """SELECT s.query, s.calls::bigint, s.total_exec_time, s.mean_exec_time
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
            WHERE d.datname = %s ORDER BY s.calls DESC""",
        [database],
    )


def xacts(ws: Workspace, database: str) -> int:
    query(ws.admin_url, "SELECT pg_stat_clear_snapshot()")
    (n,) = query(
        ws.admin_url,
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
        [database],
    )[0]
    return int(n)


# The engine's statements by a phrase only they contain -> the function that sends them.
LABELS = (
    ("WITH beat AS", "jobs.renew_leases (heartbeat)"),
    ("WITH picked AS", "jobs.claim"),
    ("WITH lost_nodes AS", "jobs.rescue (rescuer round)"),
    ("INSERT INTO samples", "samples.record"),
    ("pg_notify", "SELECT pg_notify (listener self-ping)"),
    ("UPDATE attempts SET started_at", "jobs.mark_started: UPDATE attempts"),
    ("SET started_at = clock_timestamp()", "jobs.mark_started: UPDATE jobs"),
    ("SET progress = ", "jobs.report_progress"),
    ("FOR UPDATE", "jobs.lock_for_finish"),
    ("SET state = $1, finished_at", "jobs.finish: UPDATE jobs"),
    ("UPDATE attempts SET finished_at", "jobs.finish: close the attempt"),
    ("INSERT INTO events (job_id, node, kind, detail) VALUES", "jobs.finish: INSERT events"),
)


def short(sql: str, width: int = 58) -> str:
    for phrase, label in LABELS:
        if phrase in sql:
            return label
    text = " ".join(sql.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def dbname(url: str) -> str:
    return query(url, "SELECT current_database()")[0][0]


# --------------------------------------------------------------------------- (a) idle nodes


@dataclass
class IdleResult:
    nodes: int
    seconds: float
    work: int = 0
    control: int = 0
    commits: int = 0  # COMMIT + ROLLBACK statements
    others: str = ""  # what else used the machine meanwhile
    xact: int = 0
    cpu: float = 0.0  # server CPU seconds in the window
    top: list[tuple[str, int, float]] = field(default_factory=list)  # query, calls, mean ms


def run_idle(ws: Workspace, args: argparse.Namespace) -> IdleResult:
    url = ws.fresh_database("load_idle")
    db = dbname(url)
    nodes = [ws.start_node(f"idle-{i + 1}", database=url) for i in range(args.idle_nodes)]
    for node in nodes:
        wait_node_ready(url, node, listening=True)
    print(
        f"[bench] (a) {len(nodes)} idle nodes online; settling {args.settle:g} s, then "
        f"counting for {args.idle_seconds:g} s",
        flush=True,
    )
    time.sleep(args.settle)
    result = IdleResult(len(nodes), args.idle_seconds)
    reset_statements(ws)
    x0, c0, t0 = xacts(ws, db), ws.server_cpu(), time.perf_counter()
    time.sleep(args.idle_seconds)
    rows = statements(ws, db)
    x1, c1, t1 = xacts(ws, db), ws.server_cpu(), time.perf_counter()
    for node in nodes:
        node.check_alive()
    result.seconds = t1 - t0
    result.xact = x1 - x0
    result.cpu = c1 - c0
    for sql, calls, _total, mean in rows:
        if CONTROL.match(sql):
            result.control += calls
            if not re.match(r"\s*(BEGIN|START)", sql, re.IGNORECASE):
                result.commits += calls
        else:
            result.work += calls
        result.top.append((sql, calls, mean))
    for node in nodes:
        node.stop()
    return result


def report_idle(r: IdleResult) -> bool:
    per = r.nodes * r.seconds
    rows = [
        ("work statements (no BEGIN/COMMIT)", r.work, f"{r.work / per:.2f}"),
        ("transactions (COMMIT + ROLLBACK statements)", r.commits, f"{r.commits / per:.2f}"),
        ("transactions (pg_stat_database, see note)", r.xact, f"{r.xact / per:.2f}"),
        ("all statements incl. BEGIN/COMMIT", r.work + r.control,
         f"{(r.work + r.control) / per:.2f}"),
    ]
    print_table(
        f"(a) {r.nodes} idle nodes at default settings, {r.seconds:.0f} s window",
        ("measure", "total", "per node per s"),
        rows,
    )
    rows = [
        (short(sql), calls, f"{calls / per:.3f}", f"{mean:.3f}")
        for sql, calls, mean in r.top[:12]
    ]
    print_table(
        "    statements executed (pg_stat_statements, top-level)",
        ("statement", "calls", "per node per s", "mean ms"),
        rows,
    )
    print(
        f"  server CPU in the window: {r.cpu:.2f} s = {r.cpu / r.seconds * 100:.2f} % of one core"
        f" ({r.cpu / per * 1000:.1f} ms per node per second)"
    )
    print(f"  while (a) ran, {r.others}")
    print(
        "  note: pg_stat_database also counts autovacuum's transactions in the database, and"
        " other backends report their counts with a delay of up to ~1 s (10 s when idle)"
    )
    ok_work = r.work / per <= GOAL_PER_NODE
    ok_x = r.commits / per <= GOAL_PER_NODE
    print(
        f"\nGoal (a): <= {GOAL_PER_NODE:g} query per second per idle node: work statements "
        f"{r.work / per:.2f} {'PASS' if ok_work else 'FAIL'}; transactions {r.commits / per:.2f} "
        f"{'PASS' if ok_x else 'FAIL'}  =>  {'PASS' if ok_work and ok_x else 'FAIL'}"
    )
    return ok_work and ok_x


# --------------------------------------------------------------------------- (b) simulator


class SimNode:
    def __init__(
        self, i: int, url: str, rng: random.Random, out: dict, work: tuple[float, float]
    ) -> None:
        self.identifier = f"sim-{i:03d}"
        self.session = str(uuid.uuid4())
        self.url = url
        self.rng = rng
        self.out = out
        self.work_range = work
        self.lock = asyncio.Lock()
        self.running: set[asyncio.Task] = set()
        self.slot_free = asyncio.Event()
        self.conn: psycopg.AsyncConnection | None = None

    async def open(self) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.url)
        info = nodes_sql.NodeInfo(
            identifier=self.identifier, session=self.session, host=socket.gethostname(),
            pid=os.getpid(), pid_created=0.0, os="sim", arch="sim", cpu="sim", cores=2,
            ram_bytes=0, app_version="bench", ffmpeg_version="none", ffmpeg_fingerprint="none",
            slots=SLOTS, heartbeat_s=BEAT, lease_s=LEASE,
        )
        await nodes_sql.register(self.conn, info)

    async def run(self) -> None:
        assert self.conn is not None
        beat = asyncio.create_task(self.heartbeat())
        try:
            while True:
                free = SLOTS - len(self.running)
                if free <= 0:
                    self.slot_free.clear()
                    await self.slot_free.wait()
                    continue
                async with self.lock:
                    t0 = time.perf_counter()
                    jobs = await jobs_sql.claim(
                        self.conn, node=self.identifier, session=self.session,
                        host="sim", limit=free, lease_seconds=LEASE,
                    )
                    dt = time.perf_counter() - t0
                self.out["claims"].append((time.time(), dt, len(jobs)))
                for job in jobs:
                    task = asyncio.create_task(self.work(job))
                    self.running.add(task)
                    task.add_done_callback(self._done)
                if jobs:
                    continue
                if not self.running and await self.queue_empty():
                    return
                self.slot_free.clear()
                # Nothing claimable now: like the node's poll, but short (the end of the run).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.slot_free.wait(), 0.5)
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            await self.conn.close()

    def _done(self, task: asyncio.Task) -> None:
        self.running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.out["errors"].append(repr(task.exception()))
        self.slot_free.set()

    async def queue_empty(self) -> bool:
        async with self.lock:
            counts = await jobs_sql.counts_by_state(self.conn)
            await self.conn.commit()
        return counts.get("queued", 0) == 0

    async def work(self, job) -> None:
        conn = self.conn
        lease = Lease(job.id, job.claim, self.session)
        seconds = self.rng.uniform(*self.work_range)
        async with self.lock:
            await jobs_sql.mark_started(
                conn, lease, argv=["ffmpeg", "-i", job.input, job.output],
                ffmpeg_version="sim", ffmpeg_sha256="0" * 64, ffmpeg_fingerprint="sim",
                duration_s=seconds, input_probe=None,
            )
        await asyncio.sleep(seconds / 2)
        async with self.lock:
            await jobs_sql.report_progress(
                conn, lease, progress=50.0, fps=100.0, speed=4.0, eta_s=seconds / 2,
                out_time_s=seconds * 2,
            )
        await asyncio.sleep(seconds / 2)
        async with self.lock, conn.transaction():
            if await jobs_sql.lock_for_finish(conn, lease):
                await jobs_sql.finish(
                    conn, lease, jobs_sql.Outcome(JobState.SUCCEEDED, exit_code=0, reason=None),
                    stderr="simulated run\n", node=self.identifier,
                )
            else:
                self.out["errors"].append(f"job #{job.id}: lost")
        self.out["finished"].append(time.time())

    async def heartbeat(self) -> None:
        await asyncio.sleep(self.rng.uniform(0, BEAT))  # nodes start at different times
        beats = 0
        while True:
            async with self.lock:
                await jobs_sql.renew_leases(
                    self.conn, node=self.identifier, session=self.session, lease_seconds=LEASE
                )
            async with self.lock:
                await jobs_sql.rescue(self.conn, by=self.identifier, session=self.session)
            beats += 1
            if beats % 2 == 0:
                async with self.lock:
                    await samples.record(
                        self.conn, node=self.identifier, session=self.session,
                        interval_s=2 * BEAT,
                    )
            self.out["beats"] += 1
            await asyncio.sleep(BEAT)


def sim_main(
    url: str, out_path: str, first: str, count: str, seed: str, work_min: str, work_max: str
) -> int:
    """A simulator process: ``count`` nodes; 'ready' on stdout, then waits for a line."""
    out: dict = {"claims": [], "finished": [], "errors": [], "beats": 0}
    rng = random.Random(int(seed))

    async def main() -> None:
        work = (float(work_min), float(work_max))
        sims = [SimNode(int(first) + i, url, rng, out, work) for i in range(int(count))]
        await asyncio.gather(*(s.open() for s in sims))
        loop = asyncio.get_running_loop()
        go = asyncio.Event()

        def wait_stdin() -> None:
            sys.stdin.readline()
            loop.call_soon_threadsafe(go.set)

        threading.Thread(target=wait_stdin, daemon=True).start()
        print("ready", flush=True)
        await go.wait()
        await asyncio.gather(*(s.run() for s in sims))

    run_async(main())
    Path(out_path).write_text(json.dumps(out), encoding="utf-8")
    return 0


async def enqueue_fake(url: str, n: int) -> None:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        for start in range(0, n, 1000):
            batch = [
                NewJob(input=f"/sim/in/{i:06d}.mp4", output=f"/sim/out/{i:06d}.mp4",
                       preset="h264-mp4", preset_args=["-i", "{input}", "{output}"])
                for i in range(start, min(n, start + 1000))
            ]
            await jobs_sql.enqueue(conn, batch, submitted_by="bench")
    finally:
        await conn.close()


@dataclass
class SimResult:
    nodes: int
    jobs: int
    procs: int
    work: tuple[float, float]
    wall: float = 0.0  # go -> last job finished
    steady: float = 0.0  # 10 % -> 90 % finished
    steady_jobs: int = 0
    claims: list[tuple[float, float, int]] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pg_cpu: float = 0.0  # CPU seconds in the steady window
    sim_cpu: float = 0.0
    machine_cpu: float = 0.0
    pg_backends: int = 0
    top: list[tuple[str, int, float, float]] = field(default_factory=list)
    functions: list[tuple[str, int, float, float]] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    others: str = ""  # what else used the machine meanwhile


def proc_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def machine_busy() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def run_sim(ws: Workspace, args: argparse.Namespace) -> SimResult:
    url = ws.fresh_database("load_sim")
    db = dbname(url)
    result = SimResult(args.sim_nodes, args.jobs, args.procs, tuple(args.work))
    run_async(enqueue_fake(url, args.jobs))
    per_proc = [args.sim_nodes // args.procs + (1 if i < args.sim_nodes % args.procs else 0)
                for i in range(args.procs)]
    procs, outs, first = [], [], 0
    for i, count in enumerate(per_proc):
        out = ws.root / f"sim-{i}.json"
        outs.append(out)
        procs.append(
            ws.popen(
                [sys.executable, __file__, "--sim", url, str(out), str(first), str(count),
                 str(args.seed * 1000 + i), str(args.work[0]), str(args.work[1])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )
        )
        first += count
    for p in procs:
        line = p.stdout.readline().decode().strip()
        if line != "ready":
            raise RuntimeError(f"simulator did not start (said {line!r}, exit {p.poll()})")
    print(
        f"[bench] (b) {args.sim_nodes} simulated nodes in {args.procs} process(es), "
        f"{args.jobs} jobs queued: go",
        flush=True,
    )
    reset_statements(ws)
    pids = [p.pid for p in procs]
    cpu_samples: list[tuple[float, float, float, float]] = []  # t, pg, sim, machine

    def sample() -> None:
        cpu_samples.append((time.time(), ws.server_cpu(), proc_cpu(pids), machine_busy()))

    sample()
    go = time.time()
    for p in procs:
        p.stdin.write(b"go\n")
        p.stdin.flush()
    deadline = time.monotonic() + 900
    backends = 0
    while any(p.poll() is None for p in procs):
        time.sleep(0.5)
        sample()
        backends = max(backends, len(psutil.Process(ws.server.status().pid).children()))
        if time.monotonic() > deadline:
            raise RuntimeError("the simulation did not finish within 15 minutes")
    result.pg_backends = backends
    for p in procs:
        if p.returncode != 0:
            raise RuntimeError(f"simulator exited {p.returncode}")
    for out in outs:
        data = json.loads(out.read_text(encoding="utf-8"))
        result.claims += [tuple(c) for c in data["claims"]]
        result.finished += data["finished"]
        result.errors += data["errors"]
    result.top = statements(ws, db)
    # Only filled with --pg-setting track_functions=pl (the triggers' own time).
    result.functions = query(
        url,
        """SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions
            ORDER BY total_time DESC""",
    )
    result.states = dict(query(url, "SELECT state, count(*) FROM jobs GROUP BY state"))
    fin = sorted(result.finished)
    result.wall = fin[-1] - go
    lo, hi = fin[len(fin) // 10], fin[len(fin) * 9 // 10]
    result.steady = hi - lo
    result.steady_jobs = len(fin) * 9 // 10 - len(fin) // 10

    def at(t: float) -> tuple[float, float, float, float]:
        return min(cpu_samples, key=lambda s: abs(s[0] - t))

    a, b = at(lo), at(hi)
    span = b[0] - a[0]
    if span > 0:
        result.pg_cpu = (b[1] - a[1]) / span
        result.sim_cpu = (b[2] - a[2]) / span
        result.machine_cpu = (b[3] - a[3]) / span
    return result


def report_sim(r: SimResult) -> None:
    fin = sorted(r.finished)
    lo, hi = fin[len(fin) // 10], fin[len(fin) * 9 // 10]
    all_claims = [dt for _, dt, _ in r.claims]
    steady = [dt for t, dt, _ in r.claims if lo <= t <= hi]
    got = [dt for t, dt, n in r.claims if lo <= t <= hi and n > 0]
    cores = len(os.sched_getaffinity(0))
    mean_work = (r.work[0] + r.work[1]) / 2
    rows = [
        ("jobs finished", f"{len(fin)} of {r.jobs}"),
        ("wall time, go -> last job finished", f"{r.wall:.1f} s"),
        ("throughput, whole run", f"{len(fin) / r.wall:.1f} jobs/s"),
        ("throughput, steady (10 % -> 90 % finished)", f"{r.steady_jobs / r.steady:.1f} jobs/s"),
        (f"ceiling if the database cost nothing ({r.nodes} x {SLOTS} slots / {mean_work:g} s)",
         f"{r.nodes * SLOTS / mean_work:.0f} jobs/s"),
        ("claim calls (steady), of which got jobs", f"{len(steady)}, {len(got)}"),
        ("claim latency p50 / p99, steady (ms)",
         f"{ms(percentile(steady, 50))} / {ms(percentile(steady, 99))}"),
        ("claim latency p50 / p99, whole run (ms)",
         f"{ms(percentile(all_claims, 50))} / {ms(percentile(all_claims, 99))}"),
        ("claim latency max, whole run (ms)", ms(max(all_claims))),
        ("PostgreSQL CPU, steady (% of one core / of the machine)",
         f"{r.pg_cpu * 100:.0f} % / {r.pg_cpu * 100 / cores:.0f} %"),
        ("simulator processes CPU, steady (% of one core)", f"{r.sim_cpu * 100:.0f} %"),
        ("whole machine busy, steady (% of all cores)", f"{r.machine_cpu * 100 / cores:.0f} %"),
        ("PostgreSQL processes (max seen)", str(r.pg_backends + 1)),
        ("job states at the end", ", ".join(f"{k} {v}" for k, v in sorted(r.states.items()))),
        ("errors in the simulated nodes", str(len(r.errors))),
    ]
    print_table(
        f"(b) {r.nodes} simulated nodes x {SLOTS} slots, {r.jobs} jobs of {r.work[0]:g}-"
        f"{r.work[1]:g} s, one server "
        f"({r.procs} simulator processes)",
        ("measure", "value"),
        rows,
    )
    print(f"  while (b) ran, {r.others}")
    for e in r.errors[:5]:
        print(f"  error: {e}")
    total_ms = sum(t for _, _, t, _ in r.top) or 1
    merged: dict[str, list[float]] = {}  # label -> [calls, total ms]
    for sql, calls, total, _mean in r.top:
        m = merged.setdefault(short(sql), [0, 0.0])
        m[0] += calls
        m[1] += total
    rows = [
        (label, int(calls), f"{total / calls:.3f}", f"{total / total_ms * 100:.0f} %")
        for label, (calls, total) in sorted(merged.items(), key=lambda x: -x[1][1])[:12]
    ]
    print_table(
        "    server time per statement, whole run (pg_stat_statements)",
        ("statement", "calls", "mean ms", "share"),
        rows,
    )
    if r.functions:
        print_table(
            "    trigger functions, whole run (pg_stat_user_functions; track_functions = pl)",
            ("function", "calls", "total ms", "mean ms"),
            [(name, calls, f"{total:.0f}", f"{total / max(1, calls):.3f}")
             for name, calls, total, _self in r.functions],
        )
    print(f"  statements in all: {sum(c for _, c, _, _ in r.top)} "
          f"({sum(c for _, c, _, _ in r.top) / max(1, len(fin)):.1f} per job, incl. BEGIN/COMMIT)")


# --------------------------------------------------------------------------- main


def main() -> int:
    args = parse_args()
    if args.sim:
        return sim_main(*args.sim)
    with workspace_from("load", args) as ws:
        enable_pg_stat_statements(ws, args.pg_setting)
        idle = sim = None
        if not args.skip_idle:
            with CpuMeter(ws) as meter:
                idle = run_idle(ws, args)
            idle.others = meter.describe()
        if not args.skip_sim:
            with CpuMeter(ws) as meter:
                sim = run_sim(ws, args)
            sim.others = meter.describe()
        print_machine(ws.admin_url)
        if idle is not None:
            report_idle(idle)
        if sim is not None:
            report_sim(sim)
        ws.print_node_problems()
    return 0


if __name__ == "__main__":
    run_main(main)
