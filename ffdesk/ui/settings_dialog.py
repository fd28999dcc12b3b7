"""Preferences: database, this node, FFmpeg, and desktop behaviour.

The dialog edits plain values and hands them back from ``values()``; the window saves the
``Settings`` fields with ``write_settings_file``, applies ``autostart`` through
``ffdesk.system.autostart`` and keeps ``theme`` in QSettings. Sharing the built-in database
is an action, not a value: the dialog emits ``share_toggled`` and the window answers with
``set_join_url`` (or ``set_sharing(False, error)`` when it failed).

Database URLs carry passwords, so every URL is shown masked until the user asks to see it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QPalette
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ffdesk.core.secrets import mask_url

# Imported at module level, not lazily in the worker: an import on a worker thread goes
# through PySide6's import hook (shibokensupport/feature.py) while the GUI thread runs.
from ffdesk.ffmpeg.hwprobe import probe_encoders
from ffdesk.ffmpeg.locate import find_ffmpeg, identify

DEFAULT_SHARE_PORT = 5432  # same default as ``ffdesk db share``
THEMES: tuple[tuple[str, str], ...] = (
    ("system", "Follow the system"),
    ("light", "Light"),
    ("dark", "Dark"),
)
URL_SCHEMES = ("postgres://", "postgresql://")
MAX_SLOTS = 256
ERROR_COLOR = "#d93025"
# Encoders worth naming in the one-line test result; the tooltip lists every one.
_HEADLINE = ("libx264", "libx265", "libsvtav1", "aac", "libopus")


@dataclass(frozen=True)
class FfmpegTestResult:
    path: str
    version: str
    working: tuple[str, ...]
    hardware: tuple[str, ...]
    failed: dict[str, str]


def run_ffmpeg_test(path: str | None, cache_dir: Path | None = None) -> FfmpegTestResult:
    """Locate, identify and probe ffmpeg (blocking: call it off the UI thread)."""
    ffmpeg = find_ffmpeg(path or None)
    identity = identify(ffmpeg)
    report = probe_encoders(ffmpeg, identity=identity, cache_dir=cache_dir)
    return FfmpegTestResult(
        path=str(ffmpeg),
        version=identity.version,
        working=report.working,
        hardware=report.hardware,
        failed=dict(report.failed),
    )


def describe_test(result: FfmpegTestResult) -> str:
    """'ffmpeg 5.1.9 — working: libx264, libx265, aac … (hardware: none)'."""
    software = [n for n in result.working if n not in result.hardware]
    head = [n for n in _HEADLINE if n in software]
    more = len(software) - len(head)
    listed = ", ".join(head) + (f" … +{more}" if more > 0 else "")
    hardware = ", ".join(result.hardware) or "none"
    return f"ffmpeg {result.version} — working: {listed} (hardware: {hardware})"


class _TestRelay(QObject):
    """Carries the test result from its thread; emits there are queued to the UI thread."""

    succeeded = Signal(object)
    failed = Signal(str)


class SettingsDialog(QDialog):
    """Edit ffdesk's settings; ``values()`` returns them once ``exec()`` returned Accepted."""

    #: (share, port): the user ticked or unticked "Share this computer's database".
    share_toggled = Signal(bool, int)
    #: The FFmpeg test finished: (ok, message shown).
    ffmpeg_tested = Signal(bool, str)

    def __init__(
        self,
        values: Mapping[str, Any],
        *,
        sharing: bool = False,
        share_port: int | None = None,
        join_url: str | None = None,
        probe_cache_dir: Path | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("ffdesk Settings")
        self._probe_cache_dir = probe_cache_dir
        self._join_url: str | None = None
        self._test_relay: _TestRelay | None = None
        self._test_generation = 0  # a newer test makes an older, slower one's answer stale

        # --- database ---------------------------------------------------------------------------
        self.builtin_radio = QRadioButton("This computer's built-in database")
        self.server_radio = QRadioButton("Connect to a PostgreSQL server")
        self._db_group = QButtonGroup(self)
        self._db_group.addButton(self.builtin_radio)
        self._db_group.addButton(self.server_radio)

        self.share_check = QCheckBox("Share this computer's database with other machines")
        self.share_port = QSpinBox()
        self.share_port.setRange(1024, 65535)
        self.share_port.setValue(share_port or DEFAULT_SHARE_PORT)
        self.share_port.setToolTip("TCP port other machines connect to")
        self.share_port.setGroupSeparatorShown(False)
        self.join_edit = QLineEdit()
        self.join_edit.setReadOnly(True)
        self.join_edit.setPlaceholderText("Not shared")
        self.join_show = _show_button("Show the password in the join URL")
        self.join_copy = QPushButton("Copy")
        self.join_copy.setToolTip("Copy the join URL (with its password) to the clipboard")
        self.join_hint = QLabel("Paste this URL into ffdesk on the other machines.")
        _mute(self.join_hint)
        self.share_error = _error_label()

        self.url_edit = QLineEdit()
        self.url_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.url_edit.setPlaceholderText("postgresql://user:password@server:5432/ffdesk")
        self.url_edit.setClearButtonEnabled(True)
        self.url_show = _show_button("Show the URL, password included")
        self.url_preview = QLabel()  # the URL with its password masked, so the host is visible
        self.url_preview.setTextFormat(Qt.TextFormat.PlainText)
        _mute(self.url_preview)
        self.url_error = _error_label()

        # --- this node --------------------------------------------------------------------------
        self.identifier_edit = QLineEdit()
        self.identifier_edit.setPlaceholderText("e.g. render-01")
        self.identifier_error = _error_label()
        self.slots_spin = QSpinBox()
        self.slots_spin.setRange(1, MAX_SLOTS)
        self.slots_spin.setToolTip("How many jobs this computer runs at the same time")
        self.slots_error = _error_label()
        self.tags_edit = QLineEdit()
        self.tags_edit.setPlaceholderText("e.g. gpu, big-mem")
        self.tags_edit.setToolTip("Labels that jobs can ask for, separated by commas")
        self.tags_error = _error_label()

        # --- ffmpeg -----------------------------------------------------------------------------
        self.ffmpeg_edit = QLineEdit()
        self.ffmpeg_edit.setPlaceholderText("Automatic (bundled, or found on PATH)")
        self.ffmpeg_edit.setClearButtonEnabled(True)
        self.ffmpeg_browse = QPushButton("Browse…")
        self.ffmpeg_test = QPushButton("Test")
        self.ffmpeg_test.setToolTip("Run this ffmpeg and check which encoders really work")
        self.ffmpeg_result = _WrappingLabel()
        self.ffmpeg_result.setWordWrap(True)
        self.ffmpeg_result.setTextFormat(Qt.TextFormat.PlainText)
        self.ffmpeg_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.ffmpeg_result.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        # Expanding: QFormLayout (ExpandingFieldsGrow) keeps a Preferred label at its size
        # hint, and a word-wrapped label's hint is a narrow column of text.
        self.ffmpeg_result.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)
        # Room for two lines from the start: a result arriving later then never has to
        # re-lay out (and possibly clip) the whole dialog.
        self.ffmpeg_result.setMinimumHeight(2 * self.ffmpeg_result.fontMetrics().lineSpacing())
        self._show_ffmpeg_hint()

        # --- desktop ----------------------------------------------------------------------------
        self.autostart_check = QCheckBox("Start ffdesk when I log in")
        self.autostart_check.setToolTip("Starts minimised to the tray, ready to take jobs")
        self.theme_combo = QComboBox()
        for key, label in THEMES:
            self.theme_combo.addItem(label, key)

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )

        self._build_layout()
        self._load(values)
        self.set_sharing(sharing)
        self.set_join_url(join_url)

        self._db_group.buttonToggled.connect(self._on_database_kind_toggled)
        self.url_edit.textChanged.connect(self._on_url_changed)
        self.url_show.toggled.connect(self._on_url_show_toggled)
        self.join_show.toggled.connect(self._refresh_join_url)
        self.join_copy.clicked.connect(self._on_join_copy_clicked)
        self.share_check.toggled.connect(self._on_share_toggled)
        self.identifier_edit.textEdited.connect(lambda _t: self.identifier_error.hide())
        self.tags_edit.textEdited.connect(lambda _t: self.tags_error.hide())
        self.ffmpeg_browse.clicked.connect(self._on_ffmpeg_browse_clicked)
        self.ffmpeg_test.clicked.connect(self.test_ffmpeg)
        self.ffmpeg_edit.textEdited.connect(self._show_ffmpeg_hint)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self._on_database_kind_toggled()
        self._on_url_changed(self.url_edit.text())
        self.resize(self._initial_size())

    # --- layout -------------------------------------------------------------------------------

    def _build_layout(self) -> None:
        indent = 24  # sub-options sit under their radio button's text, as in native dialogs

        db_box = QGroupBox("Database")
        db = QGridLayout(db_box)
        db.setColumnMinimumWidth(0, indent)
        db.setColumnStretch(2, 1)
        db.setVerticalSpacing(6)
        row = 0
        db.addWidget(self.builtin_radio, row, 0, 1, 4)
        row += 1
        share_row = QHBoxLayout()
        share_row.addWidget(self.share_check)
        share_row.addSpacing(12)
        self._port_label = QLabel("Port:")
        share_row.addWidget(self._port_label)
        share_row.addWidget(self.share_port)
        share_row.addStretch(1)
        db.addLayout(share_row, row, 1, 1, 3)
        row += 1
        self._join_label = QLabel("Join URL:")
        db.addWidget(self._join_label, row, 1)
        join_row = QHBoxLayout()
        join_row.setSpacing(4)
        join_row.addWidget(self.join_edit, 1)
        join_row.addWidget(self.join_show)
        join_row.addWidget(self.join_copy)
        db.addLayout(join_row, row, 2, 1, 2)
        row += 1
        db.addWidget(self.join_hint, row, 2, 1, 2)
        row += 1
        db.addWidget(self.share_error, row, 2, 1, 2)
        row += 1
        db.addWidget(self.server_radio, row, 0, 1, 4)
        row += 1
        self._url_label = QLabel("URL:")
        db.addWidget(self._url_label, row, 1)
        url_row = QHBoxLayout()
        url_row.setSpacing(4)
        url_row.addWidget(self.url_edit, 1)
        url_row.addWidget(self.url_show)
        db.addLayout(url_row, row, 2, 1, 2)
        row += 1
        db.addWidget(self.url_preview, row, 2, 1, 2)
        row += 1
        db.addWidget(self.url_error, row, 2, 1, 2)

        node_box = QGroupBox("This computer as a node")
        node = _form(node_box)
        node.addRow("Node name:", _with_error(self.identifier_edit, self.identifier_error))
        slots_row = QHBoxLayout()
        slots_row.addWidget(self.slots_spin)
        slots_row.addSpacing(6)
        slots_hint = QLabel("jobs at the same time")
        _mute(slots_hint)
        slots_row.addWidget(slots_hint)
        slots_row.addStretch(1)
        node.addRow("Slots:", _with_error(slots_row, self.slots_error))
        node.addRow("Tags:", _with_error(self.tags_edit, self.tags_error))

        ffmpeg_box = QGroupBox("FFmpeg")
        ff = _form(ffmpeg_box)
        path_row = QHBoxLayout()
        path_row.setSpacing(4)
        path_row.addWidget(self.ffmpeg_edit, 1)
        path_row.addWidget(self.ffmpeg_browse)
        path_row.addWidget(self.ffmpeg_test)
        ff.addRow("Program:", path_row)
        ff.addRow("", self.ffmpeg_result)

        desktop_box = QGroupBox("Desktop")
        desk = _form(desktop_box)
        desk.addRow("", self.autostart_check)
        theme_row = QHBoxLayout()
        theme_row.addWidget(self.theme_combo)
        theme_row.addStretch(1)
        desk.addRow("Appearance:", theme_row)

        # Same label column width in every group, so the fields line up down the dialog.
        width = max(
            self.fontMetrics().horizontalAdvance(t)
            for t in ("Node name:", "Slots:", "Tags:", "Program:", "Appearance:")
        )
        for form in (node, ff, desk):
            for i in range(form.rowCount()):
                item = form.itemAt(i, QFormLayout.ItemRole.LabelRole)
                if item is not None and item.widget() is not None:
                    item.widget().setMinimumWidth(width)
        url_width = max(self._url_label.sizeHint().width(), self._join_label.sizeHint().width())
        db.setColumnMinimumWidth(1, url_width)

        layout = QVBoxLayout(self)
        layout.setSpacing(10)
        for box in (db_box, node_box, ffmpeg_box, desktop_box):
            layout.addWidget(box)
        layout.addStretch(1)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(600)

    def _load(self, values: Mapping[str, Any]) -> None:
        database = values.get("database")
        self.url_edit.setText(str(database or ""))
        (self.server_radio if database else self.builtin_radio).setChecked(True)
        self.identifier_edit.setText(str(values.get("identifier") or ""))
        self.slots_spin.setValue(int(values.get("slots") or 1))
        tags = values.get("tags") or ""
        if not isinstance(tags, str):  # a list/tuple from NodeRow-like callers
            tags = ",".join(str(t) for t in tags)
        self.tags_edit.setText(", ".join(_split_tags(tags)))
        self.ffmpeg_edit.setText(str(values.get("ffmpeg") or ""))
        self.autostart_check.setChecked(bool(values.get("autostart", False)))
        theme_index = self.theme_combo.findData(values.get("theme") or "system")
        self.theme_combo.setCurrentIndex(max(0, theme_index))

    # --- public -------------------------------------------------------------------------------

    def values(self) -> dict[str, Any]:
        """Setting name -> value; ``database``/``ffmpeg`` None mean built-in / automatic."""
        url = self.url_edit.text().strip()
        return {
            "database": url if self.server_radio.isChecked() and url else None,
            "identifier": self.identifier_edit.text().strip(),
            "slots": self.slots_spin.value(),
            "tags": ",".join(_split_tags(self.tags_edit.text())),
            "ffmpeg": self.ffmpeg_edit.text().strip() or None,
            "autostart": self.autostart_check.isChecked(),
            "theme": str(self.theme_combo.currentData()),
        }

    def validate(self) -> dict[str, str]:
        """Field name -> problem, shown next to the fields; empty when all is well."""
        errors: dict[str, str] = {}
        values = self.values()
        if self.server_radio.isChecked():
            url = self.url_edit.text().strip()
            if not url:
                errors["database"] = "Enter the server's URL, or use the built-in database."
            elif not url.lower().startswith(URL_SCHEMES):
                errors["database"] = "The URL must start with postgresql:// or postgres://"
        identifier = values["identifier"]
        if not identifier:
            errors["identifier"] = "Give this computer a name."
        elif any(ch.isspace() for ch in identifier):
            errors["identifier"] = "No spaces, please: use - or _ instead."
        if values["slots"] < 1:
            errors["slots"] = "At least one slot."
        bad_tags = [t for t in _split_tags(self.tags_edit.text()) if any(c.isspace() for c in t)]
        if bad_tags:
            errors["tags"] = f"Tags cannot contain spaces: {', '.join(bad_tags)}"
        return errors

    def set_join_url(self, url: str | None) -> None:
        """The URL other machines join with (None: not shared, or not yet)."""
        self._join_url = url or None
        self._refresh_join_url()

    def set_sharing(self, enabled: bool, error: str | None = None) -> None:
        """Reflect the real sharing state (e.g. after a failed share) without emitting."""
        blocked = self.share_check.blockSignals(True)
        self.share_check.setChecked(enabled)
        self.share_check.blockSignals(blocked)
        if error:
            self.share_error.setText(error)
            self.share_error.show()
        else:
            self.share_error.hide()
        if not enabled:
            self._join_url = None
        self._update_share_widgets()

    def test_ffmpeg(self) -> None:
        """Run the FFmpeg test on a worker thread; the result shows below the path."""
        self._test_generation += 1
        generation = self._test_generation
        relay = _TestRelay()
        relay.succeeded.connect(lambda r: self._on_test_succeeded(generation, r))
        relay.failed.connect(lambda m: self._on_test_failed(generation, m))
        self._test_relay = relay  # the thread emits on it: keep it alive
        path = self.ffmpeg_edit.text().strip() or None
        cache_dir = self._probe_cache_dir

        def work() -> None:
            try:
                result = run_ffmpeg_test(path, cache_dir)
            except Exception as exc:  # shown to the user; FfdeskError messages are made for it
                relay.failed.emit(str(exc) or exc.__class__.__name__)
            else:
                relay.succeeded.emit(result)

        self.ffmpeg_test.setEnabled(False)
        self.ffmpeg_result.setStyleSheet("")
        _mute(self.ffmpeg_result)
        self.ffmpeg_result.setText("Testing…")
        self.ffmpeg_result.setToolTip("")
        # Daemon: a hung ffmpeg (probe timeouts are 25 s) must not block quitting the app.
        threading.Thread(target=work, name="ffdesk-ffmpeg-test", daemon=True).start()

    # --- QDialog ------------------------------------------------------------------------------

    def accept(self) -> None:
        errors = self.validate()
        labels = {
            "database": self.url_error,
            "identifier": self.identifier_error,
            "slots": self.slots_error,
            "tags": self.tags_error,
        }
        for name, label in labels.items():
            label.setText(errors.get(name, ""))
            label.setVisible(name in errors)
        if errors:
            focus = {
                "database": self.url_edit,
                "identifier": self.identifier_edit,
                "slots": self.slots_spin,
                "tags": self.tags_edit,
            }
            focus[next(iter(errors))].setFocus()
            self._fit_height()
            QTimer.singleShot(0, self._fit_height)  # again once the labels' new size settled
            return
        super().accept()

    # --- slots --------------------------------------------------------------------------------

    def _on_database_kind_toggled(self, *_args: object) -> None:
        server = self.server_radio.isChecked()
        for widget in (self._url_label, self.url_edit, self.url_show, self.url_preview):
            widget.setEnabled(server)
        self.url_error.hide()
        self._update_share_widgets()

    def _on_url_changed(self, text: str) -> None:
        self.url_error.hide()
        masked = mask_url(text.strip())
        # The masked preview only helps while the field itself shows dots.
        hidden = self.url_edit.echoMode() == QLineEdit.EchoMode.Password
        self.url_preview.setText(masked if masked and hidden else "")
        self.url_preview.setVisible(bool(masked and hidden))

    def _on_url_show_toggled(self, shown: bool) -> None:
        self.url_edit.setEchoMode(
            QLineEdit.EchoMode.Normal if shown else QLineEdit.EchoMode.Password
        )
        self.url_show.setText("Hide" if shown else "Show")
        self._on_url_changed(self.url_edit.text())

    def _on_share_toggled(self, checked: bool) -> None:
        self.share_error.hide()
        if not checked:
            self._join_url = None
        self._update_share_widgets()
        self.share_toggled.emit(checked, self.share_port.value())

    def _on_join_copy_clicked(self) -> None:
        if self._join_url:
            QGuiApplication.clipboard().setText(self._join_url)

    def _on_ffmpeg_browse_clicked(self) -> None:
        start = self.ffmpeg_edit.text().strip()
        path, _filter = QFileDialog.getOpenFileName(self, "Choose the ffmpeg program", start)
        if path:
            self.ffmpeg_edit.setText(path)
            self._show_ffmpeg_hint()

    def _on_test_succeeded(self, generation: int, result: FfmpegTestResult) -> None:
        if generation != self._test_generation:
            return
        self.ffmpeg_test.setEnabled(True)
        self.ffmpeg_result.setPalette(self.palette())
        self.ffmpeg_result.setStyleSheet("")
        message = describe_test(result)
        self.ffmpeg_result.setText(message)
        tip = [result.path, "Working: " + ", ".join(result.working)]
        if result.failed:
            tip.append("Not usable here:")
            tip += [f"  {name}: {why}" for name, why in sorted(result.failed.items())]
        self.ffmpeg_result.setToolTip("\n".join(tip))
        QTimer.singleShot(0, self._fit_height)
        self.ffmpeg_tested.emit(True, message)

    def _on_test_failed(self, generation: int, message: str) -> None:
        if generation != self._test_generation:
            return
        self.ffmpeg_test.setEnabled(True)
        self.ffmpeg_result.setStyleSheet(f"color: {ERROR_COLOR};")
        self.ffmpeg_result.setText(message)
        self.ffmpeg_result.setToolTip("")
        QTimer.singleShot(0, self._fit_height)
        self.ffmpeg_tested.emit(False, message)

    # --- helpers ------------------------------------------------------------------------------

    def _show_ffmpeg_hint(self, *_args: object) -> None:
        # A new path makes the last result meaningless; say what the button does instead.
        self._test_generation += 1
        self.ffmpeg_test.setEnabled(True)
        self.ffmpeg_result.setStyleSheet("")
        _mute(self.ffmpeg_result)
        self.ffmpeg_result.setToolTip("")
        self.ffmpeg_result.setText(
            "Test runs this ffmpeg and lists the encoders that really work on this computer."
        )

    def _fit_height(self) -> None:
        # A wrapped result line or an error message adds height; grow rather than clip it.
        self.layout().activate()
        needed = self.layout().totalHeightForWidth(self.width())
        if needed > self.height():
            self.resize(self.width(), needed)

    def _initial_size(self) -> QSize:
        # A word-wrapped label's size hint is a narrow, tall block of text; sized from it the
        # dialog opens with empty space. Ask the layout for the height at the real width.
        width = max(self.minimumWidth(), self.layout().sizeHint().width())
        return QSize(width, max(self.layout().totalHeightForWidth(width), 0))

    def _update_share_widgets(self) -> None:
        builtin = self.builtin_radio.isChecked()
        shared = self.share_check.isChecked()
        self.share_check.setEnabled(builtin)
        # Changing the port of a running share would cut the other machines off: unshare first.
        self.share_port.setEnabled(builtin and not shared)
        self._port_label.setEnabled(builtin and not shared)
        for widget in (self._join_label, self.join_edit):
            widget.setEnabled(builtin and shared)
        self.join_hint.setEnabled(builtin)
        self._refresh_join_url()

    def _refresh_join_url(self, *_args: object) -> None:
        url = self._join_url if self.share_check.isChecked() else None
        if url is None:
            self.join_edit.clear()
            self.join_edit.setPlaceholderText(
                "Starting to share…" if self.share_check.isChecked() else "Not shared"
            )
        else:
            self.join_edit.setText(url if self.join_show.isChecked() else mask_url(url))
            self.join_edit.setCursorPosition(0)  # show the scheme and host, not the tail
        self.join_show.setText("Hide" if self.join_show.isChecked() else "Show")
        self.join_hint.setText(
            "Paste this URL into ffdesk on the other machines."
            if url is not None
            else "Other computers can then use this computer's database as their queue."
        )
        self.join_show.setEnabled(url is not None)
        self.join_copy.setEnabled(url is not None)


class _WrappingLabel(QLabel):
    """A word-wrapped label whose size hint is its height at a realistic width.

    QLabel's own hint for wrapped text is a narrow, tall block (it guesses a width), and
    form and box layouts size the dialog from that hint: the dialog then opens with empty
    space under the text, or clips it. The real width is known once laid out.
    """

    _GUESS_WIDTH = 440

    def __init__(self) -> None:
        super().__init__()
        self.setWordWrap(True)

    def sizeHint(self) -> QSize:
        width = self.width() if self.width() > 50 else self._GUESS_WIDTH
        height = max(self.heightForWidth(width), self.minimumHeight())
        return QSize(min(width, self._GUESS_WIDTH), height)

    def minimumSizeHint(self) -> QSize:
        return QSize(100, self.minimumHeight())


def _split_tags(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for tag in text.split(","):
        tag = tag.strip()
        if tag:
            seen[tag] = None
    return list(seen)


def _show_button(tip: str) -> QToolButton:
    button = QToolButton()
    button.setText("Show")
    button.setCheckable(True)
    button.setToolTip(tip)
    button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
    # Wide enough for "Hide" and "Show" alike, so the row does not jump when toggled.
    width = max(button.fontMetrics().horizontalAdvance(t) for t in ("Show", "Hide")) + 20
    button.setMinimumWidth(width)
    return button


def _error_label() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    label.setStyleSheet(f"color: {ERROR_COLOR};")
    label.hide()
    return label


def _mute(label: QLabel) -> None:
    """Secondary text in the palette's placeholder colour (follows light and dark themes)."""
    palette = label.palette()
    palette.setColor(
        QPalette.ColorRole.WindowText, palette.color(QPalette.ColorRole.PlaceholderText)
    )
    label.setPalette(palette)


def _form(parent: QWidget) -> QFormLayout:
    form = QFormLayout(parent)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
    form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    form.setVerticalSpacing(6)
    return form


def _with_error(field: QWidget | QHBoxLayout, below: QLabel) -> QVBoxLayout:
    box = QVBoxLayout()
    box.setSpacing(2)
    if isinstance(field, QWidget):
        box.addWidget(field)
    else:
        box.addLayout(field)
    box.addWidget(below)
    return box


__all__ = ["FfmpegTestResult", "SettingsDialog", "describe_test", "run_ffmpeg_test"]
