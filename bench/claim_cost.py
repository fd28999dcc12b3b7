"""Claim cost against queue depth: ffdesk's claim vs the minimal SKIP LOCKED claim.

    .venv/bin/python bench/claim_cost.py [--quick]

ffdesk's claim does more than pick a row: routing (storage roots, encoders, tags, pinning,
FFmpeg range), dependencies, priority aging, the attempt row and the "claimed" event, all in
one statement. The baseline, measured in the same run on the same server, is the textbook
queue claim: ``SELECT id ... ORDER BY priority DESC, id LIMIT n FOR UPDATE SKIP LOCKED`` and
an UPDATE, nothing else. Each sample claims 2 jobs (a node with two free slots) from a queue
of the given depth; the queue is refilled between samples so its depth stays constant.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import psycopg

from bench.common import Workspace, percentile, print_machine, print_table, run_main
from ffdesk.core.model import NewJob
from ffdesk.db import jobs as jobs_sql
from ffdesk.db.connect import connect_async
from ffdesk.engine.loop import run as run_async

BASELINE = """
    WITH picked AS MATERIALIZED (
        SELECT id FROM jobs WHERE state = 'queued' ORDER BY priority DESC, id
         LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    UPDATE jobs j SET state = 'running', node = %(node)s, claimed_at = now()
      FROM picked WHERE j.id = picked.id RETURNING j.id
"""


def _jobs(n: int, start: int) -> list[NewJob]:
    return [NewJob(f"/in/{i}.mp4", f"/out/{i}.mp4", "h264-mp4", ["-i", "{input}", "{output}"],
                   priority=i % 7) for i in range(start, start + n)]


async def _measure(url: str, depth: int, samples: int, ffdesk: bool) -> list[float]:
    conn: psycopg.AsyncConnection[Any] = await connect_async(url)
    made = 0
    for chunk in range(0, depth, 1000):
        n = min(1000, depth - chunk)
        await jobs_sql.enqueue(conn, _jobs(n, made), submitted_by="bench")
        made += n
    await conn.execute("ANALYZE jobs")
    await conn.commit()
    session = str(uuid.uuid4())
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        if ffdesk:
            got = await jobs_sql.claim(conn, node="bench", session=session, host="h", limit=2,
                                       lease_seconds=60)
        else:
            cur = await conn.execute(BASELINE, {"limit": 2, "node": "bench"})
            got = await cur.fetchall()
            await conn.commit()
        times.append(time.perf_counter() - t0)
        assert len(got) == 2
        await jobs_sql.enqueue(conn, _jobs(2, made), submitted_by="bench")  # keep the depth
        made += 2
    await conn.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, smaller queues")
    args = parser.parse_args()
    depths = [100, 2000] if args.quick else [100, 2000, 20000]
    samples = 50 if args.quick else 300
    rows = []
    with Workspace("claim-cost", keep_logs=None) as ws:
        for depth in depths:
            for label, ffdesk in (("minimal SKIP LOCKED claim", False), ("ffdesk claim", True)):
                url = ws.fresh_database(f"d{depth}")
                times = run_async(_measure(url, depth, samples, ffdesk))
                rows.append((label, depth, samples, *(f"{percentile(times, p) * 1000:.2f}"
                                                      for p in (50, 90, 99))))
        print_machine(ws.admin_url)
    print_table(
        "Claim cost (2 jobs per claim, one client, ms)",
        ("claim", "queued", "n", "p50", "p90", "p99"),
        rows,
    )
    return 0


if __name__ == "__main__":
    run_main(main)
