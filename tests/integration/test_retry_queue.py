"""The retry policy's SQL on every supported server: backoff, avoided nodes, reprocess."""

from __future__ import annotations

import uuid

import pytest

from ffdesk.core.model import JobState, Lease
from ffdesk.db import jobs, nodes
from tests.conftest import new_jobs, query, with_conn

pytestmark = pytest.mark.integration


async def _claim_one(conn, node: str):
    session = str(uuid.uuid4())
    got = await jobs.claim(conn, node=node, session=session, host="h", limit=1, lease_seconds=30)
    return (got[0], Lease(got[0].id, got[0].claim, session)) if got else (None, None)


async def _fail(conn, lease: Lease, node: str, outcome: jobs.Outcome) -> bool:
    async with conn.transaction():
        return await jobs.finish(conn, lease, outcome, stderr=b"\xffboom\n", node=node)


def test_a_backed_off_retry_waits_and_tells_nodes_when_it_is_due(any_db_url: str):
    async def go(conn):
        (job_id,) = await jobs.enqueue(conn, new_jobs(1), submitted_by="t")
        _, lease = await _claim_one(conn, "a")
        assert await _fail(conn, lease, "a", jobs.Outcome(
            JobState.QUEUED, exit_code=1, reason="network error: Connection refused",
            kind="transient", retry_in=30, why="retry 2 of 3 in 30.0 s"))
        early, _ = await _claim_one(conn, "a")
        due = await jobs.next_due(conn, node="a")
        return job_id, early, due, await jobs.get_job(conn, job_id), await jobs.get_attempts(
            conn, job_id)

    _, early, due, job, attempts = with_conn(any_db_url, go)
    assert early is None  # not before its backoff is over
    assert 28 < due <= 30
    assert (job.state, job.failure_kind, job.attempt) == (JobState.QUEUED, "transient", 1)
    assert job.node is None and job.finished_at is None
    (attempt,) = attempts
    assert (attempt.outcome, attempt.kind) == ("failed", "transient")
    assert attempt.retry_at is not None
    (detail,) = query(any_db_url, "SELECT detail FROM events WHERE kind = 'retry-scheduled'")[0]
    assert detail["policy"] == "retry 2 of 3 in 30.0 s" and detail["kind"] == "transient"


def test_an_environment_failure_is_avoided_by_that_node_only(any_db_url: str):
    async def go(conn):
        (job_id,) = await jobs.enqueue(conn, new_jobs(1), submitted_by="t")
        _, lease = await _claim_one(conn, "a")
        await _fail(conn, lease, "a", jobs.Outcome(
            JobState.QUEUED, reason="encoder libx264 is not available", kind="environment",
            retry_in=0, avoid_node=True))
        again, _ = await _claim_one(conn, "a")
        due_for_a = await jobs.next_due(conn, node="a")
        other, _ = await _claim_one(conn, "b")
        return job_id, again, due_for_a, other

    job_id, again, due_for_a, other = with_conn(any_db_url, go)
    assert again is None and due_for_a is None  # a never sees it again
    assert other is not None and other.id == job_id and other.avoid_nodes == ["a"]
    assert other.attempt == 2


def test_other_nodes_available_counts_only_live_online_unavoided_nodes(any_db_url: str):
    async def go(conn):
        (job_id,) = await jobs.enqueue(conn, new_jobs(1), submitted_by="t")
        for name in ("a", "b"):
            await nodes.register(conn, nodes.NodeInfo(
                identifier=name, session=str(uuid.uuid4()), host="h", pid=1, pid_created=0.0,
                os="x", arch="x", cpu="x", cores=1, ram_bytes=1, app_version="x",
                ffmpeg_version="x", ffmpeg_fingerprint="x", slots=1, heartbeat_s=5,
                lease_s=15, encoders=(), tags=()))
        results = [await jobs.other_nodes_available(conn, job_id, "a")]
        await conn.execute("UPDATE nodes SET state = 'quarantined' WHERE identifier = 'b'")
        results.append(await jobs.other_nodes_available(conn, job_id, "a"))
        await conn.execute("UPDATE nodes SET state = 'online' WHERE identifier = 'b'")
        await conn.execute("UPDATE jobs SET avoid_nodes = '{b}' WHERE id = %s", [job_id])
        results.append(await jobs.other_nodes_available(conn, job_id, "a"))
        await conn.execute("UPDATE jobs SET avoid_nodes = '{}'")
        await conn.execute("UPDATE nodes SET heartbeat_at = now() - interval '1 minute'")
        results.append(await jobs.other_nodes_available(conn, job_id, "a"))
        await conn.commit()
        return results

    assert with_conn(any_db_url, go) == [True, False, False, False]


def test_reprocess_by_state_and_age_keeps_history(any_db_url: str):
    async def go(conn):
        ids = await jobs.enqueue(conn, new_jobs(4), submitted_by="t")
        for state in (JobState.DEAD, JobState.DEAD, JobState.FAILED):
            _, lease = await _claim_one(conn, "a")
            await _fail(conn, lease, "a", jobs.Outcome(state, exit_code=1, reason="x",
                                                      kind="transient"))
        # One dead job ended long ago.
        await conn.execute(
            "UPDATE jobs SET finished_at = now() - interval '3 hours' WHERE id = %s", [ids[1]])
        await conn.commit()
        recent_dead = await jobs.retry(conn, by="me@host", states=["dead"], since_seconds=3600)
        everything = await jobs.retry(conn, by="me@host")
        return ids, recent_dead, everything

    ids, recent_dead, everything = with_conn(any_db_url, go)
    assert recent_dead == {ids[0]: "dead"}
    assert everything == {ids[1]: "dead", ids[2]: "failed"}
    rows = query(any_db_url, "SELECT id, state, attempt, avoid_nodes FROM jobs ORDER BY id")
    assert [r[1:] for r in rows[:3]] == [("queued", 0, [])] * 3
    assert query(any_db_url, "SELECT count(*) FROM attempts")[0][0] == 3  # history kept
    retried = query(any_db_url, "SELECT job_id, detail FROM events WHERE kind = 'retried'"
                                " ORDER BY id")
    assert [(j, d["from"], d["by"]) for j, d in retried] == [
        (ids[0], "dead", "me@host"), (ids[1], "dead", "me@host"), (ids[2], "failed", "me@host")]


def test_stderr_bytes_are_stored_exactly_and_found_by_attempt_number(any_db_url: str):
    async def go(conn):
        (job_id,) = await jobs.enqueue(conn, new_jobs(1), submitted_by="t")
        _, lease = await _claim_one(conn, "a")
        await _fail(conn, lease, "a", jobs.Outcome(JobState.QUEUED, kind="transient",
                                                  reason="x", retry_in=0))
        _, lease = await _claim_one(conn, "b")
        async with conn.transaction():
            await jobs.finish(conn, lease, jobs.Outcome(JobState.FAILED, kind="input",
                                                        reason="y"),
                              stderr=b"second \x80\xfe run\r\n", node="b")
        return (await jobs.get_stderr(conn, job_id), await jobs.get_stderr(conn, job_id, 1),
                await jobs.get_stderr(conn, job_id, 3))

    latest, first, missing = with_conn(any_db_url, go)
    assert latest == (2, b"second \x80\xfe run\r\n")
    assert first == (1, b"\xffboom\n")
    assert missing is None
