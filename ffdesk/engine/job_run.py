"""One run of one job on this node: probe, FFmpeg, progress, verify, commit or give back.

Whatever happens (bad input, FFmpeg failure, cancel, lost lease, shutdown) the run ends with
the job in a definite state and no temp file left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from ffdesk.core.model import Job, JobState, Lease
from ffdesk.db import jobs as jobs_sql
from ffdesk.engine.dbaccess import Pool
from ffdesk.ffmpeg.failure import classify_failure, explain_failure
from ffdesk.ffmpeg.locate import Identity
from ffdesk.ffmpeg.presets import Preset
from ffdesk.ffmpeg.probe import ProbeError, ProbeResult, check_input, input_from_log
from ffdesk.ffmpeg.progress import Progress
from ffdesk.ffmpeg.runner import (
    FfmpegProcess,
    RunResult,
    build_argv,
    commit_output,
    discard_earlier_parts,
    discard_output,
    temp_output_path,
    verify_from_log,
    verify_output,
)

if TYPE_CHECKING:
    from ffdesk.engine.node import NodeStats

log = logging.getLogger("ffdesk.queue")
flog = logging.getLogger("ffdesk.ffmpeg")

PROGRESS_INTERVAL = 0.5  # at most two progress writes (and NOTIFYs) per second per job


@dataclass(frozen=True)
class Tools:
    ffmpeg: Path
    ffprobe: Path | None
    identity: Identity


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
        verify: str = "auto",
    ) -> None:
        assert job.claim is not None
        self.job = job
        self.node = node
        self.pool = pool
        self.tools = tools
        self.stats = stats
        self.lease = Lease(job.id, job.claim, session)
        self.temp = self.temp_path(job)
        self.lost_reason: str | None = None
        self.interrupted: str | None = None
        # Set while we write our own final state: the NOTIFY of that very write must not
        # be mistaken for someone else taking the job.
        self.finalizing = False
        self.input_size: int | None = None
        self.input: ProbeResult | None = None  # from FFmpeg's log
        self.needs_problem: str | None = None
        self.verify = verify
        self.verify = verify
        self.process: FfmpegProcess | None = None
        self._latest: Progress | None = None
        self._progress_ready = asyncio.Event()
        self._exited = asyncio.Event()
        self._result: RunResult | None = None

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
    def temp_path(job: Job) -> Path:
        return temp_output_path(Path(job.output), f"{job.id}-{job.claim}")

    @staticmethod
    def discard_temp_of(job: Job) -> None:
        discard_output(JobRun.temp_path(job))

    # ------------------------------------------------------------------ the run

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            await asyncio.to_thread(discard_output, self.temp)  # no-op after a commit

    async def _run(self) -> None:
        job = self.job
        log.info("job #%d: starting %s (%s)", job.id, job.input, job.preset)
        # 1. The input: there, a file, not empty, readable. A stat, not a probe: FFmpeg's own
        #    log describes the input (streams, duration) a moment after it starts, which
        #    saves an ffprobe process (~60 ms) before every job.
        try:
            self.input_size = await asyncio.to_thread(check_input, Path(job.input))
        except ProbeError as exc:
            await self._fail(exc.reason)
            return
        # 2. The output folder.
        problem = await asyncio.to_thread(_check_output_dir, Path(job.output).parent)
        if problem:
            await self._fail(problem)
            return
        if job.attempt > 1:  # an earlier run may have died mid-encode and left its temp file
            stale = await asyncio.to_thread(
                discard_earlier_parts, Path(job.output), job.id, f"{job.id}-{job.claim}"
            )
            if stale:
                log.info("job #%d: removed %d temp file(s) of earlier runs", job.id, len(stale))
        if self._gone():
            await self._end_without_result(None)
            return
        # 3. FFmpeg.
        preset = Preset(
            name=job.preset,
            description="",
            args=tuple(job.preset_args),
            output="",
            needs=tuple(job.needs),
            builtin=False,
        )
        argv = build_argv(self.tools.ffmpeg, preset.render(input=Path(job.input), output=self.temp))
        loop = asyncio.get_running_loop()
        self.process = FfmpegProcess(
            argv,
            on_progress=lambda p: loop.call_soon_threadsafe(self._on_progress, p),
            on_exit=lambda r: loop.call_soon_threadsafe(self._on_exit, r),
        )
        try:
            self.process.start()
        except OSError as exc:
            await self._fail(f"cannot start ffmpeg: {exc.strerror or exc}")
            return
        flog.debug("job #%d: ffmpeg pid %s: %s", job.id, self.process.pid, argv)
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
            ),
            "recording the start",
        )
        if not started:
            self.lose("this node no longer owns the job")
        writer = asyncio.create_task(self._progress_writer())
        try:
            await self._exited.wait()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        result = self._result
        assert result is not None
        info = self._input_info(result.stderr)
        # 4. The outcome.
        if self._gone():
            await self._end_without_result(result)
            return
        if self.needs_problem is not None:
            await self._fail(self.needs_problem, result)
            return
        if result.exit_code == 0 and not result.canceled:
            doubt = (
                verify_from_log(result, self.temp, expect=info, needs=tuple(job.needs))
                if self.verify == "auto"
                else "always probe"
            )
            problem = None if doubt is None else await asyncio.to_thread(
                verify_output,
                self.temp,
                expect=info,
                needs=tuple(job.needs),
                ffprobe=self.tools.ffprobe,
                ffmpeg=self.tools.ffmpeg,
            )
            if problem:
                # FFmpeg 5.1 exits 0 on a full disk: the stderr may know better than the probe.
                known = classify_failure(result.exit_code, result.stderr)
                reason = (
                    known.reason
                    if known.kind != "unknown"
                    else (f"output failed verification: {problem}")
                )
                await self._fail(reason, result)
            else:
                await self._succeed(result)
            return
        await self._fail(
            explain_failure(result.exit_code, result.stderr, canceled=result.canceled), result
        )

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
            try:
                owned = await self.pool.run(
                    lambda c, p=p, d=duration, nd=new_duration: jobs_sql.report_progress(
                        c,
                        self.lease,
                        progress=p.percent(d),
                        fps=p.fps,
                        speed=p.speed,
                        eta_s=p.eta_s(d),
                        out_time_s=p.out_time_s,
                        duration_s=nd,
                    )
                )
            except (psycopg.OperationalError, psycopg.InterfaceError):
                owned = True  # progress is not precious; the heartbeat decides ownership
            if not owned:
                self.lose("this node no longer owns the job")
                return
            await asyncio.sleep(PROGRESS_INTERVAL)

    # ------------------------------------------------------------------ endings

    async def _write(self, fn, what: str, *, final: bool = False):
        """A fenced write that must not be lost to a database outage."""
        self.finalizing = self.finalizing or final
        return await self.pool.run_retrying(fn, f"{what} of job #{self.job.id}")

    async def _succeed(self, result: RunResult) -> None:
        async def commit(conn: psycopg.AsyncConnection) -> bool:
            async with conn.transaction():
                if not await jobs_sql.lock_for_finish(conn, self.lease):
                    return False
                # The row lock is held: nobody can take the job while we rename.
                await asyncio.to_thread(commit_output, self.temp, Path(self.job.output))
                return await jobs_sql.finish(
                    conn,
                    self.lease,
                    input_probe=self.input.to_dict() if self.input else None,
                    duration_s=self.input.duration if self.input else None,
                    state=JobState.SUCCEEDED,
                    exit_code=result.exit_code,
                    reason=None,
                    stderr=result.stderr,
                    node=self.node,
                )

        if await self._write(commit, "recording the result", final=True):
            self.stats.succeeded += 1
            self.stats.finished_ids.append(self.job.id)
            log.info("job #%d: succeeded -> %s", self.job.id, self.job.output)
        else:
            await self._end_without_result(result)

    async def _fail(self, reason: str, result: RunResult | None = None) -> None:
        async def fail(conn: psycopg.AsyncConnection) -> bool:
            async with conn.transaction():
                return await jobs_sql.finish(
                    conn,
                    self.lease,
                    input_probe=self.input.to_dict() if self.input else None,
                    duration_s=self.input.duration if self.input else None,
                    state=JobState.FAILED,
                    exit_code=result.exit_code if result else None,
                    reason=reason,
                    stderr=result.stderr if result else None,
                    node=self.node,
                )

        if await self._write(fail, "recording the failure", final=True):
            self.stats.failed += 1
            self.stats.finished_ids.append(self.job.id)
            log.warning("job #%d: failed: %s", self.job.id, reason)
        else:
            await self._end_without_result(result)

    async def _end_without_result(self, result: RunResult | None) -> None:
        """Lost or interrupted: discard our output; record only what is ours to record."""
        await asyncio.to_thread(discard_output, self.temp)
        stderr = result.stderr if result else None
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
                )
            )
        log.info("job #%d: stopped, not ours any more (%s)", self.job.id, reason)


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
