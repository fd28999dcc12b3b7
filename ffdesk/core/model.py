"""Plain records shared by the database, engine and UI layers (no Qt, no psycopg)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    DEAD = "dead"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED, JobState.DEAD})
RETRYABLE_STATES = frozenset({JobState.FAILED, JobState.DEAD, JobState.CANCELED})


@dataclass(frozen=True)
class NewJob:
    """What ``submit`` hands to the queue."""

    input: str
    output: str
    preset: str
    preset_args: list[str]
    needs: list[str] = field(default_factory=list)
    priority: int = 0
    max_attempts: int = 3
    meta: dict[str, Any] = field(default_factory=dict)
    # The preset's run policy at submit time (see ffdesk.ffmpeg.presets.RunPolicy).
    policy: dict[str, Any] = field(default_factory=dict)
    # Routing (see ffdesk.engine.routing): only a node that satisfies all of these claims it.
    in_roots: list[str] = field(default_factory=list)  # storage roots it reads
    out_roots: list[str] = field(default_factory=list)  # storage roots it writes
    requires: list[str] = field(default_factory=list)  # encoders the preset uses
    tags: list[str] = field(default_factory=list)  # node tags asked for
    pinned_node: str | None = None  # a path outside every root: only that node sees it
    ffmpeg_min: str | None = None  # FFmpeg version range, e.g. "6.0" .. "7.1"
    ffmpeg_max: str | None = None
    # Dependencies: existing job ids, and positions of earlier jobs in the same submission.
    depends_on: list[int] = field(default_factory=list)
    after: list[int] = field(default_factory=list)


@dataclass(slots=True)  # the console holds 100 000 of these: slots save ~40 % of memory
class Job:
    id: int
    state: JobState
    priority: int
    input: str
    output: str
    preset: str
    preset_args: list[str]
    needs: list[str]
    attempt: int
    max_attempts: int
    claim: int | None
    node: str | None
    node_session: str | None
    lease_until: datetime | None
    not_before: datetime | None
    created_at: datetime
    claimed_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    progress: float | None
    fps: float | None
    speed: float | None
    eta_s: float | None
    out_time_s: float | None
    duration_s: float | None
    exit_code: int | None
    reason: str | None
    submitted_by: str | None
    meta: dict[str, Any]
    revision: int
    failure_kind: str | None = None  # class of the last failure: transient, input, ...
    avoid_nodes: list[str] = field(default_factory=list)  # nodes this job will not run on
    policy: dict[str, Any] = field(default_factory=dict)
    written: str | None = None  # the file actually written (keep-both may pick a new name)
    in_roots: list[str] = field(default_factory=list)
    out_roots: list[str] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    pinned_node: str | None = None
    ffmpeg_min: str | None = None
    ffmpeg_max: str | None = None
    batch_id: int | None = None
    depends_on: list[int] = field(default_factory=list)
    deps_pending: int = 0  # dependencies that have not succeeded yet

    @property
    def queue_seconds(self) -> float | None:
        """Time in queue: submitted until claimed (or until now if still waiting)."""
        if self.claimed_at is None:
            return None
        return (self.claimed_at - self.created_at).total_seconds()

    @property
    def run_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(self.state)
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat()
        data["node_session"] = str(self.node_session) if self.node_session else None
        data["queue_seconds"] = self.queue_seconds
        data["run_seconds"] = self.run_seconds
        return data


@dataclass(frozen=True)
class Lease:
    """Proof that this node owns one run of a job. Every write after the claim quotes it."""

    job_id: int
    claim: int
    node_session: str


@dataclass
class Attempt:
    id: int
    job_id: int
    seq: int
    node: str
    node_session: str
    host: str | None
    claimed_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    counted: bool
    exit_code: int | None
    reason: str | None
    argv: list[str] | None
    ffmpeg_version: str | None
    ffmpeg_sha256: str | None
    ffmpeg_fingerprint: str | None
    input_probe: dict[str, Any] | None
    stderr: str | None
    stderr_bytes: int | None
    kind: str | None = None
    pid: int | None = None
    retry_at: datetime | None = None
    input_size: int | None = None
    input_mtime: datetime | None = None
    input_hash: str | None = None
    input_full_hash: str | None = None
    output_path: str | None = None
    output_size: int | None = None
    output_hash: str | None = None
    output_full_hash: str | None = None
    output_probe: dict[str, Any] | None = None
    hooks: list[dict[str, Any]] = field(default_factory=list)  # node-local hook runs

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat()
        data["node_session"] = str(self.node_session)
        return data


@dataclass(frozen=True)
class NodeRow:
    """A node's registry row as consumers see it. Heartbeats do not bump the revision, so
    ``heartbeat_at`` is only as fresh as the node's last real change; a consumer judges
    staleness from ``heartbeat_s`` / ``lease_s`` and its own reads, not from events."""

    identifier: str
    session: str
    host: str
    pid: int | None
    os: str | None
    arch: str | None
    cpu: str | None
    cores: int | None
    ram_bytes: int | None
    app_version: str | None
    ffmpeg_version: str | None
    ffmpeg_fingerprint: str | None
    encoders: tuple[str, ...]
    tags: tuple[str, ...]
    slots: int
    heartbeat_s: float
    lease_s: float
    state: str
    state_reason: str | None
    started_at: datetime
    heartbeat_at: datetime
    revision: int
