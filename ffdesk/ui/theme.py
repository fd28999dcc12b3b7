"""One place for the colours and icons that mean a state, so every view agrees.

Icons are drawn at run time (a filled circle with a darker ring) instead of shipped as files:
they follow the palette, stay sharp at any scale and need no resource compilation.
"""

from __future__ import annotations

from functools import cache

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPen, QPixmap

# Job states and node states share one palette: green works, blue runs, amber waits for a
# person, red failed, grey is out of play.
STATE_COLORS: dict[str, str] = {
    # jobs
    "queued": "#8a94a6",
    "running": "#2f80ed",
    "succeeded": "#27ae60",
    "failed": "#e5533d",
    "canceled": "#a0a4ab",
    "dead": "#9b2c2c",
    "retry": "#f2a93b",  # queued, waiting out the backoff after a failed run
    # nodes
    "online": "#27ae60",
    "stale": "#f2a93b",
    "offline": "#a0a4ab",
    "paused": "#f2c94c",
    "draining": "#56ccf2",
    "quarantined": "#e5533d",
    # the tray's view of this computer
    "idle": "#27ae60",
    "working": "#2f80ed",
    "error": "#e5533d",
    "disconnected": "#a0a4ab",
}

STATE_LABELS: dict[str, str] = {s: s.capitalize() for s in STATE_COLORS}

# Failure classes (ffdesk.ffmpeg.failure.FailureKind): what ffdesk does about a failure.
FAILURE_KIND_COLORS: dict[str, str] = {
    "transient": "#d08a1e",  # amber: it will pass, retried later
    "environment": "#c2571a",  # orange: this node's problem, retried on another node
    "input": "#c0392b",  # red: the file itself, fails for good
    "config": "#8e44ad",  # purple: the preset, fails for good
    "unknown": "#6b7280",
    "canceled": "#6b7280",
}
FAILURE_KIND_HELP: dict[str, str] = {
    "transient": "Transient: a passing problem (network, signal, memory); retried after a pause",
    "environment": (
        "Environment: this node cannot run it (disk, GPU, codec, permission); "
        "retried on another node, or here after a pause when there is none"
    ),
    "input": "Input: the file itself is missing or broken; not retried",
    "config": "Config: the preset's arguments are wrong; not retried",
    "unknown": "Unknown: not recognised; retried after a pause, like a transient one",
    "canceled": "Canceled: stopped on request",
}

# What each class blames, short enough for a form row (the help above says what is done).
FAILURE_KIND_CAUSES: dict[str, str] = {
    "transient": "a passing problem",
    "environment": "the node's setup (disk, GPU, codec, permissions)",
    "input": "the input file",
    "config": "the preset's arguments",
    "unknown": "not recognised",
    "canceled": "stopped on request",
}


def failure_kind_color(kind: str | None) -> QColor:
    return QColor(FAILURE_KIND_COLORS.get(kind or "", "#6b7280"))


def failure_kind_help(kind: str | None) -> str:
    if not kind:
        return ""
    return FAILURE_KIND_HELP.get(kind, kind.capitalize())


def state_color(state: str) -> QColor:
    return QColor(STATE_COLORS.get(state, "#8a94a6"))


@cache
def state_icon(state: str, size: int = 16) -> QIcon:
    """A coloured dot; cached per state and size (views ask for it on every paint)."""
    icon = QIcon()
    for scale in (1, 2):  # crisp on high-DPI screens too
        px = QPixmap(size * scale, size * scale)
        px.setDevicePixelRatio(scale)
        px.fill(Qt.GlobalColor.transparent)
        painter = QPainter(px)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        color = state_color(state)
        painter.setPen(QPen(color.darker(140), 1.2))
        painter.setBrush(color)
        margin = size * 0.2
        painter.drawEllipse(QRectF(margin, margin, size - 2 * margin, size - 2 * margin))
        painter.end()
        icon.addPixmap(px)
    return icon
