"""What to do with files dropped on the window: preset, output folder, priority.

Dropped folders are walked on a worker thread (a NAS share can hold 100 000 files); the
dialog shows the running count and only offers "Queue N jobs" once it knows N. The dialog
takes and returns plain values: the window remembers the last choices in QSettings and
queues the jobs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QLocale, QObject, Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ffdesk.core.media import expand, is_media_name
from ffdesk.ffmpeg.presets import Preset

PRIORITY_RANGE = (-1000, 1000)
_PREVIEW_LIMIT = 500  # files listed in the dialog; the count covers all of them
_PROGRESS_EVERY_S = 0.1  # at most ten progress updates a second cross to the UI thread


@dataclass(frozen=True)
class DropChoice:
    """What the user chose; ``output_dir`` None means "next to each input"."""

    preset: str
    output_dir: Path | None
    priority: int
    files: list[Path]


@dataclass(frozen=True)
class ScanResult:
    media: list[Path]
    skipped: int  # files looked at and left out (not media, hidden, partial downloads)
    missing: int  # dropped paths that no longer exist


def scan(
    paths: Sequence[Path],
    cancel: threading.Event | None = None,
    progress: Callable[[int], object] | None = None,
) -> ScanResult:
    """Media files in ``paths`` (folders recursively), in ``expand``'s order, plus how many
    other files were skipped. ``progress(n)`` is called now and then with the files seen so
    far; ``cancel`` stops the walk between two files."""
    cancel = cancel or threading.Event()
    media: dict[Path, None] = {}  # a file dropped on its own and inside a dropped folder: once
    skipped = missing = seen = 0
    last = time.monotonic()

    def tick() -> None:
        nonlocal last
        now = time.monotonic()
        if progress is not None and now - last >= _PROGRESS_EVERY_S:
            last = now
            progress(seen)

    for path in paths:
        if cancel.is_set():
            break
        if path.is_dir():
            # Count like expand() walks (hidden folders skipped, sorted), so "37 found" is
            # exactly what expand() would queue; expand() alone cannot say what it skipped.
            for root, dirs, files in os.walk(path):
                if cancel.is_set():
                    break
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    seen += 1
                    candidate = Path(root) / name
                    if candidate.is_file() and is_media_name(candidate):
                        media[candidate.absolute()] = None
                    else:
                        skipped += 1
                    tick()
        elif path.is_file():
            seen += 1
            # A file dropped by itself goes through expand() unchanged; a sidecar (.srt,
            # .xml) dragged along with clips is still not something to transcode.
            if is_media_name(path):
                for found in expand([path]):
                    media[found.absolute()] = None
            else:
                skipped += 1
            tick()
        else:
            missing += 1
    if progress is not None:
        progress(seen)
    return ScanResult(list(media), skipped, missing)


class _ScanRelay(QObject):
    """Carries results from the scan thread; signals emitted there are queued to the UI."""

    progress = Signal(int)
    finished = Signal(object)


class DropDialog(QDialog):
    """Choose preset, output folder and priority for dropped files and folders."""

    #: Emitted once the scan finished: (media files, other files skipped).
    scan_finished = Signal(int, int)

    def __init__(
        self,
        paths: Sequence[Path | str],
        presets: Mapping[str, Preset],
        *,
        last_preset: str | None = None,
        last_output_dir: Path | str | None = None,
        priority: int = 0,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Queue dropped files")
        self.setModal(True)
        self._paths = [Path(p) for p in paths]
        self._presets = dict(presets)
        self._scan: ScanResult | None = None
        self._cancel = threading.Event()
        self._locale = QLocale()

        # --- what was dropped ------------------------------------------------------------------
        self.heading = QLabel(self._heading_text())
        self.heading.setTextFormat(Qt.TextFormat.PlainText)
        font = self.heading.font()
        font.setBold(True)
        self.heading.setFont(font)
        self.heading.setToolTip("\n".join(str(p) for p in self._paths[:20]))
        self.status = QLabel("Scanning…")
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # busy indicator: the total is unknown until the end
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(10)
        self.file_list = QListWidget()
        self.file_list.setUniformItemSizes(True)
        self.file_list.setAlternatingRowColors(True)
        self.file_list.setMinimumHeight(110)
        self.file_list.setSelectionMode(QListWidget.SelectionMode.NoSelection)
        self.file_list.setFocusPolicy(Qt.FocusPolicy.NoFocus)

        # --- choices ----------------------------------------------------------------------------
        self.preset_combo = QComboBox()
        for name in sorted(self._presets, key=lambda n: (not self._presets[n].builtin, n)):
            preset = self._presets[name]
            self.preset_combo.addItem(name, name)
            self.preset_combo.setItemData(
                self.preset_combo.count() - 1, preset.description, Qt.ItemDataRole.ToolTipRole
            )
        index = self.preset_combo.findData(last_preset) if last_preset else -1
        self.preset_combo.setCurrentIndex(max(0, index))
        self.preset_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.description = QLabel()
        self.description.setWordWrap(True)
        _mute(self.description)
        self.example = QLabel()
        self.example.setTextFormat(Qt.TextFormat.PlainText)
        _mute(self.example)

        self.next_to_input = QRadioButton("Next to each input file")
        self.this_folder = QRadioButton("In this folder:")
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("Choose a folder every node can reach")
        self.folder_edit.setClearButtonEnabled(True)
        self.browse = QPushButton("Browse…")
        self._output_group = QButtonGroup(self)
        self._output_group.addButton(self.next_to_input)
        self._output_group.addButton(self.this_folder)
        if last_output_dir:
            self.folder_edit.setText(str(last_output_dir))
            self.this_folder.setChecked(True)
        else:
            self.next_to_input.setChecked(True)
        self.folder_error = QLabel()
        self.folder_error.setStyleSheet("color: #d93025;")
        self.folder_error.hide()

        self.priority_spin = QSpinBox()
        self.priority_spin.setRange(*PRIORITY_RANGE)
        self.priority_spin.setValue(max(PRIORITY_RANGE[0], min(PRIORITY_RANGE[1], priority)))
        self.priority_spin.setToolTip("Higher runs first; 0 is normal")
        priority_hint = QLabel("higher runs first")
        _mute(priority_hint)

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setEnabled(False)

        # --- layout -----------------------------------------------------------------------------
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        form.setVerticalSpacing(8)
        preset_box = QVBoxLayout()
        preset_box.setSpacing(2)
        preset_row = QHBoxLayout()
        preset_row.addWidget(self.preset_combo)
        preset_row.addStretch(1)
        preset_box.addLayout(preset_row)
        preset_box.addWidget(self.description)
        preset_box.addWidget(self.example)
        form.addRow(_top_label("Preset:"), preset_box)

        output_box = QVBoxLayout()
        output_box.setSpacing(4)
        output_box.addWidget(self.next_to_input)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.this_folder)
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(self.browse)
        output_box.addLayout(folder_row)
        output_box.addWidget(self.folder_error)
        form.addRow(_top_label("Output:"), output_box)

        priority_row = QHBoxLayout()
        priority_row.addWidget(self.priority_spin)
        priority_row.addWidget(priority_hint)
        priority_row.addStretch(1)
        form.addRow("Priority:", priority_row)

        layout = QVBoxLayout(self)
        layout.setSpacing(8)
        layout.addWidget(self.heading)
        layout.addWidget(self.status)
        layout.addWidget(self.progress)
        layout.addWidget(self.file_list, 1)
        layout.addSpacing(4)
        layout.addLayout(form)
        layout.addSpacing(4)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(560)
        self.description.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)

        # --- wiring -----------------------------------------------------------------------------
        self.preset_combo.currentIndexChanged.connect(self._on_preset_changed)
        self._output_group.buttonToggled.connect(self._on_output_toggled)
        self.folder_edit.textEdited.connect(self._on_folder_edited)
        self.browse.clicked.connect(self._on_browse_clicked)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self._on_preset_changed()
        self._on_output_toggled()
        self._update_ok()
        self._start_scan()

    # --- public -------------------------------------------------------------------------------

    def choice(self) -> DropChoice:
        folder = self.folder_edit.text().strip()
        output_dir = Path(folder).expanduser() if self.this_folder.isChecked() and folder else None
        return DropChoice(
            preset=str(self.preset_combo.currentData() or ""),
            output_dir=output_dir,
            priority=self.priority_spin.value(),
            files=list(self._scan.media) if self._scan else [],
        )

    def result(self) -> DropChoice:  # type: ignore[override]
        """The choice (QDialog.result()'s int is ``exec()``'s return value anyway)."""
        return self.choice()

    def is_scanning(self) -> bool:
        return self._scan is None

    def scan_result(self) -> ScanResult | None:
        return self._scan

    # --- QDialog ------------------------------------------------------------------------------

    def accept(self) -> None:
        if self._scan is None or not self._scan.media:
            return
        if self.this_folder.isChecked():
            folder = self.folder_edit.text().strip()
            error = None
            if not folder:
                error = "Choose the folder the outputs go to."
            elif not Path(folder).expanduser().is_absolute():
                error = "Use a full path: every node resolves it on its own."
            if error:
                self.folder_error.setText(error)
                self.folder_error.show()
                self.folder_edit.setFocus()
                return
        super().accept()

    def done(self, code: int) -> None:
        # Every way out (OK, Cancel, Esc, window close) ends up here: stop the walk now.
        self._cancel.set()
        super().done(code)

    # --- scan ---------------------------------------------------------------------------------

    def _start_scan(self) -> None:
        relay = _ScanRelay()
        relay.progress.connect(self._on_scan_progress)
        relay.finished.connect(self._on_scan_finished)
        self._relay = relay  # the thread emits on it; keep it alive as long as we are
        cancel = self._cancel
        paths = list(self._paths)

        def work() -> None:
            def progress(seen: int) -> None:
                if not cancel.is_set():
                    relay.progress.emit(seen)

            result = scan(paths, cancel, progress)
            if not cancel.is_set():
                relay.finished.emit(result)

        # A daemon thread: a cancelled walk stuck in a slow network folder must not keep the
        # app from quitting, and nothing it holds needs cleaning up.
        self._thread = threading.Thread(target=work, name="ffdesk-drop-scan", daemon=True)
        self._thread.start()

    def _on_scan_progress(self, seen: int) -> None:
        if self._scan is None:
            self.status.setText(f"Scanning… {self._locale.toString(seen)} files")

    def _on_scan_finished(self, result: ScanResult) -> None:
        self._scan = result
        self.progress.hide()
        n, skipped = len(result.media), result.skipped
        text = f"{self._count(n, 'media file')} found"
        if skipped:
            text += f", {self._count(skipped, 'other file')} skipped"
        if result.missing:
            text += f", {self._count(result.missing, 'dropped item')} no longer there"
        self.status.setText(text)
        self._fill_list(result.media)
        self._on_preset_changed()
        self._update_ok()
        self.scan_finished.emit(n, skipped)

    def _fill_list(self, files: Sequence[Path]) -> None:
        self.file_list.clear()
        base = self._common_base(files)
        for path in files[:_PREVIEW_LIMIT]:
            shown = str(path.relative_to(base)) if base else str(path)
            self.file_list.addItem(shown)
            item = self.file_list.item(self.file_list.count() - 1)
            item.setToolTip(str(path))
        if len(files) > _PREVIEW_LIMIT:
            more = self._locale.toString(len(files) - _PREVIEW_LIMIT)
            self.file_list.addItem(f"… and {more} more")
        if not files:
            self.file_list.addItem("No media files in what was dropped.")

    @staticmethod
    def _common_base(files: Sequence[Path]) -> Path | None:
        if not files:
            return None
        try:
            base = Path(os.path.commonpath([str(p.parent) for p in files]))
        except ValueError:  # different drives on Windows
            return None
        # Keep the dropped folder's own name in view ("Season 1/ep01.mkv").
        return base.parent if len(files) > 1 or base.parent != base else None

    # --- slots --------------------------------------------------------------------------------

    def _on_preset_changed(self, *_args: object) -> None:
        preset = self._presets.get(str(self.preset_combo.currentData() or ""))
        self.description.setText(preset.description if preset else "")
        self.description.setVisible(bool(preset and preset.description))
        example = ""
        if preset and self._scan and self._scan.media:
            first = self._scan.media[0]
            try:
                example = f"{first.name}  →  {preset.output_name(first)}"
            except Exception:  # a user preset that fails to render must not break the dialog
                example = ""
        self.example.setText(example)
        self.example.setVisible(bool(example))
        self._update_ok()

    def _on_output_toggled(self, *_args: object) -> None:
        on = self.this_folder.isChecked()
        self.folder_edit.setEnabled(on)
        self.browse.setEnabled(on)
        self.folder_error.hide()

    def _on_folder_edited(self, _text: str) -> None:
        self.folder_error.hide()

    def _on_browse_clicked(self) -> None:
        start = self.folder_edit.text().strip() or (
            str(self._scan.media[0].parent) if self._scan and self._scan.media else ""
        )
        folder = QFileDialog.getExistingDirectory(self, "Output folder", start)
        if folder:
            self.folder_edit.setText(folder)
            self.this_folder.setChecked(True)
            self.folder_error.hide()

    def _update_ok(self) -> None:
        n = len(self._scan.media) if self._scan else 0
        self.ok_button.setEnabled(n > 0 and self.preset_combo.currentIndex() >= 0)
        self.ok_button.setText(f"Queue {self._count(n, 'job')}" if n else "Queue")

    # --- text ---------------------------------------------------------------------------------

    def _heading_text(self) -> str:
        # No stat() here: this runs on the UI thread, and a dropped item on a stale network
        # mount can block for minutes. The scan thread finds out what each item is.
        if len(self._paths) == 1:
            p = self._paths[0]
            return f"“{p.name or p}”"
        return f"{self._count(len(self._paths), 'dropped item')}"

    def _count(self, n: int, noun: str) -> str:
        return f"{self._locale.toString(n)} {noun}{'' if n == 1 else 's'}"


def _mute(label: QLabel) -> None:
    """Secondary text in the palette's placeholder colour (follows light and dark themes)."""
    palette = label.palette()
    palette.setColor(
        QPalette.ColorRole.WindowText, palette.color(QPalette.ColorRole.PlaceholderText)
    )
    label.setPalette(palette)


def _top_label(text: str) -> QLabel:
    # Rows holding several lines: the label sits beside the first line, not the middle.
    label = QLabel(text)
    label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
    label.setContentsMargins(0, 5, 0, 0)
    return label


__all__ = ["DropChoice", "DropDialog", "ScanResult", "scan"]
