"""The node engine: claim, run FFmpeg, report, heartbeat; the same code headless and in the GUI.

Loops (all on one SelectorEventLoop):

* claim loop: claims up to the free slots in one statement; wakes on NOTIFY within milliseconds,
  on a freed slot, or every ``poll_interval`` seconds as the fallback;
* listener: one dedicated autocommit connection doing LISTEN; tells the claim loop about new
  work, running jobs about cancels and the node about remote pause / drain / resume. It pings
  itself so a silently dead connection is noticed; a lost notification only costs latency,
  because the heartbeat finds out the same things;
* heartbeat: renews the node row and the leases of all its running jobs in one statement, and
  runs the rescuer for jobs whose node died;
* one task per running job (see :mod:`ffdesk.engine.job_run`).

Node states: ``online`` claims; ``draining`` claims nothing and lets running jobs finish;
``paused`` claims nothing and gives its running jobs back at once (a person wants their
machine back), without spending their attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import re
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from psycopg_pool import PoolTimeout

from ffdesk import __version__
from ffdesk.core.config import Settings
from ffdesk.core.errors import ConfigError
from ffdesk.core.model import Lease
from ffdesk.core.roots import RootMap
from ffdesk.core.secrets import mask_url
from ffdesk.db import jobs as jobs_sql
from ffdesk.db import migrate, nodes, samples
from ffdesk.db.connect import connect_async
from ffdesk.engine.dbaccess import Pool, backoff
from ffdesk.engine.job_run import JobRun, RunLimits, Tools
from ffdesk.engine.metrics import start_metrics
from ffdesk.engine.temp_journal import TempJournal
from ffdesk.engine.watch import Watcher
from ffdesk.engine.webhooks import Deliverer
from ffdesk.ffmpeg.locate import find_ffmpeg, find_ffprobe, identify

log = logging.getLogger("ffdesk.node")
qlog = logging.getLogger("ffdesk.queue")
clog = logging.getLogger("ffdesk.cluster")

CHANNEL = "ffdesk"
PING_CHANNEL = "ffdesk_ping"
SAMPLE_SECONDS = 10.0
DB_TROUBLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


@dataclass
class NodeStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    lost: int = 0
    requeued: int = 0
    retried: int = 0  # failures put back in the queue by the retry policy
    listener_reconnects: int = 0
    finished_ids: list[int] = field(default_factory=list)


def _last_line(exc: BaseException) -> str:
    """The driver's message on one line (its last line alone is often just a hint)."""
    return mask_url(" ".join(str(exc).split())[:300]) or exc.__class__.__name__


class Node:
    def __init__(
        self,
        settings: Settings,
        db_url: str,
        *,
        exit_when_idle: bool = False,
        cache_dir: Path | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.db_url = db_url
        self.exit_when_idle = exit_when_idle
        self.cache_dir = cache_dir
        self.identifier = settings.identifier
        self.session = str(uuid.uuid4())
        self.host = socket.gethostname()
        self.state = "online"
        self.stats = NodeStats()
        self.running: dict[int, JobRun] = {}
        self.pool: Pool | None = None
        self.tools: Tools | None = None
        self.encoders: tuple[str, ...] = ()
        self.limits = RunLimits(
            verify=settings.verify,
            stall_timeout=settings.stall_timeout,
            memory_limit=settings.memory_limit_bytes,
            retry_base=settings.retry_base,
            retry_max=settings.retry_max,
            full_hash=settings.full_hash,
            hooks=dict(settings.hooks),
            hook_timeout=settings.hook_timeout,
        )
        # Where this node lists the temp files it is writing (removed at the next start if
        # a crash left them behind). None: no journal (embedded in tests).
        self.journal = TempJournal(data_dir, self.identifier) if data_dir is not None else None
        self.env_failures_in_row = 0  # environment failures since the last success here
        self.root_map = RootMap(dict(settings.roots))  # this machine's path for each root
        self.roots_status: dict[str, dict] = {}
        self._quarantine_pending = False  # decided here, not yet written to the database
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stop_now = False
        self._tasks: set[asyncio.Task] = set()
        self._job_tasks: set[asyncio.Task] = set()
        # job id -> when first seen owned-but-not-running (see _give_back_orphans)
        self._orphan_suspects: dict[int, float] = {}
        self._claims_in_flight = 0
        self._due: float | None = None  # seconds until a backed-off retry becomes due
        # Since when the heartbeat has worked without a break: after an outage every node
        # first renews its own leases before anyone may rescue jobs whose leases ran out.
        self._db_ok_since: float | None = None
        self._ping_echo = asyncio.Event()
        self.watcher = Watcher(self)  # scans watchfolders (ffdesk.engine.watch)
        self.webhooks = Deliverer(self)  # delivers the webhook outbox (ffdesk.engine.webhooks)
        self.ready = asyncio.Event()  # set once registered and claiming (tests, GUI)

    # ------------------------------------------------------------------ control

    def request_stop(self, *, immediately: bool = False) -> None:
        """Stop claiming; running jobs get ``grace`` seconds (none if ``immediately``)."""
        if self._stopping.is_set():
            immediately = True  # a second Ctrl-C: do not wait any longer
        if immediately:
            self._stop_now = True
            for run in list(self.running.values()):
                run.interrupt("node shutting down")
        self._stopping.set()
        self._wake.set()

    def _apply_state(self, state: str | None) -> None:
        """A state recorded in the database (by us or by a remote ``ffdesk nodes ...``)."""
        known = ("online", "paused", "draining", "quarantined")
        if state is None or state == self.state or state not in known:
            return
        if self._quarantine_pending and state == "online":
            return  # our own quarantine write has not landed yet
        clog.info("node %s: %s -> %s", self.identifier, self.state, state)
        if state == "online":
            self.env_failures_in_row = 0  # resumed by a person: a fresh start
        self.state = state
        if state == "paused":
            for run in list(self.running.values()):
                run.interrupt("node paused")
        self._wake.set()

    # ------------------------------------------------------------------ main

    async def run(self) -> NodeStats:
        self.tools = await asyncio.to_thread(self._find_tools)
        self.encoders = await asyncio.to_thread(self._probe_encoders)
        # A short pool timeout: during an outage callers must fail (and say so) within a
        # couple of beats instead of hanging, so the node knows it was cut off.
        self.pool = Pool(
            self.db_url,
            size=max(4, self.settings.slots + 2),
            timeout=max(2.0, 2 * self.settings.heartbeat),
            # Nothing a node does keeps a transaction open for long (a watch scan that walks
            # a folder lifts this for itself); one frozen longer than a lease is as good as
            # dead, and its locks must not outlive it.
            idle_in_transaction_s=max(5.0, 2 * self.settings.lease_seconds),
        )
        await self.pool.open()
        try:
            await self.pool.run(migrate.migrate)
            await self._register()
            await self._check_roots()
            await self._recover_own()
            if self.journal is not None:
                swept = await asyncio.to_thread(self.journal.sweep)
                if swept:
                    log.info(
                        "removed %d temp file(s) a previous run of this node left behind: %s",
                        len(swept),
                        ", ".join(map(str, swept)),
                    )
            self._db_ok_since = time.monotonic()
            self._spawn(self._listen_loop(), "listener")
            self._spawn(self._heartbeat_loop(), "heartbeat")
            self._spawn(self._rescue_loop(), "rescuer")
            self._spawn(self.watcher.run(), "watch")
            self._spawn(self.webhooks.run(), "webhooks")
            self._spawn(self._roots_loop(), "roots")
            await start_metrics(self)  # --metrics-port: GET /metrics; a stop closes it
            log.info(
                "node %s online: %d slot(s), ffmpeg %s, heartbeat %.1f s, database %s",
                self.identifier,
                self.settings.slots,
                self.tools.identity.version,
                self.settings.heartbeat,
                mask_url(self.db_url),
            )
            self.ready.set()
            await self._claim_loop()
            await self._drain()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(*DB_TROUBLE):
                await self.pool.run(lambda c: nodes.set_offline(c, self.identifier, self.session))
            await self.pool.close()
        log.info(
            "node %s stopped: %d succeeded, %d failed, %d given back",
            self.identifier,
            self.stats.succeeded,
            self.stats.failed,
            self.stats.requeued,
        )
        return self.stats

    def _find_tools(self) -> Tools:
        ffmpeg = find_ffmpeg(self.settings.ffmpeg)
        ffprobe = find_ffprobe(self.settings.ffprobe, ffmpeg)
        return Tools(ffmpeg=ffmpeg, ffprobe=ffprobe, identity=identify(ffmpeg))

    def _probe_encoders(self) -> tuple[str, ...]:
        from ffdesk.ffmpeg.hwprobe import probe_encoders

        assert self.tools is not None
        try:
            report = probe_encoders(
                self.tools.ffmpeg, identity=self.tools.identity, cache_dir=self.cache_dir
            )
        except OSError as exc:  # a probe problem must not keep a node from working
            log.warning("encoder probe failed (%s): advertising no encoders", exc)
            return ()
        return tuple(report.working)

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "%s stopped unexpectedly: %s",
                task.get_name(),
                task.exception(),
                exc_info=task.exception(),
            )
            self.request_stop()

    async def _register(self) -> None:
        assert self.pool is not None and self.tools is not None
        stale_after = self.settings.heartbeat * 2
        owner = await self.pool.run(
            lambda c: nodes.find_live_owner(c, self.identifier, stale_after=stale_after)
        )
        if owner is not None and not self._owner_is_dead(owner):
            raise ConfigError(
                f"another node named '{self.identifier}' is running on {owner['host']} "
                f"(pid {owner['pid']}, heartbeat {owner['age']:.0f} s ago); "
                "give this one a different --identifier"
            )
        me = psutil.Process()
        tags = tuple(sorted({t.strip() for t in self.settings.tags.split(",") if t.strip()}))
        info = nodes.NodeInfo(
            identifier=self.identifier,
            session=self.session,
            host=self.host,
            pid=me.pid,
            pid_created=me.create_time(),
            os=f"{platform.system()} {platform.release()}",
            arch=platform.machine(),
            cpu=_cpu_model(),
            cores=os.cpu_count() or 1,
            ram_bytes=psutil.virtual_memory().total,
            app_version=__version__,
            ffmpeg_version=self.tools.identity.version_line,
            ffmpeg_fingerprint=self.tools.identity.fingerprint,
            slots=self.settings.slots,
            heartbeat_s=self.settings.heartbeat,
            lease_s=self.settings.lease_seconds,
            encoders=self.encoders,
            tags=tags,
        )
        await self.pool.run(lambda c: nodes.register(c, info))

    def _owner_is_dead(self, owner: dict) -> bool:
        """A registry row from this host whose process is gone (crash, kill -9) is no owner."""
        if owner["host"] != self.host or owner["pid"] is None:
            return False
        try:
            proc = psutil.Process(owner["pid"])
            return abs(proc.create_time() - (owner["pid_created"] or 0)) > 1.0
        except psutil.Error:
            return True

    async def _recover_own(self) -> None:
        assert self.pool is not None
        stranded = await self.pool.run(lambda c: jobs_sql.list_jobs(c, states=["running"]))
        stranded = [j for j in stranded if j.node == self.identifier]
        ids = await self.pool.run(
            lambda c: jobs_sql.recover_own(c, node=self.identifier, session=self.session)
        )
        if ids:
            log.warning(
                "took back %d job(s) a previous run of this node left running: %s",
                len(ids),
                ", ".join(map(str, ids)),
            )
        for job in stranded:
            if job.id in ids and job.claim is not None:
                temp = JobRun.temp_path(job, self.root_map)
                if temp.exists():
                    JobRun.discard_temp_of(job, self.root_map)
                    log.info("job #%d: removed the temp file its crashed run left: %s",
                             job.id, temp)

    # ------------------------------------------------------------------ claiming

    async def _claim_loop(self) -> None:
        assert self.pool is not None
        attempt = 0
        while not self._stopping.is_set():
            free = self.settings.slots - len(self.running)
            claimed = []
            self._due = None
            if free > 0 and self.state == "online":
                self._wake.clear()  # before the query: a NOTIFY during it wakes us again
                # Until the claimed jobs have their tasks, they look like orphans to a lease
                # check running meanwhile (see _give_back_orphans).
                self._claims_in_flight += 1
                try:
                    claimed = await self.pool.run(self._claim(free))
                    attempt = 0
                    for job in claimed:
                        self._start_job(job)
                except DB_TROUBLE as exc:
                    delay = backoff(attempt, cap=self.settings.poll_interval)
                    attempt += 1
                    log.warning(
                        "cannot claim jobs: database unavailable (%s); retry in %.1f s",
                        _last_line(exc),
                        delay,
                    )
                    await self._sleep_or_wake(delay)
                    continue
                finally:
                    self._claims_in_flight -= 1
                if len(claimed) == free:
                    continue  # maybe more waiting: claim again at once
            else:
                self._wake.clear()
            idle = self.exit_when_idle and not self.running and not claimed
            if idle and await self._queue_is_empty():
                log.info("queue is empty and nothing runs: exiting (--exit-when-idle)")
                return
            wait = self.settings.poll_interval
            if self._due is not None:
                wait = min(wait, max(self._due, 0.01))
            await self._sleep_or_wake(wait)

    def _claim(self, free: int):
        async def claim(conn):
            jobs = await jobs_sql.claim(
                conn,
                node=self.identifier,
                session=self.session,
                host=self.host,
                limit=free,
                lease_seconds=self.settings.lease_seconds,
            )
            if jobs:
                clog.debug(
                    "claimed %s (lease %.0f s)",
                    ", ".join(f"#{j.id}" for j in jobs),
                    self.settings.lease_seconds,
                )
            if len(jobs) < free:
                self._due = await jobs_sql.next_due(conn, node=self.identifier)
            return jobs

        return claim

    async def _queue_is_empty(self) -> bool:
        assert self.pool is not None
        try:
            counts = await self.pool.run(jobs_sql.counts_by_state)
        except DB_TROUBLE:
            return False
        return counts.get("queued", 0) == 0

    async def _sleep_or_wake(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _start_job(self, job) -> None:
        assert self.pool is not None and self.tools is not None
        self.stats.claimed += 1
        run = JobRun(
            job,
            node=self.identifier,
            session=self.session,
            pool=self.pool,
            tools=self.tools,
            stats=self.stats,
            limits=self.limits,
            journal=self.journal,
            root_map=self.root_map,
        )
        self.running[job.id] = run
        task = asyncio.create_task(run.run(), name=f"job-{job.id}")
        self._job_tasks.add(task)

        def done(t: asyncio.Task, job_id: int = job.id) -> None:
            self._job_tasks.discard(t)
            self.running.pop(job_id, None)
            if not t.cancelled() and t.exception() is not None:
                log.error(
                    "job #%d: unexpected error: %s", job_id, t.exception(), exc_info=t.exception()
                )
            self._count_outcome(run)
            self._wake.set()  # a slot is free

        task.add_done_callback(done)

    def _count_outcome(self, run: JobRun) -> None:
        """K environment failures in a row (nothing succeeded in between) mean this node is
        broken (no disk, a dead GPU, an unwritable share): quarantine it so it stops eating
        the queue's attempts. Input and config failures say nothing about the node, and a
        component its FFmpeg build lacks only sends that job elsewhere (Failure.node_fault)."""
        if run.final_kind == "succeeded":
            self.env_failures_in_row = 0
        elif run.node_fault:
            self.env_failures_in_row += 1
            limit = self.settings.quarantine_after
            if self.env_failures_in_row >= limit and self.state not in ("quarantined", "paused"):
                reason = (
                    f"{self.env_failures_in_row} environment failures in a row; last: job "
                    f"#{run.job.id}: {run.last_reason}"
                )
                self.state = "quarantined"  # claim nothing more from now on
                self._quarantine_pending = True
                self._spawn(self._quarantine(reason), "quarantine")

    async def _quarantine(self, reason: str) -> None:
        assert self.pool is not None
        clog.warning("node %s quarantined: %s", self.identifier, reason)
        await self.pool.run_retrying(
            lambda c: nodes.quarantine(c, self.identifier, self.session, reason),
            f"quarantining node {self.identifier}",
        )
        self._quarantine_pending = False

    # ------------------------------------------------------------------ roots and routing

    async def _check_roots(self) -> None:
        """Validate this node's storage roots and publish what it can reach (and its FFmpeg
        version) for the claim's routing: a node never claims a job whose roots it lacks."""
        assert self.pool is not None and self.tools is not None
        status = await asyncio.to_thread(check_roots, self.root_map)
        changed = status != self.roots_status
        self.roots_status = status
        for name, info in status.items():
            if changed and info["error"]:
                log.warning("storage root %s (%s): %s", name, info["path"], info["error"])
        await self.pool.run(
            lambda c: nodes.publish_capabilities(
                c,
                self.identifier,
                self.session,
                roots_read=[n for n, i in status.items() if i["read"]],
                roots_write=[n for n, i in status.items() if i["write"]],
                roots_status=status,
                semver=semver_of(self.tools.identity.version),
            )
        )

    async def _roots_loop(self) -> None:
        """Re-check roots every ``roots_check`` seconds (a share that went away stops this
        node claiming its jobs; one that came back lets it claim them again), and tell
        queued jobs no online node can run why they wait (one node at a time does that)."""
        assert self.pool is not None
        waiting_every = max(self.settings.heartbeat * 2, 2.0)
        last_roots = time.monotonic()
        while True:
            await asyncio.sleep(waiting_every)
            try:
                if time.monotonic() - last_roots >= self.settings.roots_check:
                    last_roots = time.monotonic()
                    await self._check_roots()
                changed = await self.pool.run(nodes.explain_waiting)
                if changed:
                    qlog.debug("waiting reasons updated on %d queued job(s)", changed)
            except DB_TROUBLE as exc:
                clog.debug("roots/waiting check skipped: %s", _last_line(exc))

    async def _drain(self) -> None:
        """After stop: let running jobs finish within the grace period, then give them back."""
        if not self._job_tasks:
            return
        if not self._stop_now:
            log.info(
                "waiting up to %.0f s for %d running job(s) to finish",
                self.settings.grace,
                len(self._job_tasks),
            )
            _, pending = await asyncio.wait(set(self._job_tasks), timeout=self.settings.grace)
        else:
            pending = set(self._job_tasks)
        if pending:
            log.info("grace period over: giving %d job(s) back to the queue", len(pending))
            for run in list(self.running.values()):
                run.interrupt("node shutting down")
            await asyncio.wait(pending, timeout=30)

    # ------------------------------------------------------------------ listening

    async def _listen_loop(self) -> None:
        if not self.settings.listen:
            await self._stopping.wait()  # poll-only mode
            return
        attempt = 0
        while not self._stopping.is_set():
            try:
                conn = await connect_async(
                    self.db_url, autocommit=True, application_name="ffdesk-listen"
                )
            except Exception as exc:
                delay = backoff(attempt)
                attempt += 1
                clog.warning("listener cannot connect (%s); retry in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            pinger = asyncio.create_task(self._ping_loop(conn))
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await conn.execute(f"LISTEN {PING_CHANNEL}")
                    if attempt or self.stats.listener_reconnects:
                        log.info("listener reconnected")
                    attempt = 0
                    clog.debug("listening on channel %s", CHANNEL)
                    self._wake.set()  # whatever happened while we were not listening
                    if self.running:
                        self._spawn(self._check_leases_quietly(), "lease-check")
                    async for note in conn.notifies():
                        if note.channel == PING_CHANNEL:
                            if note.payload == self.session:
                                self._ping_echo.set()
                        else:
                            self._on_notify(note.payload)
            except psycopg.Error as exc:
                delay = backoff(attempt)
                attempt += 1
                self.stats.listener_reconnects += 1
                clog.warning(
                    "listener connection lost (%s); reconnecting in %.1f s", _last_line(exc), delay
                )
                await asyncio.sleep(delay)
            finally:
                pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pinger

    async def _ping_loop(self, listener: psycopg.AsyncConnection) -> None:
        """Detect a listener that is silently dead (a half-open TCP connection looks healthy
        for hours): NOTIFY ourselves every few beats and expect the echo."""
        assert self.pool is not None
        interval = max(self.settings.heartbeat * 3, 3.0)
        while True:
            await asyncio.sleep(interval)
            self._ping_echo.clear()
            try:
                await self.pool.run(lambda c: jobs_sql.notify(c, PING_CHANNEL, self.session))
            except DB_TROUBLE:
                continue  # the database is away: nothing to learn about the listener
            try:
                await asyncio.wait_for(self._ping_echo.wait(), max(interval, 5.0))
            except TimeoutError:
                clog.warning("listener missed its own ping: reconnecting it")
                with contextlib.suppress(Exception):
                    await listener.close()  # ends notifies() with an error: the loop reconnects
                return

    def _on_notify(self, payload: str) -> None:
        try:
            note = json.loads(payload)
        except ValueError:
            return
        kind = note.get("k")
        ids = note.get("ids")
        if kind == "node":
            for identifier, state in ids or []:
                if identifier == self.identifier:
                    self._apply_state(state)
            return
        if kind == "watch":  # a watchfolder was added or resumed
            self.watcher.wake()
            return
        if kind == "webhook":  # a webhook delivery was queued
            self.webhooks.wake()
            return
        if kind != "job":
            return
        if note.get("q"):
            self._wake.set()
        if ids is None:
            if self.running:
                self._spawn(self._check_leases_quietly(), "lease-check")
            return
        for job_id, state in ids:
            run = self.running.get(job_id)
            if run is not None and state != "running":
                run.lose(f"job is now {state}")

    # ------------------------------------------------------------------ heartbeat

    async def _heartbeat_loop(self) -> None:
        last_ok = time.monotonic()
        # Throughput samples every ~10 s whatever the beat: enough for the graphs, and an
        # idle node stays under one query per second at default settings.
        sample_every = max(1, round(SAMPLE_SECONDS / self.settings.heartbeat))
        beats = 0
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            try:
                await self._check_leases()
            except DB_TROUBLE as exc:
                if self._db_ok_since is not None:
                    log.warning(
                        "heartbeat failed: database unavailable (%s); FFmpeg keeps "
                        "running, results are reported when it is back",
                        _last_line(exc),
                    )
                self._db_ok_since = None
                continue
            now = time.monotonic()
            if self._db_ok_since is None:
                log.info("database reachable again")
                self._db_ok_since = now
            elif now - last_ok > 2.5 * self.settings.heartbeat:
                # The beat went through, but late (the database stalled or restarted): others'
                # leases may have run out meanwhile too; give them a lease to renew them.
                clog.warning(
                    "heartbeat delayed %.1f s: holding the rescuer for one lease", now - last_ok
                )
                self._db_ok_since = now
            last_ok = now
            beats += 1
            if beats % sample_every == 0:
                await self._sample(sample_every * self.settings.heartbeat)

    async def _sample(self, interval_s: float) -> None:
        assert self.pool is not None
        try:
            await self.pool.run(
                lambda c: samples.record(c, node=self.identifier, session=self.session,
                                         interval_s=interval_s)
            )
        except DB_TROUBLE as exc:
            clog.debug("sample not recorded: %s", _last_line(exc))

    async def _rescue_loop(self) -> None:
        """Give back the jobs of dead nodes as soon as their leases run out: sleep until the
        earliest foreign lease expires (at most one heartbeat), then rescue."""
        assert self.pool is not None
        while True:
            wait = self.settings.heartbeat
            if self._may_rescue():
                expiry = await self._rescue()
                if expiry is not None:
                    wait = min(wait, max(expiry + 0.05, 0.05))
            await asyncio.sleep(wait)

    def _may_rescue(self) -> bool:
        # Only after a full lease of uninterrupted heartbeats: after an outage every node
        # gets one lease to renew its own leases before anyone takes jobs away.
        ok_since = self._db_ok_since
        return ok_since is not None and time.monotonic() - ok_since >= self.settings.lease_seconds

    async def _rescue(self) -> float | None:
        """One rescuer round; returns seconds until the next foreign lease expires."""
        assert self.pool is not None
        try:
            result = await self.pool.run(
                lambda c: jobs_sql.rescue(c, by=self.identifier, session=self.session)
            )
        except DB_TROUBLE as exc:
            clog.warning("rescuer: database unavailable (%s)", _last_line(exc))
            return None
        if result.lost_nodes:
            clog.warning("node(s) lost (no heartbeat): %s", ", ".join(result.lost_nodes))
        if result.jobs:
            clog.warning("rescued job(s) of a lost node: %s", ", ".join(map(str, result.jobs)))
        clog.debug(
            "rescuer: %d job(s) rescued, next lease expiry in %s s",
            len(result.jobs),
            f"{result.next_expiry_s:.2f}" if result.next_expiry_s is not None else "-",
        )
        return result.next_expiry_s

    async def _check_leases_quietly(self) -> None:
        """An extra lease check (after a NOTIFY or a reconnect). The database may be away
        (a pool timeout right after this process was frozen): the heartbeat loop notices and
        says so; this must not end the node."""
        try:
            await self._check_leases()
        except DB_TROUBLE as exc:
            clog.debug("extra lease check skipped: %s", _last_line(exc))

    async def _check_leases(self) -> None:
        assert self.pool is not None
        # Judge only the runs that existed before the renewal was sent: a claim committing
        # while it is in flight is missing from its answer, and is no loss (found by the
        # failover benchmark: a node stopped its own brand-new job).
        judged = {job_id: run.lease.claim for job_id, run in self.running.items()}
        # psutil's cpu_percent(None) measures since its previous call: one beat.
        cpu, mem = psutil.cpu_percent(None), psutil.virtual_memory().percent
        owned, state = await self.pool.run(
            lambda c: jobs_sql.renew_leases(
                c,
                node=self.identifier,
                session=self.session,
                lease_seconds=self.settings.lease_seconds,
                cpu_percent=cpu,
                mem_percent=mem,
            )
        )
        clog.debug("heartbeat: %d lease(s) renewed, state %s", len(owned), state)
        if state == "offline":
            # Declared lost while we were cut off: our jobs went to others. Re-register.
            log.warning("this node was declared lost while unreachable; registering again")
            await self._register()
            state = "online"
        self._apply_state(state)
        for job_id, claim in judged.items():
            run = self.running.get(job_id)
            if run is not None and run.lease.claim == claim and owned.get(job_id) != claim:
                run.lose("this node no longer owns the job")
        await self._give_back_orphans(owned)

    async def _give_back_orphans(self, owned: dict[int, int]) -> None:
        """Jobs claimed in our name that no task runs: the claim's reply was lost (the
        connection broke after COMMIT). Still orphaned a whole beat later, they go back."""
        assert self.pool is not None
        if self._claims_in_flight:
            # A committed claim whose task has not resumed yet looks exactly like an orphan.
            return
        now = time.monotonic()
        orphans = {job_id for job_id in owned if job_id not in self.running}
        self._orphan_suspects = {
            job_id: self._orphan_suspects.get(job_id, now) for job_id in orphans
        }
        # Suspected for a whole beat (the claim path needs microseconds to start a job).
        confirmed = [job_id for job_id, since in self._orphan_suspects.items()
                     if now - since >= self.settings.heartbeat]
        for job_id in confirmed:
            del self._orphan_suspects[job_id]
            lease = Lease(job_id, owned[job_id], self.session)
            if await self.pool.run(
                lambda c, lease=lease: jobs_sql.requeue_interrupted(
                    c, lease, reason="claim reply lost", stderr=None, node=self.identifier
                )
            ):
                log.warning("job #%d: claimed but never started here; given back", job_id)


def semver_of(version: str | None) -> list[int] | None:
    """[7, 1, 0] from "7.1", "n7.1.1", "5.1.9-0+deb12u1"; None for git builds ("N-1234-g")."""
    found = re.match(r"^n?(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    if not found:
        return None
    return [int(found.group(1)), int(found.group(2)), int(found.group(3) or 0)]


def check_roots(root_map: RootMap) -> dict[str, dict]:
    """{name: {path, read, write, error}} for every mapped root: a real listing and a real
    write test (permission bits lie on network shares)."""
    status: dict[str, dict] = {}
    for name, path in sorted(root_map.paths.items()):
        info = {"path": path, "read": False, "write": False, "error": None}
        status[name] = info
        folder = Path(path)
        try:
            if not folder.is_dir():
                info["error"] = "not found" if not folder.exists() else "not a folder"
                continue
            with os.scandir(folder) as entries:
                next(entries, None)
            info["read"] = True
        except OSError as exc:
            info["error"] = f"not readable: {exc.strerror or exc}"
            continue
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".ffdesk-write-test-"):
                pass
            info["write"] = True
        except OSError as exc:
            info["error"] = f"read-only: {exc.strerror or exc}"
    return status


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
