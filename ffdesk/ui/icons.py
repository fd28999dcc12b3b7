"""The app icon, and the tray icon with a dot that says what this computer is doing."""

from __future__ import annotations

from functools import cache

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QIcon, QPainter, QPen, QPixmap

from ffdesk.ffmpeg.resources import resource_path
from ffdesk.ui.theme import state_color


@cache
def app_icon() -> QIcon:
    return QIcon(str(resource_path("icons", "ffdesk.svg")))


@cache
def tray_icon(state: str) -> QIcon:
    """The app icon with a status dot in the corner (idle, working, paused, error, ...)."""
    icon = QIcon()
    for size in (16, 22, 24, 32, 48, 64):
        base = app_icon().pixmap(size, size)
        px = QPixmap(base.size())
        px.fill(Qt.GlobalColor.transparent)
        painter = QPainter(px)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if state in ("paused", "disconnected"):
            painter.setOpacity(0.55)  # not taking part: the whole icon fades
        painter.drawPixmap(0, 0, base)
        painter.setOpacity(1.0)
        dot = size * 0.46
        rect = QRectF(size - dot - 0.5, size - dot - 0.5, dot, dot)
        painter.setPen(QPen(Qt.GlobalColor.white, max(1.0, size / 16)))
        painter.setBrush(state_color(state))
        painter.drawEllipse(rect)
        painter.end()
        icon.addPixmap(px)
    return icon
