"""The console window: jobs (with details), nodes and graphs, a drop target for files, the
status bar with the database connection and a cluster summary.

Every action goes through :class:`~ffdesk.ui.app.DesktopApp` (which awaits the engine thread);
this module only arranges widgets and forwards their signals.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QByteArray, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QTabWidget,
    QToolBar,
    QWidget,
)

from ffdesk.core.model import JobState
from ffdesk.engine.events import JobChanged, JobProgress
from ffdesk.ui.drop_dialog import DropDialog
from ffdesk.ui.graphs import GraphsView
from ffdesk.ui.job_detail import JobDetailPane
from ffdesk.ui.jobs_view import JobsView
from ffdesk.ui.nodes_view import NodesView
from ffdesk.ui.theme import state_icon

if TYPE_CHECKING:
    from ffdesk.ui.app import DesktopApp

log = logging.getLogger("ffdesk.cli")

DEFAULT_PRESET = "h264-mp4"  # the queue dialog's choice until the user picks another
CONNECTION_LABELS = {
    "connecting": ("disconnected", "Connecting to the database…"),
    "connected": ("online", "Connected"),
    "reconnecting": ("stale", "Reconnecting…"),
    "offline": ("offline", "Offline"),
}


class MainWindow(QMainWindow):
    def __init__(self, app: DesktopApp) -> None:
        super().__init__()
        self.app = app
        self.setWindowTitle("ffdesk")
        self.setAcceptDrops(True)
        self.resize(1280, 780)
        self._told_about_tray = app.ui_state.value("told_about_tray", False, type=bool)
        self._detail_job: int | None = None

        # --- jobs: table above, details below ---------------------------------------------
        self.jobs = JobsView()
        self.detail = JobDetailPane()
        self.jobs_split = QSplitter(Qt.Orientation.Vertical)
        self.jobs_split.addWidget(self.jobs)
        self.jobs_split.addWidget(self.detail)
        self.jobs_split.setStretchFactor(0, 3)
        self.jobs_split.setStretchFactor(1, 2)
        self.jobs_split.setSizes([480, 300])  # the table first; details when asked for
        self.nodes = NodesView()
        self.graphs = GraphsView()
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.jobs_split, "Jobs")
        self.tabs.addTab(self.nodes, "Nodes")
        self.tabs.addTab(self.graphs, "Graphs")
        self.setCentralWidget(self.tabs)

        # --- toolbar ------------------------------------------------------------------------
        bar = QToolBar("Main")
        bar.setObjectName("main-toolbar")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.addToolBar(bar)
        self.add_action = QAction("Add files…", self)
        self.add_action.setShortcut(QKeySequence.StandardKey.Open)
        self.add_action.triggered.connect(self._choose_files)
        bar.addAction(self.add_action)
        self.accept_action = QAction("Accept jobs on this computer", self)
        self.accept_action.setCheckable(True)
        self.accept_action.setChecked(app.accepting)
        self.accept_action.toggled.connect(self._on_accept_toggled)
        bar.addAction(self.accept_action)
        self.settings_action = QAction("Settings…", self)
        self.settings_action.setShortcut(QKeySequence.StandardKey.Preferences)
        self.settings_action.triggered.connect(self._open_settings)
        bar.addAction(self.settings_action)
        self.quit_action = QAction("Quit", self)
        self.quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        self.quit_action.triggered.connect(lambda: app.spawn(app.request_quit("ask")))
        self.addAction(self.quit_action)

        # --- status bar ----------------------------------------------------------------------
        self.connection_icon = QLabel()
        self.connection_label = QLabel()
        self.summary_label = QLabel()
        status = self.statusBar()
        status.addWidget(self.connection_icon)
        status.addWidget(self.connection_label, 1)
        status.addPermanentWidget(self.summary_label)
        self._set_connection("connecting", "")
        app.connection_changed.connect(self._set_connection)

        # --- wiring -------------------------------------------------------------------------
        console = lambda: app.console  # noqa: E731  (resolved at call time: set on connect)
        self.jobs.cancel_requested.connect(lambda ids: app.spawn(self._act(console().cancel(ids))))
        self.jobs.retry_requested.connect(lambda ids: app.spawn(self._act(console().retry(ids))))
        self.jobs.priority_requested.connect(
            lambda ids, p: app.spawn(self._act(console().set_priority(ids, p)))
        )
        self.jobs.move_to_top_requested.connect(
            lambda ids: app.spawn(self._act(console().move_to_top(ids)))
        )
        self.jobs.details_requested.connect(lambda job_id: app.spawn(self.show_detail(job_id)))
        self.jobs.selection_changed.connect(self._on_selection)
        self.jobs.command_requested.connect(lambda job_id: app.spawn(self._copy_command(job_id)))
        self.nodes.action_requested.connect(
            lambda ident, action: app.spawn(self._node_action(ident, action))
        )
        self.graphs.window_changed.connect(lambda s: app.spawn(self.load_history(s)))
        self._restore_state()

    # ------------------------------------------------------------------ data in

    def load_snapshot(self, snapshot: Any) -> None:
        self.jobs.model.reset(snapshot.jobs)
        self._update_summary()

    def apply_events(self, events: Iterable[Any]) -> None:
        changed_detail = False
        for event in events:
            if isinstance(event, JobChanged):
                self.jobs.model.apply(event.job)
                changed_detail |= event.job.id == self._detail_job
            elif isinstance(event, JobProgress):
                self.jobs.model.apply_progress(event)
        if changed_detail and self._detail_job is not None:
            self.app.spawn(self.show_detail(self._detail_job))

    def set_nodes(self, rows: list[dict], counts: dict[str, int]) -> None:
        self.nodes.set_nodes(rows)
        online = sum(1 for r in rows if r["state"] in ("online", "draining"))
        running = counts.get("running", 0)
        fps = sum(r.get("fps") or 0 for r in rows)
        quarantined = sum(1 for r in rows if r["state"] == "quarantined")
        held = f" ({quarantined} quarantined)" if quarantined else ""
        self.summary_label.setText(
            f"{online} node(s) online{held} · {running} running"
            f" · {counts.get('queued', 0)} queued · {fps:.0f} fps"
        )

    def set_local_node(self, identifier: str) -> None:
        self.nodes.set_local_identifier(identifier)
        self.app.spawn(self.load_history(self.graphs.window_s))

    def set_accepting(self, accepting: bool) -> None:
        if self.accept_action.isChecked() != accepting:
            self.accept_action.blockSignals(True)
            self.accept_action.setChecked(accepting)
            self.accept_action.blockSignals(False)

    async def load_history(self, seconds: float) -> None:
        history = await self.app.history(seconds)
        if history is not None:
            self.graphs.set_history(history)

    async def show_detail(self, job_id: int) -> None:
        if self.app.console is None:
            return
        detail = await self.app.call(self.app.console.job_detail(job_id))
        if detail is None:
            self.detail.clear()
            self._detail_job = None
            return
        self._detail_job = job_id
        self.detail.show_job(detail.job, detail.attempts, detail.events)

    def _on_selection(self, ids: list[int]) -> None:
        if len(ids) == 1 and ids[0] != self._detail_job:
            self.app.spawn(self.show_detail(ids[0]))

    async def _act(self, coro) -> None:
        found = await self.app.call(coro)
        if isinstance(found, dict) and not found:
            self.show_message("Nothing changed: those jobs no longer exist")

    async def _copy_command(self, job_id: int) -> None:
        if self.app.console is None:
            return
        argv = await self.app.call(self.app.console.last_argv(job_id))
        if not argv:
            self.show_message(f"Job {job_id} has not run yet: no command to copy")
            return
        self.jobs.copy_command_text(shlex.join(argv))
        self.show_message(f"Copied the FFmpeg command of job {job_id}")

    async def _node_action(self, identifier: str, action: str) -> None:
        if self.app.console is None:
            return
        await self.app.call(self.app.console.node_action(identifier, action))
        await self.app.refresh_nodes()

    def _update_summary(self) -> None:
        counts = self.jobs.model.state_counts()
        self.summary_label.setText(
            f"{counts.get(JobState.RUNNING, 0)} running · {counts.get(JobState.QUEUED, 0)} queued"
        )

    # ------------------------------------------------------------------ files in

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            # Copy, never move: a "move" drop from a file manager could delete the source.
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dragMoveEvent(self, event: Any) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [u.toLocalFile().rstrip("\0") for u in event.mimeData().urls() if u.isLocalFile()]
        if not paths:
            event.ignore()
            return
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        # Not inside the drop handler: the source application waits until it returns.
        QTimer.singleShot(0, lambda: self.open_drop_dialog(paths))

    def _choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add files to the queue")
        if files:
            self.open_drop_dialog(files)

    def open_drop_dialog(self, paths: list[str]) -> DropDialog | None:
        presets = self.app.presets()
        state = self.app.ui_state
        log.info("queue dialog opened for %d dropped item(s)", len(paths))
        dialog = DropDialog(
            paths,
            presets,
            last_preset=state.value("drop/preset", None) or DEFAULT_PRESET,
            last_output_dir=state.value("drop/output_dir", None) or None,
            parent=self,
        )
        dialog.accepted.connect(lambda: self._queue_dropped(dialog))
        dialog.finished.connect(dialog.deleteLater)
        self.last_drop_dialog = dialog
        dialog.open()
        return dialog

    def _queue_dropped(self, dialog: DropDialog) -> None:
        choice = dialog.result()
        state = self.app.ui_state
        state.setValue("drop/preset", choice.preset)
        state.setValue("drop/output_dir", str(choice.output_dir) if choice.output_dir else "")
        self.app.spawn(self._submit(choice))

    async def _submit(self, choice: Any) -> None:
        if self.app.console is None:
            self.show_error("Not connected to the database yet")
            return
        preset = self.app.presets()[choice.preset]
        ids = await self.app.call(
            self.app.console.submit(preset, choice.files, choice.output_dir, choice.priority)
        )
        self.show_message(f"Queued {len(ids)} job(s) with {choice.preset}")

    # ------------------------------------------------------------------ settings

    def _open_settings(self) -> None:
        self.app.open_settings(self)

    def _on_accept_toggled(self, on: bool) -> None:
        self.app.spawn(self.app.set_accepting(on))

    # ------------------------------------------------------------------ feedback

    def _set_connection(self, state: str, detail: str) -> None:
        icon_state, text = CONNECTION_LABELS.get(state, ("offline", state))
        self.connection_icon.setPixmap(state_icon(icon_state).pixmap(14, 14))
        if state == "offline" and detail:
            text = f"Offline: {detail}"
        elif state == "reconnecting" and detail:
            text = f"Reconnecting… ({detail})"
        self.connection_label.setText(text)
        self.connection_label.setToolTip(detail)

    def show_message(self, text: str, ms: int = 6000) -> None:
        self.statusBar().showMessage(text, ms)

    def show_error(self, text: str) -> None:
        self.show_message(f"Error: {text}", 15000)

    def bring_forward(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    # ------------------------------------------------------------------ state and closing

    def _restore_state(self) -> None:
        state = self.app.ui_state
        geometry = state.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        split = state.value("window/jobs_split")
        if isinstance(split, QByteArray):
            self.jobs_split.restoreState(split)
        header = state.value("window/jobs_header")
        if isinstance(header, QByteArray):
            self.jobs.table.horizontalHeader().restoreState(header)

    def save_state(self) -> None:
        state = self.app.ui_state
        state.setValue("window/geometry", self.saveGeometry())
        state.setValue("window/jobs_split", self.jobs_split.saveState())
        state.setValue("window/jobs_header", self.jobs.table.horizontalHeader().saveState())
        state.setValue("told_about_tray", self._told_about_tray)
        state.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.app.tray is not None and self.app.tray.isVisible() and not self.app.stopping:
            # The node keeps working: closing the window only hides it.
            event.ignore()
            self.hide()
            if not self._told_about_tray:
                self._told_about_tray = True
                self.app.tray.showMessage(
                    "ffdesk is still running",
                    "This computer keeps taking jobs. Use the tray icon to open ffdesk again "
                    "or to quit.",
                    self.app.tray.icon(),
                    8000,
                )
            return
        if not self.app.stopping:
            event.ignore()
            self.app.spawn(self.app.request_quit("ask"))
            return
        event.accept()

    def confirm(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text)
        return answer == QMessageBox.StandardButton.Yes

    def widget(self) -> QWidget:
        return self
