"""Failure classes, retries and the audit trail in the UI (issue 5): the job detail pane, the
jobs table's retry countdown and class tooltips, and quarantined nodes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QColor, QGuiApplication

from ffdesk.core.model import Attempt, Job, JobState
from ffdesk.ui.job_detail import JobDetailPane, format_size, format_wait, short_hash
from ffdesk.ui.jobs_model import Col, JobTableModel, retry_wait
from ffdesk.ui.jobs_view import JobsView
from ffdesk.ui.nodes_view import SEGMENTS_ROLE, NodesView, NodeTableModel
from ffdesk.ui.theme import state_color
from tests.ui.conftest import NOW, make_job
from tests.ui.test_nodes_view import node

IN_HASH = "3fa2c9e1d07b" + "a" * 52
IN_FULL = "77aa" + "b" * 60
OUT_HASH = "c0ffee123456" + "c" * 52
PROBE = {
    "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
    "duration": 2.0,
    "size": 120_000,
    "bit_rate": 480_000,
    "streams": [
        {"index": 0, "kind": "video", "codec": "h264", "width": 320, "height": 180, "fps": 25},
        {"index": 1, "kind": "audio", "codec": "aac", "sample_rate": 44100, "channels": 1},
    ],
}


class Clock:
    """A settable epoch clock."""

    def __init__(self, at: datetime = NOW) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


def make_attempt(attempt_id: int, seq: int, **changes: Any) -> Attempt:
    values: dict[str, Any] = {
        "id": attempt_id,
        "job_id": 4,
        "seq": seq,
        "node": "render-01",
        "node_session": "s1",
        "host": "render-01.lan",
        "claimed_at": NOW,
        "started_at": NOW,
        "finished_at": NOW + timedelta(seconds=3),
        "outcome": "succeeded",
        "counted": True,
        "exit_code": 0,
        "reason": None,
        "argv": ["ffmpeg", "-i", f"/in/run {attempt_id}.mkv", "/out/x.mp4"],
        "ffmpeg_version": "5.1.9",
        "ffmpeg_sha256": None,
        "ffmpeg_fingerprint": None,
        "input_probe": None,
        "stderr": f"run {attempt_id}\n",
        "stderr_bytes": 10,
    }
    values.update(changes)
    return Attempt(**values)


def history() -> tuple[Job, list[Attempt], list[dict[str, Any]]]:
    """Given back once (interrupted: same seq), failed on a node without disk space, then
    written under a new name by another node."""
    job = make_job(
        4,
        JobState.SUCCEEDED,
        attempt=2,
        output="/out/clip.mp4",
        written="/out/clip (2).mp4",
        avoid_nodes=["gpu-02"],
    )
    given_back = make_attempt(
        10,
        1,
        node="desk",
        outcome="interrupted",
        counted=False,
        exit_code=None,
        reason="node shutting down",
    )
    failed = make_attempt(
        11,
        1,
        node="gpu-02",
        outcome="failed",
        kind="environment",
        exit_code=1,
        reason="disk full: No space left on device",
        pid=777,
        retry_at=NOW + timedelta(seconds=3),  # == finished_at: straight to another node
    )
    succeeded = make_attempt(
        12,
        2,
        claimed_at=NOW + timedelta(seconds=5),
        pid=4242,
        input_size=1_234_567,
        input_mtime=NOW - timedelta(days=1),
        input_hash=IN_HASH,
        input_full_hash=IN_FULL,
        output_path="/out/clip (2).mp4",
        output_size=120_000,
        output_hash=OUT_HASH,
        output_probe=PROBE,
    )
    events = [
        {"at": NOW, "node": "gpu-02", "kind": "claimed", "detail": {"claim": 11}},
        {
            "at": NOW,
            "node": "gpu-02",
            "kind": "retry-scheduled",
            "detail": {"kind": "environment", "policy": "retry 2 of 3 on another node"},
        },
        {"at": NOW, "node": "render-01", "kind": "succeeded", "detail": {"written": "x"}},
    ]
    # Handed over in no particular order: the pane orders runs by claim.
    return job, [succeeded, given_back, failed], events


@pytest.fixture
def pane(qtbot: Any) -> JobDetailPane:
    pane = JobDetailPane()
    pane.clock = Clock()
    qtbot.addWidget(pane)
    pane.resize(1100, 600)
    return pane


def column(pane: JobDetailPane, title: str) -> int:
    table = pane.attempts_table
    for col in range(table.columnCount()):
        header = table.horizontalHeaderItem(col)
        if header is not None and header.text() == title:
            return col
    raise AssertionError(title)


def row_visible(pane: JobDetailPane, name: str) -> bool:
    return pane.summary_form.isRowVisible(pane.fields[name])


# --------------------------------------------------------------------------- helpers


def test_formatting_helpers() -> None:
    assert short_hash(IN_HASH) == "3fa2c9e1d07b…"
    assert short_hash(None) == "" and short_hash("abc") == "abc"
    assert format_size(812) == "812 B"
    assert format_size(1_234_567) == "1.23 MB"
    assert format_size(120_000) == "120 kB"
    assert format_wait(12.2) == "in 12 s"
    assert format_wait(125) == "in 2 min 05 s"


def test_retry_wait_only_for_failed_runs() -> None:
    now = NOW.timestamp()
    waiting = make_job(1, attempt=1, failure_kind="transient", not_before=NOW + timedelta(0, 12))
    assert retry_wait(waiting, now) == pytest.approx(12)
    assert retry_wait(waiting, now + 20) is None  # due: an ordinary queued job again
    # A fresh job whose not_before is a hair ahead of this machine's clock: no countdown.
    fresh = make_job(2, not_before=NOW + timedelta(seconds=2))
    assert retry_wait(fresh, now) is None
    assert retry_wait(replace(waiting, state=JobState.FAILED), now) is None


# --------------------------------------------------------------------------- detail pane


def test_attempts_are_numbered_in_claim_order_with_their_class(pane: JobDetailPane) -> None:
    job, attempts, events = history()
    pane.show_job(job, attempts, events)
    table = pane.attempts_table
    assert table.rowCount() == 3
    assert [table.item(r, 0).text() for r in range(3)] == ["1", "2", "3"]
    assert [table.item(r, 1).text() for r in range(3)] == ["desk", "gpu-02", "render-01"]
    assert [table.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in range(3)] == [10, 11, 12]
    assert "claim 10" in table.item(0, 0).toolTip() and "not counted" in table.item(0, 0).toolTip()
    kind = table.item(1, column(pane, "Class"))
    assert kind.text() == "environment"
    assert "another node" in kind.toolTip()
    assert kind.foreground().color() != QColor("black")
    assert table.item(2, column(pane, "Class")).text() == ""
    # The latest run is selected by default.
    assert pane.selected_attempt() is attempts[0]
    assert "'/in/run 12.mkv'" in pane.command_text()


def test_a_new_run_is_followed_when_the_latest_was_selected(pane: JobDetailPane) -> None:
    job, attempts, events = history()
    first = attempts[1:]  # given back, then failed: the failed run is the latest
    pane.show_job(replace(job, state=JobState.QUEUED), first, events)
    assert pane.selected_attempt().id == 11
    pane.show_job(job, attempts, events)  # the retry ran: show it, not the old failure
    assert pane.selected_attempt().id == 12


def test_ffmpeg_version_is_shortened_in_the_audit(pane: JobDetailPane) -> None:
    job, attempts, events = history()
    long = "ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026 the FFmpeg developers"
    attempts[0] = replace(attempts[0], ffmpeg_version=long)
    pane.show_job(job, attempts, events)
    assert pane.audit.run_text.text() == "pid 4242 · FFmpeg 5.1.9-0+deb12u1"
    assert long in pane.audit.run_text.toolTip()


def test_selection_is_kept_by_attempt_id_when_seqs_repeat(pane: JobDetailPane) -> None:
    job, attempts, events = history()
    pane.show_job(job, attempts, events)
    pane.attempts_table.selectRow(1)  # id 11, seq 1 (as is id 10)
    assert pane.selected_attempt().id == 11
    assert pane.stderr.text() == "run 11\n"
    pane.show_job(replace(job, revision=99), attempts, events)
    assert pane.selected_attempt().id == 11
    assert "'/in/run 11.mkv'" in pane.command_text()


def test_audit_box_of_the_selected_attempt(pane: JobDetailPane, qtbot: Any) -> None:
    job, attempts, events = history()
    pane.show_job(job, attempts, events)
    audit = pane.audit
    assert not audit.isHidden()
    assert audit.input_text.text().startswith("1.23 MB · modified ")
    assert audit.input_text.toolTip() == "1,234,567 bytes"
    assert audit.input_hash.text().count("3fa2c9e1d07b…") == 1  # short, as a link
    assert IN_HASH in audit.input_hash.toolTip()
    assert not audit.input_full_hash.isHidden() and IN_FULL in audit.input_full_hash.toolTip()
    assert audit.input_hash.textInteractionFlags() & Qt.TextInteractionFlag.TextSelectableByMouse
    with qtbot.waitSignal(pane.hash_copied, timeout=1000) as blocker:
        audit.input_hash.linkActivated.emit("copy")
    assert blocker.args == [IN_HASH]
    assert QGuiApplication.clipboard().text() == IN_HASH

    assert audit.output_text.text() == "clip (2).mp4 · 120 kB · fast hash"
    assert "/out/clip (2).mp4" in audit.output_text.toolTip()
    assert OUT_HASH in audit.output_hash.toolTip()
    assert audit.output_full_hash.isHidden() and audit.output_full_label.isHidden()
    assert audit.probe_text.text().startswith("mov,mp4 · 2s (2.00 s)")
    assert "#0 video: h264 320×180 25 fps" in audit.probe_text.text()
    assert audit.run_text.text() == "pid 4242 · FFmpeg 5.1.9"
    for name in ("Input", "Output", "Output probe", "Run"):
        assert audit.row_visible(name), name

    # The failed run: no fingerprints recorded, but its pid and when the retry could start.
    pane.attempts_table.selectRow(1)
    assert audit.run_text.text() == "pid 777 · FFmpeg 5.1.9 · retry after at once"
    assert not audit.row_visible("Input") and not audit.row_visible("Output probe")
    assert audit.input_hash.isHidden()


def test_summary_of_a_retried_job_written_under_a_new_name(pane: JobDetailPane) -> None:
    job, attempts, events = history()
    pane.show_job(job, attempts, events)
    output = pane.fields["Output"]
    assert output.text() == "/out/clip (2).mp4  (asked for clip.mp4)"
    assert "Requested: /out/clip.mp4" in output.toolTip()
    assert pane.title_label.text().endswith("→ clip (2).mp4")
    assert pane.fields["Avoids nodes"].text() == "gpu-02" and row_visible(pane, "Avoids nodes")
    # Succeeded: no failure class, no next try.
    assert pane.kind_label.isHidden()
    assert not row_visible(pane, "Failure class") and not row_visible(pane, "Next try")

    same = replace(job, written="/out/clip.mp4", avoid_nodes=[])
    pane.show_job(same, attempts, events)
    assert pane.fields["Output"].text() == "/out/clip.mp4"
    assert not row_visible(pane, "Avoids nodes")


def test_queued_for_a_retry_shows_class_next_try_and_policy(pane: JobDetailPane) -> None:
    clock = pane.clock
    job = make_job(
        7,
        JobState.QUEUED,
        attempt=1,
        failure_kind="transient",
        reason="network error: Connection refused",
        not_before=NOW + timedelta(seconds=12),
    )
    events = [
        {
            "at": NOW,
            "node": "render-01",
            "kind": "retry-scheduled",
            "detail": {"kind": "transient", "policy": "retry 2 of 3 in 12.0 s", "retry_in": 12},
        }
    ]
    failed = make_attempt(
        21,
        1,
        outcome="failed",
        kind="transient",
        exit_code=1,
        reason=job.reason,
        retry_at=NOW + timedelta(seconds=12),
    )
    pane.show_job(job, [failed], events)
    assert not pane.kind_label.isHidden() and pane.kind_label.text() == "transient"
    assert "retried after a pause" in pane.kind_label.toolTip()
    assert pane.reason_label.text() == "network error: Connection refused — retry 2 of 3 in 12.0 s"
    assert "e5533d" not in pane.reason_label.styleSheet()  # not failed (yet)
    assert "retry in 12 s" in pane.state_label.text()
    assert row_visible(pane, "Failure class")
    assert pane.fields["Failure class"].text() == "transient — a passing problem"
    assert pane.fields["Failure class"].toolTip().startswith("Transient:")
    assert pane.fields["Next try"].text().endswith("(in 12 s)") and row_visible(pane, "Next try")
    assert pane.audit.run_text.text().endswith("(in 12 s)")

    clock.now += 10  # the pane's 1 s tick
    pane._update_times()
    assert pane.fields["Next try"].text().endswith("(in 2 s)")
    assert "retry in 2 s" in pane.state_label.text()
    clock.now += 5  # due
    pane._update_times()
    assert not row_visible(pane, "Next try")
    assert "retry" not in pane.state_label.text()


@pytest.mark.parametrize("state", [JobState.FAILED, JobState.DEAD])
def test_failed_and_dead_jobs_show_their_class(pane: JobDetailPane, state: JobState) -> None:
    job = make_job(5, state, failure_kind="input", reason="input is truncated: moov atom")
    pane.show_job(job, [make_attempt(1, 1, outcome="failed", kind="input")], [])
    assert pane.kind_label.text() == "input" and not pane.kind_label.isHidden()
    assert "c0392b" in pane.kind_label.styleSheet()  # the class's colour
    assert pane.reason_label.text() == "input is truncated: moov atom"
    assert "e5533d" in pane.reason_label.styleSheet()
    assert pane.fields["Failure class"].text() == "input — the input file"
    pane.clear()
    assert pane.kind_label.isHidden() and not row_visible(pane, "Failure class")


def test_running_job_hides_a_stale_class(pane: JobDetailPane) -> None:
    job = make_job(6, JobState.RUNNING, failure_kind="environment")
    pane.show_job(job, [make_attempt(1, 1, finished_at=None, outcome=None)], [])
    assert pane.kind_label.isHidden()
    assert pane.audit.run_text.text() == "FFmpeg 5.1.9"


# --------------------------------------------------------------------------- jobs table


@pytest.fixture
def waiting_model(qtbot: Any) -> Iterator[tuple[JobTableModel, Clock]]:
    clock = Clock()
    model = JobTableModel(flush_interval_ms=0, tick_interval_ms=0, clock=clock)
    model.reset(
        [
            make_job(
                1,
                JobState.QUEUED,
                attempt=1,
                failure_kind="transient",
                reason="network error: server replied 503",
                not_before=NOW + timedelta(seconds=12),
            ),
            make_job(2, JobState.QUEUED, not_before=NOW + timedelta(seconds=1)),
            make_job(3, JobState.FAILED, failure_kind="input", reason="input file not found"),
            make_job(4, JobState.DEAD, failure_kind="environment", reason="disk full"),
        ]
    )
    yield model, clock
    model.deleteLater()


def state_cell(model: JobTableModel, job_id: int, role: int = Qt.ItemDataRole.DisplayRole):
    return model.index(model.row_of[job_id], Col.STATE).data(role)


def test_waiting_retry_counts_down_in_the_state_column(
    waiting_model: tuple[JobTableModel, Clock],
) -> None:
    model, clock = waiting_model
    assert state_cell(model, 1) == "Retry in 12s"
    assert state_cell(model, 2) == "Queued"  # never ran: no countdown
    tip = state_cell(model, 1, Qt.ItemDataRole.ToolTipRole)
    assert tip.startswith("Waiting to retry (transient failure): network error")
    assert "Next try at " in tip and "(in 12s)" in tip
    retry_icon = state_cell(model, 1, Qt.ItemDataRole.DecorationRole)
    queued_icon = state_cell(model, 2, Qt.ItemDataRole.DecorationRole)
    assert retry_icon.cacheKey() != queued_icon.cacheKey()

    changed: list[tuple[int, int, int, int]] = []
    model.dataChanged.connect(
        lambda tl, br, _roles: changed.append((tl.row(), br.row(), tl.column(), br.column()))
    )
    clock.now += 5
    model.tick()
    row = model.row_of[1]
    assert (row, row, Col.STATE, Col.STATE) in changed
    assert state_cell(model, 1) == "Retry in 7s"

    clock.now += 10  # due: one last update, then it is an ordinary queued job
    changed.clear()
    model.tick()
    assert (row, row, Col.STATE, Col.STATE) in changed
    assert state_cell(model, 1) == "Queued"
    changed.clear()
    model.tick()
    assert all(c[2] != Col.STATE for c in changed)


def test_a_retry_scheduled_by_a_change_starts_counting(
    waiting_model: tuple[JobTableModel, Clock],
) -> None:
    model, _clock = waiting_model
    job = model.job(2)
    assert job is not None
    model.apply(
        replace(
            job,
            attempt=1,
            failure_kind="unknown",
            not_before=NOW + timedelta(seconds=90),
            revision=job.revision + 10,
        )
    )
    model.flush()
    assert state_cell(model, 2) == "Retry in 1m 30s"
    model.remove([2])
    model.tick()  # a removed job is forgotten, not looked up


def test_failed_and_dead_rows_name_their_class_in_the_tooltip(
    waiting_model: tuple[JobTableModel, Clock],
) -> None:
    model, _clock = waiting_model
    failed = state_cell(model, 3, Qt.ItemDataRole.ToolTipRole)
    assert failed.startswith("Failed (input failure): input file not found")
    assert "Input: the file itself" in failed
    dead = state_cell(model, 4, Qt.ItemDataRole.ToolTipRole)
    assert dead.startswith("Dead (environment failure): disk full")
    assert state_cell(model, 4) == "Dead"


def test_retry_action_reprocesses_dead_jobs(qtbot: Any) -> None:
    model = JobTableModel(flush_interval_ms=0, tick_interval_ms=0, clock=Clock())
    view = JobsView(model)
    qtbot.addWidget(view)
    model.reset([make_job(5, JobState.DEAD, failure_kind="transient"), make_job(6)])
    view.select_ids([5])
    view.update_actions()
    assert view.retry_action.isEnabled()
    with qtbot.waitSignal(view.retry_requested, timeout=1000) as blocker:
        view.retry_action.trigger()
    assert blocker.args == [[5]]


# --------------------------------------------------------------------------- nodes


REASON = "3 environment failures in a row; last: job #12: disk full: No space left on device"


def nodes_cell(model: NodeTableModel, identifier: str, key: str, role: Any) -> Any:
    row = model.row_of(identifier)
    assert row is not None
    return model.index(row, NodeTableModel.COL[key]).data(role)


def test_quarantined_node_shows_its_reason_and_can_be_resumed(qtbot: Any) -> None:
    view = NodesView()
    qtbot.addWidget(view)
    view.resize(1300, 240)
    view.set_nodes([node("render-01"), node("gpu-02", "quarantined", state_reason=REASON)])
    view.show()
    qtbot.waitExposed(view)
    model = view.model
    display = nodes_cell(model, "gpu-02", "state", Qt.ItemDataRole.DisplayRole)
    assert display == f"Quarantined · {REASON}"
    assert nodes_cell(model, "gpu-02", "state", SEGMENTS_ROLE) == [
        ("Quarantined", "bold"),
        (f" · {REASON}", "note"),
    ]
    assert nodes_cell(model, "gpu-02", "state", Qt.ItemDataRole.ForegroundRole) == state_color(
        "quarantined"
    )
    tip = nodes_cell(model, "gpu-02", "state", Qt.ItemDataRole.ToolTipRole)
    assert REASON in tip and "Resume" in tip
    assert REASON in nodes_cell(model, "gpu-02", "node", Qt.ItemDataRole.ToolTipRole)
    # An online node keeps a plain state cell.
    assert nodes_cell(model, "render-01", "state", Qt.ItemDataRole.DisplayRole) == "Online"
    assert nodes_cell(model, "render-01", "state", SEGMENTS_ROLE) is None
    assert "1 quarantined" in view.summary.text()
    # ...and above the table, whatever the column's width.
    assert not view.banner.isHidden()
    assert "gpu-02</b> is quarantined: 3 environment failures" in view.banner.text()
    assert "Resume" in view.banner.text()

    # The State column was widened for the reason, within its cap.
    col = NodeTableModel.COL["state"]
    assert 200 < view.table.columnWidth(col) <= 300

    # Its text is painted in the quarantined colour (after the icon).
    index = view.proxy.mapFromSource(model.index(model.row_of("gpu-02"), col))
    rect = view.table.visualRect(index)
    image = view.table.viewport().grab(rect.adjusted(24, 0, 0, 0)).toImage()
    red = state_color("quarantined")
    reddish = sum(
        1
        for x in range(0, min(image.width(), 90))
        for y in range(image.height())
        if _close(image.pixelColor(x, y), red)
    )
    assert reddish > 10

    view.select("gpu-02")
    assert {n for n, a in view.actions_by_name.items() if a.isEnabled()} == {"resume"}
    assert "quarantine" in view.actions_by_name["resume"].toolTip()
    with qtbot.waitSignal(view.action_requested, timeout=1000) as blocker:
        view.actions_by_name["resume"].trigger()
    assert blocker.args == ["gpu-02", "resume"]
    with qtbot.assertNotEmitted(view.action_requested):
        view.actions_by_name["pause"].trigger()


def test_quarantine_arriving_later_widens_the_state_column(qtbot: Any) -> None:
    view = NodesView()
    qtbot.addWidget(view)
    view.resize(1300, 240)
    view.set_nodes([node("gpu-02")])
    view.show()
    qtbot.waitExposed(view)
    col = NodeTableModel.COL["state"]
    before = view.table.columnWidth(col)
    view.select("gpu-02")
    view.set_nodes([node("gpu-02", "quarantined", state_reason=REASON)])
    assert view.table.columnWidth(col) > before
    assert view.selected_identifier() == "gpu-02"
    assert {n for n, a in view.actions_by_name.items() if a.isEnabled()} == {"resume"}
    assert not view.banner.isHidden()
    # Resumed: back online, the column keeps its width (no jumping), the reason is gone.
    view.set_nodes([node("gpu-02", "online")])
    assert view.banner.isHidden()
    assert nodes_cell(view.model, "gpu-02", "state", Qt.ItemDataRole.DisplayRole) == "Online"
    assert {n for n, a in view.actions_by_name.items() if a.isEnabled()} == {"pause", "drain"}
    assert QModelIndex().isValid() is False


def _close(a: QColor, b: QColor, tolerance: int = 40) -> bool:
    return (
        abs(a.red() - b.red()) + abs(a.green() - b.green()) + abs(a.blue() - b.blue()) < tolerance
    )
