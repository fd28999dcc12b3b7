"""Qt tests run headless: the offscreen platform, PySide6 for pytest-qt.

Both variables must be set before Qt is imported. ``PYTEST_QT_API`` is read by pytest-qt
when pytest configures itself, so it takes effect from here when pytest is pointed at
``tests/ui`` (an initial conftest); in a whole-suite run pytest-qt finds PySide6 anyway,
the only binding installed.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYTEST_QT_API", "pyside6")

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ffdesk.core.model import Job, JobState

# A fixed "now" (epoch seconds) for models under test: live durations become exact.
NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def make_job(job_id: int, state: JobState = JobState.QUEUED, **changes: Any) -> Job:
    """A plausible job; ``changes`` override any field."""
    running = state is JobState.RUNNING
    finished = state.terminal
    created = NOW - timedelta(seconds=600 + job_id)
    values: dict[str, Any] = {
        "id": job_id,
        "state": state,
        "priority": 0,
        "input": f"media:/Movies/clip {job_id:05d}.mkv",
        "output": f"media:/Out/clip {job_id:05d}.mp4",
        "preset": "h264-mp4",
        "preset_args": [],
        "needs": [],
        "attempt": 0 if state is JobState.QUEUED else 1,
        "max_attempts": 3,
        "claim": None,
        "node": None if state is JobState.QUEUED else f"node-{job_id % 3}",
        "node_session": None,
        "lease_until": None,
        "not_before": None,
        "created_at": created,
        "claimed_at": None if state is JobState.QUEUED else created + timedelta(seconds=60),
        "started_at": None if state is JobState.QUEUED else created + timedelta(seconds=61),
        "finished_at": created + timedelta(seconds=300) if finished else None,
        "progress": 42.0 if running else (100.0 if state is JobState.SUCCEEDED else None),
        "fps": 30.0 if running else None,
        "speed": 1.5 if running else None,
        "eta_s": 120.0 if running else None,
        "out_time_s": 42.0 if running else None,
        "duration_s": 100.0,
        "exit_code": None,
        "reason": "boom" if state is JobState.FAILED else None,
        "submitted_by": "tester",
        "meta": {},
        "revision": job_id,
    }
    values.update(changes)
    return Job(**values)


@pytest.fixture
def job_factory() -> Callable[..., Job]:
    return make_job


@pytest.fixture
def clock() -> Callable[[], float]:
    return NOW.timestamp
