"""Everything about one job: summary, input probe, attempts with their exact FFmpeg command,
audit trail (input and output fingerprints, process, retry time) and whole stderr (searchable),
and the job's event log.

The pane only displays what it is given (:meth:`JobDetailPane.show_job`); the window fetches
the attempts and events from the engine.
"""

from __future__ import annotations

import html
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
    retry_wait,
    run_seconds,
)
from ffdesk.ui.theme import (
    FAILURE_KIND_CAUSES,
    STATE_LABELS,
    failure_kind_color,
    failure_kind_help,
    state_color,
    state_icon,
)

FAILED_STATES = frozenset({JobState.FAILED, JobState.DEAD})
# States in which the job's failure class describes its last run (a running job's class was
# cleared by its claim; a queued one with a class waits for a retry).
KIND_STATES = frozenset({JobState.FAILED, JobState.DEAD, JobState.QUEUED})
HASH_SHOWN = 12  # hex digits of a 64-digit hash shown; the tooltip and a click give them all
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


def short_hash(value: str | None, digits: int = HASH_SHOWN) -> str:
    """The first ``digits`` hex digits and an ellipsis ("3fa2c9e1d07b…")."""
    if not value:
        return ""
    return value if len(value) <= digits + 1 else value[:digits] + "…"


def format_size(size: int | None) -> str:
    """Decimal units, as file managers show them: "812 B", "12.3 kB", "4.56 MB", "1.23 GB"."""
    if size is None:
        return ""
    if size < 1000:
        return f"{size} B"
    for unit, scale in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12)):
        value = size / scale
        if value < 1000 or unit == "TB":
            return f"{value:.3g} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{size} B"  # unreachable


def ffmpeg_version_token(version: str) -> str:
    """ "5.1.9-0+deb12u1" from "ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026 ..."."""
    text = version.strip().removeprefix("ffmpeg version ").strip()
    return text.split()[0] if text else version


def format_wait(seconds: float) -> str:
    """ "in 12 s", "in 3 min 05 s", "in 2 h 10 min" (a countdown, not a duration)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"in {s} s"
    if s < 3600:
        return f"in {s // 60} min {s % 60:02d} s"
    return f"in {s // 3600} h {s % 3600 // 60:02d} min"


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
    "Class",
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
    table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 8)
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


class HashLabel(QLabel):
    """A content hash shown short; its tooltip holds all of it and a click copies all of it
    (selecting the shown text would only copy the short form)."""

    #: The full hash that was put on the clipboard.
    copied = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._value = ""
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.LinksAccessibleByMouse
        )
        self.linkActivated.connect(self._on_link_activated)
        self.hide()

    def value(self) -> str:
        return self._value

    def set_hash(self, value: str | None, what: str) -> None:
        """Show ``value`` (hidden when empty); ``what`` names it in the tooltip."""
        self._value = value or ""
        if not value:
            self.clear()
            self.setToolTip("")
            self.hide()
            return
        shown = html.escape(short_hash(value))
        self.setText(f'<a href="copy" style="text-decoration:none">{shown}</a>')
        self.setToolTip(f"{what}:\n{value}\n(click to copy)")
        self.show()

    def copy(self) -> None:
        if self._value:
            QGuiApplication.clipboard().setText(self._value)
            self.copied.emit(self._value)

    def _on_link_activated(self, _link: str) -> None:
        self.copy()


def _selectable(parent: QWidget, *, wrap: bool = False) -> QLabel:
    label = QLabel(parent)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    label.setWordWrap(wrap)
    return label


def _row(parent: QWidget, *widgets: QWidget, stretch_last: bool = False) -> QWidget:
    row = QWidget(parent)
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(6)
    for widget in widgets:
        layout.addWidget(widget)
    if stretch_last:
        layout.setStretch(len(widgets) - 1, 1)
    else:
        layout.addStretch(1)
    return row


_INPUT_HASH = "Input fast hash (BLAKE2b-256 of the size and the first and last 8 MiB)"
_INPUT_FULL = "Input full-file hash (BLAKE2b-256)"
_OUTPUT_HASH = "Output fast hash (BLAKE2b-256 of the size and the first and last 8 MiB)"
_OUTPUT_FULL = "Output full-file hash (BLAKE2b-256)"


class AttemptAudit(QWidget):
    """What one run leaves behind besides its outcome: the input's size, modification time
    and hashes, the output's path, size, hashes and probe, FFmpeg's pid and version, and
    when a retry was allowed to start. Rows with nothing to say are hidden."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.input_text = _selectable(self)
        self.input_hash = HashLabel(self)
        self.input_full_label = QLabel("· full", self)
        self.input_full_hash = HashLabel(self)
        self.output_text = _selectable(self)
        self.output_hash = HashLabel(self)
        self.output_full_label = QLabel("· full", self)
        self.output_full_hash = HashLabel(self)
        self.probe_text = _selectable(self, wrap=True)
        self.run_text = _selectable(self)

        self.form = QFormLayout(self)
        self.form.setContentsMargins(2, 4, 2, 4)
        self.form.setVerticalSpacing(2)
        self.form.setHorizontalSpacing(8)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.rows: dict[str, QWidget] = {
            "Input": _row(
                self,
                self.input_text,
                self.input_hash,
                self.input_full_label,
                self.input_full_hash,
            ),
            "Output": _row(
                self,
                self.output_text,
                self.output_hash,
                self.output_full_label,
                self.output_full_hash,
            ),
            "Output probe": _row(self, self.probe_text, stretch_last=True),
            "Run": _row(self, self.run_text),
        }
        for name, row in self.rows.items():
            self.form.addRow(f"{name}:", row)
        self._attempt: Attempt | None = None

    def hash_labels(self) -> list[HashLabel]:
        return [self.input_hash, self.input_full_hash, self.output_hash, self.output_full_hash]

    def row_visible(self, name: str) -> bool:
        return self.form.isRowVisible(self.rows[name])

    def show_attempt(self, attempt: Attempt | None, now: float | None = None) -> None:
        self._attempt = attempt
        if attempt is None:
            self.hide()
            return
        a = attempt
        # --- input
        bits = []
        if a.input_size is not None:
            bits.append(format_size(a.input_size))
        if a.input_mtime is not None:
            bits.append(f"modified {local_time(a.input_mtime)}")
        if a.input_hash:
            bits.append("fast hash")
        self.input_text.setText(" · ".join(bits))
        self.input_text.setToolTip(f"{a.input_size:,} bytes" if a.input_size is not None else "")
        self.input_hash.set_hash(a.input_hash, _INPUT_HASH)
        self.input_full_hash.set_hash(a.input_full_hash, _INPUT_FULL)
        self.input_full_label.setVisible(bool(a.input_full_hash))
        self.form.setRowVisible(self.rows["Input"], bool(bits or a.input_full_hash))

        # --- output
        bits = []
        if a.output_path:
            bits.append(file_name(a.output_path))
        if a.output_size is not None:
            bits.append(format_size(a.output_size))
        if a.output_hash:
            bits.append("fast hash")
        self.output_text.setText(" · ".join(bits))
        tip = [a.output_path or ""]
        if a.output_size is not None:
            tip.append(f"{a.output_size:,} bytes")
        self.output_text.setToolTip("\n".join(t for t in tip if t))
        self.output_hash.set_hash(a.output_hash, _OUTPUT_HASH)
        self.output_full_hash.set_hash(a.output_full_hash, _OUTPUT_FULL)
        self.output_full_label.setVisible(bool(a.output_full_hash))
        self.form.setRowVisible(self.rows["Output"], bool(bits or a.output_full_hash))

        lines = probe_lines(a.output_probe)
        probe = lines[0] + (" — " + ", ".join(lines[1:]) if len(lines) > 1 else "") if lines else ""
        self.probe_text.setText(probe)
        self.probe_text.setToolTip("\n".join(lines))
        self.form.setRowVisible(self.rows["Output probe"], bool(probe))

        self.update_times(now)
        self.show()

    def update_times(self, now: float | None = None) -> None:
        """Refresh the "Run" row, whose retry countdown depends on the clock."""
        a = self._attempt
        if a is None:
            return
        now = time.time() if now is None else now
        bits = []
        if a.pid is not None:
            bits.append(f"pid {a.pid}")
        if a.ffmpeg_version:
            bits.append(f"FFmpeg {ffmpeg_version_token(a.ffmpeg_version)}")
        if a.retry_at is not None:
            bits.append(f"retry after {_retry_text(a, now)}")
        self.run_text.setText(" · ".join(bits))
        tip = [a.ffmpeg_version] if a.ffmpeg_version else []
        if a.ffmpeg_sha256:
            tip.append(f"ffmpeg binary SHA-256 {a.ffmpeg_sha256}")
        if a.ffmpeg_fingerprint:
            tip.append(f"build fingerprint {a.ffmpeg_fingerprint}")
        if a.retry_at is not None:
            tip.append(f"The job could run again from {local_time(a.retry_at)}")
        self.run_text.setToolTip("\n".join(tip))
        self.form.setRowVisible(self.rows["Run"], bool(bits))


def _retry_text(attempt: Attempt, now: float) -> str:
    retry_at = attempt.retry_at
    assert retry_at is not None
    ended = attempt.finished_at
    if ended is not None and retry_at.timestamp() - ended.timestamp() < 1.0:
        return "at once"  # an environment failure: straight to another node
    wait = retry_at.timestamp() - now
    when = local_time(retry_at)
    return f"{when} ({format_wait(wait)})" if wait >= 0.5 else when


class JobDetailPane(QWidget):
    """Details of one job. Call :meth:`show_job` again whenever the job changes."""

    #: The text that was put on the clipboard by the Copy button.
    command_copied = Signal(str)
    #: A full hash that was put on the clipboard from the audit box.
    hash_copied = Signal(str)

    #: Summary rows that are hidden while they have nothing to say.
    OPTIONAL_FIELDS = ("Failure class", "Next try", "Avoids nodes")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._job: Job | None = None
        self._attempts: list[Attempt] = []
        self.clock = time.time  # epoch seconds; tests replace it

        # --- header
        self.icon_label = QLabel(self)
        self.title_label = QLabel(self)
        self.title_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.title_label.font()
        font.setBold(True)
        self.title_label.setFont(font)
        self.state_label = QLabel(self)
        # The failure class as a small badge before the reason ("environment").
        self.kind_label = QLabel(self)
        self.kind_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.reason_label = QLabel(self)
        self.reason_label.setWordWrap(True)
        self.reason_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        header = QHBoxLayout()
        header.addWidget(self.icon_label)
        header.addWidget(self.title_label, 1)
        header.addWidget(self.state_label)
        reason_row = QHBoxLayout()
        reason_row.setSpacing(8)
        reason_row.addWidget(self.kind_label, 0, Qt.AlignmentFlag.AlignTop)
        reason_row.addWidget(self.reason_label, 1)

        # --- summary tab: form + probe
        self.fields: dict[str, QLabel] = {}
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for name in (
            "Preset",
            "Node",
            "Priority",
            "Attempt",
            "Failure class",
            "Next try",
            "Avoids nodes",
            "Output",
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
        self.summary_form = form
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

        # --- attempts tab: table, command, audit, stderr
        self.attempts_table = _small_table(ATTEMPT_HEADERS)
        self.attempts_table.itemSelectionChanged.connect(self._on_attempt_selected)
        for col, width in enumerate((32, 90, 100, 84, 92, 64, 240, 140, 140)):
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
        self.audit = AttemptAudit(self)
        for label in self.audit.hash_labels():
            label.copied.connect(self.hash_copied)
        self.stderr = SearchableLog(self)
        lower = QWidget(self)
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.setSpacing(4)
        lower_layout.addLayout(command_row)
        lower_layout.addWidget(self.audit)
        lower_layout.addWidget(self.stderr, 1)
        attempts = QSplitter(Qt.Orientation.Vertical, self)
        attempts.addWidget(self.attempts_table)
        attempts.addWidget(lower)
        attempts.setStretchFactor(0, 1)
        attempts.setStretchFactor(1, 3)
        attempts.setChildrenCollapsible(False)
        self.attempts_splitter = attempts

        # --- events tab
        self.events_table = _small_table(EVENT_HEADERS)

        self.tabs = QTabWidget(self)
        self.tabs.addTab(summary, "Summary")
        self.tabs.addTab(attempts, "Attempts")
        self.tabs.addTab(self.events_table, "Events")
        self.tabs.currentChanged.connect(lambda _index: self._fit_attempts_table())

        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addLayout(reason_row)
        layout.addWidget(self.tabs, 1)

        # Waiting and running jobs: keep their two durations (and a retry countdown) current.
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
        self.kind_label.hide()
        self.reason_label.hide()
        for label in self.fields.values():
            label.setText("")
        for name in self.OPTIONAL_FIELDS:
            self.summary_form.setRowVisible(self.fields[name], False)
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
        keep_id = self._selected_attempt_id() if same_job else None
        if self._attempts and keep_id == self._attempts[-1].id:
            keep_id = None  # the latest run was selected: follow to a newer one (a retry)
        self._job = job
        # Claim order: the attempt id is the claim token, drawn from one sequence. (``seq``
        # repeats: a run given back unspent, or a reprocessed job, starts at the same seq.)
        self._attempts = sorted(attempts, key=lambda a: a.id)
        self.setEnabled(True)

        written = job.written if job.written and job.written != job.output else None
        self.icon_label.setPixmap(state_icon(job.state, 20).pixmap(20, 20))
        self.title_label.setText(
            f"#{job.id}  {file_name(job.input)} → {file_name(written or job.output)}"
        )
        self.title_label.setToolTip(f"{job.input}\n→ {written or job.output}")
        self._update_state_label()
        kind = job.failure_kind if job.state in KIND_STATES else None
        if kind:
            color = failure_kind_color(kind).name()
            self.kind_label.setText(kind)
            self.kind_label.setToolTip(failure_kind_help(kind))
            self.kind_label.setStyleSheet(
                f"QLabel {{ color: white; background-color: {color}; border-radius: 4px;"
                " padding: 1px 6px; font-weight: bold; }"
            )
            self.kind_label.show()
        else:
            self.kind_label.hide()
        if job.reason:
            reason = job.reason
            if job.state in FAILED_STATES:
                self.reason_label.setStyleSheet("color: #e5533d;")
            elif job.state is JobState.QUEUED and kind:
                # The last run failed and the job waits for its retry: say what comes next.
                policy = _last_detail(events, "retry-scheduled", "policy")
                if policy:
                    reason += f" — {policy}"
                self.reason_label.setStyleSheet("color: #b7791f;")
            else:
                self.reason_label.setStyleSheet("")
            self.reason_label.setText(reason)
            self.reason_label.show()
        else:
            self.reason_label.hide()

        f = self.fields
        f["Preset"].setText(job.preset)
        f["Node"].setText(job.node or "")
        f["Priority"].setText(str(job.priority))
        f["Attempt"].setText(f"{job.attempt} / {job.max_attempts}")
        cause = FAILURE_KIND_CAUSES.get(kind or "", "")
        f["Failure class"].setText(f"{kind} — {cause}" if kind and cause else kind or "")
        f["Failure class"].setToolTip(failure_kind_help(kind))
        f["Avoids nodes"].setText(", ".join(job.avoid_nodes))
        f["Avoids nodes"].setToolTip(
            "This job will not be claimed by these nodes: its runs there failed on the "
            "node's environment"
            if job.avoid_nodes
            else ""
        )
        if written:
            f["Output"].setText(f"{written}  (asked for {file_name(job.output)})")
            f["Output"].setToolTip(
                f"Written: {written}\nRequested: {job.output}\n"
                "A file of that name existed, so a new name was picked (on_conflict)"
            )
        else:
            f["Output"].setText(job.written or job.output)
            f["Output"].setToolTip("")
        for name in ("Failure class", "Avoids nodes"):
            self.summary_form.setRowVisible(f[name], bool(f[name].text()))
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

        self._fill_attempts(keep_id)
        self._fill_events(events)
        if not same_job:
            self._fit_attempts_table()

    def command_text(self) -> str:
        return self.command_edit.toPlainText()

    def copy_command(self) -> None:
        text = self.command_text()
        if text:
            QGuiApplication.clipboard().setText(text)
            self.command_copied.emit(text)

    def selected_attempt(self) -> Attempt | None:
        attempt_id = self._selected_attempt_id()
        return next((a for a in self._attempts if a.id == attempt_id), None)

    # ------------------------------------------------------------------ internals

    def _update_state_label(self) -> None:
        job = self._job
        if job is None:
            return
        color = state_color(job.state).name()
        label = STATE_LABELS.get(job.state, str(job.state))
        wait = retry_wait(job, self.clock())
        if wait is not None:
            label += f" · retry {format_wait(wait)}"
        self.state_label.setText(f'<span style="color:{color}; font-weight:bold">{label}</span>')

    def _update_times(self) -> None:
        job = self._job
        if job is None:
            return
        now = self.clock()
        self.fields["Time in queue"].setText(format_duration(queue_seconds(job, now)))
        self.fields["Run time"].setText(format_duration(run_seconds(job, now)))
        wait = retry_wait(job, now)
        next_try = self.fields["Next try"]
        if wait is not None and job.not_before is not None:
            next_try.setText(f"{local_time(job.not_before)} ({format_wait(wait)})")
        else:
            next_try.setText("")
        self.summary_form.setRowVisible(next_try, bool(next_try.text()))
        self._update_state_label()
        self.audit.update_times(now)

    def _fit_attempts_table(self) -> None:
        """Give the attempts table room for its rows (up to five) when it has less; more
        room (dragged by the user) is kept. Does nothing until the splitter is laid out."""
        splitter, table = self.attempts_splitter, self.attempts_table
        sizes = splitter.sizes()
        total = sum(sizes)
        if not splitter.isVisible() or total <= 0:
            return
        rows = min(max(table.rowCount(), 2), 5)
        wanted = (
            table.horizontalHeader().height()
            + rows * table.verticalHeader().defaultSectionSize()
            + 2 * table.frameWidth()
            + 2
        )
        wanted = min(wanted, total // 2)  # the stderr keeps at least half
        if sizes[0] < wanted:
            splitter.setSizes([wanted, total - wanted])

    def _selected_attempt_id(self) -> int | None:
        rows = self.attempts_table.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.attempts_table.item(rows[0].row(), 0)
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def _fill_attempts(self, keep_id: int | None) -> None:
        table = self.attempts_table
        table.blockSignals(True)  # one selection change at the end, not one per row
        table.setRowCount(len(self._attempts))
        for row, a in enumerate(self._attempts):
            tip = f"Run {row + 1}: claim {a.id}, attempt {a.seq} of the job's budget"
            if not a.counted:
                tip += " (not counted: given back unspent)"
            number = _item(str(row + 1), tooltip=tip, right=True)
            number.setData(Qt.ItemDataRole.UserRole, a.id)
            kind = _item(a.kind or "", tooltip=failure_kind_help(a.kind) or None)
            if a.kind:
                kind.setForeground(failure_kind_color(a.kind))
            values = [
                number,
                _item(a.node, tooltip=f"session {a.node_session}"),
                _item(a.host or ""),
                _item(a.outcome or ("running" if a.finished_at is None else "")),
                kind,
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
        ids = [a.id for a in self._attempts]
        row = ids.index(keep_id) if keep_id in ids else len(ids) - 1  # default: latest
        table.selectRow(row)
        self._show_attempt(self._attempts[row])

    def _on_attempt_selected(self) -> None:
        self._show_attempt(self.selected_attempt())

    def _show_attempt(self, attempt: Attempt | None) -> None:
        self.audit.show_attempt(attempt, self.clock())
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
        for col, width in enumerate((150, 100, 110)):
            header.resizeSection(col, width)
        if events:
            table.scrollToBottom()  # the newest is the interesting one


def _last_detail(events: Sequence[dict[str, Any]], kind: str, key: str) -> str | None:
    """``detail[key]`` of the newest event of ``kind``."""
    for event in reversed(events):
        if event.get("kind") == kind:
            detail = event.get("detail")
            value = detail.get(key) if isinstance(detail, dict) else None
            return str(value) if value else None
    return None
