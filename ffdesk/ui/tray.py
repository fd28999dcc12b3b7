"""The system tray: this computer in or out of the cluster, counts, notifications.

The menu is rebuilt each time it opens (fresh counts; also the Unity/AppIndicator workaround
Vorta uses). Where no tray exists (GNOME without AppIndicator, offscreen tests) the app keeps
the window as the way to control it: :func:`tray_available` tells the app.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QSystemTrayIcon, QWidget

from ffdesk.ui.icons import tray_icon

TRAY_STATES = ("idle", "working", "paused", "error", "disconnected")


def tray_available() -> bool:
    return QSystemTrayIcon.isSystemTrayAvailable()


class TrayIcon(QSystemTrayIcon):
    #: "Accept jobs on this computer" switched on (True) or off
    accept_toggled = Signal(bool)
    #: "Finish current jobs, then pause"
    drain_requested = Signal()
    open_requested = Signal()
    quit_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = "disconnected"
        self.accepting = True
        self.counts = (0, 0, 0)
        self.detail = ""
        self.menu = QMenu()
        self.menu.aboutToShow.connect(self._rebuild)
        self._rebuild()
        self.setContextMenu(self.menu)
        self.activated.connect(self._on_activated)
        self.set_state("disconnected", "connecting…")

    def set_state(self, state: str, detail: str = "") -> None:
        if state not in TRAY_STATES:
            raise ValueError(state)
        if (state, detail) == (self.state, self.detail):
            return
        self.state, self.detail = state, detail
        self.setIcon(tray_icon(state))
        self.setToolTip(f"ffdesk — {state}" + (f": {detail}" if detail else ""))

    def set_accepting(self, accepting: bool) -> None:
        self.accepting = accepting

    def set_counts(self, queued: int, running: int, failed: int) -> None:
        self.counts = (queued, running, failed)

    def _rebuild(self) -> None:
        menu = self.menu
        menu.clear()
        status = menu.addAction(
            f"This computer: {self.state}" + (f" ({self.detail})" if self.detail else "")
        )
        status.setEnabled(False)
        queued, running, failed = self.counts
        counts = menu.addAction(f"{queued} queued · {running} running · {failed} failed")
        counts.setEnabled(False)
        menu.addSeparator()
        accept = QAction("Accept jobs on this computer", menu)
        accept.setCheckable(True)
        accept.setChecked(self.accepting)
        accept.toggled.connect(self.accept_toggled)
        menu.addAction(accept)
        drain = menu.addAction("Finish current jobs, then pause")
        drain.setEnabled(self.accepting)
        drain.triggered.connect(self.drain_requested)
        menu.addSeparator()
        menu.addAction("Open ffdesk").triggered.connect(self.open_requested)
        menu.addSeparator()
        menu.addAction("Quit ffdesk").triggered.connect(self.quit_requested)

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (
            QSystemTrayIcon.ActivationReason.Trigger,
            QSystemTrayIcon.ActivationReason.DoubleClick,
        ):
            self.open_requested.emit()
