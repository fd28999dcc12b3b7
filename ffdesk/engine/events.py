"""The cluster event bus: typed, throttled change events for consumers such as the GUI.

How it works (one "session" = two connections, rebuilt together after any trouble):

* **listener** (``application_name = ffdesk-events``, autocommit): ``LISTEN ffdesk`` and a ping
  channel of its own, then nothing but ``notifies()``. psycopg serializes the operations of one
  connection and ``notifies()`` holds that lock for as long as it waits (psycopg #340), so the
  listener cannot also run queries without stopping to listen; a second connection keeps both
  simple and lets a notification arrive while a catch-up runs.
* **reader** (``ffdesk-events-read``, autocommit): the catch-up reads and the self-pings. One
  task (the session loop) owns it, so a ping never lands inside a catch-up's transaction.

NOTIFY is only a wake-up: every event comes from a catch-up read (:mod:`ffdesk.db.changes`),
which returns the rows changed since the previous read's snapshot. So a lost notification
costs latency, never a change:

* LISTEN is committed before the first catch-up of each session, so a change commits either
  before that read (and is in it) or after the LISTEN (and wakes us).
* A notification schedules a catch-up ``coalesce`` seconds later, so a burst (300 statements by
  a busy node) costs one read; one that arrives during a catch-up asks for one more.
* A fallback catch-up runs every ``poll_interval`` even without notifications.
* Every ``ping_interval`` the reader sends ``NOTIFY <ping channel>, '<bus id>:<n>'``. If the
  listener has not heard it ``ping_timeout`` later, the listener is dead without knowing it
  (half-open TCP, a hung backend): the session is torn down and rebuilt.
* Any error: log it, back off (exponential, full jitter), reconnect, catch up from the last
  watermark, emit :class:`Resynced`. The bus never stops on its own.

Events carry rows as they are now, not a log of steps: a job that went queued → running →
succeeded between two reads arrives as one JobChanged (previous state queued, state succeeded).
The audit trail (``events`` table, attempts) is where every step is kept.

Events are delivered on the bus's event loop (the engine thread): ``on_event`` is called there,
and each ``events()`` iterator is fed there. A consumer on another thread (the GUI) hops over
with ``loop.call_soon_threadsafe``; ``stop()`` from another thread goes the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import psycopg

from ffdesk.core.errors import DatabaseError
from ffdesk.core.model import TERMINAL_STATES, Job, JobState, NodeRow
from ffdesk.db import changes
from ffdesk.db.changes import Watermark
from ffdesk.db.connect import check_url, connect_async
from ffdesk.engine.dbaccess import backoff

log = logging.getLogger("ffdesk.events")
T = TypeVar("T")

CHANNEL = "ffdesk"
LISTENER_NAME = "ffdesk-events"  # application_name: find the listener in pg_stat_activity
READER_NAME = "ffdesk-events-read"
PROGRESS_INTERVAL = 0.5  # at most 2 JobProgress per second per job

# Fields a progress report moves. A row where nothing else changed is a JobProgress; anything
# else (state, priority, node, started_at, ...) makes it a JobChanged. The lease is ignored:
# renewals alone do not bump the revision, but one may ride along with a progress write.
_PROGRESS_FIELDS = frozenset({"progress", "fps", "speed", "eta_s", "out_time_s", "revision"})
_OTHER_FIELDS = tuple(
    f.name for f in fields(Job) if f.name not in _PROGRESS_FIELDS and f.name != "lease_until"
)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class JobChanged:
    """A job is new to this consumer, or something other than its progress changed.
    ``previous_state`` is None for a job the consumer had not seen before."""

    job: Job
    previous_state: JobState | None


@dataclass(frozen=True)
class JobProgress:
    """Only the progress figures of a running job moved (throttled per job)."""

    job_id: int
    progress: float | None
    fps: float | None
    speed: float | None
    eta_s: float | None
    out_time_s: float | None
    revision: int


@dataclass(frozen=True)
class NodeChanged:
    node: NodeRow
    previous_state: str | None


@dataclass(frozen=True)
class Resynced:
    """A (re)connect catch-up is done: the consumer may have been away (``reason`` says why),
    but every change up to now has been delivered before this event."""

    reason: str
    revision: int


Event = JobChanged | JobProgress | NodeChanged | Resynced


# --------------------------------------------------------------------------- pure logic


def _digest(job: Job) -> bytes:
    # A short digest instead of the whole previous Job: a long-lived GUI may see many
    # thousands of jobs, and only "did anything but progress change" is needed.
    text = repr(tuple(getattr(job, name) for name in _OTHER_FIELDS))
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


class JobTracker:
    """What a consumer has seen of each job; turns a freshly read row into an event."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[int, JobState, bytes]] = {}

    def classify(self, job: Job) -> JobChanged | JobProgress | None:
        """The event for ``job``, or None if this revision was delivered already (the first
        catch-up from a revision may overlap the next one)."""
        prev = self._seen.get(job.id)
        if prev is not None and job.revision <= prev[0]:
            return None
        digest = _digest(job)
        self._seen[job.id] = (job.revision, job.state, digest)
        if prev is None or prev[2] != digest:
            return JobChanged(job, prev[1] if prev else None)
        return JobProgress(
            job.id, job.progress, job.fps, job.speed, job.eta_s, job.out_time_s, job.revision
        )

    def __len__(self) -> int:
        return len(self._seen)


class ProgressThrottle:
    """At most one JobProgress per ``interval`` per job; the newest one wins.

    The first report after a quiet spell goes out at once; later ones wait for the interval
    and only the newest of them is sent, so the last figures always arrive. Times are plain
    numbers (the bus passes its loop clock), which keeps this testable without sleeping.
    """

    def __init__(self, interval: float = PROGRESS_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[int, float] = {}
        self._pending: dict[int, JobProgress] = {}

    def offer(self, event: JobProgress, now: float) -> JobProgress | None:
        """The event to send now, or None if it is held (then see :meth:`next_due`)."""
        last = self._last.get(event.job_id)
        if last is None or now - last >= self.interval:
            self._last[event.job_id] = now
            self._pending.pop(event.job_id, None)
            return event
        self._pending[event.job_id] = event
        return None

    def supersede(self, job_id: int, *, final: bool = False) -> None:
        """A JobChanged for this job goes out: it carries the newest figures, so a held
        progress event would only be older news. ``final``: the job will not report again."""
        self._pending.pop(job_id, None)
        if final:
            self._last.pop(job_id, None)

    def next_due(self) -> float | None:
        if not self._pending:
            return None
        return min(self._last[job_id] + self.interval for job_id in self._pending)

    def due(self, now: float) -> list[JobProgress]:
        """Held events whose interval has passed (removed from the held set)."""
        out = []
        for job_id, event in list(self._pending.items()):
            if now - self._last[job_id] >= self.interval:
                out.append(event)
                self._last[job_id] = now
                del self._pending[job_id]
        # Forget jobs that have been quiet for a whole interval: they would pass at once anyway.
        for job_id in [j for j, t in self._last.items() if now - t >= self.interval]:
            if job_id not in self._pending:
                del self._last[job_id]
        return out

    def drain(self) -> list[JobProgress]:
        """Everything held, at once (the bus is stopping)."""
        out = list(self._pending.values())
        self._pending.clear()
        return out


# --------------------------------------------------------------------------- the bus


class _SessionLost(Exception):
    """The current connections are no good any more; the message says why."""


_END = object()  # ends every events() iterator when the bus stops


class EventBus:
    """Change events from the cluster database. See the module docstring.

    ``start_from_revision``: deliver every job and node with a higher revision first (a GUI
    that already shows a list read at revision R). ``start_after``: the same from a watermark
    of :func:`ffdesk.db.changes.catch_up`, which is exact. Neither: start from now.
    """

    def __init__(
        self,
        url: str,
        *,
        on_event: Callable[[Event], None] | None = None,
        start_from_revision: int | None = None,
        start_after: Watermark | None = None,
        ping_interval: float = 5.0,
        ping_timeout: float | None = None,
        poll_interval: float = 5.0,
        coalesce: float = 0.03,
        query_timeout: float = 15.0,
        progress_interval: float = PROGRESS_INTERVAL,
    ) -> None:
        if start_from_revision is not None and start_after is not None:
            raise ValueError("give start_from_revision or start_after, not both")
        check_url(url)
        self.url = url
        self.on_event = on_event
        self.ping_interval = ping_interval
        # Twice the interval (one ping may be sent just before a stall), never below 2 s: a
        # busy server or a loaded CI machine must not look like a dead listener.
        self.ping_timeout = ping_timeout if ping_timeout else max(2.0, 2 * ping_interval)
        self.poll_interval = poll_interval
        self.coalesce = coalesce
        self.query_timeout = query_timeout
        self.id = uuid.uuid4().hex
        self.ping_channel = f"ffdesk_ping_{self.id}"  # per bus: no one else's pings to skip

        self._watermark = start_after
        self._since_revision = start_from_revision
        self.last_revision = start_from_revision or 0
        self._jobs = JobTracker()
        self._nodes: dict[str, tuple[int, str]] = {}
        self._throttle = ProgressThrottle(progress_interval)
        self._flush_handle: asyncio.TimerHandle | None = None
        self._subscribers: list[asyncio.Queue[Any]] = []

        self._stopping = asyncio.Event()
        self._stopped = False
        self._wake = asyncio.Event()
        self._dirty = False
        self._listener_error: str | None = None
        self._pings: deque[tuple[int, float]] = deque()  # (sequence, loop time sent)
        self._ping_seq = 0
        self.listener_pid: int | None = None
        self.connected = False
        self._lost_at = 0.0  # loop time the last healthy session ended

        # Counters for tests, benchmarks and the status view.
        self.sessions = 0  # sessions that got through their first catch-up
        self.reconnects = 0  # of those, the ones after the first
        self.notifications = 0  # on the ffdesk channel
        self.catchups = 0
        self.pings = 0
        self.pings_echoed = 0  # highest ping sequence heard back
        self.dead_listeners = 0  # pings that never came back
        self.events_emitted = 0

    # ------------------------------------------------------------------ public

    @property
    def watermark(self) -> Watermark | None:
        """Where the last catch-up stopped (to start another consumer exactly here)."""
        return self._watermark

    def stop(self) -> None:
        """Ask :meth:`run` to return (call on the bus's loop)."""
        self._stopping.set()
        self._wake.set()

    def events(self) -> AsyncIterator[Event]:
        """Every event from now on, until the bus stops. Subscribes at the call, so events
        emitted between this call and the first ``__anext__`` are not lost."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        if self._stopped:
            queue.put_nowait(_END)
        else:
            self._subscribers.append(queue)
        return self._iterate(queue)

    async def run(self) -> None:
        """Deliver events until :meth:`stop`. Never raises for database trouble. One run per
        bus: after it returns, every ``events()`` iterator has ended."""
        attempt = 0
        reason = "start"
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                began = loop.time()
                try:
                    await self._run_session(reason)
                    return  # only on stop
                except _SessionLost as exc:
                    why = str(exc)
                except (psycopg.Error, OSError, TimeoutError) as exc:
                    why = _one_line(exc)
                except Exception as exc:
                    # A bug, not an outage; still no reason to leave the consumer deaf.
                    why = _one_line(exc)
                    log.error("event bus: unexpected error: %s", why, exc_info=True)
                # A session that served a while was healthy: start the backoff over, so one
                # blip after hours of service reconnects at once; a flapping server backs off.
                if self.connected and loop.time() - began > 10:
                    attempt = 0
                if self.connected:
                    self._lost_at = loop.time()
                self.connected = False
                delay = backoff(attempt)
                attempt += 1
                log_fn = log.warning if attempt == 1 or attempt % 10 == 0 else log.debug
                log_fn("event bus: %s; reconnecting in %.2f s (try %d)", why, delay, attempt)
                reason = f"reconnected after: {why}"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            self._finish()

    async def _run_session(self, reason: str) -> None:
        """One session, but :meth:`stop` ends it promptly even while it is connecting (the
        connect timeout is 10 s) or waiting on a slow read."""
        session = asyncio.create_task(self._session(reason), name="ffdesk-events-session")
        stopper = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({session, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not session.done():
                # Stopping (or cancelled): the session loop sees the flag at once when idle.
                await asyncio.wait({session}, timeout=1.0)
                if not session.done():
                    await _cancel_hard(session)
        if not session.cancelled():
            session.result()  # re-raise what ended the session

    # ------------------------------------------------------------------ session

    async def _connect(self, application_name: str) -> psycopg.AsyncConnection[Any]:
        try:
            return await connect_async(self.url, autocommit=True, application_name=application_name)
        except DatabaseError as exc:  # one line, password masked
            raise _SessionLost(str(exc)) from None

    async def _session(self, reason: str) -> None:
        listener: psycopg.AsyncConnection[Any] | None = None
        reader: psycopg.AsyncConnection[Any] | None = None
        listen_task: asyncio.Task[None] | None = None
        try:
            listener = await self._connect(LISTENER_NAME)
            reader = await self._connect(READER_NAME)
            self.listener_pid = listener.info.backend_pid
            await self._bounded(changes.listen(listener, [CHANNEL, self.ping_channel]), "LISTEN")
            self._listener_error = None
            self._dirty = False
            self._pings.clear()
            listen_task = asyncio.create_task(self._listen(listener), name="ffdesk-events-listen")
            # Autocommit: the LISTEN is in effect, so this read cannot miss anything.
            await self._catch_up(reader, reason)
            self.connected = True
            self.sessions += 1
            if self.sessions > 1:
                self.reconnects += 1
                log.info(
                    "event bus: reconnected after %.1f s, caught up to revision %d",
                    asyncio.get_running_loop().time() - self._lost_at,
                    self.last_revision,
                )
            else:
                log.debug("event bus: listening, at revision %d", self.last_revision)
            self._emit(Resynced(reason, self.last_revision))
            await self._serve(reader)
        finally:
            if listen_task is not None:
                # Wait until it has let go of the socket before closing (see _cancel_hard).
                listen_task.cancel()
                await asyncio.wait({listen_task})
            for conn in (listener, reader):
                if conn is not None:
                    # finish() never blocks (non-blocking socket), even on a hung server.
                    with contextlib.suppress(Exception):
                        await conn.close()
            self.listener_pid = None

    async def _serve(self, reader: psycopg.AsyncConnection[Any]) -> None:
        """The session loop: catch-ups on notification or poll, pings, health checks."""
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + self.poll_interval
        next_ping = loop.time()  # ping at once: proves the whole path of the new session
        while not self._stopping.is_set():
            # Clear before looking at the flags: anything set from here on wakes us again.
            self._wake.clear()
            if self._listener_error is not None:
                raise _SessionLost(f"listener connection lost ({self._listener_error})")
            # Health first: a steady stream of notifications must not starve the pings.
            now = loop.time()
            self._check_pings(now)
            if now >= next_ping:
                await self._ping(reader)
                next_ping = loop.time() + self.ping_interval
                continue
            if self._dirty:
                # Let the rest of a burst arrive: one read for all of it.
                await asyncio.sleep(self.coalesce)
                self._dirty = False  # before the read: a NOTIFY during it asks for one more
                await self._catch_up(reader, "notify")
                next_poll = loop.time() + self.poll_interval
                continue
            if now >= next_poll:
                await self._catch_up(reader, "poll")
                next_poll = loop.time() + self.poll_interval
                continue
            deadline = min(next_poll, next_ping)
            if self._pings:
                deadline = min(deadline, self._pings[0][1] + self.ping_timeout)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, deadline - loop.time()))

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            async for note in conn.notifies():
                if note.channel == CHANNEL:
                    self.notifications += 1
                    self._dirty = True
                    self._wake.set()
                elif note.channel == self.ping_channel:
                    bus_id, _, seq = note.payload.partition(":")
                    if bus_id == self.id and seq.isdigit():
                        self.pings_echoed = max(self.pings_echoed, int(seq))
            self._listener_error = "notifications ended"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._listener_error = _one_line(exc)
        self._wake.set()

    async def _ping(self, reader: psycopg.AsyncConnection[Any]) -> None:
        self._ping_seq += 1
        self._pings.append((self._ping_seq, asyncio.get_running_loop().time()))
        await self._bounded(
            changes.notify(reader, self.ping_channel, f"{self.id}:{self._ping_seq}"), "ping"
        )
        self.pings += 1

    def _check_pings(self, now: float) -> None:
        while self._pings and self._pings[0][0] <= self.pings_echoed:
            self._pings.popleft()
        if self._pings and now - self._pings[0][1] > self.ping_timeout:
            self.dead_listeners += 1
            raise _SessionLost(
                f"listener silent: ping {self._pings[0][0]} not echoed within "
                f"{self.ping_timeout:.1f} s"
            )

    async def _catch_up(self, reader: psycopg.AsyncConnection[Any], why: str) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        result = await self._bounded(
            changes.catch_up(reader, after=self._watermark, since_revision=self._since_revision),
            "catch-up read",
        )
        self.catchups += 1
        self._watermark = result.watermark
        self._since_revision = None
        rows: list[tuple[int, Job | NodeRow]] = [(j.revision, j) for j in result.jobs]
        rows += [(n.revision, n) for n in result.nodes]
        rows.sort(key=lambda r: r[0])
        for revision, row in rows:
            self.last_revision = max(self.last_revision, revision)
            if isinstance(row, NodeRow):
                self._deliver_node(row)
            else:
                self._deliver_job(row)
        log.debug(
            "catch-up (%s): %d job(s), %d node(s) in %.1f ms; xmin %d, revision %d",
            why,
            len(result.jobs),
            len(result.nodes),
            (loop.time() - began) * 1000,
            result.watermark.xmin,
            self.last_revision,
        )

    async def _bounded(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        """Run one database operation, but give up on it after ``query_timeout``: a hung
        server or a half-open connection must not hang the bus (it reconnects instead)."""
        task = asyncio.ensure_future(coro)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.query_timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task not in done:
            await _cancel_hard(task)
            raise _SessionLost(f"{what} took longer than {self.query_timeout:.0f} s")
        return task.result()

    # ------------------------------------------------------------------ delivery

    def _deliver_job(self, job: Job) -> None:
        event = self._jobs.classify(job)
        if event is None:
            return
        if isinstance(event, JobChanged):
            self._throttle.supersede(job.id, final=job.state in TERMINAL_STATES)
            self._emit(event)
            return
        loop = asyncio.get_running_loop()
        now_event = self._throttle.offer(event, loop.time())
        if now_event is not None:
            self._emit(now_event)
        else:
            self._schedule_flush()

    def _deliver_node(self, node: NodeRow) -> None:
        prev = self._nodes.get(node.identifier)
        if prev is not None and node.revision <= prev[0]:
            return
        self._nodes[node.identifier] = (node.revision, node.state)
        self._emit(NodeChanged(node, prev[1] if prev else None))

    def _schedule_flush(self) -> None:
        due = self._throttle.next_due()
        if due is None:
            return
        if self._flush_handle is not None:
            if self._flush_handle.when() <= due:
                return
            self._flush_handle.cancel()
        self._flush_handle = asyncio.get_running_loop().call_at(due, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        for event in self._throttle.due(asyncio.get_running_loop().time()):
            self._emit(event)
        self._schedule_flush()

    def _emit(self, event: Event) -> None:
        self.events_emitted += 1
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                # A consumer's bug must not stop the bus (nor the other consumers).
                log.exception("event consumer failed on %s", type(event).__name__)
        for queue in self._subscribers:
            queue.put_nowait(event)

    def _finish(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for event in self._throttle.drain():  # the newest figures must not be lost
            self._emit(event)
        self._stopped = True
        self.connected = False
        for queue in self._subscribers:
            queue.put_nowait(_END)
        self._subscribers.clear()

    async def _iterate(self, queue: asyncio.Queue[Any]) -> AsyncIterator[Event]:
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                yield item
        finally:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(queue)


async def _cancel_hard(task: asyncio.Task[Any]) -> None:
    """Stop a hung database operation, and wait until it has let go of its socket.

    psycopg answers a cancelled query by asking the server to cancel it and then waiting up to
    5 s for the answer; a second cancel makes it drop the connection at once. We wait for the
    task to end before the connection is closed: a task still waiting on the socket when it is
    closed would later unregister that file descriptor number from the event loop, and the
    number may by then belong to the new session's connection.
    """
    task.cancel()
    _, pending = await asyncio.wait({task}, timeout=1.0)
    if pending:
        task.cancel()
        await asyncio.wait({task}, timeout=5.0)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: it is logged by the caller's reconnect message


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
