"""The cluster's nodes: one row per machine, live heartbeat age, and pause/resume/drain.

The widgets take plain dict rows (what ``list_nodes`` returns: ``NodeRow`` fields plus the
computed ``state``, ``heartbeat_age``, ``running``, ``job_ids``, ``fps`` and, when known,
``cpu_percent`` / ``mem_percent``) and emit ``action_requested``; the main window owns the
database and does the work. Missing keys are shown as "—", never raised on, so an older or
newer engine can feed this view.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelection,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QRectF,
    QSize,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QAction, QColor, QFont, QFontMetrics, QGuiApplication, QPainter, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QSizePolicy,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from ffdesk.ui.theme import STATE_LABELS, state_color, state_icon

ModelIndex = QModelIndex | QPersistentModelIndex

#: Custom roles. SORT_ROLE gives native values (numbers, not "3 s ago") to the proxy;
#: SEGMENTS_ROLE gives the delegate styled pieces of text for the columns that mix styles.
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
SEGMENTS_ROLE = Qt.ItemDataRole.UserRole + 2
IDENTIFIER_ROLE = Qt.ItemDataRole.UserRole + 3
STATE_ROLE = Qt.ItemDataRole.UserRole + 4

# Which remote actions make sense in which (seen) state; mirrors ``REMOTE_ACTIONS`` in the db
# layer: pause -> paused, resume -> online, drain -> draining. A quarantined node (it took
# itself out after repeated environment failures) waits for a person: Resume is how that
# person brings it back once the cause is fixed (the same as ``ffdesk nodes resume NAME``).
# Stale and offline nodes get none: the node would not pick the request up.
ACTIONS: tuple[tuple[str, str, str, str], ...] = (
    # action, label, icon state, tooltip
    ("pause", "Pause", "paused", "Stop taking new jobs; running jobs are put back in the queue"),
    ("resume", "Resume", "online", "Take new jobs again"),
    ("drain", "Drain", "draining", "Finish running jobs, then take no more"),
)
_ALLOWED: dict[str, frozenset[str]] = {
    "online": frozenset({"pause", "drain"}),
    "draining": frozenset({"pause", "resume"}),
    "paused": frozenset({"resume"}),
    "quarantined": frozenset({"resume"}),
}

LOCAL_SUFFIX = " (this computer)"
_DASH = "—"
_MAX_ENCODERS_SHOWN = 6  # the rest go to the tooltip, the column stays readable
# States whose reason is shown in the State cell itself, not only in its tooltip: a person
# has to act on them.
_REASON_SHOWN = frozenset({"quarantined"})
_STATE_COLUMN_MAX = 300  # px the State column may grow to for a shown reason
_BANNER_LINES = 3  # quarantined nodes listed above the table; the rest are counted


def allowed_actions(state: str | None) -> frozenset[str]:
    """Actions a person may request for a node in ``state``."""
    return _ALLOWED.get(state or "", frozenset())


def format_age(seconds: float | None) -> str:
    """'just now', '3 s ago', '4 min ago', '2 h ago', '3 d ago'."""
    if seconds is None:
        return _DASH
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def format_bytes(n: float | None) -> str:
    if not n:
        return _DASH
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    return _DASH  # unreachable; keeps type checkers content


def short_ffmpeg_version(version: str | None) -> str:
    """'5.1.9' from '5.1.9-0+deb12u1' or 'ffmpeg version 5.1.9 ...'; git builds keep their
    first token ('N-112345-gdeadbeef' -> 'N-112345')."""
    if not version:
        return _DASH
    text = version.strip()
    if text.startswith("ffmpeg version "):
        text = text[len("ffmpeg version ") :]
    token = text.split()[0] if text.split() else text
    token = token.removeprefix("n")
    if token[:1].isdigit():
        return token.split("-")[0]
    return "-".join(token.split("-")[:2])


def _is_hardware(encoder: str) -> bool:
    # Same suffix rule as ffdesk.ffmpeg.hwprobe.family_of, without importing the probe module
    # (it pulls in subprocess machinery the view does not need).
    return encoder.endswith(_HW_SUFFIXES)


_HW_SUFFIXES = (
    "_nvenc",
    "_qsv",
    "_vaapi",
    "_videotoolbox",
    "_amf",
    "_vulkan",
    "_rkmpp",
    "_v4l2m2m",
    "_mf",
)


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass
class _Node:
    """One row as received, plus when it arrived (the heartbeat age keeps counting from it)."""

    data: dict[str, Any]
    received: float


class NodeTableModel(QAbstractTableModel):
    """Nodes keyed by identifier; ``set_nodes`` inserts, updates and removes rows in place."""

    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("node", "Node"),
        ("host", "Host"),
        ("state", "State"),
        ("heartbeat", "Heartbeat"),
        ("slots", "Slots"),
        ("jobs", "Jobs"),
        ("fps", "FPS"),
        ("load", "Load"),
        ("encoders", "Encoders"),
        ("ffmpeg", "FFmpeg"),
    )
    COL: ClassVar[dict[str, int]] = {key: i for i, (key, _title) in enumerate(COLUMNS)}

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        tick_ms: int = 1000,
    ) -> None:
        super().__init__(parent)
        self._clock = clock
        self._nodes: list[_Node] = []
        self._row_of: dict[str, int] = {}
        self._local: str | None = None
        # One timer for the whole table: only the heartbeat column changes between refreshes.
        self._ticker = QTimer(self)
        self._ticker.setInterval(tick_ms)
        self._ticker.timeout.connect(self.tick)

    # --- data in ------------------------------------------------------------------------------

    def set_nodes(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Show ``rows``: unknown identifiers are inserted, known ones updated in place (one
        ``dataChanged`` per contiguous run), vanished ones removed. Never a model reset, so
        the selection, scroll position and sort survive every refresh."""
        now = self._clock()
        incoming: dict[str, dict[str, Any]] = {}
        for row in rows:
            identifier = str(row.get("identifier") or "")
            if identifier:
                incoming[identifier] = dict(row)

        gone = sorted((self._row_of[i] for i in self._row_of if i not in incoming), reverse=True)
        for first, last in _runs_descending(gone):
            self.beginRemoveRows(QModelIndex(), first, last)
            del self._nodes[first : last + 1]
            # Before endRemoveRows: the view reacts to it (selection moves) and asks us.
            self._reindex()
            self.endRemoveRows()

        changed: list[int] = []
        for r, node in enumerate(self._nodes):
            new = incoming[node.data["identifier"]]
            # The heartbeat column repaints anyway (it ticks); other columns only on change.
            if _without_age(new) != _without_age(node.data):
                changed.append(r)
            node.data, node.received = new, now
        for first, last in _runs_ascending(changed):
            self.dataChanged.emit(
                self.index(first, 0), self.index(last, self.columnCount() - 1), _ROLES
            )

        added = [i for i in incoming if i not in self._row_of]
        if added:
            start = len(self._nodes)
            self.beginInsertRows(QModelIndex(), start, start + len(added) - 1)
            self._nodes.extend(_Node(incoming[i], now) for i in added)
            self._reindex()
            self.endInsertRows()

        self.tick()
        if self._nodes and not self._ticker.isActive():
            self._ticker.start()
        elif not self._nodes:
            self._ticker.stop()

    def set_local_identifier(self, identifier: str | None) -> None:
        """Mark the row of the node running in this app (it may arrive later)."""
        old, self._local = self._local, identifier
        for name in (old, identifier):
            r = self._row_of.get(name or "")
            if r is not None:
                index = self.index(r, self.COL["node"])
                self.dataChanged.emit(index, index, _ROLES)

    def tick(self) -> None:
        """Repaint the heartbeat column (its text depends on the clock)."""
        if self._nodes:
            col = self.COL["heartbeat"]
            self.dataChanged.emit(
                self.index(0, col),
                self.index(len(self._nodes) - 1, col),
                [Qt.ItemDataRole.DisplayRole, SORT_ROLE],
            )

    # --- lookups ------------------------------------------------------------------------------

    def identifiers(self) -> list[str]:
        return [node.data["identifier"] for node in self._nodes]

    def node(self, row: int) -> dict[str, Any]:
        return self._nodes[row].data

    def row_of(self, identifier: str) -> int | None:
        return self._row_of.get(identifier)

    def heartbeat_age(self, row: int) -> float | None:
        node = self._nodes[row]
        age = _number(node.data.get("heartbeat_age"))
        return None if age is None else age + (self._clock() - node.received)

    # --- QAbstractTableModel ------------------------------------------------------------------

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._nodes)

    def columnCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section][1]
        if role == Qt.ItemDataRole.ToolTipRole:
            return _HEADER_TIPS.get(self.COLUMNS[section][0])
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(_alignment(self.COLUMNS[section][0]))
        return None

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._nodes):
            return None
        row = self._nodes[index.row()].data
        key = self.COLUMNS[index.column()][0]
        state = str(row.get("state") or "")
        if role == IDENTIFIER_ROLE:
            return row["identifier"]
        if role == STATE_ROLE:
            return state
        if role == Qt.ItemDataRole.ForegroundRole:
            # An offline machine's facts are history: grey them so live rows stand out.
            if key == "state":
                return self._state_cell(index.row(), row, role)
            if state == "offline":
                return QGuiApplication.palette().color(
                    QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text
                )
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(_alignment(key))
        getter = _CELLS.get(key)
        if getter is None:
            return None
        return getter(self, index.row(), row, role)

    # --- cells --------------------------------------------------------------------------------

    def _node_cell(self, r: int, row: dict[str, Any], role: int) -> Any:
        identifier = row["identifier"]
        tags = [str(t) for t in row.get("tags") or () if str(t)]
        local = identifier == self._local
        if role == Qt.ItemDataRole.DisplayRole:
            text = identifier + (LOCAL_SUFFIX if local else "")
            return text + (f"  [{', '.join(tags)}]" if tags else "")
        if role == SEGMENTS_ROLE:
            segments = [(identifier, "bold")]
            if local:
                segments.append((LOCAL_SUFFIX, "muted"))
            segments += [(tag, "tag") for tag in tags]
            return segments
        if role == SORT_ROLE:
            return identifier.lower()
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [f"<b>{_html(identifier)}</b>" + (" — this computer" if local else "")]
            if tags:
                lines.append("Tags: " + _html(", ".join(tags)))
            if row.get("app_version"):
                lines.append(f"ffdesk {_html(row['app_version'])}")
            if row.get("pid"):
                lines.append(f"Process {row['pid']}")
            if row.get("state") == "quarantined" and row.get("state_reason"):
                lines.append(f"<b>Quarantined:</b> {_html(row['state_reason'])}")
            return "<br>".join(lines)
        return None

    def _host_cell(self, r: int, row: dict[str, Any], role: int) -> Any:
        host = str(row.get("host") or _DASH)
        os_name = _os_label(row.get("os"))
        if role in (Qt.ItemDataRole.DisplayRole, SORT_ROLE):
            return f"{host} · {os_name}" if os_name else host
        if role == Qt.ItemDataRole.ToolTipRole:
            parts = [host, os_name, row.get("arch"), row.get("cpu")]
            return "\n".join(str(p) for p in parts if p)
        return None

    def _state_cell(self, r: int, row: dict[str, Any], role: int) -> Any:
        state = str(row.get("state") or "")
        label = STATE_LABELS.get(state, state.capitalize() or _DASH)
        reason = str(row.get("state_reason") or "")
        shown = reason if state in _REASON_SHOWN else ""
        if role == SORT_ROLE:
            return label
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{label} · {shown}" if shown else label
        if role == SEGMENTS_ROLE:
            # The state in its colour (the ForegroundRole), the reason in plain muted text.
            return [(label, "bold"), (f" · {shown}", "note")] if shown else None
        if role == Qt.ItemDataRole.DecorationRole:
            return state_icon(state) if state else None
        if role == Qt.ItemDataRole.ForegroundRole:
            return state_color(state) if state in _REASON_SHOWN else None
        if role == Qt.ItemDataRole.ToolTipRole:
            recorded = row.get("recorded_state")
            tip = STATE_LABELS.get(state, state)
            if state in ("stale", "offline") and recorded and recorded != state:
                tip += f" (its last own word: {recorded})"
            tip = f"{tip}: {reason}" if reason else tip
            if state == "quarantined":
                tip += (
                    "\nThe node stopped taking jobs after repeated environment failures. "
                    "Fix the cause, then Resume it."
                )
            return tip
        return None

    def _heartbeat_cell(self, r: int, row: dict[str, Any], role: int) -> Any:
        age = self.heartbeat_age(r)
        if role == Qt.ItemDataRole.DisplayRole:
            return format_age(age)
        if role == SORT_ROLE:
            return age if age is not None else float("inf")
        if role == Qt.ItemDataRole.ToolTipRole:
            beat = _number(row.get("heartbeat_s"))
            lease = _number(row.get("lease_s"))
            if beat and lease:
                return (
                    f"Beats every {beat:g} s; stale after {2 * beat:g} s, "
                    f"offline after {lease:g} s without one"
                )
        return None

    def _slots_cell(self, r: int, row: dict[str, Any], role: int) -> Any:
        running = int(_number(row.get("running")) or 0)
        slots = _number(row.get("slots"))
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{running} / {int(slots)}" if slots is not None else str(running)
        if role == SORT_ROLE:
            return running / slots if slots else float(running)
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{running} running, {int(slots or 0)} slots"
        return None

    def _jobs_cell(self, r: int, row: dict[str, Any], role: int) -> Any:
        ids = [int(i) for i in row.get("job_ids") or () if i is not None]
        if role == Qt.ItemDataRole.DisplayRole:
            if not ids:
                return ""
            shown = ", ".join(f"#{i}" for i in ids[:4])
            return shown + (f" +{len(ids) - 4}" if len(ids) > 4 else "")
        if role == SORT_ROLE:
            return len(ids)
        if role == Qt.ItemDataRole.ToolTipRole and ids:
            return "Running: " + ", ".join(f"#{i}" for i in ids)
        return None

    def _fps_cell(self, r: int, row: dict[str, Any], role: int) -> Any:
        fps = _number(row.get("fps"))
        if role == Qt.ItemDataRole.DisplayRole:
            if fps is None:
                return ""
            return f"{fps:.0f}" if fps >= 100 else f"{fps:.1f}"
        if role == SORT_ROLE:
            return fps or 0.0
        if role == Qt.ItemDataRole.ToolTipRole and fps is not None:
            return "Frames per second, summed over this node's running jobs"
        return None

    def _load_cell(self, r: int, row: dict[str, Any], role: int) -> Any:
        cpu = _number(row.get("cpu_percent"))
        mem = _number(row.get("mem_percent"))
        cores = _number(row.get("cores"))
        ram = _number(row.get("ram_bytes"))
        if role == Qt.ItemDataRole.DisplayRole:
            if cpu is not None or mem is not None:
                parts = []
                if cpu is not None:
                    parts.append(f"CPU {cpu:.0f} %")
                if mem is not None:
                    parts.append(f"RAM {mem:.0f} %")
                return " · ".join(parts)
            # No live load reported (older engine): the machine's size is still worth seeing.
            parts = []
            if cores:
                parts.append(f"{int(cores)} cores")
            if ram:
                parts.append(format_bytes(ram))
            return " · ".join(parts) or _DASH
        if role == SORT_ROLE:
            return cpu if cpu is not None else -1.0
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [str(row["cpu"])] if row.get("cpu") else []
            if cores:
                lines.append(f"{int(cores)} cores")
            if ram:
                lines.append(f"{format_bytes(ram)} RAM")
            return "\n".join(lines) or None
        return None

    def _encoders_cell(self, r: int, row: dict[str, Any], role: int) -> Any:
        encoders = [str(e) for e in row.get("encoders") or ()]
        hardware = sorted(e for e in encoders if _is_hardware(e))
        software = [e for e in encoders if not _is_hardware(e)]
        # Hardware first: it is what tells one node from another in a mixed cluster.
        shown = (hardware + _rank_software(software))[:_MAX_ENCODERS_SHOWN]
        hidden = len(encoders) - len(shown)
        if role == Qt.ItemDataRole.DisplayRole:
            return ", ".join(shown) + (f" +{hidden}" if hidden > 0 else "")
        if role == SEGMENTS_ROLE:
            segments = [(n, "item-bold" if n in hardware else "item") for n in shown]
            return [*segments, (str(hidden), "more")] if hidden > 0 else segments
        if role == SORT_ROLE:
            return (len(hardware), len(encoders))
        if role == Qt.ItemDataRole.ToolTipRole and encoders:
            hw = ", ".join(hardware) or "none"
            return f"<b>Hardware:</b> {_html(hw)}<br><b>Software:</b> {_html(', '.join(software))}"
        return None

    def _ffmpeg_cell(self, r: int, row: dict[str, Any], role: int) -> Any:
        version = row.get("ffmpeg_version")
        if role in (Qt.ItemDataRole.DisplayRole, SORT_ROLE):
            return short_ffmpeg_version(version)
        if role == Qt.ItemDataRole.ToolTipRole and version:
            fp = row.get("ffmpeg_fingerprint")
            return f"{version}\nbuild fingerprint {fp}" if fp else str(version)
        return None

    def _reindex(self) -> None:
        self._row_of = {node.data["identifier"]: r for r, node in enumerate(self._nodes)}


_CELLS: dict[str, Callable[[NodeTableModel, int, dict[str, Any], int], Any]] = {
    "node": NodeTableModel._node_cell,
    "host": NodeTableModel._host_cell,
    "state": NodeTableModel._state_cell,
    "heartbeat": NodeTableModel._heartbeat_cell,
    "slots": NodeTableModel._slots_cell,
    "jobs": NodeTableModel._jobs_cell,
    "fps": NodeTableModel._fps_cell,
    "load": NodeTableModel._load_cell,
    "encoders": NodeTableModel._encoders_cell,
    "ffmpeg": NodeTableModel._ffmpeg_cell,
}

_HEADER_TIPS = {
    "heartbeat": "Time since the node last reported in",
    "slots": "Jobs running / jobs it runs at once",
    "load": "CPU and memory use (or the machine's size when the node does not report load)",
    "encoders": "Encoders that really work on the node; hardware ones in bold",
}

_ROLES = [
    Qt.ItemDataRole.DisplayRole,
    Qt.ItemDataRole.DecorationRole,
    Qt.ItemDataRole.ToolTipRole,
    Qt.ItemDataRole.ForegroundRole,
    SORT_ROLE,
    SEGMENTS_ROLE,
    STATE_ROLE,
]

# Encoders people look for first; the rest keep their (alphabetical) order after these.
_HEADLINE = ("libx264", "libx265", "libsvtav1", "libvpx-vp9", "libaom-av1", "prores_ks", "aac")


def _alignment(key: str) -> Qt.AlignmentFlag:
    # Numbers line up on their last digit, like in a spreadsheet.
    side = Qt.AlignmentFlag.AlignRight if key in _NUMERIC else Qt.AlignmentFlag.AlignLeft
    return side | Qt.AlignmentFlag.AlignVCenter


_NUMERIC = frozenset({"slots", "fps"})


def _rank_software(names: Sequence[str]) -> list[str]:
    head = [n for n in _HEADLINE if n in names]
    return head + [n for n in names if n not in head]


def _without_age(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("heartbeat_age", "heartbeat_at")}


def _os_label(value: Any) -> str:
    text = str(value or "")
    return {"linux": "Linux", "darwin": "macOS", "windows": "Windows", "win32": "Windows"}.get(
        text.lower(), text
    )


def _html(text: Any) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _runs_ascending(rows: Sequence[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for r in rows:
        if runs and r == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], r)
        else:
            runs.append((r, r))
    return runs


def _runs_descending(rows: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous (first, last) ranges of ``rows`` (given descending), last range first, so
    removing them one by one never shifts a range still to be removed."""
    runs: list[tuple[int, int]] = []
    for r in rows:
        if runs and r == runs[-1][0] - 1:
            runs[-1] = (r, runs[-1][1])
        else:
            runs.append((r, r))
    return runs


class _SegmentDelegate(QStyledItemDelegate):
    """Paints SEGMENTS_ROLE cells: bold names, muted notes, tag pills and lists.

    Segment kinds: "bold", "normal", "muted" (plain text, elided at the edge; drawn in the
    cell's ForegroundRole colour when it has one); "note" (muted text in the palette's colour,
    whatever the ForegroundRole); "tag" (a pill); "item" / "item-bold" (list entries joined
    by ", ") and "more" (text = how many entries the model left out). List entries are
    dropped whole when the column is narrow and counted into the trailing "+N", so a cut
    never leaves "libx2…," behind.
    """

    _GAP = 6
    _PILL_PAD = 10

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: ModelIndex) -> None:
        segments = index.data(SEGMENTS_ROLE)
        if not segments:
            super().paint(painter, option, index)
            return
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        widget = opt.widget
        style = widget.style() if widget is not None else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)
        rect = style.subElementRect(QStyle.SubElement.SE_ItemViewItemText, opt, widget)
        rect.adjust(3, 0, -3, 0)

        selected = bool(opt.state & QStyle.StateFlag.State_Selected)
        palette = opt.palette
        text_color = palette.color(
            QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        )
        note = QColor(text_color)
        note.setAlphaF(0.75)
        foreground = index.data(Qt.ItemDataRole.ForegroundRole)
        if isinstance(foreground, QColor) and not selected:
            text_color = foreground
        muted = QColor(text_color)
        muted.setAlphaF(0.65)

        plain, bold, small = self._fonts(opt.font)
        items = [(t, k) for t, k in segments if k in ("item", "item-bold")]
        more = sum(int(t) for t, k in segments if k == "more")
        others = [(t, k) for t, k in segments if k not in ("item", "item-bold", "more")]

        painter.save()
        painter.setClipRect(rect)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        align = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        x = rect.left()
        for text, kind in others:
            remaining = rect.right() - x
            if remaining <= 4:
                break
            if kind == "tag":
                metrics = QFontMetrics(small)
                x += self._GAP
                width = min(metrics.horizontalAdvance(text) + self._PILL_PAD, remaining)
                pill = QRectF(x, rect.center().y() - metrics.height() / 2 - 1, width, 0)
                pill.setHeight(metrics.height() + 2)
                tag_color = QColor(palette.color(QPalette.ColorRole.Highlight))
                tag_color.setAlphaF(0.35 if selected else 0.16)
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(tag_color)
                painter.drawRoundedRect(pill, pill.height() / 2, pill.height() / 2)
                painter.setFont(small)
                painter.setPen(text_color)
                # Elide only when really cut: elidedText's integer rounding turns a tag that
                # fits exactly ("gpu") into "g…".
                fits = metrics.horizontalAdvance(text) + self._PILL_PAD <= remaining
                shown = (
                    text
                    if fits
                    else metrics.elidedText(
                        text, Qt.TextElideMode.ElideRight, int(width - self._PILL_PAD)
                    )
                )
                painter.drawText(pill, int(Qt.AlignmentFlag.AlignCenter), shown)
                x += int(width)
                continue
            font = bold if kind == "bold" else plain
            metrics = QFontMetrics(font)
            painter.setFont(font)
            painter.setPen(muted if kind == "muted" else note if kind == "note" else text_color)
            shown = metrics.elidedText(text, Qt.TextElideMode.ElideRight, int(remaining))
            painter.drawText(rect.adjusted(x - rect.left(), 0, 0, 0), align, shown)
            x += metrics.horizontalAdvance(shown)

        if items:
            sep = ", "
            plain_metrics = QFontMetrics(plain)
            widths = [
                QFontMetrics(bold if k == "item-bold" else plain).horizontalAdvance(t)
                for t, k in items
            ]
            fitted = 0
            used = 0
            for i, width in enumerate(widths):
                extra = (plain_metrics.horizontalAdvance(sep) if i else 0) + width
                left_out = len(items) - i - 1 + more
                reserve = plain_metrics.horizontalAdvance(f"  +{left_out}") if left_out else 0
                if x + used + extra + reserve > rect.right() and i > 0:
                    break
                used += extra
                fitted = i + 1
            for i, (text, kind) in enumerate(items[:fitted]):
                if i:
                    painter.setFont(plain)
                    painter.setPen(text_color)
                    painter.drawText(rect.adjusted(x - rect.left(), 0, 0, 0), align, sep)
                    x += plain_metrics.horizontalAdvance(sep)
                font = bold if kind == "item-bold" else plain
                painter.setFont(font)
                painter.setPen(text_color)
                metrics = QFontMetrics(font)
                shown = metrics.elidedText(text, Qt.TextElideMode.ElideRight, rect.right() - x)
                painter.drawText(rect.adjusted(x - rect.left(), 0, 0, 0), align, shown)
                x += metrics.horizontalAdvance(shown)
            left_out = len(items) - fitted + more
            if left_out:
                painter.setFont(plain)
                painter.setPen(muted)
                painter.drawText(rect.adjusted(x - rect.left(), 0, 0, 0), align, f"  +{left_out}")
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: ModelIndex) -> QSize:
        hint = super().sizeHint(option, index)
        segments = index.data(SEGMENTS_ROLE)
        if not segments:
            return hint
        plain, bold, small = self._fonts(option.font)
        width = 12
        first_item = True
        for text, kind in segments:
            if kind == "tag":
                width += self._GAP + self._PILL_PAD + QFontMetrics(small).horizontalAdvance(text)
            elif kind == "more":
                width += QFontMetrics(plain).horizontalAdvance(f"  +{text}")
            else:
                font = bold if kind in ("bold", "item-bold") else plain
                if kind.startswith("item"):
                    text = text if first_item else ", " + text
                    first_item = False
                width += QFontMetrics(font).horizontalAdvance(text)
        return QSize(width, hint.height())

    @staticmethod
    def _fonts(base: QFont) -> tuple[QFont, QFont, QFont]:
        bold = QFont(base)
        bold.setBold(True)
        small = QFont(base)
        small.setPointSizeF(max(6.0, base.pointSizeF() * 0.85))
        return QFont(base), bold, small


class _NumberDelegate(QStyledItemDelegate):
    """Right-aligned numbers with room before the next (left-aligned) column's text."""

    PAD = 10

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: ModelIndex) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        widget = opt.widget
        style = widget.style() if widget is not None else QApplication.style()
        # Background and selection across the whole cell, text inset from its right edge.
        text, opt.text = opt.text, ""
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)
        opt.text = text
        opt.rect = opt.rect.adjusted(0, 0, -self.PAD, 0)
        opt.backgroundBrush = QColor(Qt.GlobalColor.transparent)
        opt.state &= ~QStyle.StateFlag.State_HasFocus
        opt.features &= ~QStyleOptionViewItem.ViewItemFeature.Alternate
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)

    def sizeHint(self, option: QStyleOptionViewItem, index: ModelIndex) -> QSize:
        hint = super().sizeHint(option, index)
        return QSize(hint.width() + self.PAD, hint.height())


class _SortProxy(QSortFilterProxyModel):
    def lessThan(self, left: ModelIndex, right: ModelIndex) -> bool:
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        try:
            return bool(a < b)
        except TypeError:
            return str(a) < str(b)


class NodesView(QWidget):
    """Table of nodes with Pause / Resume / Drain for the selected one."""

    #: (identifier, action) with action one of "pause", "resume", "drain".
    action_requested = Signal(str, str)

    def __init__(self, parent: QWidget | None = None, *, model: NodeTableModel | None = None):
        super().__init__(parent)
        self.model = model or NodeTableModel(self)
        self.proxy = _SortProxy(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)

        self.table = QTableView(self)
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(NodeTableModel.COL["node"], Qt.SortOrder.AscendingOrder)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.verticalHeader().hide()
        # Fixed row height: no per-row size computation when rows tick every second.
        vh = self.table.verticalHeader()
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(max(26, self.fontMetrics().height() + 12))
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        header.setStretchLastSection(False)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        header.setSectionResizeMode(NodeTableModel.COL["encoders"], QHeaderView.ResizeMode.Stretch)
        self._delegate = _SegmentDelegate(self.table)
        for key in ("node", "state", "encoders"):
            self.table.setItemDelegateForColumn(NodeTableModel.COL[key], self._delegate)
        self._number_delegate = _NumberDelegate(self.table)
        for key in _NUMERIC:
            self.table.setItemDelegateForColumn(NodeTableModel.COL[key], self._number_delegate)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._on_table_context_menu)

        self.actions_by_name: dict[str, QAction] = {}
        self.toolbar = QToolBar(self)
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toolbar.setIconSize(QSize(14, 14))
        for name, label, icon_state, tip in ACTIONS:
            action = QAction(state_icon(icon_state), label, self)
            action.setStatusTip(tip)
            action.setEnabled(False)
            action.triggered.connect(lambda _checked=False, n=name: self._request(n))
            self.toolbar.addAction(action)
            self.actions_by_name[name] = action
        spacer = QWidget(self.toolbar)
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.toolbar.addWidget(spacer)
        self.summary = QLabel(self.toolbar)
        self.summary.setContentsMargins(0, 0, 6, 0)
        self.toolbar.addWidget(self.summary)

        # Quarantined nodes need a person: say so above the table, reason included, so it
        # is seen without hovering and whatever the State column's width.
        self.banner = QLabel(self)
        self.banner.setWordWrap(True)
        self.banner.setTextFormat(Qt.TextFormat.RichText)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        color = state_color("quarantined")
        rgb = f"{color.red()}, {color.green()}, {color.blue()}"
        self.banner.setStyleSheet(
            f"QLabel {{ background-color: rgba({rgb}, 0.10);"
            f" border: 1px solid rgba({rgb}, 0.45); border-radius: 4px; padding: 4px 8px; }}"
        )
        self.banner.hide()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        top = QHBoxLayout()
        top.setContentsMargins(4, 0, 4, 0)
        top.addWidget(self.toolbar)
        layout.addLayout(top)
        banner_row = QHBoxLayout()
        banner_row.setContentsMargins(4, 0, 4, 2)
        banner_row.addWidget(self.banner)
        layout.addLayout(banner_row)
        layout.addWidget(self.table)

        self.table.selectionModel().selectionChanged.connect(self._on_selection_changed)
        self.model.dataChanged.connect(self._on_model_data_changed)
        self.model.rowsInserted.connect(self._on_rows_inserted)
        self.model.rowsRemoved.connect(self._update_actions)
        self._sized = False
        self._update_actions()

    # --- public -------------------------------------------------------------------------------

    def set_nodes(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.model.set_nodes(rows)
        self._update_summary()
        self._update_actions()

    def set_local_identifier(self, identifier: str | None) -> None:
        self.model.set_local_identifier(identifier)

    def selected_identifier(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return str(rows[0].data(IDENTIFIER_ROLE))

    def select(self, identifier: str) -> bool:
        row = self.model.row_of(identifier)
        if row is None:
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        self.table.selectRow(index.row())
        return True

    def selected_state(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return str(rows[0].data(STATE_ROLE) or "") if rows else None

    # --- internals ----------------------------------------------------------------------------

    def _request(self, action: str) -> None:
        identifier = self.selected_identifier()
        # Re-check: the state may have changed since the button was last enabled.
        if identifier and action in allowed_actions(self.selected_state()):
            self.action_requested.emit(identifier, action)

    def _update_actions(self, *_args: object) -> None:
        allowed = allowed_actions(self.selected_state())
        identifier = self.selected_identifier()
        quarantined = self.selected_state() == "quarantined"
        for name, label, _icon, tip in ACTIONS:
            action = self.actions_by_name[name]
            action.setEnabled(name in allowed)
            target = f" {identifier}" if identifier else " the selected node"
            if name == "resume" and quarantined:
                tip = "Lift the quarantine and take new jobs again (fix the cause first)"
            action.setToolTip(f"{label}{target}: {tip[0].lower()}{tip[1:]}")

    def _update_summary(self) -> None:
        states = [str(self.model.node(r).get("state") or "") for r in range(self.model.rowCount())]
        if not states:
            self.summary.setText("No nodes have joined yet")
            self._update_banner()
            return
        total = sum(int(_number(self.model.node(r).get("slots")) or 0) for r in range(len(states)))
        busy = sum(int(_number(self.model.node(r).get("running")) or 0) for r in range(len(states)))
        online = sum(s in ("online", "draining", "paused") for s in states)
        noun = "node" if len(states) == 1 else "nodes"
        text = f"{len(states)} {noun} · {online} up · {busy} of {total} slots busy"
        quarantined = states.count("quarantined")
        if quarantined:
            text += f" · {quarantined} quarantined"
        self.summary.setText(text)
        self._update_banner()

    def _update_banner(self) -> None:
        rows = [self.model.node(r) for r in range(self.model.rowCount())]
        held = [row for row in rows if row.get("state") == "quarantined"]
        if not held:
            self.banner.hide()
            self.banner.clear()
            return
        color = state_color("quarantined").name()
        lines = []
        for row in held[:_BANNER_LINES]:
            reason = row.get("state_reason") or "no reason recorded"
            lines.append(
                f'<b style="color:{color}">{_html(row["identifier"])}</b> is quarantined: '
                f"{_html(reason)}"
            )
        if len(held) > _BANNER_LINES:
            lines.append(f"and {len(held) - _BANNER_LINES} more")
        hint = "it" if len(held) == 1 else "them"
        lines.append(f"<i>Fix the cause, then select {hint} and press Resume.</i>")
        self.banner.setText("<br>".join(lines))
        self.banner.show()

    def _on_selection_changed(self, _selected: QItemSelection, _deselected: QItemSelection):
        self._update_actions()

    def _on_model_data_changed(
        self, top_left: QModelIndex, bottom_right: QModelIndex, _roles: object = ()
    ) -> None:
        # The heartbeat tick touches one column every second; only a state change can change
        # which actions apply.
        state_col = NodeTableModel.COL["state"]
        if top_left.column() <= state_col <= bottom_right.column():
            self._update_actions()
            self._update_summary()
            if self._sized:
                self._fit_state_column()

    def _on_rows_inserted(self, *_args: object) -> None:
        if not self._sized:
            # Size columns once, from the first rows; later growth is elided instead of
            # relaying the table out every second.
            self.table.resizeColumnsToContents()
            header = self.table.horizontalHeader()
            for key, col in NodeTableModel.COL.items():
                if key != "encoders":
                    cap = 240 if key in ("node", "host") else 180
                    header.resizeSection(col, min(header.sectionSize(col) + 8, cap))
            self._sized = True
        self._fit_state_column()
        self._update_actions()

    def _fit_state_column(self) -> None:
        """Widen the State column (never narrow it) so a shown reason ("Quarantined · 3
        environment failures in a row; ...") is readable; the tooltip has all of it."""
        col = NodeTableModel.COL["state"]
        header = self.table.horizontalHeader()
        want = min(self.table.sizeHintForColumn(col) + 8, _STATE_COLUMN_MAX)
        if want > header.sectionSize(col):
            header.resizeSection(col, want)

    def _on_table_context_menu(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        if not index.isValid():
            return
        self.table.selectRow(index.row())
        menu = QMenu(self)
        identifier = self.selected_identifier() or ""
        title = menu.addAction(identifier)
        title.setEnabled(False)
        menu.addSeparator()
        for action in self.actions_by_name.values():
            menu.addAction(action)
        menu.popup(self.table.viewport().mapToGlobal(pos))
        self._menu = menu  # keep a reference until it closes (popup() does not block)


__all__ = [
    "ACTIONS",
    "LOCAL_SUFFIX",
    "NodeTableModel",
    "NodesView",
    "allowed_actions",
    "format_age",
    "short_ffmpeg_version",
]
