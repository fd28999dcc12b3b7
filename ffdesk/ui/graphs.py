"""The console's throughput graphs: four stacked plots over one time axis.

(a) frames per second, the cluster's and each node's; (b) jobs finished per minute, failed
ones marked; (c) queue depth and running jobs; (d) time in queue, median and p95.

Data arrives as plain objects shaped like ``ffdesk.db.samples`` gives them (this module never
imports the database layer): ``set_history`` with a window's history at open and on a window
change, ``append`` / ``extend`` with the live rows the window polls every few seconds. Every
series lives in a fixed-size numpy ring, and the curves are redrawn by a 1 s timer, never per
sample (qt-style §3.10): a busy cluster cannot make the GUI redraw faster than once a second.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPalette, QPen
from PySide6.QtWidgets import (
    QButtonGroup,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ffdesk.ui.theme import STATE_COLORS

# --------------------------------------------------------------------------- data shapes


class SamplePointLike(Protocol):
    """One sample row (``ffdesk.db.samples.SamplePoint``): ``node`` None is a cluster row."""

    @property
    def at(self) -> float: ...
    @property
    def node(self) -> str | None: ...
    @property
    def fps(self) -> float: ...
    @property
    def running(self) -> float: ...
    @property
    def queued(self) -> float: ...
    @property
    def span_s(self) -> float: ...
    @property
    def finished(self) -> float: ...
    @property
    def failed(self) -> float: ...
    @property
    def claimed(self) -> float: ...
    @property
    def queue_p50(self) -> float: ...
    @property
    def queue_p95(self) -> float: ...


class ClusterSeriesLike(Protocol):
    @property
    def at(self) -> Sequence[float]: ...
    @property
    def newest(self) -> float: ...
    @property
    def fps(self) -> Sequence[float]: ...
    @property
    def running(self) -> Sequence[float]: ...
    @property
    def queued(self) -> Sequence[float]: ...
    @property
    def span_s(self) -> Sequence[float]: ...
    @property
    def finished(self) -> Sequence[float]: ...
    @property
    def failed(self) -> Sequence[float]: ...
    @property
    def claimed(self) -> Sequence[float]: ...
    @property
    def queue_p50(self) -> Sequence[float]: ...
    @property
    def queue_p95(self) -> Sequence[float]: ...
    def columns(self) -> tuple[Sequence[float], ...]: ...


class NodeSeriesLike(Protocol):
    @property
    def at(self) -> Sequence[float]: ...
    @property
    def newest(self) -> float: ...
    @property
    def fps(self) -> Sequence[float]: ...
    @property
    def running(self) -> Sequence[float]: ...


class HistoryLike(Protocol):
    """A window's history (``ffdesk.db.samples.SampleHistory``)."""

    @property
    def since_s(self) -> float: ...
    @property
    def bucket_s(self) -> float: ...
    @property
    def cluster(self) -> ClusterSeriesLike: ...
    @property
    def nodes(self) -> Mapping[str, NodeSeriesLike]: ...
    def points(self) -> Iterable[SamplePointLike]: ...


# --------------------------------------------------------------------------- ring buffer


class RingBuffer:
    """Rows of floats in a fixed-size ring; ``view()`` is always one contiguous slice.

    Every row is stored twice (at ``i`` and ``i + capacity``), so the live rows are
    ``buf[head + capacity - size : head + capacity]`` without copying or shifting: an append is
    O(1) and never allocates, however long the console stays open.
    """

    def __init__(self, capacity: int, width: int) -> None:
        self.capacity = capacity
        self._buf = np.full((2 * capacity, width), np.nan)
        self._weight = np.zeros(2 * capacity)  # rows merged into each slot (bucket means)
        self._head = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def clear(self) -> None:
        self._head = self._size = 0

    def load(self, rows: np.ndarray) -> None:
        """Replace the contents with ``rows`` (oldest first; only the newest ones fit)."""
        rows = rows[-self.capacity :]
        n = len(rows)
        self._buf[:n] = rows
        self._buf[self.capacity : self.capacity + n] = rows
        self._weight[:] = 1.0
        self._head = n % self.capacity
        self._size = n

    def push(self, row: np.ndarray, weight: float = 1.0) -> None:
        h = self._head
        self._buf[h] = self._buf[h + self.capacity] = row
        self._weight[h] = self._weight[h + self.capacity] = weight
        self._head = (h + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def last(self) -> tuple[np.ndarray, float] | None:
        if not self._size:
            return None
        i = (self._head - 1) % self.capacity
        return self._buf[i].copy(), float(self._weight[i])

    def replace_last(self, row: np.ndarray, weight: float) -> None:
        i = (self._head - 1) % self.capacity
        self._buf[i] = self._buf[i + self.capacity] = row
        self._weight[i] = self._weight[i + self.capacity] = weight

    def view(self) -> np.ndarray:
        """The rows, oldest first: a read-only view valid until the next write."""
        end = self._head + self.capacity
        out = self._buf[end - self._size : end]
        out.flags.writeable = False
        return out


# Cluster ring columns (0 is the time, epoch seconds).
X, FPS, RUNNING, QUEUED, SPAN, FINISHED, FAILED, CLAIMED, P50, P95 = range(10)
CLUSTER_WIDTH = 10
# Node ring columns.
NODE_FPS, NODE_RUNNING = 1, 2
NODE_WIDTH = 3

CAPACITY = 1200  # per series: a window's history (<= ~1000 points) plus live points

WINDOWS: tuple[tuple[str, float], ...] = (("5 min", 300.0), ("1 h", 3600.0), ("24 h", 86400.0))
DEFAULT_WINDOW = 3600.0
RESUME_OVERLAP_S = 30.0  # see resume_after()


def _mean(a: float, wa: float, b: float, wb: float) -> float:
    if math.isnan(a) or wa <= 0:
        return b
    if math.isnan(b) or wb <= 0:
        return a
    return (a * wa + b * wb) / (wa + wb)


def _nansum(a: float, b: float) -> float:
    if math.isnan(a):
        return b
    return a if math.isnan(b) else a + b


def merge_cluster(old: np.ndarray, weight: float, new: np.ndarray) -> np.ndarray:
    """Fold a live cluster row into the bucket it falls in, the way the database averages
    buckets: levels are means, counts add up, the median is weighted by claims, p95 is the
    highest."""
    out = old.copy()
    out[X] = _mean(old[X], weight, new[X], 1)
    for c in (FPS, RUNNING, QUEUED):
        out[c] = _mean(old[c], weight, new[c], 1)
    for c in (SPAN, FINISHED, FAILED, CLAIMED):
        out[c] = _nansum(old[c], new[c])
    out[P50] = _mean(old[P50], np.nan_to_num(old[CLAIMED]), new[P50], np.nan_to_num(new[CLAIMED]))
    out[P95] = np.fmax(old[P95], new[P95])
    return out


def merge_node(old: np.ndarray, weight: float, new: np.ndarray) -> np.ndarray:
    out = old.copy()
    for c in (X, NODE_FPS, NODE_RUNNING):
        out[c] = _mean(old[c], weight, new[c], 1)
    return out


def bar_width_for(window_s: float) -> float:
    """Bars of jobs finished: about 10-60 per window, on round times (30 s, 1 min, 30 min)."""
    for width in (30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0):
        if width >= window_s / 60:
            return width
    return 3600.0 * math.ceil(window_s / 60 / 3600)


def per_minute_bars(
    x: np.ndarray, counts: np.ndarray, spans: np.ndarray, width: float
) -> tuple[np.ndarray, np.ndarray]:
    """(bar start, jobs per minute) over the bins of ``width`` seconds that hold samples.

    Each cluster sample counts the jobs of the ``span_s`` before it; a bin's rate is its jobs
    over the seconds its samples cover, so the current, half-filled minute is not shown low.
    """
    ok = np.isfinite(x) & np.isfinite(counts) & np.isfinite(spans) & (spans > 0)
    if not ok.any():
        return np.empty(0), np.empty(0)
    bins = np.floor(x[ok] / width).astype(np.int64)
    first = bins.min()
    idx = bins - first
    jobs = np.bincount(idx, weights=counts[ok])
    covered = np.bincount(idx, weights=spans[ok])
    has = covered > 0
    starts = (np.nonzero(has)[0] + first) * width
    return starts.astype(float), jobs[has] / covered[has] * 60.0


def connect_gaps(x: np.ndarray, bucket_s: float) -> np.ndarray:
    """Per-point "join to the next one": False across a gap (nodes down, console closed), so a
    line does not pretend the cluster worked through it."""
    if len(x) < 2:
        return np.ones(len(x), dtype=bool)
    dx = np.diff(x)
    limit = max(3.0 * float(np.median(dx)), 2.5 * bucket_s, 1.0)
    return np.append(dx <= limit, True)


class DurationAxisItem(pg.AxisItem):
    """Seconds shown as "45 s", "5 min", "2 h": waits range from seconds to hours."""

    _STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)

    def tickSpacing(self, minVal, maxVal, size):  # pyqtgraph's API
        span = maxVal - minVal
        if span <= 0:
            return super().tickSpacing(minVal, maxVal, size)
        wanted = max(2, int(size / 40))  # about one label per 40 px of height
        major = next((s for s in self._STEPS if span / s <= wanted), None)
        if major is None:
            major = 43200 * math.ceil(span / wanted / 43200)
        # A finer level too: pyqtgraph labels it where there is room (1, 2, 3 min, not 2 only).
        finer = [s for s in self._STEPS if s < major and major % s == 0]
        return [(major, 0), (finer[-1], 0)] if finer else [(major, 0)]

    def tickStrings(self, values, scale, spacing):  # pyqtgraph's API
        return [format_duration(v * scale) for v in values]


def format_duration(seconds: float) -> str:
    s = abs(seconds)
    if s < 60 or s == 0:
        return f"{seconds:g} s"
    if s < 3600:
        m = seconds / 60
        return f"{m:.0f} min" if m == round(m) else f"{m:.1f} min"
    h = seconds / 3600
    return f"{h:.0f} h" if h == round(h) else f"{h:.1f} h"


# One colour per node, in order of appearance: distinct in both palettes and apart from the
# cluster line's blue; deliberately no yellow (unreadable on white).
NODE_COLORS = (
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#d55e00",
    "#56b4e9",
    "#8e6c8a",
    "#7f8c3a",
    "#b05a7a",
    "#4e8f9e",
    "#a0522d",
)
CLUSTER_COLOR = STATE_COLORS["running"]
RUNNING_COLOR = STATE_COLORS["running"]
QUEUED_COLOR = STATE_COLORS["queued"]
FINISHED_COLOR = STATE_COLORS["succeeded"]
FAILED_COLOR = STATE_COLORS["failed"]
P50_COLOR = "#9b51e0"
P95_COLOR = STATE_COLORS["stale"]

AXIS_WIDTH = 56  # px: the same for all four plots keeps their time axes aligned


def _pen(color: str, width: float = 1.5, style: Qt.PenStyle = Qt.PenStyle.SolidLine) -> QPen:
    pen = pg.mkPen(color, width=width, style=style)
    pen.setCosmetic(True)
    return pen


def _alpha(color: str, alpha: int) -> QColor:
    c = QColor(color)
    c.setAlpha(alpha)
    return c


# --------------------------------------------------------------------------- the view


class GraphsView(QWidget):
    """Throughput graphs over a chosen window (5 min, 1 h, 24 h)."""

    #: The user chose another window (seconds): fetch its history and call ``set_history``.
    window_changed = Signal(float)

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        window_s: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.time,
        redraw_ms: int = 1000,
    ) -> None:
        super().__init__(parent)
        self._clock = clock
        self._window_s = window_s
        self._bucket_s = 0.0  # width live points are merged into (the history's buckets)
        self._cluster = RingBuffer(CAPACITY, CLUSTER_WIDTH)
        self._nodes: dict[str, RingBuffer] = {}
        self._seen: dict[str | None, float] = {}  # newest raw time per series (dedupe)
        self._node_colors: dict[str, str] = {}
        self._node_curves: dict[str, pg.PlotCurveItem] = {}
        self._dirty = True
        self._y_tops = [0.0] * 4

        self._build_ui()
        self._apply_palette()

        self._timer = QTimer(self)
        self._timer.setInterval(redraw_ms)
        self._timer.timeout.connect(self.refresh)
        self.refresh()

    # ------------------------------------------------------------------ construction

    def _build_ui(self) -> None:
        bar = QHBoxLayout()
        bar.setContentsMargins(8, 4, 8, 0)
        bar.addWidget(QLabel(self.tr("Show the last")))
        self._window_group = QButtonGroup(self)
        self._window_group.setExclusive(True)
        for label, seconds in WINDOWS:
            button = QToolButton(self)
            button.setText(label)
            button.setCheckable(True)
            button.setChecked(seconds == self._window_s)
            button.setProperty("window_s", seconds)
            button.setAutoRaise(True)
            self._window_group.addButton(button)
            bar.addWidget(button)
        self._window_group.buttonClicked.connect(self._on_window_button_clicked)
        bar.addStretch(1)

        self._plots_widget = pg.GraphicsLayoutWidget(self)
        layout = self._plots_widget.ci
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(2)

        titles = (
            self.tr("Frames per second"),
            self.tr("Jobs finished per minute"),
            self.tr("Queue depth and running jobs"),
            self.tr("Time in queue"),
        )
        self._plots: list[pg.PlotItem] = []
        self._legends: list[pg.LegendItem] = []
        for row, title in enumerate(titles):
            last = row == len(titles) - 1
            left = DurationAxisItem("left") if last else pg.AxisItem("left")
            plot = layout.addPlot(
                row=row,
                col=0,
                axisItems={"bottom": pg.DateAxisItem(orientation="bottom"), "left": left},
            )
            plot.setTitle(title, size="9pt", justify="left")
            plot.titleLabel.setMaximumHeight(18)
            plot.layout.setRowFixedHeight(0, 18)
            plot.setMouseEnabled(x=False, y=False)  # the view follows the clock
            plot.setMenuEnabled(False)
            plot.hideButtons()
            plot.showGrid(x=True, y=True, alpha=0.12)
            plot.getAxis("left").setWidth(AXIS_WIDTH)
            if not last:
                # One time axis for all: the upper plots keep its grid, not its labels.
                plot.getAxis("bottom").setStyle(showValues=False)
            if self._plots:
                plot.setXLink(self._plots[0])
            # Legends sit right of the plots, never over the data; natural size, top-aligned
            # (a layout cell would otherwise stretch the rows apart).
            legend = pg.LegendItem(offset=None, verSpacing=-4, frame=False)
            legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
            layout.addItem(legend, row=row, col=1)
            layout.layout.setAlignment(
                legend, Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft
            )
            self._plots.append(plot)
            self._legends.append(legend)
        layout.layout.setColumnFixedWidth(1, 130)
        self._fps_plot, self._done_plot, self._queue_plot, self._wait_plot = self._plots

        def curve(plot: pg.PlotItem, legend: pg.LegendItem, name: str, color: str, **kw):
            item = pg.PlotCurveItem(
                pen=_pen(color, kw.pop("width", 1.6), kw.pop("style", Qt.PenStyle.SolidLine)),
                antialias=True,
                skipFiniteCheck=True,  # finite by construction: NaNs are masked before
                **kw,
            )
            plot.addItem(item)
            legend.addItem(item, name)
            return item

        a, b, c, d = self._legends
        self._cluster_curve = curve(
            self._fps_plot,
            a,
            self.tr("Cluster"),
            CLUSTER_COLOR,
            width=2.4,
            fillLevel=0,
            brush=_alpha(CLUSTER_COLOR, 40),
        )
        self._finished_bars = pg.BarGraphItem(
            x0=[], height=[], width=1, brush=_alpha(FINISHED_COLOR, 190), pen=None
        )
        self._failed_bars = pg.BarGraphItem(
            x0=[], height=[], width=1, brush=_alpha(FAILED_COLOR, 220), pen=None
        )
        self._done_plot.addItem(self._finished_bars)
        self._done_plot.addItem(self._failed_bars)
        b.addItem(self._finished_bars, self.tr("Finished"))
        b.addItem(self._failed_bars, self.tr("Failed"))
        self._queued_curve = curve(
            self._queue_plot,
            c,
            self.tr("Queued"),
            QUEUED_COLOR,
            width=2.0,
            fillLevel=0,
            brush=_alpha(QUEUED_COLOR, 45),
        )
        self._running_curve = curve(self._queue_plot, c, self.tr("Running"), RUNNING_COLOR)
        self._p50_curve = curve(self._wait_plot, d, self.tr("Median"), P50_COLOR, width=1.8)
        self._p95_curve = curve(
            self._wait_plot, d, self.tr("95th pct."), P95_COLOR, style=Qt.PenStyle.DashLine
        )

        self._empty = QLabel(self)
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._empty.setWordWrap(True)
        self._stack = QStackedWidget(self)
        self._stack.addWidget(self._empty)
        self._stack.addWidget(self._plots_widget)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addLayout(bar)
        outer.addWidget(self._stack, 1)

    def _apply_palette(self) -> None:
        """Follow the application palette (light or dark) instead of pyqtgraph's black."""
        pal = self.palette()
        base = pal.color(QPalette.ColorRole.Base)
        text = pal.color(QPalette.ColorRole.Text)
        faint = QColor(text)
        faint.setAlpha(150)
        self._plots_widget.setBackground(base)
        for plot, legend in zip(self._plots, self._legends, strict=True):
            for name in ("left", "bottom"):
                axis = plot.getAxis(name)
                axis.setPen(faint)
                axis.setTextPen(text)
            plot.titleLabel.setText(plot.titleLabel.text, color=text.name())
            legend.setLabelTextColor(text)
            for _sample, label in legend.items:  # setLabelTextColor only stores the colour
                label.setText(label.text)
        hint = pal.color(QPalette.ColorRole.PlaceholderText)
        self._empty.setStyleSheet(f"color: {hint.name()}; font-size: 11pt;")
        self._dirty = True

    def changeEvent(self, event: QEvent) -> None:  # Qt override
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_palette()
        super().changeEvent(event)

    def showEvent(self, event) -> None:  # Qt override
        super().showEvent(event)
        self.refresh()
        self._timer.start()

    def hideEvent(self, event) -> None:  # Qt override
        self._timer.stop()  # nothing to redraw for nobody
        super().hideEvent(event)

    # ------------------------------------------------------------------ window

    @property
    def window_s(self) -> float:
        return self._window_s

    def set_window(self, seconds: float) -> None:
        """Choose the window (as if the user had); emits ``window_changed`` if it changed."""
        for button in self._window_group.buttons():
            if button.property("window_s") == seconds:
                button.setChecked(True)
        self._change_window(seconds)

    def _on_window_button_clicked(self, button: QToolButton) -> None:
        self._change_window(float(button.property("window_s")))

    def _change_window(self, seconds: float) -> None:
        if seconds == self._window_s:
            return
        self._window_s = seconds
        # The data kept so far is drawn at once in the new range until the history comes.
        self._dirty = True
        self.refresh()
        self.window_changed.emit(seconds)

    # ------------------------------------------------------------------ data in

    def set_history(self, history: HistoryLike) -> bool:
        """Replace everything with a window's history. A history for another window than
        the one now chosen (an answer that arrived after the user switched again) is
        ignored: returns False."""
        if history.since_s and history.since_s != self._window_s:
            return False
        self._bucket_s = history.bucket_s
        c = history.cluster
        self._cluster.load(np.column_stack([np.asarray(v, dtype=float) for v in c.columns()]))
        self._seen = {None: c.newest} if c.at else {}
        for name in list(self._nodes):
            if name not in history.nodes:
                self._drop_node(name)
        for name, s in history.nodes.items():
            rows = np.column_stack([np.asarray(v, dtype=float) for v in (s.at, s.fps, s.running)])
            self._node_ring(name).load(rows)
            if s.at:
                self._seen[name] = s.newest
        self._dirty = True
        self.refresh()  # a window's worth at once, not a sample: draw now
        return True

    def append(self, point: SamplePointLike) -> None:
        """Add one live row; drawn at the next timer tick. Rows already shown (polls overlap,
        see ``resume_after``) are dropped, so appending the same row twice is harmless."""
        key = point.node
        if point.at <= self._seen.get(key, -math.inf):
            return
        self._seen[key] = point.at
        if key is None:
            row = np.array(
                [
                    point.at,
                    point.fps,
                    point.running,
                    point.queued,
                    point.span_s,
                    point.finished,
                    point.failed,
                    point.claimed,
                    point.queue_p50,
                    point.queue_p95,
                ],
                dtype=float,
            )
            self._push(self._cluster, row, merge_cluster)
        else:
            row = np.array([point.at, point.fps, point.running], dtype=float)
            self._push(self._node_ring(key), row, merge_node)
        self._dirty = True

    def extend(self, history: HistoryLike) -> None:
        """Append every row of a poll's result (``samples.recent``)."""
        for point in history.points():
            self.append(point)

    def resume_after(self) -> float | None:
        """What to pass as ``after`` to the next ``samples.recent`` poll; None: nothing shown
        yet (call ``samples.history``). A little before the newest row shown, because a
        node's row can commit a moment after a later-stamped row of another."""
        if not self._seen:
            return None
        return max(self._seen.values()) - RESUME_OVERLAP_S

    def _push(
        self,
        ring: RingBuffer,
        row: np.ndarray,
        merge: Callable[[np.ndarray, float, np.ndarray], np.ndarray],
    ) -> None:
        # Live rows are folded into the history's buckets: in the 24 h view a console left
        # open for days keeps ~1 point per 90 s, not one per heartbeat.
        last = ring.last()
        if last is not None and self._bucket_s > 0:
            old, weight = last
            if math.floor(old[X] / self._bucket_s) == math.floor(row[X] / self._bucket_s):
                ring.replace_last(merge(old, weight, row), weight + 1)
                return
        ring.push(row)

    def _node_ring(self, name: str) -> RingBuffer:
        ring = self._nodes.get(name)
        if ring is None:
            ring = self._nodes[name] = RingBuffer(CAPACITY, NODE_WIDTH)
            color = self._node_colors.setdefault(
                name, NODE_COLORS[len(self._node_colors) % len(NODE_COLORS)]
            )
            item = pg.PlotCurveItem(pen=_pen(color, 1.3), antialias=True, skipFiniteCheck=True)
            self._fps_plot.addItem(item)
            self._legends[0].addItem(item, _elide(name))
            self._node_curves[name] = item
        return ring

    def _drop_node(self, name: str) -> None:
        self._nodes.pop(name, None)
        self._seen.pop(name, None)
        item = self._node_curves.pop(name)
        self._legends[0].removeItem(item)
        self._fps_plot.removeItem(item)

    # ------------------------------------------------------------------ drawing

    @property
    def cluster_curve(self) -> pg.PlotCurveItem:
        return self._cluster_curve

    def node_curve(self, name: str) -> pg.PlotCurveItem:
        return self._node_curves[name]

    def curves(self) -> dict[str, pg.PlotCurveItem]:
        """The line items by series name (for tests and screenshots)."""
        return {
            "cluster": self._cluster_curve,
            "queued": self._queued_curve,
            "running": self._running_curve,
            "queue_p50": self._p50_curve,
            "queue_p95": self._p95_curve,
            **{f"node:{n}": c for n, c in self._node_curves.items()},
        }

    def bars(self) -> tuple[pg.BarGraphItem, pg.BarGraphItem]:
        return self._finished_bars, self._failed_bars

    def series_lengths(self) -> dict[str | None, int]:
        return {None: len(self._cluster), **{n: len(r) for n, r in self._nodes.items()}}

    def refresh(self) -> None:
        """The timer's tick: slide the window to now; redraw the data if any came."""
        now = self._clock()
        start = now - self._window_s
        visible = self._has_visible(start)
        self._empty.setText(
            self.tr(
                "No throughput data yet for the last {window}.\n"
                "Samples appear a few seconds after a node starts."
            ).format(window=self._window_label())
        )
        self._stack.setCurrentWidget(self._plots_widget if visible else self._empty)
        if self._dirty:
            self._dirty = False
            self._redraw(start)
        # Small margin right of now: the newest point is not glued to the frame.
        margin = self._window_s * 0.01
        self._fps_plot.setXRange(start, now + margin, padding=0)

    def _window_label(self) -> str:
        for label, seconds in WINDOWS:
            if seconds == self._window_s:
                return label
        return format_duration(self._window_s)

    def _has_visible(self, start: float) -> bool:
        rings = [self._cluster, *self._nodes.values()]
        return any(len(r) and r.view()[-1, X] >= start for r in rings)

    def _redraw(self, start: float) -> None:
        data = self._cluster.view()
        x = data[:, X]
        gaps = connect_gaps(x, self._bucket_s)
        peaks = {"fps": 0.0, "done": 0.0, "queue": 0.0, "wait": 0.0}
        shown = x >= start

        def draw(item: pg.PlotCurveItem, xs: np.ndarray, ys: np.ndarray, con, peak: str) -> None:
            ok = np.isfinite(ys)
            if not ok.all():  # skipFiniteCheck: NaNs (no claims, no data) never reach Qt
                xs, ys, con = xs[ok], ys[ok], _bridge(con, np.flatnonzero(ok))
            item.setData(xs, ys, connect=con if len(xs) else "all")
            in_view = ys[xs >= start]
            if len(in_view):
                peaks[peak] = max(peaks[peak], float(in_view.max()))

        draw(self._cluster_curve, x, data[:, FPS], gaps, "fps")
        draw(self._queued_curve, x, data[:, QUEUED], gaps, "queue")
        draw(self._running_curve, x, data[:, RUNNING], gaps, "queue")
        draw(self._p50_curve, x, data[:, P50], gaps, "wait")
        draw(self._p95_curve, x, data[:, P95], gaps, "wait")
        for name, ring in self._nodes.items():
            nd = ring.view()
            draw(
                self._node_curves[name],
                nd[:, X],
                nd[:, NODE_FPS],
                connect_gaps(nd[:, X], self._bucket_s),
                "fps",
            )

        width = bar_width_for(self._window_s)
        keep = shown | (x >= start - width)  # the first bin may begin before the window
        gap = width * 0.12  # a thin gap between bars reads as "per interval"
        for bars, column in ((self._finished_bars, FINISHED), (self._failed_bars, FAILED)):
            x0, rate = per_minute_bars(x[keep], data[keep, column], data[keep, SPAN], width)
            bars.setOpts(x0=x0 + gap / 2, height=rate, width=width - gap)
            if len(rate):
                peaks["done"] = max(peaks["done"], float(rate.max()))

        for i, (plot, peak) in enumerate(zip(self._plots, peaks.values(), strict=True)):
            top = _nice_ceiling(peak * 1.1) if peak > 0 else 1.0
            if self._y_tops[i] != top:  # a range change re-lays out the axis: only if needed
                self._y_tops[i] = top
                plot.setYRange(0, top, padding=0)


def _bridge(connect: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """``connect`` for the points ``kept`` of a series: two kept points are joined unless the
    full series had a gap between them (a median missing where nothing was claimed is no gap,
    samples missing altogether are)."""
    if len(kept) == 0:
        return np.ones(0, dtype=bool)
    breaks_before = np.concatenate(([0], np.cumsum(~connect[:-1])))
    return np.append(breaks_before[kept[1:]] == breaks_before[kept[:-1]], True)


def _nice_ceiling(value: float) -> float:
    """1, 2, 2.5, 5 times a power of ten: the axis ends on a tick-friendly number."""
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * exp >= value:
            return m * exp
    return 10 * exp


def _elide(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
