"""The jobs table: a model fed by cluster events, a filter proxy and a progress-bar delegate.

Built for 100 000 rows under a flood of events (qt-style.md §3.3):

* ``apply`` / ``apply_progress`` only *record* changes; a timer flushes them every 100 ms as one
  ``beginInsertRows`` for all new jobs and one ``dataChanged`` per contiguous run of changed
  rows, with the roles that changed. ``beginResetModel`` is only used by :meth:`reset`.
* Events can repeat or arrive out of order (a catch-up read overlaps the previous one): a job
  or progress event whose revision is not newer than the one held is dropped.
* Sorting happens in this model, on the native values of :data:`SortRole`, with Python's
  ``list.sort``. See :meth:`JobTableModel.sort` for why the proxy does not sort.

The UI layer never talks to the database: this module gets :class:`Job` objects and progress
events from whoever owns the event bus (the window), on the GUI thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import (
    QAbstractItemModel,
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import (
    QApplication,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
)

from ffdesk.core.model import Job, JobState
from ffdesk.ui.theme import STATE_LABELS, failure_kind_help, state_color, state_icon

if TYPE_CHECKING:
    # Only the type: importing the bus module at run time would pull psycopg into the UI.
    from ffdesk.engine.events import JobProgress

ModelIndex = QModelIndex | QPersistentModelIndex


# --------------------------------------------------------------------------- roles, columns

DisplayRole = int(Qt.ItemDataRole.DisplayRole)
DecorationRole = int(Qt.ItemDataRole.DecorationRole)
ToolTipRole = int(Qt.ItemDataRole.ToolTipRole)
ForegroundRole = int(Qt.ItemDataRole.ForegroundRole)
TextAlignmentRole = int(Qt.ItemDataRole.TextAlignmentRole)
#: Native value to sort on: numbers, timestamps (float seconds), casefolded text, or None.
SortRole = int(Qt.ItemDataRole.UserRole) + 1
#: The :class:`Job` of the row (any column).
JobRole = int(Qt.ItemDataRole.UserRole) + 2
#: The state of the row (any column); Qt hands it back as a plain ``str``, which compares
#: equal to the :class:`JobState` (a ``StrEnum``).
StateRole = int(Qt.ItemDataRole.UserRole) + 3
#: The job id of the row (any column).
JobIdRole = int(Qt.ItemDataRole.UserRole) + 4


class Col(IntEnum):
    STATE = 0
    INPUT = 1
    PRESET = 2
    NODE = 3
    PROGRESS = 4
    FPS = 5
    SPEED = 6
    ETA = 7
    PRIORITY = 8
    ATTEMPT = 9
    SUBMITTED = 10
    QUEUE = 11
    RUN = 12
    OUTPUT = 13


HEADERS: dict[Col, str] = {
    Col.STATE: "State",
    Col.INPUT: "Input",
    Col.PRESET: "Preset",
    Col.NODE: "Node",
    Col.PROGRESS: "Progress",
    Col.FPS: "FPS",
    Col.SPEED: "Speed",
    Col.ETA: "ETA",
    Col.PRIORITY: "Priority",
    Col.ATTEMPT: "Attempt",
    Col.SUBMITTED: "Submitted",
    Col.QUEUE: "Time in queue",
    Col.RUN: "Run time",
    Col.OUTPUT: "Output",
}
COLUMN_COUNT = len(Col)

# A progress event touches exactly these (adjacent) columns; the 1 s tick these.
PROGRESS_FIRST, PROGRESS_LAST = Col.PROGRESS, Col.ETA
LIVE_FIRST, LIVE_LAST = Col.QUEUE, Col.RUN

FULL_ROLES = [
    DisplayRole,
    DecorationRole,
    ToolTipRole,
    ForegroundRole,
    SortRole,
    JobRole,
    StateRole,
]
PROGRESS_ROLES = [DisplayRole, ToolTipRole, SortRole, JobRole]
LIVE_ROLES = [DisplayRole, ToolTipRole, SortRole]
RETRY_ROLES = [DisplayRole, DecorationRole, ToolTipRole]

# Plain ints: converted to a QVariant thousands of times per paint.
_RIGHT = int((Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter).value)
_LEFT = int((Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter).value)
_NUMERIC = frozenset(
    int(c)
    for c in (
        Col.PROGRESS,
        Col.FPS,
        Col.SPEED,
        Col.ETA,
        Col.PRIORITY,
        Col.ATTEMPT,
        Col.QUEUE,
        Col.RUN,
    )
)
# Lifecycle order: sorting by state groups waiting, working, then finished jobs.
_STATE_ORDER = {state: i for i, state in enumerate(JobState)}
LIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})
# States in which ``failure_kind`` describes the job's last run (a claim clears it).
KIND_STATES = frozenset({JobState.FAILED, JobState.DEAD, JobState.QUEUED})
#: Icon state (ffdesk.ui.theme) of a queued job waiting out its retry backoff.
RETRY_ICON_STATE = "retry"
_LIVE_COLUMNS = frozenset({int(Col.QUEUE), int(Col.RUN)})
_ROLES = frozenset(
    {
        DisplayRole,
        DecorationRole,
        ToolTipRole,
        ForegroundRole,
        TextAlignmentRole,
        SortRole,
        JobRole,
        StateRole,
        JobIdRole,
    }
)
TEXT_CACHE_ROWS = 2000
TICK_MERGE_GAP = 32
TICK_CHUNK_ROWS = 100  # x 2 columns = 200 cells, see JobTableModel.tick
_FLAGS = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren


# --------------------------------------------------------------------------- formatting


def file_name(path: str) -> str:
    """Last component of a cluster path (``media:/a/b.mkv``, ``\\\\nas\\x\\b.mkv``, ``/a/b``)."""
    name = re.split(r"[\\/]", path.rstrip("\\/"))[-1]
    return name or path


def format_duration(seconds: float | None) -> str:
    """Short and readable; seconds are dropped after an hour (noise at that scale)."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def local_time(dt: datetime | None, *, seconds: bool = True) -> str:
    if dt is None:
        return ""
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def queue_seconds(job: Job, now: float) -> float | None:
    """Submitted until claimed; live (until ``now``, epoch seconds) while the job waits.

    A waiting job counts from submission even if it ran before (a retry or a rescued job keeps
    an old ``claimed_at``): the question the column answers is "how long has this waited".
    Plain float arithmetic: this runs for every row when sorting by the column.
    """
    if job.state is JobState.QUEUED:
        return now - job.created_at.timestamp()
    if job.claimed_at is not None:
        return job.claimed_at.timestamp() - job.created_at.timestamp()
    if job.finished_at is not None:  # canceled while waiting
        return job.finished_at.timestamp() - job.created_at.timestamp()
    return None


def retry_wait(job: Job, now: float) -> float | None:
    """Seconds until a queued job whose last run failed may be claimed again (its retry
    backoff, ``not_before``); None when it is not waiting for one."""
    if job.state is not JobState.QUEUED or job.not_before is None:
        return None
    if job.attempt == 0 and job.failure_kind is None:
        # Never ran (or reprocessed): its not_before is its submission, and a client clock
        # a little behind the database's must not turn that into a countdown.
        return None
    wait = job.not_before.timestamp() - now
    return wait if wait >= 0.5 else None


def run_seconds(job: Job, now: float) -> float | None:
    """Started until finished; live while running."""
    if job.started_at is None:
        return None
    if job.finished_at is not None:
        return job.finished_at.timestamp() - job.started_at.timestamp()
    if job.state is JobState.RUNNING:
        return now - job.started_at.timestamp()
    return None


@functools.cache
def _state_color(state: str) -> QColor:
    return state_color(state)


def _pct(value: float) -> str:
    # Floor, not round: "100%" must mean done, never 99.6 % still encoding.
    return f"{int(max(0.0, min(100.0, value)))}%"


_RUNNING = JobState.RUNNING
_QUEUED = JobState.QUEUED


def _live_figure(fmt: Callable[[float], str], name: str) -> Callable[[Job, float], str]:
    # FPS / speed / ETA describe a live encode: stale figures of a finished job would mislead.
    def display(job: Job, _now: float) -> str:
        value = getattr(job, name)
        return fmt(value) if job.state is _RUNNING and value is not None else ""

    return display


# One function per column (indexed by column number): data() runs for every visible cell on
# every paint and sorting runs the key for every row, so no if-chains over enum members.
_DISPLAY: tuple[Callable[[Job, float], str], ...] = (
    lambda j, _n: STATE_LABELS.get(j.state, str(j.state)),
    lambda j, _n: file_name(j.input),
    lambda j, _n: j.preset,
    lambda j, _n: j.node or "",
    # A run that ended before FFmpeg reported any progress shows nothing, not "0%".
    lambda j, _n: ""
    if j.progress is None or j.state is _QUEUED or (j.state is not _RUNNING and not j.progress)
    else _pct(j.progress),
    _live_figure(lambda v: f"{v:.1f}", "fps"),
    _live_figure(lambda v: f"{v:.2f}×", "speed"),
    _live_figure(format_duration, "eta_s"),
    lambda j, _n: str(j.priority),
    lambda j, _n: f"{j.attempt}/{j.max_attempts}",
    lambda j, _n: local_time(j.created_at),
    lambda j, n: format_duration(queue_seconds(j, n)),
    lambda j, n: format_duration(run_seconds(j, n)),
    lambda j, _n: file_name(j.output),
)

_SORT_KEY: tuple[Callable[[Job, float], Any], ...] = (
    lambda j, _n: _STATE_ORDER.get(j.state, len(_STATE_ORDER)),
    lambda j, _n: file_name(j.input).casefold(),
    lambda j, _n: j.preset.casefold(),
    lambda j, _n: j.node.casefold() if j.node else None,
    lambda j, _n: j.progress,
    lambda j, _n: j.fps if j.state is _RUNNING else None,
    lambda j, _n: j.speed if j.state is _RUNNING else None,
    lambda j, _n: j.eta_s if j.state is _RUNNING else None,
    lambda j, _n: j.priority,
    lambda j, _n: j.attempt,
    lambda j, _n: j.created_at.timestamp(),
    queue_seconds,
    run_seconds,
    lambda j, _n: file_name(j.output).casefold(),
)
assert len(_DISPLAY) == len(_SORT_KEY) == len(Col)


def sort_value(job: Job, col: int, now: float) -> Any:
    """The native value of :data:`SortRole` (numbers, epoch seconds, casefolded text, or
    None, which sorts last in either direction)."""
    return _SORT_KEY[col](job, now)


def state_text(job: Job, now: float) -> str:
    """The State column: "Retry in 12s" while a failed run's retry waits out its backoff."""
    wait = retry_wait(job, now)
    if wait is not None:
        return f"Retry in {format_duration(wait)}"
    return STATE_LABELS.get(job.state, str(job.state))


def _tooltip(job: Job, col: int, now: float) -> str | None:
    if col == Col.STATE:
        label = STATE_LABELS.get(job.state, str(job.state))
        kind = job.failure_kind if job.state in KIND_STATES else None
        wait = retry_wait(job, now)
        if wait is not None:
            label = "Waiting to retry"
        if kind:
            label += f" ({kind} failure)"
        lines = [f"{label}: {job.reason}" if job.reason else label]
        if wait is not None and job.not_before is not None:
            when = local_time(job.not_before)
            lines.append(f"Next try at {when} (in {format_duration(wait)})")
        if kind:
            lines.append(failure_kind_help(kind))
        return "\n".join(lines)
    if col == Col.INPUT:
        return job.input
    if col == Col.OUTPUT:
        return job.output
    if col == Col.PROGRESS and job.progress is not None:
        if job.out_time_s is not None and job.duration_s:
            done, total = format_duration(job.out_time_s), format_duration(job.duration_s)
            return f"{job.progress:.1f}% ({done} of {total})"
        return f"{job.progress:.1f}%"
    if col == Col.ATTEMPT:
        return f"Attempt {job.attempt} of {job.max_attempts}"
    if col == Col.SUBMITTED:
        by = f" by {job.submitted_by}" if job.submitted_by else ""
        return f"{job.created_at.astimezone().isoformat(timespec='seconds')}{by}"
    if col == Col.NODE and job.node_session:
        return f"{job.node} (session {job.node_session})"
    if col == Col.QUEUE:
        value = queue_seconds(job, now)
        return None if value is None else f"{value:,.0f} s"
    if col == Col.RUN:
        value = run_seconds(job, now)
        return None if value is None else f"{value:,.0f} s"
    return None


def with_progress(job: Job, event: JobProgress) -> Job:
    """A copy of ``job`` with the figures of a progress event (never mutate a shared Job)."""
    return dataclasses.replace(
        job,
        progress=event.progress,
        fps=event.fps,
        speed=event.speed,
        eta_s=event.eta_s,
        out_time_s=event.out_time_s,
        revision=event.revision,
    )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold the cyclic GC during bulk work on all rows.

    Building 100 000 key tuples triggers young-generation collections that walk the large
    heap of jobs: 0.2 s instead of 0.02 s for a sort. The work creates no cycles.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def runs(rows: Iterable[int], gap: int = 0) -> Iterator[tuple[int, int]]:
    """Contiguous ``(first, last)`` runs of sorted, distinct row numbers; runs with at most
    ``gap`` rows between them are joined."""
    first = last = None
    for row in rows:
        if last is not None and row <= last + 1 + gap:
            last = row
            continue
        if first is not None and last is not None:
            yield first, last
        first = last = row
    if first is not None and last is not None:
        yield first, last


# --------------------------------------------------------------------------- the model


class JobTableModel(QAbstractTableModel):
    """One row per :class:`Job`, kept current by coalesced incremental updates.

    ``row_of`` maps a job id to its row. New jobs are appended; rows move only when the
    model is sorted (:meth:`sort`) or rows are removed.
    """

    #: Ids of the jobs inserted or changed by one flush (after the model signals).
    jobs_updated = Signal(list)
    #: ``{JobState: count}`` after it changed (reset, flush, remove).
    state_counts_changed = Signal(dict)

    def __init__(
        self,
        parent: QObject | None = None,
        *,
        flush_interval_ms: int = 100,
        tick_interval_ms: int = 1000,
        min_resort_interval_ms: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(parent)
        self.clock = clock  # epoch seconds; the live durations are measured against it
        self._min_resort_ms = min_resort_interval_ms
        self._jobs: list[Job] = []
        self.row_of: dict[int, int] = {}
        # Highest revision seen per job, pending or shown: the one test for stale events.
        self._revision: dict[int, int] = {}
        self._pending_jobs: dict[int, Job] = {}
        self._pending_progress: dict[int, JobProgress] = {}
        self._live: set[int] = set()  # ids of queued/running jobs: their times tick
        # Ids of queued jobs waiting out a retry backoff: their State text counts down.
        self._waiting: set[int] = set()
        self._texts: dict[int, tuple[Job, list[str | None]]] = {}
        self._counts: Counter[JobState] = Counter()
        self._sort_column = -1
        self._sort_order = Qt.SortOrder.AscendingOrder
        self._last_sort_s = 0.0
        self._generation = 0  # bumped by every change of the rows: a sort may be stale
        self._sort_stamp: tuple[int, Qt.SortOrder, int, float] | None = None

        # Single-shot, started by the first pending change: at most one flush per interval
        # under a flood, and no wake-ups at all when nothing happens.
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(flush_interval_ms)
        self._flush_timer.timeout.connect(self.flush)
        self._flush_ms = flush_interval_ms
        self._last_flush = 0.0

        self._tick_timer = QTimer(self)
        self._tick_timer.setInterval(tick_interval_ms)
        self._tick_timer.timeout.connect(self.tick)
        if tick_interval_ms > 0:
            self._tick_timer.start()

        self._resort_timer = QTimer(self)
        self._resort_timer.setSingleShot(True)
        self._resort_timer.timeout.connect(self._resort)

    # ------------------------------------------------------------------ feeding

    def reset(self, jobs: Iterable[Job]) -> None:
        """Replace everything (the initial load, or a reload after a long disconnect)."""
        self.beginResetModel()
        self._texts.clear()
        with _gc_paused():
            self._jobs = sorted(jobs, key=lambda j: j.id)
            if self._sort_column >= 0:
                self._jobs = self._sorted(self._jobs)
            self.row_of = {job.id: row for row, job in enumerate(self._jobs)}
            self._revision = {job.id: job.revision for job in self._jobs}
            self._live = {job.id for job in self._jobs if job.state in LIVE_STATES}
            now = self.clock()
            self._waiting = {j.id for j in self._jobs if retry_wait(j, now) is not None}
            self._counts = Counter(job.state for job in self._jobs)
        # Changes recorded before the load survive only if they are newer than it.
        revision = self._revision
        self._pending_jobs = {
            i: j for i, j in self._pending_jobs.items() if j.revision > revision.get(i, -1)
        }
        self._pending_progress = {
            i: e
            for i, e in self._pending_progress.items()
            if i in self._pending_jobs or (i in revision and e.revision > revision[i])
        }
        for job_id, job in self._pending_jobs.items():
            revision[job_id] = job.revision
        for job_id, event in self._pending_progress.items():
            revision[job_id] = max(revision[job_id], event.revision)
        self._generation += 1
        self.endResetModel()
        self.state_counts_changed.emit(self.state_counts())

    def apply(self, job: Job) -> None:
        """Record a new or changed job (a ``JobChanged``); shown at the next flush."""
        if job.revision <= self._revision.get(job.id, -1):
            return  # a repeat, or older than what we have
        self._revision[job.id] = job.revision
        self._pending_jobs[job.id] = job
        # The job carries newer figures than any progress event held for it.
        self._pending_progress.pop(job.id, None)
        self._schedule_flush()

    def apply_progress(self, event: JobProgress) -> None:
        """Record new progress figures of a job this model holds (a ``JobProgress``)."""
        held = self._revision.get(event.job_id)
        if held is None or event.revision <= held:
            return  # unknown job (its JobChanged brings it) or stale figures
        self._revision[event.job_id] = event.revision
        self._pending_progress[event.job_id] = event
        self._schedule_flush()

    def remove(self, ids: Iterable[int]) -> None:
        """Drop jobs now (not coalesced); one ``beginRemoveRows`` per contiguous run."""
        ids = set(ids)
        for job_id in ids:
            self._pending_jobs.pop(job_id, None)
            self._pending_progress.pop(job_id, None)
            self._revision.pop(job_id, None)
            self._live.discard(job_id)
            self._waiting.discard(job_id)
        rows = sorted((self.row_of[i] for i in ids if i in self.row_of), reverse=True)
        if not rows:
            return
        # Bottom-up, so the row numbers of the runs still to remove stay valid.
        for last, first in _descending_runs(rows):
            self.beginRemoveRows(QModelIndex(), first, last)
            for job in self._jobs[first : last + 1]:
                self._counts[job.state] -= 1
            del self._jobs[first : last + 1]
            self.endRemoveRows()
        with _gc_paused():
            self.row_of = {job.id: row for row, job in enumerate(self._jobs)}
        self._generation += 1
        self._counts = +self._counts  # drop zero counts
        self.state_counts_changed.emit(self.state_counts())

    def has_pending(self) -> bool:
        return bool(self._pending_jobs or self._pending_progress)

    def _schedule_flush(self) -> None:
        """Leading edge: a change after a quiet interval shows on the next loop turn; the
        changes that follow it are coalesced for one interval (never one repaint per event)."""
        if self._flush_timer.isActive():
            return
        # start(ms) changes the timer's interval, so the configured one is kept apart.
        quiet = time.monotonic() - self._last_flush >= self._flush_ms / 1000
        self._flush_timer.start(0 if quiet else self._flush_ms)

    def flush(self) -> None:
        """Show every recorded change now (the timer calls this; tests may too)."""
        self._last_flush = time.monotonic()
        self._flush_timer.stop()
        jobs, progress = self._pending_jobs, self._pending_progress
        if not jobs and not progress:
            return
        self._pending_jobs, self._pending_progress = {}, {}
        self._generation += 1

        progress_rows: list[int] = []
        for job_id, event in progress.items():
            if job_id in jobs:  # progress newer than a pending JobChanged: fold it in
                jobs[job_id] = with_progress(jobs[job_id], event)
                continue
            row = self.row_of.get(job_id)
            if row is not None:
                self._jobs[row] = with_progress(self._jobs[row], event)
                progress_rows.append(row)

        new: list[Job] = []
        full_rows: list[int] = []
        counts_before = dict(self._counts)
        now = self.clock()
        for job in jobs.values():
            row = self.row_of.get(job.id)
            if row is None:
                new.append(job)
                self._counts[job.state] += 1
            else:
                old = self._jobs[row]
                self._jobs[row] = job
                full_rows.append(row)
                if old.state is not job.state:
                    self._counts[old.state] -= 1
                    self._counts[job.state] += 1
            if job.state in LIVE_STATES:
                self._live.add(job.id)
            else:
                self._live.discard(job.id)
            if job.state is _QUEUED and retry_wait(job, now) is not None:
                self._waiting.add(job.id)
            else:
                self._waiting.discard(job.id)

        full_rows.sort()
        for first, last in runs(full_rows):
            self.dataChanged.emit(
                self.index(first, 0), self.index(last, COLUMN_COUNT - 1), FULL_ROLES
            )
        progress_rows.sort()
        for first, last in runs(progress_rows):
            self.dataChanged.emit(
                self.index(first, PROGRESS_FIRST), self.index(last, PROGRESS_LAST), PROGRESS_ROLES
            )
        if new:
            new.sort(key=lambda j: j.id)
            first = len(self._jobs)
            self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
            self._jobs.extend(new)
            for row, job in enumerate(new, first):
                self.row_of[job.id] = row
            self.endInsertRows()

        self._counts = +self._counts
        if dict(self._counts) != counts_before:
            self.state_counts_changed.emit(self.state_counts())
        if self._sort_column >= 0:
            touched = list(full_rows)
            if PROGRESS_FIRST <= self._sort_column <= PROGRESS_LAST:
                touched += progress_rows
            if new or self._order_broken(touched):
                self._schedule_resort()
        jobs_by_row = self._jobs
        self.jobs_updated.emit(
            [job.id for job in new] + [jobs_by_row[r].id for r in (*full_rows, *progress_rows)]
        )

    def tick(self) -> None:
        """Repaint the live times of waiting and running jobs: ``dataChanged`` for those two
        columns of those rows.

        Runs separated by a few finished rows are merged: one signal costs ~15 µs through the
        proxy and the view, an extra row in a range ~0.5 µs (the proxy re-filters it). Long
        runs are cut into ranges of at most 200 cells: for a bigger range QTableView repaints
        its whole viewport (~20 ms for a full-screen table) even when none of the rows is
        visible, which would cost a full repaint every second.
        """
        if self._waiting:
            self._tick_waiting()
        if not self._live:
            return
        row_of = self.row_of
        rows = sorted(row_of[i] for i in self._live if i in row_of)
        for first, last in runs(rows, gap=TICK_MERGE_GAP):
            for start in range(first, last + 1, TICK_CHUNK_ROWS):
                end = min(last, start + TICK_CHUNK_ROWS - 1)
                self.dataChanged.emit(
                    self.index(start, LIVE_FIRST), self.index(end, LIVE_LAST), LIVE_ROLES
                )

    def _tick_waiting(self) -> None:
        """Count down the State text of retries waiting out their backoff; a job whose wait
        is over gets one last update ("Queued") and leaves the set."""
        now, row_of, jobs = self.clock(), self.row_of, self._jobs
        rows = []
        for job_id in list(self._waiting):
            row = row_of.get(job_id)
            if row is None:
                self._waiting.discard(job_id)
                continue
            rows.append(row)
            if retry_wait(jobs[row], now) is None:
                self._waiting.discard(job_id)
        for first, last in runs(sorted(rows)):
            self.dataChanged.emit(
                self.index(first, Col.STATE), self.index(last, Col.STATE), RETRY_ROLES
            )

    # ------------------------------------------------------------------ reading

    def job_at(self, row: int) -> Job:
        return self._jobs[row]

    def job(self, job_id: int) -> Job | None:
        """The job as shown (pending changes not included)."""
        row = self.row_of.get(job_id)
        return None if row is None else self._jobs[row]

    def jobs(self) -> Sequence[Job]:
        return tuple(self._jobs)

    def state_counts(self) -> dict[JobState, int]:
        return {state: self._counts.get(state, 0) for state in JobState}

    # ------------------------------------------------------------------ Qt model API

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._jobs)

    def columnCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else COLUMN_COUNT

    def headerData(
        self,
        section: int,
        orientation: Qt.Orientation,
        role: int = DisplayRole,
    ) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < COLUMN_COUNT:
            return None
        if role == DisplayRole:
            return HEADERS[Col(section)]
        if role == TextAlignmentRole:
            return _RIGHT if section in _NUMERIC else _LEFT
        return None

    def flags(self, index: ModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return _FLAGS

    def data(self, index: ModelIndex, role: int = DisplayRole) -> Any:
        # Runs ~7 times per visible cell on every paint (through the proxy): each check here
        # is paid thousands of times per frame, so the cheapest come first.
        if role not in _ROLES:  # font, background, check state, size hint, ...
            return None
        row = index.row()  # -1 for an invalid index
        jobs = self._jobs
        if row < 0 or row >= len(jobs):
            return None
        job = jobs[row]
        col = index.column()
        if role == DisplayRole:
            return self._text(job, col)
        if role == TextAlignmentRole:
            return _RIGHT if col in _NUMERIC else None
        if role == DecorationRole:
            if col != 0:
                return None
            if job.id in self._waiting and retry_wait(job, self.clock()) is not None:
                return state_icon(RETRY_ICON_STATE)
            return state_icon(job.state)
        if role == ForegroundRole:
            return _state_color(job.state) if col == 0 else None
        if role == SortRole:
            return _SORT_KEY[col](job, self.clock())
        if role == JobRole:
            return job
        if role == StateRole:
            return job.state
        if role == JobIdRole:
            return job.id
        if role == ToolTipRole:
            return _tooltip(job, col, self.clock())
        return None

    def _text(self, job: Job, col: int) -> str:
        """DisplayRole text, cached per Job object (a change brings a new object); the two
        live durations are computed against the clock every time."""
        if col in _LIVE_COLUMNS:
            return _DISPLAY[col](job, self.clock())
        if col == 0 and job.id in self._waiting:
            return state_text(job, self.clock())  # a countdown: never cached
        entry = self._texts.get(job.id)
        if entry is None or entry[0] is not job:
            if len(self._texts) >= TEXT_CACHE_ROWS:
                self._texts.clear()  # a few screens' worth: rebuilt as rows are painted
            entry = self._texts[job.id] = (job, [None] * COLUMN_COUNT)
        texts = entry[1]
        text = texts[col]
        if text is None:
            text = texts[col] = _DISPLAY[col](job, 0.0)
        return text

    # ------------------------------------------------------------------ sorting

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Reorder the rows by the :data:`SortRole` value of ``column`` (-1: by id).

        Why here and not in :class:`QSortFilterProxyModel`: its sort calls the Python
        ``lessThan`` once per comparison, about 3.3 µs each through PySide, and 100 000 rows
        need ~1.7 million comparisons (6 s or more). ``list.sort`` on precomputed keys
        compares natively in C: ~0.1 s. Python values also keep 64-bit integers exact.

        Later changes keep the order: new rows are appended and moved into place by a
        re-sort that is rate-limited so sorting costs at most ~5 % of the GUI thread.
        """
        # QTableView.sortByColumn() asks twice in a row; the second request is a no-op.
        now = time.monotonic()
        stamp = self._sort_stamp
        if (
            stamp is not None
            and stamp[:3] == (column, order, self._generation)
            and now - stamp[3] < 1.0
        ):
            return
        self._sort_column = column
        self._sort_order = order
        self._resort_timer.stop()
        self._resort()
        self._sort_stamp = (column, order, self._generation, now)

    def sort_column(self) -> int:
        return self._sort_column

    def sort_order(self) -> Qt.SortOrder:
        return self._sort_order

    def _sorted(self, jobs: list[Job]) -> list[Job]:
        column = self._sort_column
        if column < 0:
            return sorted(jobs, key=lambda j: j.id)
        now, key = self.clock(), _SORT_KEY[column]
        keyed = [(key(j, now), j.id, j) for j in jobs]
        present = [k for k in keyed if k[0] is not None]
        missing = [k for k in keyed if k[0] is None]
        descending = self._sort_order == Qt.SortOrder.DescendingOrder
        present.sort(key=lambda k: (k[0], k[1]), reverse=descending)
        missing.sort(key=lambda k: k[1])
        return [k[2] for k in present] + [k[2] for k in missing]

    def _resort(self) -> None:
        started = time.perf_counter()
        with _gc_paused():
            new = self._sorted(self._jobs)
        if all(a is b for a, b in zip(new, self._jobs, strict=True)):
            self._last_sort_s = time.perf_counter() - started
            return
        # PySide6 only emits the argument-less overload (no VerticalSortHint).
        self.layoutAboutToBeChanged.emit()
        old_ids = [job.id for job in self._jobs]
        self._jobs = new
        with _gc_paused():
            self.row_of = {job.id: row for row, job in enumerate(new)}
        # Selections and current items (persistent indexes, also the proxy's) follow their job.
        persistent = self.persistentIndexList()
        if persistent:
            moved = [
                self.index(self.row_of[old_ids[p.row()]], p.column())
                if 0 <= p.row() < len(old_ids)
                else QModelIndex()
                for p in persistent
            ]
            self.changePersistentIndexList(persistent, moved)
        self.layoutChanged.emit()
        self._last_sort_s = time.perf_counter() - started

    def _schedule_resort(self) -> None:
        if self._resort_timer.isActive():
            return
        # At least 20x the last sort's duration apart: re-sorting costs <= ~5 % of the thread.
        self._resort_timer.start(max(self._min_resort_ms, int(self._last_sort_s * 20_000)))

    def _order_broken(self, rows: Sequence[int]) -> bool:
        """Does any of ``rows`` sit out of order against its neighbours?"""
        if not rows:
            return False
        column, now, jobs = self._sort_column, self.clock(), self._jobs
        descending = self._sort_order == Qt.SortOrder.DescendingOrder

        def before(a: Job, b: Job) -> bool:
            ka, kb = sort_value(a, column, now), sort_value(b, column, now)
            if ka is None:
                return kb is None
            if kb is None:
                return True
            return ka >= kb if descending else ka <= kb

        last = len(jobs) - 1
        for row in rows:
            if row > 0 and not before(jobs[row - 1], jobs[row]):
                return True
            if row < last and not before(jobs[row], jobs[row + 1]):
                return True
        return False


def _descending_runs(rows: Sequence[int]) -> Iterator[tuple[int, int]]:
    """``(last, first)`` runs of row numbers sorted in descending order."""
    top = bottom = None
    for row in rows:
        if bottom is not None and row == bottom - 1:
            bottom = row
            continue
        if top is not None and bottom is not None:
            yield top, bottom
        top = bottom = row
    if top is not None and bottom is not None:
        yield top, bottom


# --------------------------------------------------------------------------- the proxy

# Qt 6.10 added beginFilterChange()/endFilterChange(Direction); invalidateFilter() is
# scheduled for deprecation in 6.13 (qt-style.md §3.3).
_HAS_FILTER_CHANGE = all(
    hasattr(QSortFilterProxyModel, name)
    for name in ("beginFilterChange", "endFilterChange", "Direction")
)


class JobFilterProxyModel(QSortFilterProxyModel):
    """Filters jobs by state and by text; sorting is delegated to the source model.

    ``setDynamicSortFilter(True)``: for every ``dataChanged`` row Qt re-runs
    ``filterAcceptsRow`` for that row only (~0.5 µs), so a job leaving the "Running" filter
    disappears at the next flush. With ``False`` the filter would go stale, and keeping it
    right would mean a full re-filter (O(all rows)) after every flush of a flood. Sorting
    does not add to that cost: this proxy never sorts itself (see :meth:`sort`).
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._states: frozenset[JobState] | None = None
        self._text = ""
        self._needle = ""
        self._exact_id: int | None = None
        self._jobs_model: JobTableModel | None = None
        self.setSortRole(SortRole)
        self.setDynamicSortFilter(True)

    def setSourceModel(self, model: QAbstractItemModel) -> None:
        if not isinstance(model, JobTableModel):
            raise TypeError("JobFilterProxyModel needs a JobTableModel")
        self._jobs_model = model
        super().setSourceModel(model)

    # ------------------------------------------------------------------ filter

    def states(self) -> frozenset[JobState] | None:
        return self._states

    def text(self) -> str:
        return self._text

    def set_states(self, states: Iterable[JobState] | None) -> None:
        """Only jobs in these states (None: any state; an empty set: none)."""
        value = None if states is None else frozenset(JobState(s) for s in states)
        if value == self._states:
            return
        self._change_filter(lambda: setattr(self, "_states", value))

    def set_text(self, text: str) -> None:
        """Case-insensitive substring of input, output, preset, node or id; ``#123``
        matches job 123 only."""
        text = text.strip()
        if text == self._text:
            return

        def change() -> None:
            self._text = text
            self._needle = text.casefold()
            digits = text[1:] if text.startswith("#") else ""
            self._exact_id = int(digits) if digits.isdigit() else None

        self._change_filter(change)

    def _change_filter(self, change: Callable[[], None]) -> None:
        if _HAS_FILTER_CHANGE:
            self.beginFilterChange()
            change()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:  # Qt < 6.10
            change()
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: ModelIndex) -> bool:
        # Runs for every row on a filter change and for every changed row on each flush.
        states, needle = self._states, self._needle
        if states is None and not needle:
            return True
        assert self._jobs_model is not None
        job = self._jobs_model.job_at(source_row)
        if states is not None and job.state not in states:
            return False
        if not needle:
            return True
        if self._exact_id is not None:
            return job.id == self._exact_id
        # Newlines keep a match from spanning two fields.
        hay = f"{job.id}\n{job.input}\n{job.output}\n{job.preset}\n{job.node or ''}"
        return needle in hay.casefold()

    # ------------------------------------------------------------------ sort

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort by the native :data:`SortRole` values of ``column`` (-1: by id).

        The source model reorders its rows (see :meth:`JobTableModel.sort`); this proxy keeps
        its own sort column at -1, so it mirrors that order and never runs its
        comparison sort in Python."""
        assert self._jobs_model is not None
        self._jobs_model.sort(column, order)


# --------------------------------------------------------------------------- the delegate


class ProgressDelegate(QStyledItemDelegate):
    """A progress bar with "42%" for running jobs; plain text for every other state."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: ModelIndex) -> None:
        # JobRole hands back the Job itself; StateRole would arrive as a plain str via QVariant.
        job = index.data(JobRole)
        if not isinstance(job, Job) or job.state is not JobState.RUNNING or job.progress is None:
            super().paint(painter, option, index)
            return
        widget = option.widget  # type: ignore[attr-defined]
        style = widget.style() if widget is not None else QApplication.style()
        # Background and selection highlight as any other cell, without the text.
        item = QStyleOptionViewItem(option)
        self.initStyleOption(item, index)
        item.text = ""  # type: ignore[attr-defined]
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, item, painter, widget)

        value = max(0.0, min(100.0, float(job.progress)))
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(3, 3, -3, -3)  # type: ignore[attr-defined]
        bar.palette = option.palette  # type: ignore[attr-defined]
        bar.fontMetrics = option.fontMetrics  # type: ignore[attr-defined]
        bar.direction = option.direction  # type: ignore[attr-defined]
        bar.state = QStyle.StateFlag.State_Enabled | QStyle.StateFlag.State_Horizontal
        bar.minimum = 0
        bar.maximum = 1000  # tenths of a percent: the bar moves smoothly
        bar.progress = int(value * 10)
        bar.text = _pct(value)
        bar.textVisible = True
        bar.textAlignment = Qt.AlignmentFlag.AlignCenter
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, widget)
