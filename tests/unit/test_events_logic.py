"""The event bus's pure parts: which event a changed row becomes, and the progress throttle."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from ffdesk.core.model import Job, JobState
from ffdesk.engine.events import JobChanged, JobProgress, JobTracker, ProgressThrottle

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(**changes) -> Job:
    base = Job(
        id=1,
        state=JobState.RUNNING,
        priority=0,
        input="media:/a.mkv",
        output="media:/a.mp4",
        preset="h264-mp4",
        preset_args=["-i", "{input}", "{output}"],
        needs=[],
        attempt=1,
        max_attempts=3,
        claim=7,
        node="n1",
        node_session="s",
        lease_until=T0,
        not_before=T0,
        created_at=T0,
        claimed_at=T0,
        started_at=T0,
        finished_at=None,
        progress=0.0,
        fps=None,
        speed=None,
        eta_s=None,
        out_time_s=None,
        duration_s=10.0,
        exit_code=None,
        reason=None,
        submitted_by="t",
        meta={"k": 1},
        revision=10,
    )
    return replace(base, **changes)


def progress(job_id: int, value: float, revision: int) -> JobProgress:
    return JobProgress(job_id, value, 25.0, 1.0, None, None, revision)


def test_first_sight_is_a_change_with_unknown_previous_state():
    assert JobTracker().classify(job()) == JobChanged(job(), None)


def test_progress_only_rows_become_progress_events():
    tracker = JobTracker()
    tracker.classify(job())
    later = job(progress=42.0, fps=30.0, speed=1.2, eta_s=5.0, out_time_s=4.2, revision=11)
    assert tracker.classify(later) == JobProgress(1, 42.0, 30.0, 1.2, 5.0, 4.2, 11)
    # A lease renewal riding along is still only progress.
    assert isinstance(
        tracker.classify(job(progress=50.0, lease_until=None, revision=12)), JobProgress
    )


def test_anything_else_is_a_change_with_the_previous_state():
    tracker = JobTracker()
    tracker.classify(job())
    assert tracker.classify(job(priority=5, revision=11)) == JobChanged(
        job(priority=5, revision=11), JobState.RUNNING
    )
    done = job(state=JobState.SUCCEEDED, progress=100.0, revision=12)
    assert tracker.classify(done) == JobChanged(done, JobState.RUNNING)
    assert tracker.classify(job(meta={"k": 2}, revision=13)).previous_state == JobState.SUCCEEDED


def test_revisions_already_delivered_are_dropped():
    tracker = JobTracker()
    tracker.classify(job(revision=10))
    assert tracker.classify(job(revision=10)) is None
    assert tracker.classify(job(revision=9, priority=3)) is None
    assert len(tracker) == 1


def test_throttle_sends_the_first_at_once_then_the_newest_per_interval():
    throttle = ProgressThrottle(0.5)
    sent = []
    # 20 reports in one second, one every 50 ms; the bus flushes at next_due().
    for i in range(20):
        now = i * 0.05
        due = throttle.next_due()
        if due is not None and due <= now:
            sent += throttle.due(due)
        out = throttle.offer(progress(1, float(i), 100 + i), now)
        if out is not None:
            sent.append(out)
    while (due := throttle.next_due()) is not None:
        sent += throttle.due(due)
    assert 2 <= len(sent) <= 3
    assert sent[0].progress == 0.0
    assert sent[-1].progress == 19.0 and sent[-1].revision == 119


def test_throttle_is_per_job():
    throttle = ProgressThrottle(0.5)
    assert throttle.offer(progress(1, 1.0, 1), 0.0) is not None
    assert throttle.offer(progress(2, 1.0, 2), 0.1) is not None
    assert throttle.offer(progress(1, 2.0, 3), 0.2) is None
    assert throttle.next_due() == 0.5


def test_a_change_supersedes_held_progress():
    throttle = ProgressThrottle(0.5)
    throttle.offer(progress(1, 1.0, 1), 0.0)
    assert throttle.offer(progress(1, 2.0, 2), 0.1) is None
    throttle.supersede(1, final=True)
    assert throttle.next_due() is None
    assert throttle.due(10.0) == []
    # A finished job is forgotten: a later run of it starts a fresh interval.
    assert throttle.offer(progress(1, 3.0, 3), 0.2) is not None


def test_drain_hands_over_everything_held():
    throttle = ProgressThrottle(0.5)
    throttle.offer(progress(1, 1.0, 1), 0.0)
    throttle.offer(progress(1, 2.0, 2), 0.1)
    assert throttle.drain() == [progress(1, 2.0, 2)]
    assert throttle.next_due() is None
