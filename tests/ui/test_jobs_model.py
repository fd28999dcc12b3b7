"""JobTableModel / JobFilterProxyModel: Qt model contracts, coalesced incremental updates,
stale events, filtering and sorting on native values."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from PySide6.QtCore import QModelIndex, QObject, QPersistentModelIndex, Qt

from ffdesk.core.model import Job, JobState
from ffdesk.engine.events import JobProgress
from ffdesk.ui.jobs_model import (
    COLUMN_COUNT,
    Col,
    JobFilterProxyModel,
    JobIdRole,
    JobRole,
    JobTableModel,
    SortRole,
    StateRole,
    file_name,
    format_duration,
    runs,
)
from tests.ui.conftest import NOW, make_job

DisplayRole = Qt.ItemDataRole.DisplayRole
ASC, DESC = Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder
STATES = list(JobState)


class Spy:
    """Records the structural and data signals of a model (synchronous connections)."""

    def __init__(self, model: Any) -> None:
        self.events: list[tuple[Any, ...]] = []
        model.modelReset.connect(lambda: self.events.append(("reset",)))
        model.layoutChanged.connect(lambda *a: self.events.append(("layout",)))
        model.rowsInserted.connect(lambda _p, f, lst: self.events.append(("inserted", f, lst)))
        model.rowsRemoved.connect(lambda _p, f, lst: self.events.append(("removed", f, lst)))
        model.dataChanged.connect(
            lambda tl, br, roles: self.events.append(
                ("changed", tl.row(), br.row(), tl.column(), br.column(), list(roles))
            )
        )

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == kind]


@pytest.fixture
def model(qtbot: Any, clock: Any) -> Iterator[JobTableModel]:
    # Timers off: the tests flush and tick by hand, so nothing fires between two asserts.
    m = JobTableModel(
        flush_interval_ms=0, tick_interval_ms=0, min_resort_interval_ms=0, clock=clock
    )
    yield m
    m.deleteLater()


def mixed_jobs(n: int) -> list[Job]:
    return [make_job(i, STATES[i % len(STATES)]) for i in range(1, n + 1)]


def ids_in_view(model: Any) -> list[int]:
    return [model.index(r, 0).data(JobIdRole) for r in range(model.rowCount())]


def progress_event(job: Job, revision: int, progress: float = 50.0) -> JobProgress:
    return JobProgress(job.id, progress, 25.0, 1.25, 60.0, 50.0, revision)


# --------------------------------------------------------------------------- contracts


def test_model_tester_on_model_and_proxy(qtmodeltester: Any, model: JobTableModel) -> None:
    model.reset(mixed_jobs(60))
    qtmodeltester.check(model)
    proxy = JobFilterProxyModel()
    proxy.setSourceModel(model)
    proxy.set_states({JobState.QUEUED, JobState.RUNNING, JobState.FAILED})
    proxy.set_text("clip")
    qtmodeltester.check(proxy)

    # The testers stay attached: every kind of change below is checked by them too.
    jobs = model.jobs()
    model.apply(replace(jobs[0], state=JobState.RUNNING, revision=1000))
    model.apply(make_job(500, JobState.QUEUED, revision=1001))
    model.apply_progress(progress_event(jobs[1], 1002))
    model.flush()
    model.tick()
    proxy.sort(Col.QUEUE, DESC)
    model.remove([jobs[2].id, jobs[3].id, jobs[10].id])
    proxy.set_states(None)
    proxy.sort(-1, ASC)
    assert model.rowCount() == 58
    assert proxy.rowCount() == 58


def test_roles(model: JobTableModel) -> None:
    failed = make_job(
        7,
        JobState.FAILED,
        input="media:/Movies/a b.mkv",
        output="C:\\out\\a b.mp4",
        priority=5,
        attempt=2,
    )
    model.reset([failed])
    index = model.index(0, Col.STATE)
    assert index.data(DisplayRole) == "Failed"
    assert index.data(Qt.ItemDataRole.DecorationRole) is not None
    assert index.data(Qt.ItemDataRole.ForegroundRole) is not None
    assert "boom" in index.data(Qt.ItemDataRole.ToolTipRole)
    assert index.data(JobRole) is failed
    assert index.data(StateRole) == JobState.FAILED
    assert index.data(JobIdRole) == 7
    assert model.index(0, Col.INPUT).data() == "a b.mkv"
    assert model.index(0, Col.INPUT).data(Qt.ItemDataRole.ToolTipRole) == failed.input
    assert model.index(0, Col.OUTPUT).data() == "a b.mp4"
    assert model.index(0, Col.ATTEMPT).data() == "2/3"
    assert model.index(0, Col.PRIORITY).data(SortRole) == 5
    alignment = model.index(0, Col.PRIORITY).data(Qt.ItemDataRole.TextAlignmentRole)
    assert Qt.AlignmentFlag(alignment) & Qt.AlignmentFlag.AlignRight
    # Finished: the live encode figures are blank, the durations fixed.
    assert model.index(0, Col.FPS).data() == ""
    assert model.index(0, Col.QUEUE).data() == "1m 00s"
    assert model.index(0, Col.RUN).data() == "3m 59s"
    assert model.index(0, Col.SUBMITTED).data(SortRole) == failed.created_at.timestamp()
    assert model.headerData(Col.QUEUE, Qt.Orientation.Horizontal) == "Time in queue"
    assert model.columnCount() == COLUMN_COUNT == 14


def test_formatting_helpers() -> None:
    assert [format_duration(s) for s in (None, 0, 59.9, 61, 3600, 90061)] == [
        "",
        "0s",
        "59s",
        "1m 01s",
        "1h 00m",
        "1d 01h",
    ]
    assert file_name("media:/a/b c.mkv") == "b c.mkv"
    assert file_name("\\\\nas\\share\\x.mov") == "x.mov"
    assert list(runs([1, 2, 3, 7, 9, 10])) == [(1, 3), (7, 7), (9, 10)]
    assert list(runs([1, 2, 5, 40], gap=2)) == [(1, 5), (40, 40)]


# --------------------------------------------------------------------------- incremental updates


def test_flush_is_incremental_and_coalesced(model: JobTableModel) -> None:
    model.reset(mixed_jobs(1000))
    jobs = model.jobs()
    spy = Spy(model)

    # 50 changed rows in three runs (10-29, 500-519, 990-999), 10 new jobs, plus noise that
    # must change nothing: repeats and older revisions.
    changed_rows = [*range(10, 30), *range(500, 520), *range(990, 1000)]
    for row in changed_rows:
        job = jobs[row]
        model.apply(replace(job, priority=job.priority + 1, revision=job.revision + 5000))
        model.apply(replace(job, priority=-99, revision=job.revision + 4000))  # older: ignored
    model.apply(replace(jobs[10], priority=-1, revision=jobs[10].revision + 6000))  # newest wins
    new = [make_job(2000 + i, JobState.QUEUED, revision=9000 + i) for i in range(10)]
    for job in reversed(new):
        model.apply(job)
        model.apply(job)  # the same event twice
    model.apply(replace(jobs[700], revision=jobs[700].revision))  # a repeat of a shown row
    assert spy.events == []  # recorded, not shown yet
    assert model.has_pending()

    model.flush()

    assert spy.of("reset") == [] and spy.of("layout") == []
    assert spy.of("inserted") == [("inserted", 1000, 1009)]
    changed = spy.of("changed")
    assert [(e[1], e[2]) for e in changed] == [(10, 29), (500, 519), (990, 999)]
    for event in changed:
        assert (event[3], event[4]) == (0, COLUMN_COUNT - 1)
        assert DisplayRole in event[5] and SortRole in event[5]
    assert model.job_at(10).priority == -1
    assert model.job_at(11).priority == jobs[11].priority + 1
    assert model.rowCount() == 1010
    assert [model.job_at(r).id for r in range(1000, 1010)] == [j.id for j in new]  # by id
    assert all(model.row_of[j.id] == r for r, j in enumerate(model.jobs()))
    assert not model.has_pending()

    spy.events.clear()
    model.flush()  # nothing pending: nothing emitted
    assert spy.events == []


def test_progress_touches_only_progress_columns(model: JobTableModel) -> None:
    model.reset([make_job(i, JobState.RUNNING) for i in range(1, 11)])
    spy = Spy(model)
    job = model.job(5)
    assert job is not None
    model.apply_progress(progress_event(job, job.revision + 1, progress=10.0))
    model.apply_progress(progress_event(job, job.revision + 3, progress=30.0))
    model.apply_progress(progress_event(job, job.revision + 2, progress=20.0))  # stale
    model.apply_progress(JobProgress(999, 1.0, None, None, None, None, 10**6))  # unknown job
    model.flush()
    assert spy.events == [
        ("changed", 4, 4, Col.PROGRESS, Col.ETA, spy.events[0][5]),
    ]
    assert SortRole in spy.events[0][5]
    shown = model.job(5)
    assert shown is not None and shown.progress == 30.0 and shown.revision == job.revision + 3
    assert job.progress == 42.0  # the event's Job object was not mutated
    assert model.index(4, Col.PROGRESS).data() == "30%"

    # A stale full event (older than the progress already shown) is ignored too.
    spy.events.clear()
    model.apply(replace(job, state=JobState.FAILED, revision=job.revision + 2))
    model.flush()
    assert spy.events == []
    assert model.job_at(4).state is JobState.RUNNING


def test_progress_after_pending_change_is_folded_in(model: JobTableModel) -> None:
    model.reset([make_job(1, JobState.QUEUED)])
    started = replace(model.job_at(0), state=JobState.RUNNING, progress=0.0, revision=10)
    model.apply(started)
    model.apply_progress(progress_event(started, 11, progress=55.0))
    model.apply(make_job(2, JobState.RUNNING, revision=20))  # new job ...
    model.apply_progress(progress_event(make_job(2), 21, progress=5.0))  # ... with progress
    spy = Spy(model)
    model.flush()
    assert spy.of("changed") == [("changed", 0, 0, 0, COLUMN_COUNT - 1, spy.events[0][5])]
    assert spy.of("inserted") == [("inserted", 1, 1)]
    assert model.job_at(0).progress == 55.0 and model.job_at(0).state is JobState.RUNNING
    assert model.job_at(1).progress == 5.0


def test_reset_keeps_only_newer_pending_changes(model: JobTableModel) -> None:
    model.apply(make_job(1, revision=5))  # older than the load below: dropped
    model.apply(make_job(2, revision=50))  # newer: kept
    model.apply(make_job(3, revision=7))  # not in the load: kept
    model.reset([make_job(1, revision=10), make_job(2, revision=10)])
    model.flush()
    assert [j.revision for j in model.jobs()] == [10, 50, 7]


def test_remove_in_descending_runs(model: JobTableModel) -> None:
    model.reset(mixed_jobs(20))
    spy = Spy(model)
    model.remove([3, 4, 5, 10, 20, 999])
    assert spy.of("removed") == [("removed", 19, 19), ("removed", 9, 9), ("removed", 2, 4)]
    assert ids_in_view(model) == [i for i in range(1, 20) if i not in (3, 4, 5, 10)]
    assert all(model.row_of[j.id] == r for r, j in enumerate(model.jobs()))
    assert sum(model.state_counts().values()) == 15


def test_tick_touches_only_live_rows_and_columns(model: JobTableModel) -> None:
    states = [JobState.SUCCEEDED] * 100
    for row in (*range(3, 6), 50, *range(60, 62)):
        states[row] = JobState.QUEUED
    states[99] = JobState.RUNNING
    model.reset([make_job(i + 1, s) for i, s in enumerate(states)])
    spy = Spy(model)
    model.tick()
    assert [e[1:5] for e in spy.events] == [
        (3, 5, Col.QUEUE, Col.RUN),
        (50, 61, Col.QUEUE, Col.RUN),  # a gap of a few rows is merged
        (99, 99, Col.QUEUE, Col.RUN),
    ]
    before = model.index(3, Col.QUEUE).data()
    model.clock = lambda: NOW.timestamp() + 60
    assert model.index(3, Col.QUEUE).data() != before  # computed against the clock
    assert model.index(99, Col.RUN).data() == format_duration(
        NOW.timestamp() + 60 - model.job_at(99).started_at.timestamp()  # type: ignore[union-attr]
    )


def test_state_counts_follow_changes(model: JobTableModel, qtbot: Any) -> None:
    model.reset(mixed_jobs(12))
    assert model.state_counts()[JobState.QUEUED] == 2
    with qtbot.waitSignal(model.state_counts_changed, timeout=1000) as blocker:
        model.apply(replace(model.job(6), state=JobState.CANCELED, revision=100))  # type: ignore[type-var]
        model.flush()
    assert blocker.args[0][JobState.QUEUED] == 1
    assert blocker.args[0][JobState.CANCELED] == 3


def test_flush_timer_coalesces(qtbot: Any, clock: Any) -> None:
    model = JobTableModel(flush_interval_ms=30, tick_interval_ms=0, clock=clock)
    model.reset([])
    with qtbot.waitSignal(model.rowsInserted, timeout=2000) as blocker:
        for i in range(1, 101):
            model.apply(make_job(i))
    assert blocker.args[1:] == [0, 99]  # one insert for all 100


# --------------------------------------------------------------------------- filter and sort


def make_proxy(model: JobTableModel) -> JobFilterProxyModel:
    proxy = JobFilterProxyModel()
    proxy.setSourceModel(model)
    return proxy


def test_filter_by_state_and_text(model: JobTableModel) -> None:
    model.reset(
        [
            make_job(1, JobState.QUEUED, input="media:/Holiday/Beach.MKV"),
            make_job(2, JobState.RUNNING, node="render-01"),
            make_job(3, JobState.FAILED, preset="HEVC-10bit"),
            make_job(4, JobState.SUCCEEDED, output="/srv/out/beach_final.mp4"),
            make_job(12, JobState.QUEUED),
        ]
    )
    proxy = make_proxy(model)
    assert ids_in_view(proxy) == [1, 2, 3, 4, 12]
    proxy.set_states({JobState.QUEUED, JobState.RUNNING})
    assert ids_in_view(proxy) == [1, 2, 12]
    proxy.set_states(set())
    assert ids_in_view(proxy) == []
    proxy.set_states(None)
    proxy.set_text("beach")  # input and output, case-insensitive
    assert ids_in_view(proxy) == [1, 4]
    proxy.set_text("RENDER")
    assert ids_in_view(proxy) == [2]
    proxy.set_text("hevc")
    assert ids_in_view(proxy) == [3]
    proxy.set_text("1")  # substring of ids and paths
    assert 12 in ids_in_view(proxy) and 1 in ids_in_view(proxy)
    proxy.set_text("#1")  # exactly job 1
    assert ids_in_view(proxy) == [1]
    proxy.set_text("beach")
    proxy.set_states({JobState.SUCCEEDED})
    assert ids_in_view(proxy) == [4]

    # Dynamic: a job whose state changes leaves / enters the filtered view at the flush.
    proxy.set_text("")
    proxy.set_states({JobState.QUEUED})
    model.apply(replace(model.job_at(0), state=JobState.RUNNING, revision=100))
    model.apply(replace(model.job_at(2), state=JobState.QUEUED, revision=101))
    model.flush()
    assert ids_in_view(proxy) == [3, 12]


def test_sort_uses_native_values(model: JobTableModel) -> None:
    now = NOW.timestamp()
    big = 2**40  # beyond 32 bits: must not be truncated
    long_wait = 2**33  # seconds (272 years): beyond 32 bits too, and still a datetime
    model.reset(
        [
            make_job(1, JobState.QUEUED, priority=10, created_at=NOW.fromtimestamp(now - 10)),
            make_job(2, JobState.QUEUED, priority=9, created_at=NOW.fromtimestamp(now - 9)),
            make_job(
                3, JobState.QUEUED, priority=big, created_at=NOW.fromtimestamp(now - long_wait)
            ),
            make_job(4, JobState.RUNNING, priority=-3, progress=9.5),
            make_job(5, JobState.RUNNING, priority=100, progress=10.0),
            make_job(6, JobState.RUNNING, priority=0, progress=100.0),
        ]
    )
    proxy = make_proxy(model)

    proxy.sort(Col.PRIORITY, ASC)
    assert ids_in_view(proxy) == [4, 6, 2, 1, 5, 3]
    assert proxy.index(5, Col.PRIORITY).data(SortRole) == big

    proxy.sort(Col.PROGRESS, DESC)
    assert ids_in_view(proxy)[:3] == [6, 5, 4]  # 100 > 10 > 9.5; queued (None) last
    proxy.sort(Col.PROGRESS, ASC)
    assert ids_in_view(proxy)[:3] == [4, 5, 6]  # None last in both directions

    # Time in queue: waiting jobs count until "now": 9 s < 10 s < 2**33 s.
    proxy.sort(Col.QUEUE, ASC)
    queued = [i for i in ids_in_view(proxy) if i <= 3]
    assert queued == [2, 1, 3]
    proxy.sort(Col.QUEUE, DESC)
    assert ids_in_view(proxy)[0] == 3

    proxy.sort(-1, ASC)  # back to arrival order
    assert ids_in_view(proxy) == [1, 2, 3, 4, 5, 6]


def test_sorted_view_follows_updates_and_keeps_selection(model: JobTableModel, qtbot: Any) -> None:
    model.reset([make_job(i, JobState.RUNNING, progress=float(i)) for i in range(1, 6)])
    proxy = make_proxy(model)
    proxy.sort(Col.PROGRESS, DESC)
    assert ids_in_view(proxy) == [5, 4, 3, 2, 1]
    keep = QPersistentModelIndex(proxy.index(4, 0))  # job 1, like a view's current index
    model.apply_progress(progress_event(model.job_at(model.row_of[1]), 1000, progress=99.0))
    model.apply(make_job(6, JobState.RUNNING, progress=50.0, revision=1001))
    model.flush()
    # The re-sort is rate-limited (here: at once) and runs from the event loop.
    qtbot.waitUntil(lambda: ids_in_view(proxy) == [1, 6, 5, 4, 3, 2], timeout=2000)
    assert keep.isValid() and keep.data(JobIdRole) == 1 and keep.row() == 0


def test_proxy_requires_job_model() -> None:
    proxy = JobFilterProxyModel()
    with pytest.raises(TypeError):
        proxy.setSourceModel(QObject())  # type: ignore[arg-type]


def test_empty_model_is_safe(model: JobTableModel) -> None:
    assert model.rowCount() == 0
    assert model.data(QModelIndex()) is None
    model.tick()
    model.flush()
    model.remove([1])
    model.sort(Col.QUEUE, DESC)
    assert model.rowCount() == 0


def test_progress_of_finished_runs(model: JobTableModel):
    """A run that failed before FFmpeg reported progress shows nothing, not "0%"; one that
    failed part-way shows how far it got."""
    model.reset([
        make_job(1, state=JobState.FAILED, progress=0.0),
        make_job(2, state=JobState.FAILED, progress=37.5),
        make_job(3, state=JobState.SUCCEEDED, progress=100.0),
    ])
    assert [model.index(r, Col.PROGRESS).data() for r in range(3)] == ["", "37%", "100%"]
