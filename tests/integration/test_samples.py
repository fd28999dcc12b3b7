"""Throughput samples on every supported server: one cluster row per interval however many
nodes beat at once, correct per-node and cluster figures from real jobs, bounded retention,
downsampled history."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import pytest

from ffdesk.core.model import JobState, Lease
from ffdesk.db import jobs, samples
from ffdesk.db.connect import connect_async
from tests.conftest import new_jobs, query, with_conn

pytestmark = pytest.mark.integration

DAY = 86400.0


def make_cluster_row_due(url: str) -> None:
    """As if an interval had passed since the last cluster row."""
    query(url, "UPDATE sample_clock SET at = at - interval '1 day'")


def cluster_rows(url: str) -> list[tuple]:
    return query(
        url,
        """SELECT fps, running, queued, finished, failed, claimed, queue_p50, queue_p95, span_s
             FROM samples WHERE node IS NULL ORDER BY at""",
    )


def test_concurrent_beats_write_exactly_one_cluster_row(any_db_url: str):
    names = [f"n{i}" for i in range(6)]
    rounds = 4

    async def go(conn):
        conns = [await connect_async(any_db_url) for _ in names]
        won: list[list[bool]] = []
        try:
            for _ in range(rounds):
                await conn.execute("UPDATE sample_clock SET at = '-infinity'")
                await conn.commit()
                won.append(
                    await asyncio.gather(
                        *(
                            samples.record(c, node=n, session=str(uuid.uuid4()), interval_s=60)
                            for c, n in zip(conns, names, strict=True)
                        )
                    )
                )
            # Within the interval: nobody writes another.
            late = [
                await samples.record(c, node=n, session=str(uuid.uuid4()), interval_s=60)
                for c, n in zip(conns, names, strict=True)
            ]
        finally:
            for c in conns:
                await c.close()
        return won, late

    won, late = with_conn(any_db_url, go)
    assert [sum(r) for r in won] == [1] * rounds, won
    assert late == [False] * len(names)
    assert query(any_db_url, "SELECT count(*) FROM samples WHERE node IS NULL") == [(rounds,)]
    per_node = dict(
        query(any_db_url, "SELECT node, count(*) FROM samples WHERE node IS NOT NULL GROUP BY 1")
    )
    assert per_node == {n: rounds + 1 for n in names}


def test_a_beat_that_loses_the_lock_skips_without_waiting(any_db_url: str):
    async def go(conn):
        holder = await connect_async(any_db_url)
        await holder.execute("SELECT pg_advisory_xact_lock(%s)", [samples.CLUSTER_LOCK_KEY])
        started = time.monotonic()
        skipped = await asyncio.wait_for(
            samples.record(conn, node="a", session=str(uuid.uuid4()), interval_s=5), 5
        )
        waited = time.monotonic() - started
        await holder.rollback()
        await holder.close()
        wrote = await samples.record(conn, node="a", session=str(uuid.uuid4()), interval_s=5)
        return skipped, waited, wrote

    skipped, waited, wrote = with_conn(any_db_url, go)
    assert skipped is False and waited < 2
    assert wrote is True
    assert query(any_db_url, "SELECT count(*) FROM samples WHERE node = 'a'") == [(2,)]


def test_node_and_cluster_rows_sum_real_jobs(any_db_url: str):
    sa, sb, sc = (str(uuid.uuid4()) for _ in range(3))

    async def go(conn):
        await jobs.enqueue(conn, new_jobs(7), submitted_by="t")
        got_a = await jobs.claim(conn, node="a", session=sa, host="h", limit=3, lease_seconds=30)
        got_b = await jobs.claim(conn, node="b", session=sb, host="h", limit=2, lease_seconds=30)
        fps = {got_a[0].id: 10.0, got_a[1].id: 20.5, got_a[2].id: None, got_b[0].id: 7.0}
        for job in got_a + got_b:
            session = sa if job.node == "a" else sb
            if job.id in fps:
                await jobs.report_progress(
                    conn,
                    Lease(job.id, job.claim, session),
                    progress=1,
                    fps=fps[job.id],
                    speed=1,
                    eta_s=1,
                    out_time_s=1,
                )
        # Known times in queue for the five claims: 10, 20, 30, 40, 50 s.
        await conn.execute(
            """UPDATE jobs j SET created_at = a.claimed_at - make_interval(secs => 10 * r.n),
                                 not_before = a.claimed_at - make_interval(secs => 10 * r.n)
                 FROM attempts a,
                      (SELECT id, row_number() OVER (ORDER BY id) AS n FROM jobs
                        WHERE state = 'running') r
                WHERE a.job_id = j.id AND r.id = j.id"""
        )
        await conn.commit()
        first = [
            await samples.record(conn, node=n, session=s, interval_s=5)
            for n, s in (("a", sa), ("b", sb), ("c", sc))
        ]
        # Two jobs of a end (one fails), one job of b is canceled: a cancel is not throughput.
        for job, state in ((got_a[0], JobState.SUCCEEDED), (got_a[1], JobState.FAILED)):
            async with conn.transaction():
                await jobs.finish(
                    conn,
                    Lease(job.id, job.claim, sa),
                    jobs.Outcome(state, exit_code=0, reason=None),
                    stderr="",
                    node="a",
                )
        await jobs.cancel(conn, [got_b[1].id], by="t")
        # The next row is due, and the claims belong to the span of the first one.
        await conn.execute("UPDATE sample_clock SET at = at - interval '1 day'")
        await conn.execute("UPDATE attempts SET claimed_at = claimed_at - interval '1 minute'")
        await conn.commit()
        second = await samples.record(conn, node="b", session=sb, interval_s=5)
        return first, second

    first, second = with_conn(any_db_url, go)
    assert first == [True, False, False]
    assert second is True
    nodes = query(
        any_db_url,
        "SELECT node, fps, running FROM samples WHERE node IS NOT NULL ORDER BY at, node",
    )
    assert nodes == [("a", 30.5, 3), ("b", 7.0, 2), ("c", 0.0, 0), ("b", 7.0, 1)]
    (one, two) = cluster_rows(any_db_url)
    fps, running, queued, finished, failed, claimed, p50, p95, span = one
    assert (fps, running, queued, finished, failed, claimed) == (37.5, 5, 2, 0, 0, 5)
    assert p50 == pytest.approx(30, abs=0.01) and p95 == pytest.approx(48, abs=0.01)
    assert 14 < span <= 15  # first row ever: at most three intervals back
    fps, running, queued, finished, failed, claimed, p50, p95, span = two
    assert (fps, running, queued, finished, failed, claimed) == (7.0, 2, 2, 2, 1, 0)
    assert p50 is None and p95 is None  # nothing was claimed in that span


def test_time_in_queue_of_a_rescued_job_counts_from_its_lost_attempt(any_db_url: str):
    async def go(conn):
        (job_id,) = await jobs.enqueue(conn, new_jobs(1), submitted_by="t")
        await jobs.claim(
            conn, node="a", session=str(uuid.uuid4()), host="h", limit=1, lease_seconds=10
        )
        await conn.execute(
            """UPDATE jobs SET created_at = now() - interval '1 hour',
                               not_before = now() - interval '1 hour',
                               lease_until = now() - interval '1 s'"""
        )
        await conn.commit()
        assert await jobs.rescue_expired(conn, by="b") == [job_id]
        await conn.execute(
            "UPDATE attempts SET finished_at = finished_at - interval '7 s'"
        )  # the lost attempt ended 7 s before the new claim
        await conn.commit()
        await jobs.claim(
            conn, node="b", session=str(uuid.uuid4()), host="h", limit=1, lease_seconds=10
        )
        return await samples.record(conn, node="b", session=str(uuid.uuid4()), interval_s=600)

    assert with_conn(any_db_url, go) is True
    (row,) = cluster_rows(any_db_url)
    claimed, p50 = row[5], row[6]
    # Both claims fall in the span; the first waited an hour, the second only ~7 s.
    assert claimed == 2
    waits = query(
        any_db_url,
        """SELECT extract(epoch FROM a.claimed_at - j.created_at)
             FROM attempts a JOIN jobs j ON j.id = a.job_id ORDER BY a.id""",
    )
    assert float(waits[0][0]) == pytest.approx(3600, abs=5)
    assert p50 == pytest.approx((3600 + 7) / 2, abs=5)


def test_retention_deletes_old_rows_a_batch_per_cluster_row(any_db_url: str):
    old = samples.PURGE_BATCH + 200
    with_conn(any_db_url, lambda c: asyncio.sleep(0))
    query(
        any_db_url,
        """INSERT INTO samples (at, node, fps, running)
           SELECT now() - interval '25 hours' - make_interval(secs => g), 'old', 1, 0
             FROM generate_series(1, %s) g
           UNION ALL
           SELECT now() - interval '23 hours' - make_interval(secs => g), 'kept', 1, 0
             FROM generate_series(1, 50) g""",
        [old],
    )

    def beat() -> bool:
        return with_conn(
            any_db_url,
            lambda c: samples.record(c, node="x", session=str(uuid.uuid4()), interval_s=5),
        )

    def count(node: str) -> int:
        return query(any_db_url, "SELECT count(*) FROM samples WHERE node = %s", [node])[0][0]

    assert beat() is True
    assert count("old") == 200
    assert beat() is False  # within the interval: no cluster row, no delete
    assert count("old") == 200
    make_cluster_row_due(any_db_url)
    assert beat() is True
    assert count("old") == 0 and count("kept") == 50 and count("x") == 3


def test_history_downsamples_a_day_to_at_most_a_thousand_points(any_db_url: str):
    rows = 10_000
    step = DAY / rows  # 8.64 s
    with_conn(any_db_url, lambda c: asyncio.sleep(0))
    # A day of synthetic cluster rows (fps swings 50..150 once a day, one finished job per
    # row, p50 = 2 s, p95 = 5 s except one spike of 600 s) and three nodes beating likewise.
    query(
        any_db_url,
        """INSERT INTO samples (at, node, fps, running, queued, span_s, finished, failed,
                                claimed, queue_p50, queue_p95)
           SELECT now() - make_interval(secs => g * %(step)s), NULL,
                  100 + 50 * sin(2 * pi() * g / %(rows)s), 4, 10, %(step)s, 1, 0, 2, 2,
                  CASE WHEN g = 5000 THEN 600 ELSE 5 END
             FROM generate_series(0, %(rows)s - 1) g""",
        {"step": step, "rows": rows},
    )
    query(
        any_db_url,
        """INSERT INTO samples (at, node, fps, running)
           SELECT now() - make_interval(secs => g * %(step)s), 'node-' || n, 10 * n, 1
             FROM generate_series(0, %(rows)s - 1) g, generate_series(1, 3) n""",
        {"step": step, "rows": rows},
    )
    before = time.time()

    async def go(conn):
        day = await samples.history(conn, since_s=DAY)
        hour = await samples.history(conn, since_s=3600)
        # Hour buckets hold one row each: the last point is the newest row's time.
        fresh = await samples.recent(conn, after=hour.cluster.at[-1] - 3 * step - 1)
        return day, hour, fresh

    day, hour, fresh = with_conn(any_db_url, go)
    c = day.cluster
    assert day.bucket_s == 90
    assert 900 <= len(c.at) <= 1001
    assert c.at == sorted(c.at) and before - DAY - 90 <= c.at[0] and c.at[-1] <= time.time()
    # A bucket's time is its rows' mean; the newest row's own time is kept apart (the view
    # resumes live polling from it).
    # (equal when the last bucket holds only the newest row)
    assert c.at[-1] <= c.newest <= time.time() and c.newest > before - 1
    assert all(50 - 1e-3 <= v <= 150 + 1e-3 for v in c.fps)
    assert max(c.fps) > 145 and min(c.fps) < 55  # the swing survives the averaging
    assert set(c.running) == {4.0} and set(c.queued) == {10.0}
    assert sum(c.finished) == pytest.approx(rows, abs=1)
    per_minute = sum(c.finished) / sum(c.span_s) * 60
    assert per_minute == pytest.approx(60 / step, rel=1e-3)
    assert set(c.queue_p50) == {2.0}
    assert max(c.queue_p95) == 600 and sorted(c.queue_p95)[-2] == 5  # the spike, once
    assert sorted(day.nodes) == ["node-1", "node-2", "node-3"]
    for n, s in day.nodes.items():
        assert len(s.at) <= 1001 and set(s.fps) == {10.0 * int(n[-1])}
    # An hour at 5 s buckets: about one raw row per bucket, values untouched.
    assert hour.bucket_s == 5
    assert len(hour.cluster.at) == pytest.approx(3600 / step, abs=2)
    assert all(not math.isnan(v) for v in hour.cluster.queue_p95)
    # Live polling: raw rows after a time, cluster and nodes, in time order.
    assert fresh.bucket_s == 0 and len(fresh.cluster.at) == 4
    assert fresh.cluster.newest == fresh.cluster.at[-1]
    points = fresh.points()
    assert len(points) == 4 * 4
    assert [p.at for p in points] == sorted(p.at for p in points)
    assert {p.node for p in points} == {None, "node-1", "node-2", "node-3"}
    assert all(math.isnan(p.queued) for p in points if p.node)


def test_history_of_an_empty_cluster_is_empty(any_db_url: str):
    h = with_conn(any_db_url, lambda c: samples.history(c, since_s=300))
    assert h.cluster.at == [] and h.nodes == {} and h.points() == []
    assert h.bucket_s == 1


def test_bucket_widths_are_round_and_bounded():
    for window in (60, 300, 3600, 6 * 3600, DAY, 7 * DAY):
        width = samples.bucket_for(window)
        assert window / width <= samples.MAX_POINTS
    assert [samples.bucket_for(w) for w in (300, 3600, DAY)] == [1, 5, 90]
