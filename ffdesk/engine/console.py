"""What the desktop app asks of the cluster, answered on the engine loop (Qt-free).

The GUI never touches SQL or connections: it awaits these methods through the engine thread's
gateway and receives changes from the :class:`~ffdesk.engine.events.EventBus`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffdesk.core.model import Attempt, Job
from ffdesk.core.roots import RootMap
from ffdesk.db import changes, migrate, samples
from ffdesk.db import jobs as jobs_sql
from ffdesk.db import nodes as nodes_sql
from ffdesk.engine.dbaccess import Pool
from ffdesk.engine.routing import Placement
from ffdesk.engine.submit import SubmitRequest, plan_jobs, submitter
from ffdesk.ffmpeg.presets import Preset


@dataclass(frozen=True)
class JobDetail:
    job: Job
    attempts: list[Attempt]
    events: list[dict[str, Any]]


class ClusterConsole:
    def __init__(
        self, url: str, *, roots: dict[str, str] | None = None, node: str | None = None
    ) -> None:
        self.url = url
        self.pool = Pool(url, size=3, timeout=10)
        self.me = submitter()
        self.roots = RootMap(dict(roots or {}))  # this machine's storage root paths
        self.node = node  # this machine's node identifier (pins jobs outside every root)

    async def open(self) -> None:
        await self.pool.open()
        await self.pool.run(migrate.migrate)

    async def close(self) -> None:
        await self.pool.close()

    async def snapshot(self) -> changes.Changes:
        """Every job and node, with the watermark the event bus continues from."""
        return await self.pool.run(lambda c: changes.catch_up(c, since_revision=0))

    async def job_detail(self, job_id: int) -> JobDetail | None:
        async def read(conn) -> JobDetail | None:
            job = await jobs_sql.get_job(conn, job_id)
            if job is None:
                return None
            attempts = await jobs_sql.get_attempts(conn, job_id)
            events = await jobs_sql.get_events(conn, job_id)
            await conn.commit()
            return JobDetail(job, attempts, events)

        return await self.pool.run(read)

    async def last_argv(self, job_id: int) -> list[str] | None:
        detail = await self.job_detail(job_id)
        if detail is None:
            return None
        with_argv = [a for a in detail.attempts if a.argv]
        return with_argv[-1].argv if with_argv else None

    async def nodes(self) -> list[dict[str, Any]]:
        return await self.pool.run(nodes_sql.list_nodes)

    async def counts(self) -> dict[str, int]:
        async def read(conn) -> dict[str, int]:
            result = await jobs_sql.counts_by_state(conn)
            await conn.commit()
            return result

        return await self.pool.run(read)

    async def history(self, since_s: float) -> samples.SampleHistory:
        return await self.pool.run(lambda c: samples.history(c, since_s=since_s))

    async def recent_samples(self, after: float) -> samples.SampleHistory:
        return await self.pool.run(lambda c: samples.recent(c, after=after))

    async def cancel(self, ids: list[int]) -> dict[int, str]:
        return await self.pool.run(lambda c: jobs_sql.cancel(c, ids, by=self.me))

    async def retry(self, ids: list[int]) -> dict[int, str]:
        return await self.pool.run(lambda c: jobs_sql.retry(c, ids, by=self.me))

    async def set_priority(self, ids: list[int], priority: int) -> dict[int, str]:
        return await self.pool.run(
            lambda c: jobs_sql.set_priority(c, ids, priority, by=self.me)
        )

    async def move_to_top(self, ids: list[int]) -> dict[int, str]:
        return await self.pool.run(lambda c: jobs_sql.move_to_top(c, ids, by=self.me))

    async def node_action(self, identifier: str, action: str) -> str | None:
        return await self.pool.run(
            lambda c: nodes_sql.request_state(c, identifier, action, by=self.me)
        )

    async def submit(self, preset: Preset, files: list[Path], output_dir: Path | None,
                     priority: int = 0) -> list[int]:
        """Validate and queue in one transaction (the same rules as ``ffdesk submit``)."""
        async def enqueue(conn) -> list[int]:
            placement = Placement(
                self.roots, await nodes_sql.cluster_has_roots(conn), self.node
            )
            planned = plan_jobs(
                SubmitRequest(preset=preset, paths=files, output_dir=output_dir,
                              priority=priority, placement=placement)
            )
            return await jobs_sql.enqueue(conn, planned, submitted_by=self.me)

        return await self.pool.run(enqueue)
