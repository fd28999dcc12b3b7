"""The throughput graphs, offscreen: history and live points reach the curves, ring buffers stay
bounded, the window selector asks for new history, light and dark palettes, a screenshot."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import math
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtGui import QColor, QImage, QPalette

from ffdesk.db.samples import ClusterSeries, NodeSeries, SampleHistory, SamplePoint
from ffdesk.ui import graphs
from ffdesk.ui.graphs import CAPACITY, GraphsView, RingBuffer

NOW = 1_760_000_000.0  # a fixed clock: the views under test never look at the real one
SCREENSHOT = Path("/tmp/graphs.png")


# --------------------------------------------------------------------------- data


def history(
    points: int = 120,
    *,
    window: float = 3600.0,
    step: float = 5.0,
    bucket: float | None = None,
    nodes: tuple[str, ...] = ("render-01", "render-02"),
    end: float = NOW,
) -> SampleHistory:
    """``points`` cluster rows ``step`` s apart up to ``end``; ``bucket`` (default: ``step``)
    is the width they claim to be averaged over (0: raw rows)."""
    bucket = step if bucket is None else bucket
    t = [end - (points - 1 - i) * step for i in range(points)]
    p50 = [math.nan if i % 4 == 0 else 10.0 + i % 7 for i in range(points)]
    cluster = ClusterSeries(
        at=t,
        fps=[100.0 + i % 10 for i in range(points)],
        running=[4.0] * points,
        queued=[float(50 - i % 50) for i in range(points)],
        span_s=[step] * points,
        finished=[1.0] * points,
        failed=[float(i % 10 == 0) for i in range(points)],
        claimed=[0.0 if math.isnan(v) else 1.0 for v in p50],
        queue_p50=p50,
        queue_p95=[v * 3 for v in p50],
        newest=t[-1] if t else math.nan,
    )
    node_series = {
        name: NodeSeries(t, [40.0 + k * 10] * points, [2.0] * points, newest=t[-1])
        for k, name in enumerate(nodes)
    }
    return SampleHistory(window, bucket, cluster, node_series)


def realistic(end: float = NOW) -> SampleHistory:
    """Fifty minutes of a busy cluster: three nodes (one joins late, one drops out for five
    minutes), a queue draining with two bursts, a few failures, waits shrinking."""
    rng = np.random.default_rng(7)
    step = 5.0
    t = np.arange(end - 3000, end - 60 + 1e-6, step)
    rel = (t - t[0]) / (t[-1] - t[0])
    total = np.zeros_like(t)
    nodes = {}
    for name, mean, spread, gap in (
        ("render-01", 175, 15, None),
        ("render-02", 120, 20, (-2000, -1700)),
        ("edit-mac", 55, 10, (-4000, -1500)),
    ):
        wave = spread * np.sin((t - end) / 300 + len(name))
        fps = np.clip(mean + wave + rng.normal(0, spread / 3, len(t)), 0, None)
        keep = np.ones(len(t), dtype=bool)
        if gap:
            keep &= ~((t - end > gap[0]) & (t - end < gap[1]))
        total += np.where(keep, fps, 0)
        nodes[name] = NodeSeries(
            list(t[keep]), list(fps[keep]), [3.0] * int(keep.sum()), newest=float(t[keep][-1])
        )
    queued = np.clip(60 * (1 - rel) + 15 * (rel > 0.6) * np.sin(rel * 20) ** 2, 0, None).round()
    claimed = rng.poisson(0.6, len(t)).astype(float)
    p50 = np.where(claimed > 0, 30 + 600 * (1 - rel) * rng.uniform(0.8, 1.2, len(t)), np.nan)
    cluster = ClusterSeries(
        at=list(t),
        fps=list(total),
        running=list(np.clip(6 + rng.integers(-1, 2, len(t)), 0, None).astype(float)),
        queued=list(queued),
        span_s=[step] * len(t),
        finished=list(rng.poisson(0.5, len(t)).astype(float)),
        failed=list((rng.random(len(t)) < 0.03).astype(float)),
        claimed=list(claimed),
        queue_p50=list(p50),
        queue_p95=list(p50 * rng.uniform(1.5, 2.5, len(t))),
        newest=float(t[-1]),
    )
    return SampleHistory(3600.0, step, cluster, nodes)


def cluster_point(at: float, **kw: float) -> SamplePoint:
    values = {"fps": 50.0, "running": 2.0, "queued": 7.0, "span_s": 5.0, "finished": 1.0}
    values |= {"failed": 0.0, "claimed": 1.0, "queue_p50": 4.0, "queue_p95": 9.0} | kw
    return SamplePoint(at, None, **values)


@pytest.fixture
def view(qtbot) -> GraphsView:
    w = GraphsView(clock=lambda: NOW, redraw_ms=50)
    qtbot.addWidget(w)
    w.resize(900, 700)
    return w


# --------------------------------------------------------------------------- tests


def test_set_history_fills_every_curve(view: GraphsView):
    h = history()
    assert view.set_history(h) is True
    x, y = view.cluster_curve.getData()
    assert list(x) == h.cluster.at and list(y) == h.cluster.fps
    curves = view.curves()
    assert set(curves) == {
        "cluster",
        "queued",
        "running",
        "queue_p50",
        "queue_p95",
        "node:render-01",
        "node:render-02",
    }
    x, y = curves["node:render-02"].getData()
    assert len(x) == 120 and set(y) == {50.0}
    # Time in queue: intervals without claims are left out, never drawn as NaN.
    x, y = curves["queue_p50"].getData()
    assert len(x) == 90 and np.isfinite(y).all()
    # Jobs per minute: 1 job per 5 s is 12 per minute, in one-minute bars in the 1 h view.
    finished, failed = view.bars()
    heights = finished.opts["height"]
    assert len(heights) >= 10 and np.allclose(heights[1:-1], 12.0)
    assert finished.opts["width"] < 60 and (failed.opts["height"] > 0).any()


def test_live_points_are_drawn_by_the_timer_not_per_sample(view: GraphsView, qtbot):
    view.set_history(history(bucket=0.0))  # raw rows: every live point is a new one
    with qtbot.waitExposed(view):
        view.show()
    before = len(view.cluster_curve.getData()[0])
    view.append(cluster_point(NOW + 5, fps=321.0))
    view.append(SamplePoint(NOW + 5, "render-03", 77.0, 1.0))
    assert len(view.cluster_curve.getData()[0]) == before  # nothing drawn yet
    qtbot.waitUntil(lambda: len(view.cluster_curve.getData()[0]) == before + 1, timeout=2000)
    x, y = view.cluster_curve.getData()
    assert (x[-1], y[-1]) == (NOW + 5, 321.0)
    assert view.node_curve("render-03").getData()[1].tolist() == [77.0]


def test_live_points_fold_into_the_last_bucket_and_repeats_are_dropped(view: GraphsView):
    view.set_history(history(step=90.0, points=10, end=NOW - 30, nodes=()))
    n = view.series_lengths()[None]
    first_bucket_end = (math.floor((NOW - 30) / 90) + 1) * 90
    t1 = first_bucket_end + 1
    view.append(cluster_point(t1, fps=10.0, finished=2.0))
    view.append(cluster_point(t1 + 5, fps=20.0, finished=3.0, queue_p95=99.0))
    view.append(cluster_point(t1 + 5, fps=1000.0, finished=50.0))  # a poll's overlap
    view.append(cluster_point(t1 - 100, fps=1000.0))  # older than what is shown
    assert view.series_lengths()[None] == n + 1
    view.refresh()
    x, y = view.cluster_curve.getData()
    assert y[-1] == pytest.approx(15.0) and x[-1] == pytest.approx(t1 + 2.5)
    finished, _ = view.bars()
    assert finished.opts["height"][-1] == pytest.approx(5 / 10 * 60)  # 5 jobs in 10 s
    assert view.curves()["queue_p95"].getData()[1][-1] == 99.0
    assert view.resume_after() == pytest.approx(t1 + 5 - graphs.RESUME_OVERLAP_S)


def test_ring_buffers_never_grow_past_their_capacity(view: GraphsView):
    ring = RingBuffer(5, 2)
    for i in range(13):
        ring.push(np.array([i, -i]))
        assert len(ring) == min(i + 1, 5)
    assert ring.view()[:, 0].tolist() == [8, 9, 10, 11, 12]
    ring.load(np.arange(20.0).reshape(10, 2))  # more than fits: the newest ones
    assert ring.view()[:, 0].tolist() == [10, 12, 14, 16, 18]
    with pytest.raises(ValueError):
        ring.view()[0, 0] = 1  # the view is read-only: curves may hold on to it

    assert view.set_history(history(points=CAPACITY + 300, bucket=0.0)) is True
    for i in range(2 * CAPACITY):
        view.append(cluster_point(NOW + 1 + i))
        view.append(SamplePoint(NOW + 1 + i, "render-01", 1.0, 1.0))
    assert max(view.series_lengths().values()) == CAPACITY
    view.refresh()
    assert all(len(c.getData()[0]) <= CAPACITY for c in view.curves().values())


def test_choosing_a_window_asks_for_its_history(view: GraphsView, qtbot):
    view.set_history(history())
    buttons = {b.text(): b for b in view.findChildren(graphs.QToolButton)}
    assert buttons["1 h"].isChecked()
    with qtbot.waitSignal(view.window_changed, timeout=1000) as signal:
        buttons["24 h"].click()
    assert signal.args == [86400.0] and view.window_s == 86400.0
    with qtbot.assertNotEmitted(view.window_changed):
        buttons["24 h"].click()
    # The old window's data stays on screen until the new history comes; an answer for a
    # window the user already left is ignored.
    assert view.cluster_curve.getData()[0] is not None
    assert view.set_history(history(window=3600.0)) is False
    assert view.set_history(history(window=86400.0, step=90.0)) is True
    lo, hi = view.cluster_curve.getViewBox().viewRange()[0]
    assert hi - lo == pytest.approx(86400 * 1.01)


def test_no_data_says_so_instead_of_empty_axes(view: GraphsView):
    assert view._stack.currentWidget() is view._empty
    assert "No throughput data yet" in view._empty.text() and "1 h" in view._empty.text()
    view.set_history(history())
    assert view._stack.currentWidget() is view._plots_widget
    view.set_history(history(end=NOW - 7200))  # all of it older than the window
    assert view._stack.currentWidget() is view._empty


def test_follows_light_and_dark_palettes(view: GraphsView):
    for base, text in (("#ffffff", "#1a1a1a"), ("#1e1e1e", "#e6e6e6")):
        pal = QPalette(view.palette())
        pal.setColor(QPalette.ColorRole.Base, QColor(base))
        pal.setColor(QPalette.ColorRole.Text, QColor(text))
        view.setPalette(pal)
        assert view._plots_widget.backgroundBrush().color().name() == base
        axis = view._fps_plot.getAxis("left")
        assert axis.textPen().color().name() == text
        assert all(label.opts["color"] == QColor(text) for _, label in view._legends[0].items)


def test_helpers_bars_gaps_and_durations():
    x = NOW + np.arange(24) * 5.0
    starts, rate = graphs.per_minute_bars(x, np.ones(24), np.full(24, 5.0), 60.0)
    assert np.all(np.diff(starts) == 60) and np.allclose(rate, 12.0)
    con = graphs.connect_gaps(np.array([0.0, 5, 10, 100, 105]), 0.0)
    assert con.tolist() == [True, True, False, True, True]
    assert [graphs.bar_width_for(w) for w in (300, 3600, 86400)] == [30, 60, 1800]
    assert [graphs.format_duration(s) for s in (0, 45, 90, 600, 5400)] == [
        "0 s",
        "45 s",
        "1.5 min",
        "10 min",
        "1.5 h",
    ]


def test_screenshot_with_realistic_data(qtbot):
    view = GraphsView(clock=lambda: NOW)
    qtbot.addWidget(view)
    view.resize(1000, 760)
    view.set_history(realistic())
    with qtbot.waitExposed(view):
        view.show()
    view.refresh()
    assert view.grab().save(str(SCREENSHOT))
    image = QImage(str(SCREENSHOT))
    assert image.width() >= 1000 and image.height() >= 760
    # Not a blank frame: the plot area has many colours (lines, bars, fills, text).
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, 760, 7)}
    assert len(colours) > 50
