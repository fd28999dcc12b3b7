"""JobsView (actions, signals, filter bar, 100 000 rows) and JobDetailPane (stderr search,
command quoting, jobs that never ran)."""

from __future__ import annotations

import shlex
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt, QUrl
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from ffdesk.core.model import Attempt, Job, JobState
from ffdesk.ui.job_detail import JobDetailPane, format_command, probe_lines
from ffdesk.ui.jobs_model import Col, JobIdRole, JobTableModel
from ffdesk.ui.jobs_view import JobsView
from tests.ui.conftest import NOW, make_job

STATES = list(JobState)


@pytest.fixture
def view(qtbot: Any, clock: Any) -> JobsView:
    model = JobTableModel(flush_interval_ms=0, tick_interval_ms=0, clock=clock)
    view = JobsView(model, resolve_path=lambda p: Path(p) if p.startswith("/") else None)
    qtbot.addWidget(view)
    view.resize(1200, 500)
    model.reset(
        [
            make_job(1, JobState.QUEUED, priority=3),
            make_job(2, JobState.RUNNING),
            make_job(3, JobState.SUCCEEDED, output="/srv/out/three.mp4"),
            make_job(4, JobState.FAILED),
            make_job(5, JobState.DEAD),
            make_job(6, JobState.CANCELED),
            make_job(7, JobState.QUEUED),
        ]
    )
    return view


def select(view: JobsView, ids: list[int]) -> None:
    view.select_ids(ids)
    # Make one of them current, as a click would.
    first = view.proxy.mapFromSource(view.model.index(view.model.row_of[ids[0]], 0))
    view.table.selectionModel().setCurrentIndex(first, QItemSelectionModel.SelectionFlag.NoUpdate)
    view.update_actions()


def enabled(view: JobsView) -> dict[str, bool]:
    return {
        "cancel": view.cancel_action.isEnabled(),
        "retry": view.retry_action.isEnabled(),
        "priority": view.priority_action.isEnabled(),
        "top": view.move_to_top_action.isEnabled(),
        "details": view.details_action.isEnabled(),
        "command": view.copy_command_action.isEnabled(),
        "input": view.open_input_action.isEnabled(),
        "output": view.open_output_action.isEnabled(),
    }


# --------------------------------------------------------------------------- jobs view


def test_actions_follow_selected_states(view: JobsView) -> None:
    assert not any(enabled(view).values())  # nothing selected

    select(view, [1, 7])  # queued, never ran
    assert enabled(view) == {
        "cancel": True,
        "retry": False,
        "priority": True,
        "top": True,
        "details": True,
        "command": False,
        "input": False,  # storage-root path: the resolver does not know it
        "output": False,
    }
    select(view, [2])  # running
    e = enabled(view)
    assert e["cancel"] and e["priority"] and e["command"] and not e["retry"] and not e["top"]
    select(view, [4, 5, 6])  # failed, dead, canceled
    e = enabled(view)
    assert e["retry"] and not e["cancel"] and not e["priority"] and not e["top"]
    select(view, [3])  # succeeded
    e = enabled(view)
    assert not (e["cancel"] or e["retry"] or e["priority"] or e["top"])
    assert e["output"] and e["details"]

    # The selected job changes state under the selection: the actions follow the flush.
    select(view, [1])
    assert view.cancel_action.isEnabled()
    view.model.apply(replace(view.model.job(1), state=JobState.CANCELED, revision=100))  # type: ignore[type-var]
    view.model.flush()
    assert not view.cancel_action.isEnabled() and view.retry_action.isEnabled()


def test_cancel_and_other_actions_emit_ids(view: JobsView, qtbot: Any) -> None:
    select(view, [1, 2, 3])
    assert sorted(view.selected_ids()) == [1, 2, 3]
    with qtbot.waitSignal(view.cancel_requested, timeout=1000) as blocker:
        view.cancel_action.trigger()
    assert sorted(blocker.args[0]) == [1, 2]  # the succeeded one cannot be canceled

    with qtbot.waitSignal(view.move_to_top_requested, timeout=1000) as blocker:
        view.move_to_top_action.trigger()
    assert blocker.args[0] == [1]

    view.ask_priority = lambda current, count: current + count  # type: ignore[method-assign]
    with qtbot.waitSignal(view.priority_requested, timeout=1000) as blocker:
        view.priority_action.trigger()
    ids, value = blocker.args
    assert sorted(ids) == [1, 2] and value in (3 + 2, 0 + 2)

    select(view, [4, 5, 6, 1])
    with qtbot.waitSignal(view.retry_requested, timeout=1000) as blocker:
        view.retry_action.trigger()
    assert sorted(blocker.args[0]) == [4, 5, 6]

    select(view, [2])
    with qtbot.waitSignal(view.details_requested, timeout=1000) as blocker:
        view.details_action.trigger()
    assert blocker.args == [2]
    with qtbot.waitSignal(view.command_requested, timeout=1000) as blocker:
        view.copy_command_action.trigger()
    assert blocker.args == [2]
    view.copy_command_text("ffmpeg -i 'a b.mkv' out.mp4")
    assert QGuiApplication.clipboard().text() == "ffmpeg -i 'a b.mkv' out.mp4"

    opened: list[QUrl] = []
    view.open_url = opened.append
    select(view, [3])
    view.open_output_action.trigger()
    assert [u.toLocalFile() for u in opened] == ["/srv/out"]


def test_selection_changed_is_emitted_once_per_burst(view: JobsView, qtbot: Any) -> None:
    with qtbot.waitSignal(view.selection_changed, timeout=1000) as blocker:
        view.select_ids([2])
        view.select_ids([2, 4])
    assert sorted(blocker.args[0]) == [2, 4]


def test_double_click_and_enter_ask_for_details(view: JobsView, qtbot: Any) -> None:
    with qtbot.waitActive(view):  # shortcuts need an active window
        view.show()
        view.activateWindow()
    select(view, [4])
    view.table.setFocus()
    with qtbot.waitSignal(view.details_requested, timeout=1000) as blocker:
        qtbot.keyClick(view.table, Qt.Key.Key_Return)
    assert blocker.args == [4]
    index = view.table.currentIndex()
    rect = view.table.visualRect(index)
    with qtbot.waitSignal(view.details_requested, timeout=1000) as blocker:
        # QTest's double click alone has no press before it, which the view requires.
        qtbot.mouseClick(view.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        qtbot.mouseDClick(view.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert blocker.args == [4]


def test_filter_bar(view: JobsView, qtbot: Any) -> None:
    assert view.state_buttons[JobState.QUEUED].text() == "Queued 2"
    view.state_buttons[JobState.QUEUED].setChecked(True)
    view.state_buttons[JobState.FAILED].setChecked(True)
    assert view.proxy.rowCount() == 3
    qtbot.waitUntil(lambda: view.count_label.text() == "3 of 7 jobs", timeout=1000)
    view.set_state_filter(None)
    assert view.proxy.rowCount() == 7

    view.search.setText("CLIP 00004")
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 1, timeout=2000)  # after the debounce
    assert view.proxy.index(0, 0).data(JobIdRole) == 4
    view.search.clear()
    view.apply_search()
    assert view.proxy.rowCount() == 7

    view.model.apply(make_job(8, JobState.QUEUED, revision=100))
    view.model.flush()
    assert view.state_buttons[JobState.QUEUED].text() == "Queued 3"


def test_sorting_from_the_header(view: JobsView) -> None:
    view.table.sortByColumn(Col.PRIORITY, Qt.SortOrder.DescendingOrder)
    assert view.proxy.index(0, 0).data(JobIdRole) == 1  # priority 3
    view.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
    ids = [view.proxy.index(r, 0).data(JobIdRole) for r in range(view.proxy.rowCount())]
    assert ids == [1, 2, 3, 4, 5, 6, 7]


def test_progress_delegate_paints(view: JobsView, qtbot: Any) -> None:
    with qtbot.waitExposed(view):
        view.show()
    image = view.table.viewport().grab().toImage()
    rect = view.table.visualRect(view.proxy.index(1, Col.PROGRESS))  # job 2 runs at 42 %
    bar = view.table.palette().highlight().color()
    # Some pixel of the filled part of the bar has the highlight colour (style-independent
    # enough: Fusion and the common styles fill the chunk with it or a close shade).
    left = [
        image.pixelColor(x, rect.center().y())
        for x in range(rect.left() + 4, rect.left() + int(rect.width() * 0.3))
    ]
    assert any(
        abs(c.red() - bar.red()) + abs(c.green() - bar.green()) + abs(c.blue() - bar.blue()) < 90
        for c in left
    )


def test_hundred_thousand_jobs_first_paint(qtbot: Any) -> None:
    jobs: list[Job] = []
    for i in range(1, 100_001):
        state = JobState.SUCCEEDED if i < 90_000 else STATES[i % 3]
        jobs.append(make_job(i, state))
    view = JobsView()
    qtbot.addWidget(view)
    view.resize(1400, 800)
    started = time.perf_counter()
    view.model.reset(jobs)
    view.show()
    QApplication.processEvents()
    view.table.viewport().grab()
    elapsed = time.perf_counter() - started
    print(f"\n100 000 jobs: reset + first paint in {elapsed * 1000:.0f} ms")
    assert view.proxy.rowCount() == 100_000
    assert elapsed < 5.0


# --------------------------------------------------------------------------- job detail


def attempt(seq: int, **changes: Any) -> Attempt:
    values: dict[str, Any] = {
        "id": seq,
        "job_id": 4,
        "seq": seq,
        "node": "node-1",
        "node_session": "s1",
        "host": "host-1",
        "claimed_at": NOW,
        "started_at": NOW,
        "finished_at": NOW,
        "outcome": "failed",
        "counted": True,
        "exit_code": 1,
        "reason": "bad input",
        "argv": ["ffmpeg", "-i", f"/in/attempt {seq}.mkv", "/out/x.mp4"],
        "ffmpeg_version": "7.1",
        "ffmpeg_sha256": None,
        "ffmpeg_fingerprint": None,
        "input_probe": None,
        "stderr": f"attempt {seq}\n",
        "stderr_bytes": 10,
    }
    values.update(changes)
    return Attempt(**values)


STDERR = "\n".join(
    [
        "ffmpeg version 7.1",
        "Input #0, matroska,webm, from 'in.mkv':",
        "[h264 @ 0x1] error while decoding MB 3 4",
        "[h264 @ 0x1] ERROR while decoding MB 7 8",
        "frame=  100 fps= 50",
        "Conversion failed! (error)",
    ]
)


def test_stderr_search_counts_and_cycles(qtbot: Any) -> None:
    pane = JobDetailPane()
    qtbot.addWidget(pane)
    job = make_job(4, JobState.FAILED)
    pane.show_job(job, [attempt(1, stderr=STDERR)], [])
    log = pane.stderr
    assert log.text() == STDERR

    log.search.setText("error")
    assert log.match_count == 3  # case-insensitive
    assert log.count_label.text() == "1 / 3"
    log.find_next()
    log.find_next()
    assert log.count_label.text() == "3 / 3"
    log.find_next()  # wraps around
    assert log.count_label.text() == "1 / 3"
    log.find_previous()
    assert log.count_label.text() == "3 / 3"
    assert log.edit.textCursor().selectedText().lower() == "error"
    assert len(log.edit.extraSelections()) == 3  # all of them highlighted

    log.search.setFocus()
    qtbot.keyClick(log.search, Qt.Key.Key_Return)  # Enter = next
    assert log.count_label.text() == "1 / 3"

    log.search.setText("no such text")
    assert log.match_count == 0 and log.count_label.text() == "No matches"
    assert log.edit.extraSelections() == []
    log.search.clear()
    assert log.count_label.text() == ""


def test_command_display_quotes_like_a_shell() -> None:
    argv = [
        "/usr/bin/ffmpeg",
        "-i",
        "/media/with space.mkv",
        "-metadata",
        'title=It\'s a "test"',
        "/out/dollar $HOME;x.mp4",
        "/out/ünïcødé 日本.mp4",
    ]
    text = format_command(argv, windows=False)
    assert "'/media/with space.mkv'" in text
    assert shlex.split(text) == argv  # pasting it into a shell gives the same argv
    windows = format_command(["ffmpeg", "-i", "C:\\in\\with space.mkv", 'a"b'], windows=True)
    assert windows == 'ffmpeg -i "C:\\in\\with space.mkv" a\\"b'


def test_detail_shows_attempts_command_and_probe(qtbot: Any) -> None:
    pane = JobDetailPane()
    qtbot.addWidget(pane)
    probe = {
        "duration": 83.5,
        "format_name": "matroska,webm",
        "streams": [
            {
                "index": 0,
                "kind": "video",
                "codec": "h264",
                "width": 1920,
                "height": 1080,
                "fps": 23.976,
            },
            {"index": 1, "kind": "audio", "codec": "aac", "channels": 2, "sample_rate": 48000},
        ],
    }
    job = make_job(4, JobState.FAILED, attempt=2)
    events = [{"at": NOW, "node": "node-1", "kind": "failed", "detail": {"reason": "boom"}}]
    pane.show_job(job, [attempt(1), attempt(2, input_probe=probe)], events)
    assert pane.title_label.text().startswith("#4")
    assert pane.reason_label.text() == "boom" and "e5533d" in pane.reason_label.styleSheet()
    assert pane.fields["Attempt"].text() == "2 / 3"
    assert pane.attempts_table.rowCount() == 2
    assert "'/in/attempt 2.mkv'" in pane.command_text()  # the latest attempt by default
    assert "h264 1920×1080 23.976 fps" in pane.probe_label.text()
    assert "aac 48 kHz 2 ch" in pane.probe_label.text()
    assert pane.events_table.item(0, 3).text() == "reason=boom"

    pane.attempts_table.selectRow(0)
    assert "'/in/attempt 1.mkv'" in pane.command_text()
    assert pane.stderr.text() == "attempt 1\n"
    pane.copy_command()
    assert QGuiApplication.clipboard().text() == pane.command_text()

    # The same job again (it changed): the chosen attempt stays selected.
    pane.show_job(replace(job, revision=99), [attempt(1), attempt(2)], events)
    assert "'/in/attempt 1.mkv'" in pane.command_text()


def test_detail_of_a_job_that_never_ran(qtbot: Any) -> None:
    pane = JobDetailPane()
    qtbot.addWidget(pane)
    pane.show_job(make_job(9, JobState.QUEUED), [], [])
    assert pane.attempts_table.rowCount() == 0
    assert pane.command_text() == ""
    assert not pane.copy_button.isEnabled()
    assert pane.stderr.edit.placeholderText() == "This job has not run yet"
    assert pane.probe_label.text() == "Not probed yet"
    assert pane.reason_label.isHidden()
    assert probe_lines(None) == []
    pane.clear()
    assert pane.title_label.text() == "No job selected" and not pane.isEnabled()
