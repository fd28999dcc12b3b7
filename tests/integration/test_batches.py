"""Batches and job dependencies: SQL on both servers, and real nodes running a chain."""

from __future__ import annotations

import shutil
import uuid

import pytest

from ffdesk.core.model import JobState, Lease
from ffdesk.db import jobs
from tests.conftest import Cli, Clips, job_states, new_jobs, query, wait_for, with_conn

pytestmark = pytest.mark.integration


async def _run_one(conn, node: str, state: JobState) -> int | None:
    """Claim one job as ``node`` and end it in ``state``; its id, or None if none was due."""
    session = str(uuid.uuid4())
    got = await jobs.claim(conn, node=node, session=session, host="h", limit=1, lease_seconds=30)
    if not got:
        return None
    async with conn.transaction():
        await jobs.finish(conn, Lease(got[0].id, got[0].claim, session),
                          jobs.Outcome(state, reason=None if state == "succeeded" else "x"),
                          stderr=None, node=node)
    return got[0].id


def test_a_chain_runs_in_order_cancels_on_failure_and_revives(any_db_url: str):
    async def go(conn):
        a, b, c = new_jobs(3)
        ids = await jobs.enqueue(
            conn, [a, b.__class__(**{**b.__dict__, "after": [0]}),
                   c.__class__(**{**c.__dict__, "after": [1]})], submitted_by="t", batch=True)
        order = []
        failed = await _run_one(conn, "n", JobState.FAILED)  # A fails
        order.append(failed)
        nothing = await _run_one(conn, "n", JobState.SUCCEEDED)  # B and C cannot run
        after_fail = dict(query(any_db_url, "SELECT id, reason FROM jobs ORDER BY id"))
        await jobs.retry(conn, [ids[0]], by="t")  # reprocess A: B and C come back
        for _ in range(3):
            order.append(await _run_one(conn, "n", JobState.SUCCEEDED))
        return ids, order, nothing, after_fail

    ids, order, nothing, after_fail = with_conn(any_db_url, go)
    a, b, c = ids
    assert nothing is None
    assert after_fail == {a: "x", b: f"dependency #{a} failed", c: f"dependency #{b} canceled"}
    assert order == [a, a, b, c]  # A again, then B, then C: never out of order
    assert set(job_states(any_db_url).values()) == {"succeeded"}
    kinds = [k for (k,) in query(any_db_url, "SELECT kind FROM events WHERE job_id = %s "
                                             "ORDER BY id", [c])]
    assert kinds.count("canceled") == 1 and kinds.count("revived") == 1


def test_a_batch_reports_progress_and_finishes_once(any_db_url: str):
    async def go(conn):
        ids = await jobs.enqueue(conn, new_jobs(10), submitted_by="t", batch_name="ten")
        for n in range(10):
            await _run_one(conn, f"n{n % 2}", JobState.DEAD if n == 4 else JobState.SUCCEEDED)
        return ids, await jobs.list_batches(conn)

    _, batches = with_conn(any_db_url, go)
    (batch,) = batches
    assert (batch["name"], batch["state"]) == ("ten", "finished")
    assert (batch["done"], batch["failed"], batch["total"]) == (9, 1, 10)
    finished = query(any_db_url, "SELECT detail FROM events WHERE kind = 'batch-finished'")
    assert [d for (d,) in finished] == [
        {"batch": batch["id"], "name": "ten", "done": 9, "failed": 1, "canceled": 0,
         "total": 10}]


def test_dependencies_on_missing_or_later_jobs_are_refused(any_db_url: str):
    async def go(conn):
        (a,) = new_jobs(1)
        errors = []
        for job in (a.__class__(**{**a.__dict__, "depends_on": [987654]}),
                    a.__class__(**{**a.__dict__, "after": [0]})):
            try:
                await jobs.enqueue(conn, [job], submitted_by="t")
            except jobs.DependencyError as exc:
                errors.append(str(exc))
                await conn.rollback()
        return errors

    errors = with_conn(any_db_url, go)
    assert errors == ["no job with id 987654 to depend on",
                      "job 0 of this submission depends on a later job or itself"]
    assert job_states(any_db_url) == {}


def test_chain_across_two_nodes_and_reprocess(cli: Cli, clips: Clips, nodes, tmp_path):
    """A -> B -> C with real nodes: in order across two nodes; a broken A cancels B and C
    with the reason; fixing A's file and reprocessing A runs all three."""
    src = tmp_path / "src"
    src.mkdir()
    a_file = src / "a.mp4"
    shutil.copyfile(clips.truncated, a_file)
    for name in ("b", "c"):
        shutil.copyfile(clips.good, src / f"{name}.mp4")
    out = ("--output-dir", str(tmp_path / "out"))
    (a,) = cli.submit(a_file, preset="remux-mp4", extra=out)
    (b,) = cli.submit(src / "b.mp4", preset="remux-mp4", extra=(*out, "--after", str(a)))
    (c,) = cli.submit(src / "c.mp4", preset="remux-mp4", extra=(*out, "--after", str(b)))
    nodes.append(cli.start_node("one", "--heartbeat", "0.5", slots=1))
    nodes.append(cli.start_node("two", "--heartbeat", "0.5", slots=1))
    wait_for(lambda: job_states(cli.database) == {a: "failed", b: "canceled", c: "canceled"},
             30, message="A failed, B and C canceled")
    reasons = dict(query(cli.database, "SELECT id, reason FROM jobs"))
    assert reasons[b] == f"dependency #{a} failed" and reasons[c] == f"dependency #{b} canceled"
    assert query(cli.database, "SELECT count(*) FROM attempts WHERE job_id <> %s", [a]) == [(0,)]
    shutil.copyfile(clips.good, a_file)  # the file is fixed; reprocess A
    assert cli.run("retry", str(a)).stdout.strip() == f"{a}: queued again"
    wait_for(lambda: set(job_states(cli.database).values()) == {"succeeded"}, 30,
             message="all three succeeded")
    rows = query(cli.database, "SELECT j.id, a.started_at, a.finished_at, a.node FROM jobs j "
                               "JOIN attempts a ON a.job_id = j.id AND a.outcome = 'succeeded' "
                               "ORDER BY a.started_at")
    assert [r[0] for r in rows] == [a, b, c]
    assert rows[0][2] <= rows[1][1] and rows[1][2] <= rows[2][1]  # each after the previous
    batches = cli.run("batches").stdout
    assert batches.count("finished") == 3  # one batch per submit call
