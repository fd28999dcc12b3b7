"""The cluster event bus on real servers: nothing lost across bursts, late commits, killed and
silent connections, lost notifications; progress throttled; exact starts."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

from ffdesk.core.model import JobState, Lease
from ffdesk.db import changes, jobs
from ffdesk.db.connect import connect_async
from ffdesk.engine.events import (
    LISTENER_NAME,
    READER_NAME,
    Event,
    EventBus,
    JobChanged,
    JobProgress,
    NodeChanged,
    Resynced,
)
from ffdesk.engine.loop import run
from tests.conftest import new_jobs, query, wait_for, with_conn

pytestmark = pytest.mark.integration

SESSION = str(uuid.uuid4())


# --------------------------------------------------------------------------- helpers


def insert_jobs(conn: psycopg.Connection, n: int) -> list[int]:
    """Plain INSERT on a sync connection (for tests that interleave transactions by hand)."""
    cur = conn.execute(
        """INSERT INTO jobs (input, output, preset, preset_args)
           SELECT 'in' || i, 'out' || i, 'copy', '[]' FROM generate_series(1, %s) AS i
           RETURNING id""",
        [n],
    )
    return [r[0] for r in cur.fetchall()]


def backend_pid(url: str, application_name: str) -> int:
    rows = query(
        url,
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
        "AND datname = current_database()",
        [application_name],
    )
    assert len(rows) == 1, rows
    return rows[0][0]


class BusThread:
    """An EventBus on its own thread and SelectorEventLoop, the way the GUI will run it; the
    test thread drives the database and waits for what the bus saw."""

    def __init__(self, url: str, **options: Any) -> None:
        self.events: list[Event] = []
        self.times: list[float] = []  # time.monotonic() of each event (same clock as the loop)
        self.bus = EventBus(url, on_event=self._on_event, **options)
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="event-bus", daemon=True)

    def _on_event(self, event: Event) -> None:
        self.times.append(time.monotonic())
        self.events.append(event)

    def _main(self) -> None:
        async def go() -> None:
            self._loop = asyncio.get_running_loop()
            self._started.set()
            await self.bus.run()

        try:
            run(go())
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> BusThread:
        self._thread.start()
        assert self._started.wait(10)
        wait_for(lambda: self.resyncs(), 15, message="the bus's first catch-up")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.bus.stop)
        self._thread.join(20)
        assert not self._thread.is_alive(), "the bus did not stop"
        assert self.error is None, self.error

    def resyncs(self) -> list[Resynced]:
        return [e for e in list(self.events) if isinstance(e, Resynced)]

    def changed(self) -> list[JobChanged]:
        return [e for e in list(self.events) if isinstance(e, JobChanged)]

    def latest(self) -> dict[int, JobChanged]:
        return {e.job.id: e for e in self.changed()}

    def states(self) -> dict[int, JobState]:
        return {job_id: e.job.state for job_id, e in self.latest().items()}

    def progress_of(self, job_id: int) -> list[tuple[float, JobProgress]]:
        pairs = list(zip(list(self.times), list(self.events), strict=False))
        return [(t, e) for t, e in pairs if isinstance(e, JobProgress) and e.job_id == job_id]


def db_states(url: str) -> dict[int, JobState]:
    return {i: JobState(s) for i, s in query(url, "SELECT id, state FROM jobs")}


# --------------------------------------------------------------------------- delivery


def test_every_job_and_every_transition_is_delivered(any_db_url: str):
    url = any_db_url
    with_conn(url, lambda c: asyncio.sleep(0))  # migrate
    with BusThread(url, poll_interval=60) as b:
        ids = with_conn(url, lambda c: jobs.enqueue(c, new_jobs(300), submitted_by="t"))
        wait_for(lambda: len(b.latest()) == 300, 15, message="300 new jobs")
        assert all(e.previous_state is None and e.job.state == "queued" for e in b.changed())

        claimed = with_conn(
            url,
            lambda c: jobs.claim(
                c, node="n1", session=SESSION, host="h", limit=100, lease_seconds=60
            ),
        )
        running = {j.id for j in claimed}
        wait_for(
            lambda: all(b.states()[i] == JobState.RUNNING for i in running), 15, message="claims"
        )

        # 100 finishes in ONE transaction: 100 NOTIFYs land together at commit, and the bus
        # coalesces them into one or two catch-up reads.
        async def finish_all(conn: psycopg.AsyncConnection) -> None:
            async with conn.transaction():
                for n, job in enumerate(claimed):
                    ok = await jobs.finish(
                        conn,
                        Lease(job.id, job.claim or 0, SESSION),
                        jobs.Outcome(
                            JobState.SUCCEEDED if n % 2 else JobState.FAILED,
                            exit_code=0 if n % 2 else 1,
                            reason=None,
                        ),
                        stderr="",
                        node="n1",
                    )
                    assert ok

        notes, reads = b.bus.notifications, b.bus.catchups
        with_conn(url, finish_all)
        wait_for(lambda: all(b.states()[i].terminal for i in running), 15, message="finishes")
        assert b.bus.notifications - notes >= 100
        assert b.bus.catchups - reads <= 3

        rest = [i for i in ids if i not in running]
        with_conn(url, lambda c: jobs.cancel(c, rest, by="t"))
        wait_for(lambda: b.states() == db_states(url), 15, message="final states")

    # Every transition was seen, each one with the state it came from.
    history: dict[int, list[tuple[str | None, str]]] = {}
    for e in b.changed():
        history.setdefault(e.job.id, []).append((e.previous_state, e.job.state))
    for job_id in ids:
        final = db_states(url)[job_id]
        if job_id in running:
            assert history[job_id] == [(None, "queued"), ("queued", "running"), ("running", final)]
        else:
            assert history[job_id] == [(None, "queued"), ("queued", "canceled")]
    assert len(b.resyncs()) == 1 and b.bus.reconnects == 0


def test_a_transaction_that_commits_late_is_not_skipped(any_db_url: str):
    """A draws the lower revision, B the higher one, B commits first. Once the bus has seen
    B, "revision > last seen" can never return A again; the xid watermark does."""
    url = any_db_url
    with_conn(url, lambda c: asyncio.sleep(0))
    with psycopg.connect(url, autocommit=True) as setup:
        first, second = insert_jobs(setup, 2)
    with BusThread(url, poll_interval=60) as b, psycopg.connect(url) as a:
        rev_a = a.execute(
            "UPDATE jobs SET priority = 5 WHERE id = %s RETURNING revision", [first]
        ).fetchone()[0]  # transaction A stays open
        with psycopg.connect(url, autocommit=True) as other:
            rev_b = other.execute(
                "UPDATE jobs SET priority = 7 WHERE id = %s RETURNING revision", [second]
            ).fetchone()[0]
        assert rev_a < rev_b
        wait_for(lambda: second in b.latest(), 10, message="B's change")
        seen = b.bus.last_revision
        assert seen >= rev_b > rev_a
        a.commit()
        wait_for(lambda: first in b.latest(), 10, message="A's late change")
        assert b.latest()[first].job.priority == 5
        assert b.latest()[first].job.revision == rev_a
    # The naive catch-up would have missed it for good.
    assert query(url, "SELECT id FROM jobs WHERE revision > %s", [seen]) == []


def test_changes_from_a_watermark_include_late_commits(any_db_url: str):
    """The same rule one level down, on the query functions themselves."""
    url = any_db_url

    async def go(conn: psycopg.AsyncConnection) -> None:
        await conn.set_autocommit(True)
        [job_id] = await jobs.enqueue(conn, new_jobs(1), submitted_by="t")
        _, mark = await changes.job_changes(conn)  # start from now: no rows
        late = await connect_async(url)  # transaction open across the next read
        await late.execute("UPDATE jobs SET priority = 3 WHERE id = %s", [job_id])
        got, mark2 = await changes.job_changes(conn, after=mark)
        assert got == []
        await late.commit()
        await late.close()
        got, mark3 = await changes.job_changes(conn, after=mark2)
        assert [(j.id, j.priority) for j in got] == [(job_id, 3)]
        again, _ = await changes.job_changes(conn, after=mark3)
        assert again == []  # exact: nothing delivered twice
        everything, _ = await changes.job_changes(conn, since_revision=0)
        assert [j.id for j in everything] == [job_id]

    with_conn(url, go)


# --------------------------------------------------------------------------- failures


def test_listener_killed_reconnects_and_catches_up(any_db_url: str):
    url = any_db_url
    with_conn(url, lambda c: asyncio.sleep(0))
    dbname = query(url, "SELECT current_database()")[0][0]
    admin_url = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    with (
        BusThread(url, poll_interval=60) as b,
        psycopg.connect(url, autocommit=True) as conn,
        psycopg.connect(admin_url, autocommit=True) as admin,
    ):
        pid = backend_pid(url, LISTENER_NAME)
        assert pid == b.bus.listener_pid
        # Keep the bus out while the changes are made (its reconnects fail and back off), so
        # their NOTIFY reaches no listener of this bus: only the catch-up after the reconnect
        # can deliver them. Our own connection is already in.
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        try:
            assert conn.execute("SELECT pg_terminate_backend(%s, 5000)", [pid]).fetchone()[0]
            ids = insert_jobs(conn, 5)
            wait_for(lambda: not b.bus.connected, 10, message="the bus noticing")
        finally:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        wait_for(lambda: b.bus.reconnects == 1, 15, message="reconnect")
        wait_for(lambda: set(ids) <= set(b.latest()), 10, message="jobs added while away")
        assert b.bus.listener_pid != pid
        assert backend_pid(url, LISTENER_NAME) == b.bus.listener_pid
    resyncs = b.resyncs()
    assert len(resyncs) == 2 and resyncs[1].reason.startswith("reconnected after")
    # Delivered by the catch-up, i.e. before the Resynced that closes it.
    assert b.events.index(resyncs[1]) > max(b.events.index(b.latest()[i]) for i in ids)


def test_silent_listener_is_detected_by_ping(db_url: str):
    """SIGSTOP on the listener's backend: its connection stays open but nothing arrives any
    more, which is what a half-open TCP connection looks like. Only the missing ping echo
    can tell (the fallback poll is set far away so it cannot hide the failure)."""
    url = db_url
    with_conn(url, lambda c: asyncio.sleep(0))
    with BusThread(url, poll_interval=60, ping_interval=0.5) as b:
        wait_for(lambda: b.bus.pings_echoed >= 1, 10, message="a ping echo")
        pid = b.bus.listener_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                ids = insert_jobs(conn, 3)
            wait_for(lambda: b.bus.reconnects == 1, 15, message="silent listener replaced")
            wait_for(lambda: set(ids) <= set(b.latest()), 10, message="jobs")
            assert b.bus.dead_listeners == 1
            assert "silent" in b.resyncs()[-1].reason
        finally:
            os.kill(pid, signal.SIGCONT)


def test_hung_reader_connection_is_replaced(db_url: str):
    """The catch-up connection can hang too: every read is bounded by query_timeout."""
    url = db_url
    with_conn(url, lambda c: asyncio.sleep(0))
    with BusThread(url, poll_interval=60, ping_interval=0.3, query_timeout=1.0) as b:
        pid = backend_pid(url, READER_NAME)
        os.kill(pid, signal.SIGSTOP)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                ids = insert_jobs(conn, 3)
            wait_for(lambda: b.bus.reconnects == 1, 15, message="hung reader replaced")
            wait_for(lambda: set(ids) <= set(b.latest()), 10, message="jobs")
        finally:
            os.kill(pid, signal.SIGCONT)


def test_lost_notifications_are_covered_by_the_poll(db_url: str):
    url = db_url
    with_conn(url, lambda c: asyncio.sleep(0))
    # No NOTIFY for inserts in this database: the way a notification is lost behind PgBouncer
    # in transaction mode, or when a listener is between connections.
    query(url, "ALTER TABLE jobs DISABLE TRIGGER jobs_notify_insert")
    with BusThread(url, poll_interval=0.5) as b:
        with psycopg.connect(url, autocommit=True) as conn:
            ids = insert_jobs(conn, 4)
        wait_for(lambda: set(ids) <= set(b.latest()), 10, message="jobs found by polling")
        assert b.bus.notifications == 0


# --------------------------------------------------------------------------- throttle, nodes


def test_progress_is_throttled_and_the_last_figures_arrive(db_url: str):
    url = db_url
    with_conn(url, lambda c: jobs.enqueue(c, new_jobs(2), submitted_by="t"))
    claimed = with_conn(
        url,
        lambda c: jobs.claim(c, node="n1", session=SESSION, host="h", limit=2, lease_seconds=60),
    )
    steady, finished = (Lease(j.id, j.claim or 0, SESSION) for j in claimed)

    async def report(conn: psycopg.AsyncConnection) -> float:
        loop = asyncio.get_running_loop()
        began = loop.time()
        for i in range(1, 21):
            for lease in (steady, finished):
                assert await jobs.report_progress(
                    conn,
                    lease,
                    progress=i * 5.0,
                    fps=25.0,
                    speed=1.0 + i,
                    eta_s=20.0 - i,
                    out_time_s=i * 0.5,
                )
            # Pacing, not waiting for a condition: 20 reports spread over 0.9 s, like a fast
            # FFmpeg -progress stream.
            await asyncio.sleep(max(0.0, began + i * 0.045 - loop.time()))
        # The second job finishes right after its last report: the change supersedes any
        # progress event still held back.
        async with conn.transaction():
            await jobs.finish(
                conn,
                finished,
                jobs.Outcome(JobState.SUCCEEDED, exit_code=0, reason=None),
                stderr="",
                node="n1",
            )
        return loop.time() - began

    with BusThread(url, poll_interval=60) as b:
        span = with_conn(url, report)
        wait_for(
            lambda: (
                b.progress_of(steady.job_id)
                and b.progress_of(steady.job_id)[-1][1].progress == 100.0
            ),
            10,
            message="the last progress figures",
        )
        wait_for(lambda: b.states().get(finished.job_id) == "succeeded", 10, message="finish")

    steady_events = b.progress_of(steady.job_id)
    last = steady_events[-1][1]
    assert (last.fps, last.speed, last.eta_s, last.out_time_s) == (25.0, 21.0, 0.0, 10.0)
    gaps = [t2 - t1 for (t1, _), (t2, _) in itertools.pairwise(steady_events)]
    assert all(gap >= 0.49 for gap in gaps), gaps  # never more than 2 per second
    if span < 1.0:
        assert len(steady_events) <= 3, steady_events

    done = b.latest()[finished.job_id]
    after = b.events[b.events.index(done) + 1 :]
    assert not [e for e in after if isinstance(e, JobProgress) and e.job_id == finished.job_id]
    assert done.job.progress == 100.0


def test_node_changes_are_delivered(db_url: str):
    url = db_url
    with_conn(url, lambda c: asyncio.sleep(0))

    def node_events() -> list[NodeChanged]:
        return [e for e in list(b.events) if isinstance(e, NodeChanged)]

    # Events carry rows, not every intermediate step: the test waits for each change to be
    # seen before making the next, so that each one gets its own event.
    with BusThread(url, poll_interval=60) as b, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO nodes (identifier, session, host, slots, tags) "
            "VALUES ('n1', %s, 'h', 2, '{gpu}')",
            [SESSION],
        )
        wait_for(lambda: len(node_events()) == 1, 10, message="the new node")
        conn.execute("UPDATE nodes SET heartbeat_at = now()")  # a heartbeat is no news
        conn.execute("UPDATE nodes SET state = 'offline'")
        wait_for(lambda: len(node_events()) == 2, 10, message="the node going offline")
    first, second = node_events()
    assert (first.previous_state, first.node.state, first.node.tags) == (None, "online", ("gpu",))
    assert (second.previous_state, second.node.state) == ("online", "offline")
    assert second.node.session == SESSION
    assert len(node_events()) == 2


# --------------------------------------------------------------------------- starting points


def test_start_from_a_revision_or_a_watermark_is_exact(any_db_url: str):
    """Uses the ``async for event in bus.events()`` interface, on the test's own loop."""
    url = any_db_url

    async def first_batch(bus: EventBus) -> list[Event]:
        stream = bus.events()
        task = asyncio.create_task(bus.run())
        got = []
        async for event in stream:
            if isinstance(event, Resynced):
                break
            got.append(event)
        tail = bus.events()
        bus.stop()
        await task
        assert [e async for e in tail] == []  # iterators end when the bus stops
        return got

    async def go(conn: psycopg.AsyncConnection) -> None:
        await conn.set_autocommit(True)
        early = await jobs.enqueue(conn, new_jobs(10), submitted_by="t")
        await jobs.cancel(conn, early[:3], by="t")
        loaded = await changes.catch_up(conn, since_revision=0)  # a GUI's first full load
        revision = max(j.revision for j in loaded.jobs)
        assert len(loaded.jobs) == 10

        later = await jobs.enqueue(conn, new_jobs(5), submitted_by="t")
        await jobs.cancel(conn, early[3:5], by="t")
        expected = {j.id for j in await jobs.list_jobs(conn, since_revision=revision)}
        assert expected == {*later, *early[3:5]}

        for bus in (
            EventBus(url, start_from_revision=revision, poll_interval=60),
            EventBus(url, start_after=loaded.watermark, poll_interval=60),
        ):
            got = await first_batch(bus)
            assert all(isinstance(e, JobChanged) and e.previous_state is None for e in got)
            assert sorted(e.job.id for e in got) == sorted(expected)  # each exactly once

        # From now: nothing old at all.
        assert await first_batch(EventBus(url, poll_interval=60)) == []

    with_conn(url, go)
