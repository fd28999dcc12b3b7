"""NodeTableModel / NodesView: incremental updates, live heartbeat age, state-gated actions."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from typing import Any

import pytest
from PySide6.QtCore import QModelIndex, Qt

from ffdesk.ui.nodes_view import (
    LOCAL_SUFFIX,
    SEGMENTS_ROLE,
    NodesView,
    NodeTableModel,
    allowed_actions,
    format_age,
    short_ffmpeg_version,
)

SOFTWARE = (
    "aac",
    "flac",
    "libmp3lame",
    "libopus",
    "libsvtav1",
    "libvpx-vp9",
    "libx264",
    "libx265",
    "prores_ks",
)


def node(identifier: str, state: str = "online", **extra: Any) -> dict[str, Any]:
    """A row shaped like ``ffdesk.db.nodes.list_nodes`` returns it."""
    row: dict[str, Any] = {
        "identifier": identifier,
        "session": f"00000000-0000-0000-0000-{abs(hash(identifier)) % 10**12:012d}",
        "host": f"{identifier}.studio.lan",
        "pid": 4242,
        "os": "linux",
        "arch": "x86_64",
        "cpu": "AMD Ryzen 9 7950X",
        "cores": 32,
        "ram_bytes": 128 * 2**30,
        "app_version": "0.1.0",
        "ffmpeg_version": "7.1.1",
        "ffmpeg_fingerprint": "0123456789abcdef",
        "encoders": SOFTWARE,
        "tags": (),
        "slots": 4,
        "heartbeat_s": 5.0,
        "lease_s": 15.0,
        "recorded_state": state,
        "state": state,
        "state_reason": None,
        "revision": 1,
        "heartbeat_age": 1.0,
        "running": 0,
        "job_ids": [],
        "fps": None,
    }
    row.update(extra)
    return row


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cell(model: NodeTableModel, identifier: str, column: str, role=Qt.ItemDataRole.DisplayRole):
    row = model.row_of(identifier)
    assert row is not None, identifier
    return model.index(row, NodeTableModel.COL[column]).data(role)


def test_set_nodes_is_incremental_and_never_resets(qtbot):
    model = NodeTableModel()
    events: list[tuple] = []
    model.modelAboutToBeReset.connect(lambda: events.append(("reset",)))
    model.rowsInserted.connect(lambda _p, a, b: events.append(("insert", a, b)))
    model.rowsRemoved.connect(lambda _p, a, b: events.append(("remove", a, b)))
    model.dataChanged.connect(
        lambda tl, br, _roles=(): events.append(("changed", tl.row(), br.row(), tl.column()))
    )

    model.set_nodes([node("a"), node("b"), node("c")])
    assert ("insert", 0, 2) in events
    assert model.identifiers() == ["a", "b", "c"]

    # Same data, fresher heartbeat: only the ticking heartbeat column is repainted.
    events.clear()
    model.set_nodes([node("a", heartbeat_age=0.2), node("b"), node("c")])
    assert [e for e in events if e[0] != "changed"] == []
    hb = NodeTableModel.COL["heartbeat"]
    assert all(e[3] == hb for e in events)

    # One node changes state: exactly that row is reported, across all columns.
    events.clear()
    model.set_nodes([node("a"), node("b", "paused"), node("c")])
    full_rows = [e for e in events if e[0] == "changed" and e[3] == 0]
    assert full_rows == [("changed", 1, 1, 0)]
    assert cell(model, "b", "state") == "Paused"

    # A node leaves and another joins: one removal, one insertion, still no reset.
    events.clear()
    model.set_nodes([node("a"), node("c"), node("d")])
    assert ("remove", 1, 1) in events
    assert ("insert", 2, 2) in events
    assert model.identifiers() == ["a", "c", "d"]
    assert model.row_of("c") == 1
    assert not any(e[0] == "reset" for e in events)

    # Everything gone: rows removed, the heartbeat timer stops.
    model.set_nodes([])
    assert model.rowCount() == 0
    assert not model._ticker.isActive()


def test_model_passes_qt_model_tester(qtmodeltester):
    model = NodeTableModel()
    model.set_nodes(
        [
            node(
                "render-01",
                tags=("gpu",),
                encoders=("h264_nvenc", *SOFTWARE),
                running=2,
                job_ids=[12, 15],
                fps=240.5,
                cpu_percent=80.0,
                mem_percent=40.0,
            ),
            node("old-mini", "stale", heartbeat_age=12.0),
            node("laptop", "offline", heartbeat_age=7300.0, encoders=()),
            {"identifier": "bare", "state": "online"},  # an engine that reports almost nothing
        ]
    )
    qtmodeltester.check(model, force_py=True)


def test_cells_show_live_data_and_accept_missing_keys(qtbot):
    clock = FakeClock()
    model = NodeTableModel(clock=clock)
    model.set_nodes(
        [
            node(
                "render-01",
                tags=("gpu", "big-mem"),
                running=2,
                job_ids=[12, 15],
                fps=240.5,
                cpu_percent=80.4,
                mem_percent=40.0,
                heartbeat_age=3.2,
                encoders=("hevc_nvenc", "h264_nvenc", *SOFTWARE),
                ffmpeg_version="7.1.1",
            ),
            node(
                "ws",
                os="windows",
                cores=20,
                ram_bytes=64 * 2**30,
                ffmpeg_version="6.1.1-full_build-www.gyan.dev",
            ),
            {"identifier": "bare"},
        ]
    )
    assert cell(model, "render-01", "heartbeat") == "3 s ago"
    assert cell(model, "render-01", "slots") == "2 / 4"
    assert cell(model, "render-01", "jobs") == "#12, #15"
    assert cell(model, "render-01", "fps") == "240"
    assert cell(model, "render-01", "load") == "CPU 80 % · RAM 40 %"
    assert cell(model, "ws", "load") == "20 cores · 64.0 GB"  # no live load: machine size
    assert cell(model, "ws", "host") == "ws.studio.lan · Windows"
    assert cell(model, "ws", "ffmpeg") == "6.1.1"
    # Hardware encoders first and bold; the rest counted, all of them in the tooltip.
    segments = cell(model, "render-01", "encoders", SEGMENTS_ROLE)
    assert segments[:2] == [("h264_nvenc", "item-bold"), ("hevc_nvenc", "item-bold")]
    assert segments[2] == ("libx264", "item")
    assert segments[-1] == ("5", "more")
    assert "h264_nvenc" in cell(model, "render-01", "encoders", Qt.ItemDataRole.ToolTipRole)
    assert cell(model, "render-01", "node", SEGMENTS_ROLE) == [
        ("render-01", "bold"),
        ("gpu", "tag"),
        ("big-mem", "tag"),
    ]
    assert cell(model, "render-01", "state", Qt.ItemDataRole.DecorationRole) is not None
    # A row with nothing but its name renders placeholders instead of raising.
    for column in NodeTableModel.COL:
        cell(model, "bare", column)
        cell(model, "bare", column, Qt.ItemDataRole.ToolTipRole)

    # The age keeps counting between refreshes.
    clock.now += 5
    model.tick()
    assert cell(model, "render-01", "heartbeat") == "8 s ago"
    clock.now += 120
    assert cell(model, "render-01", "heartbeat") == "2 min ago"
    # A refresh brings a new measured age and restarts the count from it.
    model.set_nodes([node("render-01", heartbeat_age=0.5)])
    assert cell(model, "render-01", "heartbeat") == "just now"


def test_heartbeat_ticks_on_a_timer(qtbot):
    clock = FakeClock()
    model = NodeTableModel(clock=clock, tick_ms=20)
    model.set_nodes([node("a", heartbeat_age=1.0)])
    clock.now += 2
    hb = NodeTableModel.COL["heartbeat"]
    with qtbot.waitSignal(
        model.dataChanged, timeout=2000, check_params_cb=lambda tl, br, roles=(): tl.column() == hb
    ):
        pass
    assert cell(model, "a", "heartbeat") == "3 s ago"


def test_local_node_is_marked(qtbot):
    model = NodeTableModel()
    model.set_local_identifier("me")  # before the row exists: applied when it arrives
    model.set_nodes([node("me"), node("other")])
    assert cell(model, "me", "node").startswith("me" + LOCAL_SUFFIX)
    assert LOCAL_SUFFIX not in cell(model, "other", "node")
    model.set_local_identifier("other")
    assert LOCAL_SUFFIX not in cell(model, "me", "node")


@pytest.mark.parametrize(
    ("state", "allowed"),
    [
        ("online", {"pause", "drain"}),
        ("draining", {"pause", "resume"}),
        ("paused", {"resume"}),
        ("stale", set()),
        ("offline", set()),
        ("quarantined", {"resume"}),
        (None, set()),
    ],
)
def test_allowed_actions(state, allowed):
    assert allowed_actions(state) == allowed


def enabled(view: NodesView) -> set[str]:
    return {name for name, action in view.actions_by_name.items() if action.isEnabled()}


def test_actions_follow_the_selected_nodes_state(qtbot):
    view = NodesView()
    qtbot.addWidget(view)
    view.set_nodes([node("a"), node("b", "paused"), node("c", "offline")])
    assert enabled(view) == set()  # nothing selected

    assert view.select("a")
    assert enabled(view) == {"pause", "drain"}
    view.select("b")
    assert enabled(view) == {"resume"}
    view.select("c")
    assert enabled(view) == set()

    # The selected node changes state under the user's eyes: selection kept, buttons follow.
    view.select("a")
    view.set_nodes([node("a", "draining"), node("b", "paused"), node("c", "offline")])
    assert view.selected_identifier() == "a"
    assert enabled(view) == {"pause", "resume"}
    view.set_nodes([node("a", "stale"), node("b", "paused"), node("c", "offline")])
    assert enabled(view) == set()

    # The selected node disappears: Qt moves the selection to a neighbour (native behaviour);
    # the buttons must match whatever is selected then, never the vanished node.
    view.set_nodes([node("b", "paused")])
    assert view.selected_identifier() in (None, "b")
    assert enabled(view) == (set() if view.selected_identifier() is None else {"resume"})


def test_action_emits_identifier_and_action(qtbot):
    view = NodesView()
    qtbot.addWidget(view)
    view.set_nodes([node("render-01"), node("ws", "paused")])
    view.select("render-01")
    with qtbot.waitSignal(view.action_requested, timeout=1000) as blocker:
        view.actions_by_name["drain"].trigger()
    assert blocker.args == ["render-01", "drain"]

    view.select("ws")
    with qtbot.waitSignal(view.action_requested, timeout=1000) as blocker:
        view.actions_by_name["resume"].trigger()
    assert blocker.args == ["ws", "resume"]

    # A disabled action cannot be forced through.
    with qtbot.assertNotEmitted(view.action_requested):
        view.actions_by_name["pause"].trigger()


def test_sorting_uses_raw_values(qtbot):
    view = NodesView()
    qtbot.addWidget(view)
    view.set_nodes(
        [
            node("a", heartbeat_age=100.0),
            node("b", heartbeat_age=9.0),
            node("c", heartbeat_age=20.0),
        ]
    )
    view.table.sortByColumn(NodeTableModel.COL["heartbeat"], Qt.SortOrder.AscendingOrder)
    order = [view.proxy.index(r, 0).data(Qt.ItemDataRole.UserRole + 3) for r in range(3)]
    assert order == ["b", "c", "a"]  # 9 s < 20 s < 100 s, not "1 min" < "20 s" < "9 s"


def test_helpers():
    assert format_age(None) == "—"
    assert format_age(0.4) == "just now"
    assert format_age(3.9) == "3 s ago"
    assert format_age(61) == "1 min ago"
    assert format_age(7300) == "2 h ago"
    assert format_age(3 * 86400) == "3 d ago"
    assert short_ffmpeg_version("5.1.9-0+deb12u1") == "5.1.9"
    assert short_ffmpeg_version("ffmpeg version n7.1 Copyright") == "7.1"
    assert short_ffmpeg_version("N-112345-gdeadbeef") == "N-112345"
    assert short_ffmpeg_version(None) == "—"


def realistic_rows() -> list[dict[str, Any]]:
    return [
        node(
            "render-01",
            tags=("gpu", "big-mem"),
            running=3,
            job_ids=[112, 115, 118],
            fps=412.5,
            cpu_percent=78.0,
            mem_percent=41.0,
            heartbeat_age=1.2,
            encoders=("h264_nvenc", "hevc_nvenc", "av1_nvenc", *SOFTWARE),
        ),
        node(
            "edit-bay-2",
            "draining",
            host="edit-bay-2",
            os="darwin",
            arch="arm64",
            cpu="Apple M2 Pro",
            cores=12,
            ram_bytes=32 * 2**30,
            slots=2,
            running=1,
            job_ids=[109],
            fps=88.0,
            cpu_percent=35.0,
            mem_percent=62.0,
            heartbeat_age=3.0,
            state_reason="drain by anna",
            ffmpeg_version="7.0.2",
            encoders=("h264_videotoolbox", "hevc_videotoolbox", *SOFTWARE),
        ),
        node(
            "ws-mark",
            "paused",
            host="ws-mark",
            os="windows",
            cores=20,
            ram_bytes=64 * 2**30,
            slots=2,
            tags=("qsv",),
            heartbeat_age=2.0,
            ffmpeg_version="6.1.1-full_build-www.gyan.dev",
            encoders=("h264_qsv", "hevc_qsv", *SOFTWARE),
        ),
        node(
            "old-mini",
            "stale",
            host="old-mini",
            cores=4,
            ram_bytes=8 * 2**30,
            slots=1,
            running=1,
            job_ids=[101],
            fps=23.9,
            heartbeat_age=11.0,
            ffmpeg_version="5.1.9-0+deb12u1",
        ),
        node(
            "laptop-jo",
            "offline",
            host="laptop-jo",
            cores=8,
            ram_bytes=16 * 2**30,
            slots=2,
            heartbeat_age=7300.0,
            state_reason="stopped",
            ffmpeg_version="5.1.9",
        ),
        node(
            "this-box",
            host="this-box",
            tags=("cpu",),
            slots=3,
            running=2,
            job_ids=[120, 121],
            fps=61.3,
            cpu_percent=92.0,
            mem_percent=23.0,
            heartbeat_age=0.4,
            ffmpeg_version="5.1.9-0+deb12u1",
        ),
    ]


def test_screenshot(qtbot):
    view = NodesView()
    qtbot.addWidget(view)
    view.resize(1280, 300)
    view.set_local_identifier("this-box")
    view.set_nodes(realistic_rows())
    view.show()
    qtbot.waitExposed(view)
    view.select("render-01")
    assert view.grab().save("/tmp/nodes_view.png")
    assert view.summary.text() == "6 nodes · 4 up · 7 of 14 slots busy"


def test_context_menu_offers_the_same_actions(qtbot):
    view = NodesView()
    qtbot.addWidget(view)
    view.resize(900, 200)
    view.set_nodes([node("a")])
    view.show()
    qtbot.waitExposed(view)
    rect = view.table.visualRect(view.proxy.index(0, 0))
    view._on_table_context_menu(rect.center())
    assert view.selected_identifier() == "a"
    menu_actions = [a.text() for a in view._menu.actions() if a.text()]
    assert menu_actions == ["a", "Pause", "Resume", "Drain"]
    view._menu.close()
    assert QModelIndex().isValid() is False
