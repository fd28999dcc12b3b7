"""Files the desktop hands over as QEvent.FileOpen (macOS Dock drop, "Open With")."""

from __future__ import annotations

from PySide6.QtGui import QFileOpenEvent
from PySide6.QtWidgets import QApplication

from ffdesk.ui.app import FileOpenFilter


def test_a_file_open_event_reaches_the_queue_dialog_path(qapp: QApplication, tmp_path) -> None:
    opened: list[list[str]] = []
    file_filter = FileOpenFilter(opened.append)
    qapp.installEventFilter(file_filter)
    try:
        clip = tmp_path / "dropped on the dock ü.mov"
        QApplication.sendEvent(qapp, QFileOpenEvent(str(clip)))
    finally:
        qapp.removeEventFilter(file_filter)
    assert opened == [[str(clip)]]
