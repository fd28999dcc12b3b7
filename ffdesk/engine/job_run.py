"""One run of one job on this node: checks, FFmpeg, guards, progress, verify, commit.

Whatever happens (bad input, FFmpeg failure, stall, memory cap, cancel, lost lease,
shutdown) the run ends with the job in a definite state and no temp file left behind. A
failure is classified (ffdesk.ffmpeg.failure) and the class decides what happens next
(ffdesk.core.policy.decide): retry later, retry on another node, fail, or dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import psycopg

from ffdesk.core.fingerprint import Fingerprint, fast_hash, fingerprint
from ffdesk.core.model import Job, JobState, Lease
from ffdesk.core.policy import Decision, RunPolicy, decide, format_size
from ffdesk.core.roots import RootMap, is_ref
from ffdesk.db import jobs as jobs_sql
from ffdesk.engine import hooks
from ffdesk.engine.dbaccess import Pool
from ffdesk.ffmpeg.failure import Failure, classify_failure
from ffdesk.ffmpeg.ladder import TASK_MASTER, master_playlist
from ffdesk.ffmpeg.locate import Identity
from ffdesk.ffmpeg.presets import Preset
from ffdesk.ffmpeg.probe import (
    ProbeError,
    ProbeResult,
    check_input,
    input_from_log,
    output_from_log,
    probe_as,
)
from ffdesk.ffmpeg.progress import Progress
from ffdesk.ffmpeg.runner import (
    FfmpegProcess,
    RunResult,
    build_argv,
    changes_duration,
    commit_output,
    discard_earlier_parts,
    discard_output,
    expected_streams,
    free_name,
    probe_and_verify,
    temp_output_path,
    verify_from_log,
)

if TYPE_CHECKING:
    from ffdesk.engine.node import NodeStats
    from ffdesk.engine.temp_journal import TempJournal

log = logging.getLogger("ffdesk.queue")
flog = logging.getLogger("ffdesk.ffmpeg")

PROGRESS_INTERVAL = 0.5  # at most two progress writes (and NOTIFYs) per second per job
MILESTONES = (25, 50, 75)  # progress points recorded in the event log
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Tools:
    ffmpeg: Path
    ffprobe: Path | None
    identity: Identity


@dataclass(frozen=True)
class RunLimits:
    """The node's settings that govern runs (a job's preset policy may override some)."""

    verify: str = "auto"
    stall_timeout: float = 120.0
    memory_limit: int | None = None
    retry_base: float = 10.0
    retry_max: float = 600.0
    full_hash: bool = False
    hooks: Mapping[str, list[str]] = field(default_factory=dict)  # this node's allowlist
    hook_timeout: float = 60.0


class JobRun:
    def __init__(
        self,
        job: Job,
        *,
        node: str,
        session: str,
        pool: Pool,
        tools: Tools,
        stats: NodeStats,
        limits: RunLimits | None = None,
        journal: TempJournal | None = None,
        root_map: RootMap | None = None,
    ) -> None:
        assert job.claim is not None
        self.job = job
        self.node = node
        self.pool = pool
        self.tools = tools
        self.stats = stats
        self.limits = limits or RunLimits()
        self.journal = journal
        self.policy = RunPolicy.from_dict(job.policy)
        self.stall_timeout = self.policy.stall_timeout or self.limits.stall_timeout
        self.memory_limit = self.policy.memory_limit or self.limits.memory_limit
        self.lease = Lease(job.id, job.claim, session)
        self.root_map = root_map or RootMap()
        self.is_url = bool(_URL.match(job.input))
        # This node's own paths for the job's files (stored as root:relative references when
        # under a storage root). None: this node lacks that root (the claim's routing should
        # have prevented it; a root unmapped since is still handled).
        self.input_path = self.root_map.resolve(job.input)
        local_output = self.root_map.resolve(job.output)
        self.output_path = Path(local_output) if local_output else None
        self.temp = self.temp_path(job, self.root_map)
        self.lost_reason: str | None = None
        self.interrupted: str | None = None
        # Set while we write our own final state: the NOTIFY of that very write must not
        # be mistaken for someone else taking the job.
        self.finalizing = False
        self.input_size: int | None = None
        self.input: ProbeResult | None = None  # from FFmpeg's log
        self.needs_problem: str | None = None
        self.guard_failure: Failure | None = None  # stall or memory guard stopped FFmpeg
        self.final_kind: str | None = None  # "succeeded" or the failure class (quarantine)
        self.last_reason: str | None = None
        self.node_fault = False  # the failure says this node is unwell (quarantine counts it)
        self.process: FfmpegProcess | None = None
        self._latest: Progress | None = None
        self._progress_ready = asyncio.Event()
        self._exited = asyncio.Event()
        self._result: RunResult | None = None
        self._milestone = 0
        self._fingerprint: asyncio.Task[Fingerprint | None] | None = None

    # ------------------------------------------------------------------ control (loop thread)

    def lose(self, reason: str) -> None:
        """We no longer own this run (canceled, rescued): stop at once, write nothing."""
        if self.lost_reason is None and self.interrupted is None and not self.finalizing:
            log.info("job #%d: lost (%s): stopping ffmpeg", self.job.id, reason)
            self.lost_reason = reason
            self._stop_process()

    def interrupt(self, reason: str) -> None:
        """Node shutdown: stop and give the job back without spending its attempt."""
        if self.lost_reason is None and self.interrupted is None:
            self.interrupted = reason
            self._stop_process()

    def _stop_process(self) -> None:
        if self.process is not None:
            self.process.cancel(fast=True)

    # ------------------------------------------------------------------ temp files

    @staticmethod
    def temp_path(job: Job, root_map: RootMap | None = None) -> Path:
        output = (root_map or RootMap()).resolve(job.output) or job.output
        return temp_output_path(Path(output), f"{job.id}-{job.claim}")

    @staticmethod
    def discard_temp_of(job: Job, root_map: RootMap | None = None) -> None:
        discard_output(JobRun.temp_path(job, root_map))

    def _stored(self, path: Path) -> str:
        """A local path as the cluster stores it: a root reference when the job's output
        was one (other nodes find it through their own mapping), else the path."""
        if is_ref(self.job.output):
            return self.root_map.to_ref(str(path)) or str(path)
        return str(path)

    # ------------------------------------------------------------------ the run

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._fingerprint is not None and not self._fingerprint.done():
                self._fingerprint.cancel()
            await asyncio.to_thread(discard_output, self.temp)  # no-op after a commit
            if self.journal is not None:
                self.journal.remove(self.temp)

    async def _run(self) -> None:
        job = self.job
        log.info("job #%d: starting %s (%s)", job.id, job.input, job.preset)
        # 1. The input: there, a file, not empty, readable. A stat, not a probe: FFmpeg's own
        #    log describes the input (streams, duration) a moment after it starts, which
        #    saves an ffprobe process (~60 ms) before every job. URLs are FFmpeg's to open.
        missing_root = [
            ref for ref, local in ((job.input, self.input_path), (job.output, self.output_path))
            if local is None
        ]
        if missing_root:
            await self._fail(
                Failure("environment", f"storage root of {missing_root[0]} is not mapped here")
            )
            return
        assert self.input_path is not None and self.output_path is not None
        refusal = hooks.refused(job, self.limits.hooks, self.node)
        if refusal:
            await self._fail(Failure("config", refusal))
            return
        if not self.is_url:
            try:
                self.input_size = await self._check_input(Path(self.input_path))
            except ProbeError as exc:
                kind = _input_problem_kind(exc.reason)
                if is_ref(job.input) and kind == "input" and "not found" in exc.reason:
                    # Under a storage root, "not there" may be this node's view of the share
                    # (a mount that is slow or stale): another node may well see it.
                    kind = "environment"
                await self._fail(Failure(kind, exc.reason))
                return
        # 2. The output folder, and an output that is already there.
        output = self.output_path
        problem = await asyncio.to_thread(_check_output_dir, output.parent)
        if problem:
            await self._fail(Failure("environment", problem))
            return
        if self.policy.on_conflict == "skip" and await asyncio.to_thread(os.path.lexists, output):
            await self._skip(output)
            return
        if job.attempt > 1:  # an earlier run may have died mid-encode and left its temp file
            stale = await asyncio.to_thread(
                discard_earlier_parts, output, job.id, f"{job.id}-{job.claim}"
            )
            if stale:
                log.info("job #%d: removed %d temp file(s) of earlier runs", job.id, len(stale))
        if self._gone():
            await self._end_without_result(None)
            return
        if (job.meta or {}).get("task") == TASK_MASTER:
            await self._write_master()
            return
        pre = await self._hook("pre")
        if pre is not None and not pre.ok:
            # This node's own command failed (its allowlist, its environment).
            await self._fail(Failure("environment", pre.summary()))
            return
        # 3. FFmpeg, and the input's fingerprint meanwhile (it must not delay the start).
        preset = Preset(
            name=job.preset,
            description="",
            args=tuple(job.preset_args),
            output="",
            needs=tuple(job.needs),
            builtin=False,
        )
        source = job.input if self.is_url else Path(self.input_path)
        rendered = preset.render(input=source, output=self.temp, node=self.node, meta=job.meta)
        argv = build_argv(self.tools.ffmpeg, rendered)
        loop = asyncio.get_running_loop()
        self.process = FfmpegProcess(
            argv,
            on_progress=lambda p: loop.call_soon_threadsafe(self._on_progress, p),
            on_exit=lambda r: loop.call_soon_threadsafe(self._on_exit, r),
        )
        if self.journal is not None:
            self.journal.add(self.temp)
        try:
            self.process.start()
        except OSError as exc:
            await self._fail(Failure("environment", f"cannot start ffmpeg: {exc.strerror or exc}"))
            return
        flog.debug("job #%d: ffmpeg pid %s: %s", job.id, self.process.pid, argv)
        if not self.is_url:
            self._fingerprint = asyncio.create_task(self._take_fingerprint())
        if self._gone():  # canceled while we were starting
            self._stop_process()
        started = await self._write(
            lambda c: jobs_sql.mark_started(
                c,
                self.lease,
                argv=argv,
                ffmpeg_version=self.tools.identity.version_line,
                ffmpeg_sha256=self.tools.identity.binary_sha256,
                ffmpeg_fingerprint=self.tools.identity.fingerprint,
                duration_s=None,
                input_probe=None,
                pid=self.process.pid if self.process else None,
                node=self.node,
            ),
            "recording the start",
        )
        if not started:
            self.lose("this node no longer owns the job")
        helpers = [
            asyncio.create_task(self._progress_writer()),
            asyncio.create_task(self._guard()),
        ]
        try:
            await self._exited.wait()
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        result = self._result
        assert result is not None
        info = self._input_info(result.stderr)
        # 4. The outcome.
        if self._gone():
            await self._end_without_result(result)
            return
        if self.guard_failure is not None:
            await self._fail(self.guard_failure, result)
            return
        if self.needs_problem is not None:
            await self._fail(Failure("input", self.needs_problem), result)
            return
        if result.exit_code == 0 and not result.canceled:
            problem, described = await self._verify(result, info)
            if problem:
                # FFmpeg 5.1 exits 0 on a full disk: the stderr may know better than the probe.
                known = classify_failure(result.exit_code, result.stderr)
                failure = (
                    known
                    if known.kind != "unknown"
                    else Failure("unknown", f"output failed verification: {problem}")
                )
                await self._fail(failure, result)
            else:
                await self._succeed(result, described)
            return
        await self._fail(
            classify_failure(result.exit_code, result.stderr, canceled=result.canceled), result
        )

    async def _verify(
        self, result: RunResult, info: ProbeResult | None
    ) -> tuple[str | None, ProbeResult | None]:
        """(problem or None, the output as described by FFmpeg's log or ffprobe)."""
        needs = expected_streams(self.job.preset_args, tuple(self.job.needs), info)
        if not self.policy.verify:
            # The preset opted out (stills, thumbnails): only "there and not empty".
            try:
                size = await asyncio.to_thread(lambda: self.temp.stat().st_size)
            except OSError:
                return "the output file is missing", None
            return ("the output file is empty" if size == 0 else None), output_from_log(
                result.stderr
            )
        expect = None if changes_duration(self.job.preset_args) else info
        tolerance = self.policy.duration_tolerance
        doubt = (
            verify_from_log(result, self.temp, expect=expect, needs=needs, tolerance=tolerance)
            if self.limits.verify == "auto"
            else "always probe"
        )
        if doubt is None:
            return None, output_from_log(result.stderr)
        return await asyncio.to_thread(
            probe_and_verify,
            self.temp,
            expect=expect,
            needs=needs,
            ffprobe=self.tools.ffprobe,
            ffmpeg=self.tools.ffmpeg,
            tolerance=tolerance,
        )

    async def _write_master(self) -> None:
        """An ABR ladder's master playlist: written by the node from its renditions'
        playlists (each probed for its real resolution), verified, put in place like any
        output. Its dependencies guarantee the renditions succeeded first."""
        assert self.output_path is not None
        started = time.time()
        argv = ["ffdesk", TASK_MASTER, str(self.output_path)]
        await self._write(
            lambda c: jobs_sql.mark_started(
                c, self.lease, argv=argv, ffmpeg_version=self.tools.identity.version_line,
                ffmpeg_sha256=self.tools.identity.binary_sha256,
                ffmpeg_fingerprint=self.tools.identity.fingerprint, duration_s=None,
                input_probe=None, pid=os.getpid(), node=self.node,
            ),
            "recording the start",
        )
        folder = self.output_path.parent
        log_lines, variants = [], []
        for variant in (self.job.meta or {}).get("variants", []):
            path = folder / str(variant["uri"])
            try:
                info = await asyncio.to_thread(
                    probe_as, path, ffprobe=self.tools.ffprobe, ffmpeg=self.tools.ffmpeg,
                    role="output",
                )
            except ProbeError as exc:
                await self._fail(
                    Failure("unknown", f"rendition {variant['uri']} unreadable: {exc.reason}")
                )
                return
            video = next((st for st in info.streams if st.kind == "video"), None)
            width, height = (video.width, video.height) if video else (None, None)
            variants.append({**variant, "width": width, "height": height})
            log_lines.append(f"{variant['uri']}: {info.summary()}")
        text = master_playlist(variants)
        await asyncio.to_thread(self.temp.write_text, text, "utf-8")
        problem, described = await asyncio.to_thread(
            probe_and_verify, self.temp, expect=None, needs=("video",),
            ffprobe=self.tools.ffprobe, ffmpeg=self.tools.ffmpeg,
        )
        log_text = "\n".join([*log_lines, "", text])
        result = RunResult(
            exit_code=0 if problem is None else 1, stderr=log_text, canceled=False, signal=None,
            pid=os.getpid(), argv=argv, started_at=started, ended_at=time.time(),
            stderr_raw=log_text.encode("utf-8"),
        )
        if problem:
            await self._fail(Failure("unknown", f"master playlist failed: {problem}"), result)
            return
        await self._succeed(result, described)

    async def _hook(self, phase: str, written: str | None = None) -> hooks.HookResult | None:
        """Run the job's ``phase`` hook if its preset names one (already allowlisted)."""
        name = (self.job.policy or {}).get(f"{phase}_hook")
        if not name:
            return None
        sidecar = {
            **self.job.to_dict(),
            "phase": phase,
            "node": self.node,
            "input_path": self.input_path,
            "output_path": str(self.output_path) if self.output_path else None,
            "written_path": written,
        }
        result = await asyncio.to_thread(
            hooks.run_hook,
            name,
            phase,
            list(self.limits.hooks[name]),
            sidecar,
            timeout=self.limits.hook_timeout,
        )
        log.info("job #%d: %s", self.job.id, result.summary())
        with contextlib.suppress(psycopg.Error):
            await self.pool.run(
                lambda c: jobs_sql.record_hook(
                    c, self.lease, node=self.node, result=result.to_dict(), ok=result.ok
                )
            )
        return result

    async def _take_fingerprint(self) -> Fingerprint | None:
        try:
            return await asyncio.to_thread(
                fingerprint, Path(self.input_path or ""), full=self.limits.full_hash
            )
        except OSError as exc:
            log.warning("job #%d: cannot fingerprint the input: %s", self.job.id, exc)
            return None

    async def _audit(self, output: Path | None) -> jobs_sql.RunAudit:
        """The input's fingerprint (taken while FFmpeg ran) and the output's hash."""
        audit = jobs_sql.RunAudit()
        if self._fingerprint is not None:
            fp = await self._fingerprint
            if fp is not None:
                audit.input_size, audit.input_mtime = fp.size, fp.mtime
                audit.input_hash, audit.input_full_hash = fp.fast_hash, fp.full_hash
        if output is not None:
            try:
                out = await asyncio.to_thread(fingerprint, output, full=self.limits.full_hash)
                audit.output_size, audit.output_hash = out.size, out.fast_hash
                audit.output_full_hash = out.full_hash
            except OSError as exc:
                log.warning("job #%d: cannot hash the output: %s", self.job.id, exc)
        return audit

    def _input_info(self, stderr: str) -> ProbeResult | None:
        """The input as FFmpeg's log describes it (parsed once, as soon as it is there)."""
        if self.input is None:
            self.input = input_from_log(stderr, self.input_size)
            if self.input is not None:
                missing = [kind for kind in self.job.needs if not _has(self.input, kind)]
                if missing:
                    self.needs_problem = (
                        f"input has no {' or '.join(missing)} stream, but preset "
                        f"'{self.job.preset}' needs one"
                    )
        return self.input

    async def _check_input(self, path: Path) -> int:
        """check_input, retried a few times for a "not found" under a storage root: network
        mounts (SMB, NFS attribute caches) can lag behind the machine that wrote the file."""
        for delay in (*INPUT_RETRIES, None):
            try:
                return await asyncio.to_thread(check_input, path)
            except ProbeError as exc:
                if delay is None or not is_ref(self.job.input) or "not found" not in exc.reason:
                    raise
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _gone(self) -> bool:
        return self.lost_reason is not None or self.interrupted is not None

    # ------------------------------------------------------------------ progress

    def _on_progress(self, progress: Progress) -> None:
        self._latest = progress
        self._progress_ready.set()

    def _on_exit(self, result: RunResult) -> None:
        self._result = result
        self._exited.set()

    async def _progress_writer(self) -> None:
        while True:
            await self._progress_ready.wait()
            self._progress_ready.clear()
            p = self._latest
            if p is None or p.done:
                continue
            known = self.input is not None
            info = self._input_info(self.process.stderr_text()) if self.process else None
            if self.needs_problem is not None:
                # e.g. an audio-only file into a video preset: stop now, not at the end.
                self._stop_process()
                return
            duration = info.duration if info else None
            new_duration = duration if info is not None and not known else None
            percent = p.percent(duration)
            # Every milestone passed since the last write: a fast job may jump from 10 to 60 %.
            passed = [
                m for m in MILESTONES if percent is not None and self._milestone < m <= percent
            ]
            if passed:
                self._milestone = passed[-1]
            try:
                owned = await self.pool.run(
                    lambda c, p=p, d=duration, nd=new_duration, m=passed: (
                        jobs_sql.report_progress(
                            c,
                            self.lease,
                            progress=p.percent(d),
                            fps=p.fps,
                            speed=p.speed,
                            eta_s=p.eta_s(d),
                            out_time_s=p.out_time_s,
                            duration_s=nd,
                            milestones=m,
                            node=self.node,
                        )
                    )
                )
            except (psycopg.OperationalError, psycopg.InterfaceError):
                owned = True  # progress is not precious; the heartbeat decides ownership
            if not owned:
                self.lose("this node no longer owns the job")
                return
            await asyncio.sleep(PROGRESS_INTERVAL)

    # ------------------------------------------------------------------ guards

    async def _guard(self) -> None:
        """Stop FFmpeg when it stalls or outgrows the memory cap. Either is classed
        transient: the next attempt may well work.

        Stalled means neither progress nor CPU for ``stall_timeout`` seconds: a hung network
        share or a FIFO that never delivers. CPU counts because some filters (reverse,
        two-pass loudness) read the whole input before writing a single frame: busy, not
        stuck.
        """
        proc = self.process
        assert proc is not None
        stall, limit = self.stall_timeout, self.memory_limit
        interval = min(0.5, stall / 4)
        last_mark: object = object()
        last_change = time.monotonic()
        last_cpu = 0.0
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            p = proc.last_progress
            mark = None if p is None else (p.out_time_s, p.total_size, p.frame)
            cpu = _cpu_seconds(proc.pid) if proc.pid else None
            busy = cpu is not None and cpu - last_cpu >= 0.05 * interval  # 5 % of a core
            last_cpu = cpu if cpu is not None else last_cpu
            if mark != last_mark or busy:
                last_mark, last_change = mark, now
            elif now - last_change >= stall:
                self._guard_stop(
                    Failure("transient", f"stalled: no progress from FFmpeg for {stall:g} s")
                )
                return
            if limit and proc.pid:
                rss = _rss(proc.pid)
                if rss is not None and rss > limit:
                    self._guard_stop(
                        Failure(
                            "transient",
                            f"out of memory (limit {format_size(limit)}): "
                            f"FFmpeg used {format_size(rss)}",
                        )
                    )
                    return

    def _guard_stop(self, failure: Failure) -> None:
        if self._gone() or self.guard_failure is not None:
            return
        log.warning("job #%d: %s: stopping ffmpeg", self.job.id, failure.reason)
        self.guard_failure = failure
        if self.process is not None:
            # Kill, not "q": a stalled FFmpeg does not read stdin, and a runaway one should
            # not get seconds more to grow. Its output is discarded either way.
            self.process.kill()

    # ------------------------------------------------------------------ endings

    async def _write(self, fn, what: str, *, final: bool = False):
        """A fenced write that must not be lost to a database outage."""
        self.finalizing = self.finalizing or final
        return await self.pool.run_retrying(fn, f"{what} of job #{self.job.id}")

    async def _succeed(self, result: RunResult, described: ProbeResult | None) -> None:
        audit = await self._audit(self.temp)
        audit.output_probe = described.to_dict() if described else None
        conflict = self.policy.on_conflict
        assert self.output_path is not None
        wanted = self.output_path

        async def commit(conn: psycopg.AsyncConnection) -> str | None:
            async with conn.transaction():
                if not await jobs_sql.lock_for_finish(conn, self.lease):
                    return None
                # The row lock is held: nobody can take the job while we rename.
                target, replace = wanted, True
                if await asyncio.to_thread(os.path.lexists, wanted) and conflict != "replace":
                    if conflict == "skip":
                        await jobs_sql.skip_existing(
                            conn, self.lease, node=self.node, path=self._stored(wanted)
                        )
                        return "skipped"
                    own = await jobs_sql.own_output_hashes(conn, self.job.id)
                    if not own or await asyncio.to_thread(_fast_hash_or_none, wanted) not in own:
                        target, replace = await asyncio.to_thread(free_name, wanted), False
                audit.output_path = self._stored(target)
                for _ in range(100):
                    try:
                        await asyncio.to_thread(commit_output, self.temp, target, replace=replace)
                        break
                    except FileExistsError:  # someone else took that name just now
                        target = await asyncio.to_thread(free_name, target)
                        audit.output_path = self._stored(target)
                reason = None if target == wanted else f"{wanted.name} existed: kept both"
                ok = await jobs_sql.finish(
                    conn,
                    self.lease,
                    jobs_sql.Outcome(
                        JobState.SUCCEEDED,
                        exit_code=result.exit_code,
                        reason=reason,
                        written=self._stored(target),
                    ),
                    input_probe=self.input.to_dict() if self.input else None,
                    duration_s=self.input.duration if self.input else None,
                    stderr=result.stderr_raw,
                    node=self.node,
                    audit=audit,
                )
                return str(target) if ok else None

        if not await self._record_output_intent(audit):
            await self._end_without_result(result)
            return
        written = await self._write(commit, "recording the result", final=True)
        if written is None:
            await self._end_without_result(result)
            return
        if written != "skipped":
            # After the commit: the output is in place; a failing post hook is recorded in
            # the audit trail and the job's events, and does not undo the result.
            post = await self._hook("post", written=written)
            if post is not None and not post.ok:
                log.warning("job #%d: %s", self.job.id, post.summary())
        self.final_kind = "succeeded"
        self.stats.succeeded += 1
        self.stats.finished_ids.append(self.job.id)
        if written == "skipped":
            log.info("job #%d: %s exists: skipped (on_conflict = skip)", self.job.id, wanted)
        else:
            log.info("job #%d: succeeded -> %s", self.job.id, written)

    async def _record_output_intent(self, audit: jobs_sql.RunAudit) -> bool:
        """Store the output's hash on our attempt before renaming (see own_output_hashes)."""
        return await self._write(
            lambda c: jobs_sql.record_output_intent(c, self.lease, audit), "recording the output"
        )

    async def _skip(self, output: Path) -> None:
        async def skip(conn: psycopg.AsyncConnection) -> bool:
            async with conn.transaction():
                return await jobs_sql.skip_existing(
                    conn, self.lease, node=self.node, path=self._stored(output)
                )

        if await self._write(skip, "recording the skip", final=True):
            self.final_kind = "succeeded"
            self.stats.succeeded += 1
            self.stats.finished_ids.append(self.job.id)
            log.info("job #%d: %s exists: skipped (on_conflict = skip)", self.job.id, output)
        else:
            await self._end_without_result(None)

    async def _fail(self, failure: Failure, result: RunResult | None = None) -> None:
        audit = await self._audit(None)
        settings = self.limits

        async def fail(conn: psycopg.AsyncConnection) -> Decision | None:
            async with conn.transaction():
                other = failure.kind == "environment" and await jobs_sql.other_nodes_available(
                    conn, self.job.id, self.node
                )
                decision = decide(
                    failure.kind,
                    attempt=self.job.attempt,
                    max_attempts=self.job.max_attempts,
                    other_nodes=other,
                    base=settings.retry_base,
                    cap=settings.retry_max,
                )
                ok = await jobs_sql.finish(
                    conn,
                    self.lease,
                    jobs_sql.Outcome(
                        JobState(decision.state),
                        exit_code=result.exit_code if result else None,
                        reason=failure.reason,
                        kind=failure.kind,
                        retry_in=decision.retry_in,
                        avoid_node=decision.avoid_node,
                        why=decision.why,
                    ),
                    input_probe=self.input.to_dict() if self.input else None,
                    duration_s=self.input.duration if self.input else None,
                    stderr=result.stderr_raw if result else None,
                    node=self.node,
                    audit=audit,
                )
                return decision if ok else None

        decision = await self._write(fail, "recording the failure", final=True)
        if decision is None:
            await self._end_without_result(result)
            return
        self.final_kind = failure.kind
        self.last_reason = failure.reason
        self.node_fault = failure.kind == "environment" and failure.node_fault
        self.stats.finished_ids.append(self.job.id)
        if decision.state == "queued":
            self.stats.retried += 1
            log.warning(
                "job #%d: %s failure: %s; %s",
                self.job.id,
                failure.kind,
                failure.reason,
                decision.why,
            )
        else:
            self.stats.failed += 1
            log.warning(
                "job #%d: %s (%s): %s", self.job.id, decision.state, failure.kind, failure.reason
            )

    async def _end_without_result(self, result: RunResult | None) -> None:
        """Lost or interrupted: discard our output; record only what is ours to record."""
        await asyncio.to_thread(discard_output, self.temp)
        stderr = result.stderr_raw if result else None
        if self.interrupted is not None and self.lost_reason is None:
            reason = self.interrupted
            given_back = await self._write(
                lambda c: jobs_sql.requeue_interrupted(
                    c, self.lease, reason=reason, stderr=stderr, node=self.node
                ),
                "giving the job back",
            )
            if given_back:
                self.stats.requeued += 1
                log.info("job #%d: given back to the queue (%s)", self.job.id, reason)
                return
            self.lost_reason = "this node no longer owns the job"
        self.stats.lost += 1
        reason = self.lost_reason or "lost"
        with contextlib.suppress(psycopg.Error):
            await self.pool.run(
                lambda c: jobs_sql.record_lost_attempt(
                    c,
                    self.lease,
                    reason=reason,
                    exit_code=result.exit_code if result else None,
                    stderr=stderr,
                    node=self.node,
                )
            )
        log.info("job #%d: stopped, not ours any more (%s)", self.job.id, reason)


def _cpu_seconds(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


INPUT_RETRIES = (0.5, 1.0, 2.0)  # a network mount may take a moment to show a new file


def _rss(pid: int) -> int | None:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return None


def _fast_hash_or_none(path: Path) -> str | None:
    try:
        return fast_hash(path)[2]
    except OSError:
        return None


def _input_problem_kind(reason: str) -> str:
    """A missing, empty or folder input is the job's problem; an unreadable one may be this
    node's (a share mounted differently, permissions for this node's user)."""
    return "environment" if "cannot be read" in reason or "not readable" in reason else "input"


def _has(info: ProbeResult, kind: str) -> bool:
    return {"video": info.has_video, "audio": info.has_audio}.get(kind, True)


def _check_output_dir(folder: Path) -> str | None:
    """A real write test: permission bits lie (root, ACLs, read-only mounts, immutable dirs)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the output folder {folder}: {exc.strerror or exc}"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ffdesk-write-test-"):
            pass
    except OSError as exc:
        return f"output folder is not writable: {folder} ({exc.strerror or exc})"
    return None
