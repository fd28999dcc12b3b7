"""Everything about one job: summary, input probe, attempts with their exact FFmpeg command and
whole stderr (searchable), and the job's event log.

The pane only displays what it is given (:meth:`JobDetailPane.show_job`); the window fetches
the attempts and events from the engine.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QFontDatabase,
    QGuiApplication,
    QKeySequence,
    QShortcut,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ffdesk.core.model import Attempt, Job, JobState
from ffdesk.ui.jobs_model import (
    LIVE_STATES,
    file_name,
    format_duration,
    local_time,
    queue_seconds,
    run_seconds,
)
from ffdesk.ui.theme import STATE_LABELS, state_color, state_icon

FAILED_STATES = frozenset({JobState.FAILED, JobState.DEAD})
MAX_MATCHES = 10_000  # highlighting more would make every repaint of a huge log slow
_MATCH_BG = QColor("#fff3a0")
_CURRENT_BG = QColor("#ffb347")


def format_command(argv: Sequence[str], *, windows: bool | None = None) -> str:
    """``argv`` as one line a user can paste into a shell of this platform (display only:
    ffdesk itself never runs a shell). POSIX: ``shlex.join``; Windows: the C runtime's
    quoting rules (``subprocess.list2cmdline``)."""
    if windows if windows is not None else sys.platform == "win32":
        return subprocess.list2cmdline(list(argv))
    return shlex.join(argv)


def _monospace() -> Any:
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)


def _time(value: Any) -> str:
    if isinstance(value, datetime):
        return local_time(value)
    return "" if value is None else str(value)


def _span(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    return format_duration(end.timestamp() - start.timestamp())


def probe_lines(probe: dict[str, Any] | None) -> list[str]:
    """A short readable line for the container and for each stream of an input probe
    (:meth:`ffdesk.ffmpeg.probe.ProbeResult.to_dict`)."""
    if not probe:
        return []
    head = [",".join(str(probe.get("format_name") or "unknown format").split(",")[:2])]
    duration = probe.get("duration")
    if isinstance(duration, int | float):
        head.append(f"{format_duration(duration)} ({duration:.2f} s)")
    size = probe.get("size")
    if isinstance(size, int) and size > 0:
        head.append(f"{size / 1e6:,.1f} MB")
    bit_rate = probe.get("bit_rate")
    if isinstance(bit_rate, int) and bit_rate > 0:
        head.append(f"{bit_rate / 1000:,.0f} kb/s")
    lines = [" · ".join(head)]
    for i, stream in enumerate(probe.get("streams") or []):
        kind = stream.get("kind") or "stream"
        bits = [str(stream.get("codec") or "?")]
        if kind == "video":
            if stream.get("width") and stream.get("height"):
                bits.append(f"{stream['width']}×{stream['height']}")
            if stream.get("attached_pic"):
                bits.append("cover picture")
            elif stream.get("fps"):
                bits.append(f"{round(float(stream['fps']), 3):g} fps")
        elif kind == "audio":
            if stream.get("sample_rate"):
                bits.append(f"{int(stream['sample_rate']) / 1000:g} kHz")
            if stream.get("channels"):
                bits.append(f"{stream['channels']} ch")
        lines.append(f"#{stream.get('index', i)} {kind}: {' '.join(bits)}")
    return lines


def _detail_text(detail: Any) -> str:
    if isinstance(detail, dict):
        return ", ".join(f"{k}={v}" for k, v in detail.items() if v is not None)
    return "" if detail is None else str(detail)


def _item(text: str, *, tooltip: str | None = None, right: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if tooltip:
        item.setToolTip(tooltip)
    if right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


ATTEMPT_HEADERS = (
    "#",
    "Node",
    "Host",
    "Outcome",
    "Exit code",
    "Reason",
    "Started",
    "Finished",
    "Run time",
)
EVENT_HEADERS = ("At", "Node", "Kind", "Detail")


def _small_table(headers: Sequence[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(list(headers))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setAlternatingRowColors(True)
    table.setWordWrap(False)
    table.verticalHeader().hide()
    table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    table.horizontalHeader().setStretchLastSection(True)
    return table


# --------------------------------------------------------------------------- searchable log


class SearchableLog(QWidget):
    """A read-only monospace text with a find bar: every match highlighted, the current one
    selected, "3 / 17", Enter / F3 = next, Shift+Enter / Shift+F3 = previous."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = QPlainTextEdit(self)
        self.edit.setReadOnly(True)
        self.edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.edit.setFont(_monospace())
        self.edit.setUndoRedoEnabled(False)

        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Find in output")
        self.search.setClearButtonEnabled(True)
        self.prev_button = QToolButton(self)
        self.prev_button.setArrowType(Qt.ArrowType.UpArrow)
        self.prev_button.setToolTip("Previous match (Shift+Enter)")
        self.next_button = QToolButton(self)
        self.next_button.setArrowType(Qt.ArrowType.DownArrow)
        self.next_button.setToolTip("Next match (Enter)")
        self.count_label = QLabel(self)
        self.count_label.setMinimumWidth(70)

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(self.search, 1)
        bar.addWidget(self.prev_button)
        bar.addWidget(self.next_button)
        bar.addWidget(self.count_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.edit, 1)

        self._matches: list[QTextCursor] = []
        self._current = -1
        self._truncated = False
        self.search.textChanged.connect(self._on_search_text_changed)
        self.search.returnPressed.connect(self.find_next)
        self.next_button.clicked.connect(self.find_next)
        self.prev_button.clicked.connect(self.find_previous)
        for keys, slot, widget in (
            ("Shift+Return", self.find_previous, self.search),
            ("Shift+Enter", self.find_previous, self.search),
            ("F3", self.find_next, self),
            ("Shift+F3", self.find_previous, self),
        ):
            shortcut = QShortcut(QKeySequence(keys), widget)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)

    def set_text(self, text: str, placeholder: str = "") -> None:
        """Show ``text`` (the search is kept and re-run); keep the scroll position when the
        text did not change (the window re-shows a job on every change of it)."""
        self.edit.setPlaceholderText(placeholder)
        if text == self.edit.toPlainText():
            return
        self.edit.setPlainText(text)
        self._update_matches(move=False)

    def text(self) -> str:
        return self.edit.toPlainText()

    @property
    def match_count(self) -> int:
        return len(self._matches)

    @property
    def current_match(self) -> int:
        """0-based index of the selected match, -1 when none is selected."""
        return self._current

    def _on_search_text_changed(self, _text: str) -> None:
        self._update_matches(move=True)

    def _update_matches(self, *, move: bool) -> None:
        needle = self.search.text()
        self._matches = []
        self._current = -1
        self._truncated = False
        if needle:
            doc: QTextDocument = self.edit.document()
            cursor = doc.find(needle, 0)  # case-insensitive unless FindCaseSensitively
            while not cursor.isNull():
                if len(self._matches) >= MAX_MATCHES:
                    self._truncated = True
                    break
                self._matches.append(cursor)
                cursor = doc.find(needle, cursor)
        if self._matches and move:
            self._select(self._first_after_view())
        else:
            self._paint()

    def _first_after_view(self) -> int:
        # Start at the first match at or below the top of the view, as browsers do.
        top = self.edit.cursorForPosition(self.edit.viewport().rect().topLeft()).position()
        for i, cursor in enumerate(self._matches):
            if cursor.selectionStart() >= top:
                return i
        return 0

    def find_next(self) -> None:
        if self._matches:
            self._select((self._current + 1) % len(self._matches))

    def find_previous(self) -> None:
        if self._matches:
            self._select((self._current - 1) % len(self._matches))

    def _select(self, index: int) -> None:
        self._current = index
        self.edit.setTextCursor(self._matches[index])
        self.edit.ensureCursorVisible()
        self._paint()

    def _paint(self) -> None:
        selections = []
        for i, cursor in enumerate(self._matches):
            selection = QTextEdit.ExtraSelection()
            fmt = QTextCharFormat()
            fmt.setBackground(_CURRENT_BG if i == self._current else _MATCH_BG)
            fmt.setForeground(QColor("black"))  # readable on the light highlight in dark mode
            selection.format = fmt  # type: ignore[attr-defined]
            selection.cursor = cursor  # type: ignore[attr-defined]
            selections.append(selection)
        self.edit.setExtraSelections(selections)
        if not self.search.text():
            self.count_label.setText("")
        elif not self._matches:
            self.count_label.setText("No matches")
        else:
            total = f"{len(self._matches)}+" if self._truncated else str(len(self._matches))
            current = self._current + 1 if self._current >= 0 else 0
            self.count_label.setText(f"{current} / {total}")


# --------------------------------------------------------------------------- the pane


class JobDetailPane(QWidget):
    """Details of one job. Call :meth:`show_job` again whenever the job changes."""

    #: The text that was put on the clipboard by the Copy button.
    command_copied = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._job: Job | None = None
        self._attempts: list[Attempt] = []

        # --- header
        self.icon_label = QLabel(self)
        self.title_label = QLabel(self)
        self.title_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.title_label.font()
        font.setBold(True)
        self.title_label.setFont(font)
        self.state_label = QLabel(self)
        self.reason_label = QLabel(self)
        self.reason_label.setWordWrap(True)
        self.reason_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        header = QHBoxLayout()
        header.addWidget(self.icon_label)
        header.addWidget(self.title_label, 1)
        header.addWidget(self.state_label)

        # --- summary tab: form + probe
        self.fields: dict[str, QLabel] = {}
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for name in (
            "Preset",
            "Node",
            "Priority",
            "Attempt",
            "Submitted",
            "Claimed",
            "Started",
            "Finished",
            "Time in queue",
            "Run time",
        ):
            label = QLabel(self)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.fields[name] = label
            form.addRow(f"{name}:", label)
        self.probe_label = QLabel(self)
        self.probe_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.probe_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.probe_label.setWordWrap(True)
        probe_box = QVBoxLayout()
        probe_title = QLabel("<b>Input</b>", self)
        probe_box.addWidget(probe_title)
        probe_box.addWidget(self.probe_label, 1)
        summary = QWidget(self)
        summary_layout = QHBoxLayout(summary)
        summary_layout.addLayout(form, 1)
        summary_layout.addLayout(probe_box, 1)

        # --- attempts tab: table, command, stderr
        self.attempts_table = _small_table(ATTEMPT_HEADERS)
        self.attempts_table.itemSelectionChanged.connect(self._on_attempt_selected)
        for col, width in enumerate((36, 90, 100, 80, 64, 200, 140, 140)):
            self.attempts_table.horizontalHeader().resizeSection(col, width)
        self.command_edit = QPlainTextEdit(self)
        self.command_edit.setReadOnly(True)
        self.command_edit.setFont(_monospace())
        self.command_edit.setPlaceholderText("No FFmpeg command recorded")
        line = self.command_edit.fontMetrics().lineSpacing()
        self.command_edit.setFixedHeight(line * 3 + 12)
        self.copy_button = QPushButton("Copy", self)
        self.copy_button.setToolTip("Copy the FFmpeg command")
        self.copy_button.clicked.connect(self.copy_command)
        command_row = QHBoxLayout()
        command_row.setContentsMargins(0, 0, 0, 0)
        command_row.addWidget(self.command_edit, 1)
        command_row.addWidget(self.copy_button, 0, Qt.AlignmentFlag.AlignTop)
        self.stderr = SearchableLog(self)
        lower = QWidget(self)
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addLayout(command_row)
        lower_layout.addWidget(self.stderr, 1)
        attempts = QSplitter(Qt.Orientation.Vertical, self)
        attempts.addWidget(self.attempts_table)
        attempts.addWidget(lower)
        attempts.setStretchFactor(0, 1)
        attempts.setStretchFactor(1, 3)

        # --- events tab
        self.events_table = _small_table(EVENT_HEADERS)

        self.tabs = QTabWidget(self)
        self.tabs.addTab(summary, "Summary")
        self.tabs.addTab(attempts, "Attempts")
        self.tabs.addTab(self.events_table, "Events")

        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.reason_label)
        layout.addWidget(self.tabs, 1)

        # Waiting and running jobs: keep their two durations current.
        self._tick = QTimer(self)
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._update_times)
        self.clear()

    # ------------------------------------------------------------------ public

    @property
    def job(self) -> Job | None:
        return self._job

    def clear(self) -> None:
        self._job = None
        self._attempts = []
        self._tick.stop()
        self.icon_label.clear()
        self.title_label.setText("No job selected")
        self.title_label.setToolTip("")
        self.state_label.setText("")
        self.reason_label.hide()
        for label in self.fields.values():
            label.setText("")
        self.probe_label.setText("")
        self.attempts_table.setRowCount(0)
        self.events_table.setRowCount(0)
        self._show_attempt(None)
        self.setEnabled(False)

    def show_job(
        self,
        job: Job,
        attempts: Sequence[Attempt],
        events: Sequence[dict[str, Any]],
    ) -> None:
        """Show ``job``. Showing the same job again (it changed) keeps the selected attempt,
        the stderr search and its scroll position."""
        same_job = self._job is not None and self._job.id == job.id
        keep_seq = self._selected_seq() if same_job else None
        self._job = job
        self._attempts = sorted(attempts, key=lambda a: a.seq)
        self.setEnabled(True)

        self.icon_label.setPixmap(state_icon(job.state, 20).pixmap(20, 20))
        self.title_label.setText(f"#{job.id}  {file_name(job.input)} → {file_name(job.output)}")
        self.title_label.setToolTip(f"{job.input}\n→ {job.output}")
        color = state_color(job.state).name()
        label = STATE_LABELS.get(job.state, str(job.state))
        self.state_label.setText(f'<span style="color:{color}; font-weight:bold">{label}</span>')
        if job.reason:
            failed = job.state in FAILED_STATES
            self.reason_label.setStyleSheet("color: #e5533d;" if failed else "")
            self.reason_label.setText(job.reason)
            self.reason_label.show()
        else:
            self.reason_label.hide()

        f = self.fields
        f["Preset"].setText(job.preset)
        f["Node"].setText(job.node or "")
        f["Priority"].setText(str(job.priority))
        f["Attempt"].setText(f"{job.attempt} / {job.max_attempts}")
        f["Submitted"].setText(
            local_time(job.created_at) + (f" by {job.submitted_by}" if job.submitted_by else "")
        )
        f["Claimed"].setText(local_time(job.claimed_at))
        f["Started"].setText(local_time(job.started_at))
        f["Finished"].setText(local_time(job.finished_at))
        self._update_times()
        if job.state in LIVE_STATES:
            self._tick.start()
        else:
            self._tick.stop()

        probe = next((a.input_probe for a in reversed(self._attempts) if a.input_probe), None)
        lines = probe_lines(probe)
        if not lines:
            # A run that ended without a probe failed on the input itself (missing, empty,
            # not media): say so rather than suggest the probe is still to come.
            ended = [a for a in self._attempts if a.finished_at is not None]
            if ended and job.state not in LIVE_STATES:
                lines = [f"Could not be read: {ended[-1].reason or job.reason or 'unknown'}"]
            else:
                lines = ["Not probed yet"]
        self.probe_label.setText("\n".join(lines))

        self._fill_attempts(keep_seq)
        self._fill_events(events)

    def command_text(self) -> str:
        return self.command_edit.toPlainText()

    def copy_command(self) -> None:
        text = self.command_text()
        if text:
            QGuiApplication.clipboard().setText(text)
            self.command_copied.emit(text)

    # ------------------------------------------------------------------ internals

    def _update_times(self) -> None:
        job = self._job
        if job is None:
            return
        now = time.time()
        self.fields["Time in queue"].setText(format_duration(queue_seconds(job, now)))
        self.fields["Run time"].setText(format_duration(run_seconds(job, now)))

    def _selected_seq(self) -> int | None:
        rows = self.attempts_table.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.attempts_table.item(rows[0].row(), 0)
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def _fill_attempts(self, keep_seq: int | None) -> None:
        table = self.attempts_table
        table.blockSignals(True)  # one selection change at the end, not one per row
        table.setRowCount(len(self._attempts))
        for row, a in enumerate(self._attempts):
            seq = _item(str(a.seq), right=True)
            seq.setData(Qt.ItemDataRole.UserRole, a.seq)
            values = [
                seq,
                _item(a.node, tooltip=f"session {a.node_session}"),
                _item(a.host or ""),
                _item(a.outcome or ("running" if a.finished_at is None else "")),
                _item("" if a.exit_code is None else str(a.exit_code), right=True),
                _item(a.reason or "", tooltip=a.reason),
                _item(local_time(a.started_at or a.claimed_at)),
                _item(local_time(a.finished_at)),
                _item(_span(a.started_at, a.finished_at), right=True),
            ]
            for col, item in enumerate(values):
                table.setItem(row, col, item)
        table.blockSignals(False)
        if not self._attempts:
            self._show_attempt(None)
            return
        seqs = [a.seq for a in self._attempts]
        row = seqs.index(keep_seq) if keep_seq in seqs else len(seqs) - 1  # default: latest
        table.selectRow(row)
        self._show_attempt(self._attempts[row])

    def _on_attempt_selected(self) -> None:
        seq = self._selected_seq()
        attempt = next((a for a in self._attempts if a.seq == seq), None)
        self._show_attempt(attempt)

    def _show_attempt(self, attempt: Attempt | None) -> None:
        if attempt is None:
            self.command_edit.setPlainText("")
            self.copy_button.setEnabled(False)
            ran = self._job is not None and self._attempts
            placeholder = "Select an attempt" if ran else "This job has not run yet"
            self.stderr.set_text("", placeholder)
            return
        command = format_command(attempt.argv) if attempt.argv else ""
        if command != self.command_edit.toPlainText():
            self.command_edit.setPlainText(command)
        self.copy_button.setEnabled(bool(command))
        placeholder = "No output recorded"
        if attempt.finished_at is None:
            placeholder = "The output is stored when the attempt ends"
        self.stderr.set_text(attempt.stderr or "", placeholder)

    def _fill_events(self, events: Sequence[dict[str, Any]]) -> None:
        table = self.events_table
        table.setRowCount(len(events))
        for row, event in enumerate(events):
            detail = _detail_text(event.get("detail"))
            values = [
                _item(_time(event.get("at"))),
                _item(str(event.get("node") or "")),
                _item(str(event.get("kind") or "")),
                _item(detail, tooltip=detail),
            ]
            for col, item in enumerate(values):
                table.setItem(row, col, item)
        header = table.horizontalHeader()
        for col, width in enumerate((150, 100, 90)):
            header.resizeSection(col, width)
        if events:
            table.scrollToBottom()  # the newest is the interesting one
