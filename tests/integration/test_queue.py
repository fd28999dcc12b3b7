"""The queue's SQL on every supported server (embedded PostgreSQL 18, Debian's 15)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import pytest

from ffdesk.core.errors import DatabaseError
from ffdesk.core.model import JobState, Lease, NewJob
from ffdesk.db import jobs, migrate
from ffdesk.db.connect import connect_async
from ffdesk.engine.loop import run
from tests.conftest import ffdesk_cmd, new_jobs, query, with_conn

pytestmark = pytest.mark.integration


def test_enqueue_many_in_one_transaction_and_one_notify(any_db_url: str):
    async def go(conn):
        listener = await connect_async(any_db_url, autocommit=True)
        await listener.execute("LISTEN ffdesk")
        ids = await jobs.enqueue(conn, new_jobs(500), submitted_by="test")
        notes = [n async for n in listener.notifies(timeout=0.5)]
        await listener.close()
        return ids, notes

    ids, notes = with_conn(any_db_url, go)
    assert len(ids) == 500 and ids == sorted(ids)
    assert len(notes) == 1
    payload = json.loads(notes[0].payload)
    assert payload["n"] == 500 and payload["q"] is True
    assert payload["ids"] is None  # too many to list: consumers catch up by revision
    assert len(notes[0].payload) < 8000


def test_claim_respects_priority_then_age_and_limit(any_db_url: str):
    async def go(conn):
        low = await jobs.enqueue(conn, new_jobs(3, priority=0), submitted_by="t")
        high = await jobs.enqueue(conn, new_jobs(2, priority=9), submitted_by="t")
        got = await jobs.claim(
            conn, node="n", session=str(uuid.uuid4()), host="h", limit=3, lease_seconds=10
        )
        return low, high, got

    low, high, got = with_conn(any_db_url, go)
    assert [j.id for j in got] == [*high, low[0]]
    assert all(j.state == JobState.RUNNING and j.attempt == 1 for j in got)
    assert len({j.claim for j in got}) == 3
    attempts = query(any_db_url, "SELECT job_id, seq, node FROM attempts ORDER BY job_id")
    assert attempts == sorted((j.id, 1, "n") for j in got)


def test_concurrent_claimers_never_share_a_job(any_db_url: str):
    with_conn(any_db_url, lambda c: jobs.enqueue(c, new_jobs(200), submitted_by="t"))

    async def claimer(name: str) -> list[int]:
        conn = await connect_async(any_db_url)
        mine: list[int] = []
        try:
            while True:
                got = await jobs.claim(
                    conn, node=name, session=str(uuid.uuid4()), host="h", limit=3, lease_seconds=10
                )
                if not got:
                    return mine
                mine += [j.id for j in got]
        finally:
            await conn.close()

    async def go():
        return await asyncio.gather(*(claimer(f"n{i}") for i in range(6)))

    results = run(go())
    flat = [i for r in results for i in r]
    assert len(flat) == 200 and len(set(flat)) == 200
    assert sum(1 for r in results if r) >= 2  # the work really was shared


def test_fencing_rejects_every_write_of_a_lost_claim(any_db_url: str):
    async def go(conn):
        (job_id,) = await jobs.enqueue(conn, new_jobs(1), submitted_by="t")
        s1 = str(uuid.uuid4())
        (first,) = await jobs.claim(conn, node="a", session=s1, host="h", limit=1, lease_seconds=10)
        old = Lease(job_id, first.claim, s1)
        # The job is taken from "a" (its lease expired) and claimed again by "b".
        await conn.execute("UPDATE jobs SET lease_until = now() - interval '1 s'")
        await conn.commit()
        assert await jobs.rescue_expired(conn, by="b") == [job_id]
        s2 = str(uuid.uuid4())
        (second,) = await jobs.claim(
            conn, node="b", session=s2, host="h", limit=1, lease_seconds=10
        )
        new = Lease(job_id, second.claim, s2)
        results = {
            "progress": await jobs.report_progress(
                conn, old, progress=50, fps=1, speed=1, eta_s=1, out_time_s=1
            ),
            "renew": job_id
            in (await jobs.renew_leases(conn, node="a", session=s1, lease_seconds=10))[0],
        }
        async with conn.transaction():
            results["lock"] = await jobs.lock_for_finish(conn, old)
            results["finish"] = await jobs.finish(
                conn, old, jobs.Outcome(JobState.SUCCEEDED, exit_code=0), stderr="x", node="a"
            )
        results["requeue"] = await jobs.requeue_interrupted(
            conn, old, reason="r", stderr=None, node="a"
        )
        async with conn.transaction():
            results["new owner"] = await jobs.finish(
                conn, new, jobs.Outcome(JobState.SUCCEEDED, exit_code=0), stderr="ok", node="b"
            )
        return None, results

    _, results = with_conn(any_db_url, go)
    assert results == {
        "progress": False,
        "renew": False,
        "lock": False,
        "finish": False,
        "requeue": False,
        "new owner": True,
    }
    assert query(any_db_url, "SELECT state, attempt, node FROM jobs") == [("succeeded", 2, "b")]
    outcomes = query(any_db_url, "SELECT seq, node, outcome FROM attempts ORDER BY id")
    assert outcomes == [(1, "a", "lost"), (2, "b", "succeeded")]


def test_rescuer_never_resurrects_a_job_that_finished_first(any_db_url: str):
    """The rescuer's SELECT sees an expired lease; the owner finishes before the UPDATE.

    Deterministic: the owner holds the row lock (as it does around its final rename) while
    the rescuer runs, so SKIP LOCKED passes it over; after the owner commits, the condition is
    re-checked and the finished job stays finished.
    """

    async def go(conn):
        (job_id,) = await jobs.enqueue(conn, new_jobs(1), submitted_by="t")
        s = str(uuid.uuid4())
        (job,) = await jobs.claim(conn, node="a", session=s, host="h", limit=1, lease_seconds=10)
        await conn.execute("UPDATE jobs SET lease_until = now() - interval '1 s'")
        await conn.commit()
        owner = await connect_async(any_db_url)
        lease = Lease(job_id, job.claim, s)
        async with owner.transaction():
            assert await jobs.lock_for_finish(owner, lease)
            rescued_meanwhile = await jobs.rescue_expired(conn, by="rescuer")
            assert await jobs.finish(
                owner,
                lease,
                jobs.Outcome(JobState.SUCCEEDED, exit_code=0, reason=None),
                stderr="",
                node="a",
            )
        await owner.close()
        rescued_after = await jobs.rescue_expired(conn, by="rescuer")
        return rescued_meanwhile, rescued_after

    meanwhile, after = with_conn(any_db_url, go)
    assert meanwhile == [] and after == []
    assert query(any_db_url, "SELECT state FROM jobs") == [("succeeded",)]
    assert query(any_db_url, "SELECT count(*) FROM events WHERE kind = 'rescue'") == [(0,)]


def test_rescue_spends_the_attempt_and_kills_at_the_limit(any_db_url: str):
    async def go(conn):
        (job_id,) = await jobs.enqueue(
            conn,
            [NewJob("/a.mp4", "/b.mp4", "p", ["-i", "{input}", "{output}"], max_attempts=2)],
            submitted_by="t",
        )
        states = []
        for _ in range(2):
            await jobs.claim(
                conn, node="a", session=str(uuid.uuid4()), host="h", limit=1, lease_seconds=10
            )
            await conn.execute("UPDATE jobs SET lease_until = now() - interval '1 s'")
            await conn.commit()
            await jobs.rescue_expired(conn, by="r")
            states.append((await jobs.get_job(conn, job_id)).state)
        return states

    assert with_conn(any_db_url, go) == [JobState.QUEUED, JobState.DEAD]
    assert query(any_db_url, "SELECT reason FROM jobs") == [("node a lost",)]


def test_lease_renewal_is_silent_but_real_changes_bump_revision(any_db_url: str):
    async def go(conn):
        (job_id,) = await jobs.enqueue(conn, new_jobs(1), submitted_by="t")
        s = str(uuid.uuid4())
        (job,) = await jobs.claim(conn, node="a", session=s, host="h", limit=1, lease_seconds=10)
        before = (await jobs.get_job(conn, job_id)).revision
        await jobs.renew_leases(conn, node="a", session=s, lease_seconds=10)
        renewed = await jobs.get_job(conn, job_id)
        await jobs.report_progress(
            conn, Lease(job_id, job.claim, s), progress=10, fps=1, speed=1, eta_s=1, out_time_s=1
        )
        progressed = (await jobs.get_job(conn, job_id)).revision
        return before, renewed, progressed

    before, renewed, progressed = with_conn(any_db_url, go)
    assert renewed.revision == before and renewed.lease_until is not None
    assert progressed > before


def test_retry_keeps_history_and_gives_a_fresh_budget(any_db_url: str):
    async def go(conn):
        (job_id,) = await jobs.enqueue(conn, new_jobs(1), submitted_by="t")
        s = str(uuid.uuid4())
        (job,) = await jobs.claim(conn, node="a", session=s, host="h", limit=1, lease_seconds=10)
        async with conn.transaction():
            await jobs.finish(
                conn,
                Lease(job_id, job.claim, s),
                jobs.Outcome(JobState.FAILED, exit_code=183, reason="input is truncated"),
                stderr="e" * 10,
                node="a",
            )
        found = await jobs.retry(conn, [job_id, 424242], by="t")
        return (
            job_id,
            found,
            await jobs.get_job(conn, job_id),
            await jobs.get_attempts(conn, job_id),
        )

    job_id, found, job, attempts = with_conn(any_db_url, go)
    assert found == {job_id: "failed"}
    assert job.state == JobState.QUEUED and job.attempt == 0 and job.reason is None
    assert [(a.outcome, a.exit_code, a.stderr) for a in attempts] == [("failed", 183, "e" * 10)]


def test_stderr_round_trips_byte_exact(any_db_url: str):
    weird = "frame=  1 fps=0.0\r\nünïcødé ✓ \x00 binary\x7f\n" * 2000

    async def go(conn):
        (job_id,) = await jobs.enqueue(conn, new_jobs(1), submitted_by="t")
        s = str(uuid.uuid4())
        (job,) = await jobs.claim(conn, node="a", session=s, host="h", limit=1, lease_seconds=10)
        async with conn.transaction():
            await jobs.finish(
                conn,
                Lease(job_id, job.claim, s),
                jobs.Outcome(JobState.SUCCEEDED, exit_code=0, reason=None),
                stderr=weird,
                node="a",
            )
        return (await jobs.get_attempts(conn, job_id))[0]

    attempt = with_conn(any_db_url, go)
    assert attempt.stderr == weird
    assert attempt.stderr_bytes == len(weird.encode())


def test_concurrent_start_of_four_processes_migrates_once(any_db_url: str):
    procs = [
        subprocess.Popen(
            ffdesk_cmd("db", "migrate", "--database", any_db_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    applied = [out for out, _ in outputs if "applied" in out]
    assert len(applied) == 1, outputs
    assert all("Traceback" not in err and "error" not in err.lower() for _, err in outputs)
    assert query(any_db_url, "SELECT version FROM schema_version") == [
        (v,) for v in range(1, migrate.latest_version() + 1)
    ]


def test_database_newer_than_the_program_is_refused(any_db_url: str):
    with_conn(any_db_url, lambda c: asyncio.sleep(0))
    query(
        any_db_url,
        "INSERT INTO schema_version (version, name, app_version) VALUES (999, 'future', '9.9')",
    )

    async def go():
        conn = await connect_async(any_db_url)
        try:
            await migrate.migrate(conn)
        finally:
            await conn.close()

    with pytest.raises(DatabaseError, match="newer than this ffdesk"):
        run(go())
    proc = subprocess.run(
        ffdesk_cmd("jobs", "--database", any_db_url), capture_output=True, text=True
    )
    assert proc.returncode != 0 and "upgrade ffdesk" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_one_rescue_round_marks_lost_nodes_moves_jobs_and_times_the_next(any_db_url: str):
    from ffdesk.db import nodes

    def info(name: str, session: str) -> nodes.NodeInfo:
        return nodes.NodeInfo(
            identifier=name,
            session=session,
            host="h",
            pid=1,
            pid_created=0.0,
            os="x",
            arch="x",
            cpu="x",
            cores=1,
            ram_bytes=1,
            app_version="t",
            ffmpeg_version="f",
            ffmpeg_fingerprint="f",
            slots=1,
            heartbeat_s=1,
            lease_s=3,
        )

    async def go(conn):
        dead, alive, me = (str(uuid.uuid4()) for _ in range(3))
        await nodes.register(conn, info("dead", dead))
        await nodes.register(conn, info("alive", alive))
        await jobs.enqueue(conn, new_jobs(2), submitted_by="t")
        (lost_job,) = await jobs.claim(
            conn, node="dead", session=dead, host="h", limit=1, lease_seconds=3
        )
        (kept_job,) = await jobs.claim(
            conn, node="alive", session=alive, host="h", limit=1, lease_seconds=30
        )
        await conn.execute(
            "UPDATE nodes SET heartbeat_at = now() - interval '10 s' WHERE identifier = 'dead'"
        )
        await conn.execute(
            "UPDATE jobs SET lease_until = now() - interval '1 s' WHERE id = %s", [lost_job.id]
        )
        await conn.commit()
        result = await jobs.rescue(conn, by="me", session=me)
        again = await jobs.rescue(conn, by="me", session=me)
        return lost_job.id, kept_job.id, result, again

    lost_id, kept_id, result, again = with_conn(any_db_url, go)
    assert result.jobs == [lost_id] and result.lost_nodes == ["dead"]
    assert 25 < result.next_expiry_s <= 30  # the live node's lease
    assert again.jobs == [] and again.lost_nodes == []
    states = dict(query(any_db_url, "SELECT identifier, state FROM nodes"))
    assert states == {"dead": "offline", "alive": "online"}
    assert query(any_db_url, "SELECT state FROM jobs WHERE id = %s", [kept_id]) == [("running",)]
