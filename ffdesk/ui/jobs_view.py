"""The jobs list: state filter chips, a search field and the table, with the job actions.

The view only *asks* for things (signals with job ids); the window wires those signals to
the engine and feeds the results back through :attr:`JobsView.model`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QItemSelection, QPoint, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMenu,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ffdesk.core.model import RETRYABLE_STATES, Job, JobState
from ffdesk.ui.jobs_model import (
    Col,
    JobFilterProxyModel,
    JobTableModel,
    ProgressDelegate,
)
from ffdesk.ui.theme import STATE_LABELS, state_icon

CANCELABLE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})
# The claim orders by priority, so it matters while a job waits; a running job keeps it for
# a later retry (ffdesk.db.jobs.set_priority accepts both).
PRIORITY_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})
MOVABLE_STATES = frozenset({JobState.QUEUED})

# Initial widths (px): no ResizeToContents, which would measure every one of 100 000 rows.
COLUMN_WIDTHS: dict[Col, int] = {
    Col.STATE: 132,  # "Retry in 1m 05s" fits
    Col.INPUT: 240,  # stretched: takes what the others leave
    Col.PRESET: 100,
    Col.NODE: 90,
    Col.PROGRESS: 100,
    Col.FPS: 52,
    Col.SPEED: 60,
    Col.ETA: 64,
    Col.PRIORITY: 56,
    Col.ATTEMPT: 60,
    Col.SUBMITTED: 136,
    Col.QUEUE: 88,
    Col.RUN: 80,
    Col.OUTPUT: 160,
}

SEARCH_DELAY_MS = 200  # re-filtering 100 000 rows per keystroke would lag typing
_ROOT_PATH = re.compile(r"^[A-Za-z0-9_.-]{2,}:/")  # "media:/Movies/a.mkv": a storage root


def local_path(path: str) -> Path | None:
    """Default path resolver: plain local paths as they are; storage-root paths
    (``media:/...``) are unknown here, the window passes a resolver that maps roots."""
    if not path or _ROOT_PATH.match(path):
        return None
    return Path(path)


class JobsView(QWidget):
    """Filter bar + jobs table + context menu. Public: ``model``, ``proxy``, ``table``."""

    #: Ids of the selected jobs that can be canceled (queued / running).
    cancel_requested = Signal(list)
    #: Ids of the selected jobs that can be retried (failed / dead / canceled).
    retry_requested = Signal(list)
    #: Ids (queued / running) and the new priority (higher runs first).
    priority_requested = Signal(list, int)
    #: Ids of the selected queued jobs.
    move_to_top_requested = Signal(list)
    #: The job to show in the detail pane.
    details_requested = Signal(int)
    #: The window should answer with :meth:`copy_command_text` (the argv of the latest
    #: attempt lives in the database).
    command_requested = Signal(int)
    #: Selected ids, in view order; coalesced (one emission per burst of selection changes).
    selection_changed = Signal(list)

    def __init__(
        self,
        model: JobTableModel | None = None,
        parent: QWidget | None = None,
        *,
        resolve_path: Callable[[str], Path | None] = local_path,
    ) -> None:
        super().__init__(parent)
        self.model = model if model is not None else JobTableModel(self)
        self.proxy = JobFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.resolve_path = resolve_path
        self.open_url: Callable[[QUrl], object] = QDesktopServices.openUrl  # tests replace it

        self._build_filter_bar()
        self._build_table()
        self._build_actions()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(self._filter_bar)
        layout.addWidget(self.table, 1)

        self._selection_timer = QTimer(self)
        self._selection_timer.setSingleShot(True)
        self._selection_timer.setInterval(0)
        self._selection_timer.timeout.connect(self._emit_selection)
        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(0)
        self._count_timer.timeout.connect(self._update_count_label)

        self.table.selectionModel().selectionChanged.connect(self._on_table_selection_changed)
        self.table.doubleClicked.connect(lambda _index: self._on_details())
        self.table.customContextMenuRequested.connect(self._on_table_context_menu)
        # A flush can change the state of selected jobs: cancel may stop applying.
        self.model.jobs_updated.connect(self._on_model_jobs_updated)
        self.model.state_counts_changed.connect(self._on_model_state_counts_changed)
        for signal in (
            self.proxy.rowsInserted,
            self.proxy.rowsRemoved,
            self.proxy.modelReset,
            self.proxy.layoutChanged,
        ):
            # A filter change can remove thousands of row ranges one by one: count once.
            # (A lambda: the signals' arguments must not reach QTimer.start(msec).)
            signal.connect(lambda *_args: self._count_timer.start())
        self._on_model_state_counts_changed(self.model.state_counts())
        self.update_actions()

    # ------------------------------------------------------------------ construction

    def _build_filter_bar(self) -> None:
        bar = QHBoxLayout()
        bar.setContentsMargins(4, 4, 4, 0)
        bar.setSpacing(2)
        self.state_buttons: dict[JobState, QToolButton] = {}
        for state in JobState:
            button = QToolButton(self)
            button.setCheckable(True)
            button.setAutoRaise(True)
            button.setIcon(state_icon(state))
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            button.setToolTip(f"Show {STATE_LABELS[state].lower()} jobs (none checked: all)")
            button.toggled.connect(self._on_state_button_toggled)
            self.state_buttons[state] = button
            bar.addWidget(button)
        bar.addSpacing(12)
        self.count_label = QLabel(self)
        self.count_label.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)
        bar.addWidget(self.count_label)
        bar.addStretch(1)

        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Filter: file, preset, node or #id")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(220)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self.apply_search)
        self.search.textChanged.connect(lambda _text: self._search_timer.start())
        self.search.returnPressed.connect(self.apply_search)
        bar.addWidget(self.search)
        self._filter_bar = bar

    def _build_table(self) -> None:
        table = QTableView(self)
        table.setModel(self.proxy)
        table.setItemDelegateForColumn(Col.PROGRESS, ProgressDelegate(table))
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setAlternatingRowColors(True)
        table.setWordWrap(False)
        table.setShowGrid(False)
        table.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # keep the file extension
        table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)

        # Uniform rows: a fixed vertical header never measures row contents.
        vheader = table.verticalHeader()
        vheader.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vheader.setDefaultSectionSize(table.fontMetrics().height() + 8)
        vheader.hide()

        header = table.horizontalHeader()
        header.setHighlightSections(False)
        header.setSectionsMovable(True)
        header.setStretchLastSection(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in COLUMN_WIDTHS.items():
            header.resizeSection(col, width)
        header.setSectionResizeMode(Col.INPUT, QHeaderView.ResizeMode.Stretch)
        # Start in arrival order; a third click on a header returns to it.
        header.setSortIndicatorClearable(True)
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        table.setSortingEnabled(True)
        self.table = table

    def _action(
        self,
        text: str,
        slot: Callable[[], None],
        shortcuts: list[QKeySequence] | None = None,
    ) -> QAction:
        action = QAction(text, self)
        if shortcuts:
            action.setShortcuts(shortcuts)
            # Only while the jobs view has focus: Del must not cancel jobs from a text field
            # elsewhere in the window.
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        action.triggered.connect(lambda _checked=False: slot())
        self.table.addAction(action)
        return action

    def _build_actions(self) -> None:
        key = QKeySequence
        self.details_action = self._action(
            "Show details",
            self._on_details,
            [key(Qt.Key.Key_Return), key(Qt.Key.Key_Enter)],
        )
        self.cancel_action = self._action("Cancel", self._on_cancel, [key(key.StandardKey.Delete)])
        self.retry_action = self._action("Retry / reprocess", self._on_retry, [key("Ctrl+R")])
        self.priority_action = self._action("Change priority…", self._on_priority, [key("F2")])
        self.move_to_top_action = self._action(
            "Move to top", self._on_move_to_top, [key("Ctrl+Shift+Up")]
        )
        self.open_input_action = self._action("Open input folder", self._on_open_input)
        self.open_output_action = self._action("Open output folder", self._on_open_output)
        self.copy_command_action = self._action(
            "Copy FFmpeg command", self._on_copy_command, [key("Ctrl+Shift+C")]
        )
        focus_search = QAction("Find", self)
        focus_search.setShortcut(key(key.StandardKey.Find))
        focus_search.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        focus_search.triggered.connect(lambda: self.search.setFocus())
        self.addAction(focus_search)

        menu = QMenu(self)
        menu.addAction(self.details_action)
        menu.addSeparator()
        menu.addAction(self.cancel_action)
        menu.addAction(self.retry_action)
        menu.addAction(self.priority_action)
        menu.addAction(self.move_to_top_action)
        menu.addSeparator()
        menu.addAction(self.open_input_action)
        menu.addAction(self.open_output_action)
        menu.addAction(self.copy_command_action)
        self.context_menu = menu

    # ------------------------------------------------------------------ selection

    def selected_ids(self) -> list[int]:
        """Ids of the selected jobs in view order."""
        return [job.id for job in self.selected_jobs()]

    def selected_jobs(self) -> list[Job]:
        jobs = self.model
        proxy = self.proxy
        seen: dict[int, Job] = {}
        for rng in self.table.selectionModel().selection():
            for row in range(rng.top(), rng.bottom() + 1):
                source = proxy.mapToSource(proxy.index(row, 0))
                if source.isValid():
                    job = jobs.job_at(source.row())
                    seen.setdefault(job.id, job)
        return list(seen.values())

    def current_job(self) -> Job | None:
        """The job under the cursor, else the first selected one."""
        index = self.table.currentIndex()
        if index.isValid() and self.table.selectionModel().isRowSelected(index.row()):
            source = self.proxy.mapToSource(index)
            if source.isValid():
                return self.model.job_at(source.row())
        jobs = self.selected_jobs()
        return jobs[0] if jobs else None

    def select_ids(self, ids: list[int]) -> None:
        """Select these jobs (those visible under the current filter)."""
        selection = QItemSelection()
        last = self.proxy.columnCount() - 1
        for job_id in ids:
            row = self.model.row_of.get(job_id)
            if row is None:
                continue
            index = self.proxy.mapFromSource(self.model.index(row, 0))
            if index.isValid():
                selection.select(index, index.siblingAtColumn(last))
        flags = self.table.selectionModel().SelectionFlag.ClearAndSelect
        self.table.selectionModel().select(selection, flags)

    def _on_table_selection_changed(self, *_args: object) -> None:
        self.update_actions()
        self._selection_timer.start()

    def _emit_selection(self) -> None:
        self.selection_changed.emit(self.selected_ids())

    def _on_model_jobs_updated(self, ids: list[int]) -> None:
        # Re-check the actions only when a selected job changed: update_actions() walks the
        # whole selection, and a flush comes every 100 ms under load.
        selection = self.table.selectionModel()
        if not selection.hasSelection():
            return
        for job_id in ids:
            row = self.model.row_of.get(job_id)
            if row is None:
                continue
            index = self.proxy.mapFromSource(self.model.index(row, 0))
            if index.isValid() and selection.isRowSelected(index.row()):
                self.update_actions()
                return

    def update_actions(self) -> None:
        """Enable the actions that apply to at least one selected job."""
        jobs = self.selected_jobs()
        states = {job.state for job in jobs}
        single = self.current_job() if jobs else None
        self.cancel_action.setEnabled(bool(states & CANCELABLE_STATES))
        self.retry_action.setEnabled(bool(states & RETRYABLE_STATES))
        self.priority_action.setEnabled(bool(states & PRIORITY_STATES))
        self.move_to_top_action.setEnabled(bool(states & MOVABLE_STATES))
        self.details_action.setEnabled(single is not None)
        self.open_input_action.setEnabled(
            single is not None and self.resolve_path(single.input) is not None
        )
        self.open_output_action.setEnabled(
            single is not None and self.resolve_path(single.output) is not None
        )
        # A job that never ran has no FFmpeg command yet.
        self.copy_command_action.setEnabled(single is not None and single.attempt > 0)

    # ------------------------------------------------------------------ actions

    def _ids_in(self, states: frozenset[JobState]) -> list[int]:
        return [job.id for job in self.selected_jobs() if job.state in states]

    def _on_cancel(self) -> None:
        ids = self._ids_in(CANCELABLE_STATES)
        if ids:
            self.cancel_requested.emit(ids)

    def _on_retry(self) -> None:
        ids = self._ids_in(RETRYABLE_STATES)
        if ids:
            self.retry_requested.emit(ids)

    def _on_priority(self) -> None:
        jobs = [job for job in self.selected_jobs() if job.state in PRIORITY_STATES]
        if not jobs:
            return
        value = self.ask_priority(jobs[0].priority, len(jobs))
        if value is not None:
            self.priority_requested.emit([job.id for job in jobs], value)

    def ask_priority(self, current: int, count: int) -> int | None:
        """The priority dialog (separate so the window or a test can replace it)."""
        what = "this job" if count == 1 else f"these {count} jobs"
        value, ok = QInputDialog.getInt(
            self,
            "Change priority",
            f"Priority of {what} (higher runs first):",
            current,
            -1_000_000,
            1_000_000,
        )
        return value if ok else None

    def _on_move_to_top(self) -> None:
        ids = self._ids_in(MOVABLE_STATES)
        if ids:
            self.move_to_top_requested.emit(ids)

    def _on_details(self) -> None:
        job = self.current_job()
        if job is not None:
            self.details_requested.emit(job.id)

    def _on_copy_command(self) -> None:
        job = self.current_job()
        if job is not None and job.attempt > 0:
            self.command_requested.emit(job.id)

    def copy_command_text(self, text: str) -> None:
        """The window's answer to :attr:`command_requested`: put it on the clipboard."""
        QGuiApplication.clipboard().setText(text)

    def _open_folder(self, path: str) -> None:
        local = self.resolve_path(path)
        if local is not None:
            self.open_url(QUrl.fromLocalFile(str(local.parent)))

    def _on_open_input(self) -> None:
        job = self.current_job()
        if job is not None:
            self._open_folder(job.input)

    def _on_open_output(self) -> None:
        job = self.current_job()
        if job is not None:
            self._open_folder(job.output)

    def _on_table_context_menu(self, pos: QPoint) -> None:
        self.update_actions()
        self.context_menu.popup(self.table.viewport().mapToGlobal(pos))

    # ------------------------------------------------------------------ filtering

    def apply_search(self) -> None:
        self._search_timer.stop()
        self.proxy.set_text(self.search.text())

    def set_state_filter(self, states: set[JobState] | None) -> None:
        """Check exactly these state buttons (None or empty: all states)."""
        wanted = states or set()
        for state, button in self.state_buttons.items():
            button.blockSignals(True)
            button.setChecked(state in wanted)
            button.blockSignals(False)
        self._on_state_button_toggled()

    def _on_state_button_toggled(self, *_args: object) -> None:
        checked = {s for s, b in self.state_buttons.items() if b.isChecked()}
        self.proxy.set_states(checked or None)  # nothing checked: every state

    def _on_model_state_counts_changed(self, counts: dict[JobState, int]) -> None:
        for state, button in self.state_buttons.items():
            button.setText(f"{STATE_LABELS[state]} {counts.get(state, 0):,}")
        self._update_count_label()

    def _update_count_label(self, *_args: object) -> None:
        shown, total = self.proxy.rowCount(), self.model.rowCount()
        text = f"{total:,} jobs" if shown == total else f"{shown:,} of {total:,} jobs"
        self.count_label.setText(text)
