"""DropDialog (folder scan on a worker thread), SettingsDialog (values, validation, masked
URLs, the real FFmpeg test) and write_settings_file (TOML round trip)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import shutil
import stat
import threading
import tomllib
from pathlib import Path

import pytest
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDialog, QLineEdit

from ffdesk.core.config import load_settings, read_settings_file, write_settings_file
from ffdesk.core.errors import ConfigError
from ffdesk.core.media import expand
from ffdesk.core.places import Places
from ffdesk.ffmpeg.presets import load_presets
from ffdesk.ui.drop_dialog import DropChoice, DropDialog, scan
from ffdesk.ui.settings_dialog import SettingsDialog

FFMPEG = shutil.which("ffmpeg")
SERVER_URL = "postgresql://ffdesk:s3cret@db.studio.lan:5432/ffdesk"
JOIN_URL = "postgresql://ffdesk:Zx81pQ@render-01.studio.lan:5432/ffdesk"


# --------------------------------------------------------------------------- drop dialog


def make_tree(root: Path) -> dict[str, Path]:
    files = {
        "a": root / "shoot" / "a.mov",
        "b": root / "shoot" / "cam B" / "b.MKV",
        "c": root / "shoot" / "cam B" / "deeper" / "c.mp3",
        "notes": root / "shoot" / "notes.txt",
        "readme": root / "shoot" / "cam B" / "deeper" / "readme.md",
        "ds": root / "shoot" / "cam B" / ".DS_Store",
        "partial": root / "shoot" / "cam B" / "d.mp4.part",
        "hidden_dir": root / "shoot" / ".cache" / "e.mov",  # hidden folders are not walked
        "single": root / "loose" / "x.wav",
        "sidecar": root / "loose" / "x.srt",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0")
    return files


def wait_scanned(qtbot, dialog: DropDialog) -> None:
    qtbot.waitUntil(lambda: not dialog.is_scanning(), timeout=5000)


def test_drop_dialog_scans_folders_and_counts_skipped_files(qtbot, tmp_path: Path):
    files = make_tree(tmp_path)
    dropped = [tmp_path / "shoot", files["single"], files["sidecar"]]
    dialog = DropDialog(
        dropped, load_presets(), last_preset="hevc-mp4", last_output_dir=None, priority=5
    )
    qtbot.addWidget(dialog)
    # The walk runs on its thread; nothing can be queued before its answer arrives.
    assert not dialog.ok_button.isEnabled()
    with qtbot.waitSignal(dialog.scan_finished, timeout=5000) as blocker:
        pass
    assert blocker.args == [4, 5]
    assert dialog.status.text() == "4 media files found, 5 other files skipped"
    assert dialog.ok_button.isEnabled()
    assert dialog.ok_button.text() == "Queue 4 jobs"

    choice = dialog.result()
    assert isinstance(choice, DropChoice)
    assert choice.preset == "hevc-mp4"
    assert choice.output_dir is None
    assert choice.priority == 5
    # Same files, same order as ``expand`` (what the CLI's submit would queue).
    expected = [p.absolute() for p in expand([tmp_path / "shoot"])] + [files["single"]]
    assert choice.files == expected
    assert files["hidden_dir"] not in choice.files
    assert "a.mov  →  a-hevc.mp4" in dialog.example.text()


def test_drop_dialog_output_folder_choice_and_validation(qtbot, tmp_path: Path):
    make_tree(tmp_path)
    out = tmp_path / "out"
    dialog = DropDialog([tmp_path / "shoot"], load_presets(), last_output_dir=out)
    qtbot.addWidget(dialog)
    assert dialog.this_folder.isChecked()
    assert dialog.folder_edit.text() == str(out)
    wait_scanned(qtbot, dialog)
    assert dialog.result().output_dir == out
    assert dialog.result().preset == dialog.preset_combo.itemData(0)  # no remembered preset

    dialog.folder_edit.setText("")
    with qtbot.assertNotEmitted(dialog.accepted):
        dialog.accept()
    assert dialog.folder_error.isVisibleTo(dialog)
    assert dialog.folder_error.text().startswith("Choose the folder")
    dialog.folder_edit.setText("relative/dir")
    with qtbot.assertNotEmitted(dialog.accepted):
        dialog.accept()
    assert "full path" in dialog.folder_error.text()

    dialog.next_to_input.setChecked(True)
    assert not dialog.folder_edit.isEnabled()
    assert dialog.result().output_dir is None
    with qtbot.waitSignal(dialog.accepted, timeout=1000):
        dialog.accept()


def test_drop_dialog_without_media_cannot_queue(qtbot, tmp_path: Path):
    note = tmp_path / "notes.txt"
    note.write_text("x")
    dialog = DropDialog([note, tmp_path / "vanished.mov"], load_presets())
    qtbot.addWidget(dialog)
    wait_scanned(qtbot, dialog)
    assert dialog.status.text() == (
        "0 media files found, 1 other file skipped, 1 dropped item no longer there"
    )
    assert not dialog.ok_button.isEnabled()
    assert dialog.ok_button.text() == "Queue"
    dialog.accept()
    assert dialog.result().files == []


def test_drop_dialog_progress_text(qtbot, tmp_path: Path):
    dialog = DropDialog([tmp_path], load_presets())
    qtbot.addWidget(dialog)
    dialog._scan = None  # pretend the walk is still going
    dialog._on_scan_progress(1234)
    assert dialog.status.text().startswith("Scanning… 1")
    assert dialog.status.text().endswith("234 files")


def test_cancel_stops_the_scan(qtbot, tmp_path: Path):
    for i in range(300):
        (tmp_path / f"clip{i:03}.mov").write_bytes(b"")
    # The walk checks the event between files: a set event means nothing more is read.
    stopped = threading.Event()
    stopped.set()
    assert scan([tmp_path], stopped).media == []

    dialog = DropDialog([tmp_path], load_presets())
    qtbot.addWidget(dialog)
    with qtbot.assertNotEmitted(dialog.scan_finished, wait=100):
        dialog.reject()
    assert dialog._cancel.is_set()
    dialog._thread.join(timeout=2)
    assert not dialog._thread.is_alive()
    assert dialog.is_scanning()  # a cancelled scan never reports a result


def test_drop_dialog_screenshot(qtbot, tmp_path: Path):
    root = tmp_path / "Wedding 2024"
    names = {
        "Camera A": ["A001_C001.mov", "A001_C002.mov", "A001_C003.mov", "notes.txt"],
        "Camera B": ["B001.MP4", "B002.MP4", "B002.XML"],
        "Audio": ["zoom-01.wav", "zoom-02.wav", ".DS_Store"],
        "": ["drone.mkv", "readme.pdf"],
    }
    for sub, files in names.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name in files:
            (root / sub / name).write_bytes(b"")
    dialog = DropDialog([root], load_presets(), last_preset="h264-mp4")
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    wait_scanned(qtbot, dialog)
    assert dialog.status.text() == "8 media files found, 4 other files skipped"
    assert dialog.grab().save("/tmp/drop_dialog.png")


# --------------------------------------------------------------------------- settings dialog


def settings_values(**overrides):
    values = {
        "database": None,
        "identifier": "render-01",
        "slots": 4,
        "tags": "gpu,big-mem",
        "ffmpeg": None,
        "autostart": True,
        "theme": "system",
    }
    values.update(overrides)
    return values


def visible_texts(dialog: QDialog) -> str:
    """Everything a person can read in the dialog's line edits and labels."""
    from PySide6.QtWidgets import QLabel

    texts = [e.displayText() for e in dialog.findChildren(QLineEdit)]
    texts += [label.text() for label in dialog.findChildren(QLabel) if label.isVisibleTo(dialog)]
    return "\n".join(texts)


def test_settings_values_round_trip(qtbot):
    dialog = SettingsDialog(settings_values(tags="gpu, big-mem,, gpu", theme="dark"))
    qtbot.addWidget(dialog)
    assert dialog.builtin_radio.isChecked()
    assert not dialog.url_edit.isEnabled()
    assert dialog.values() == settings_values(theme="dark")  # tags normalised
    dialog.server_radio.setChecked(True)
    dialog.url_edit.setText(SERVER_URL)
    dialog.slots_spin.setValue(6)
    dialog.ffmpeg_edit.setText("/usr/bin/ffmpeg")
    dialog.autostart_check.setChecked(False)
    dialog.theme_combo.setCurrentIndex(dialog.theme_combo.findData("light"))
    assert dialog.values() == settings_values(
        database=SERVER_URL, slots=6, ffmpeg="/usr/bin/ffmpeg", autostart=False, theme="light"
    )
    # Back to the built-in database: the URL is kept in the field but not used.
    dialog.builtin_radio.setChecked(True)
    assert dialog.values()["database"] is None


def test_server_url_is_masked_until_shown(qtbot):
    dialog = SettingsDialog(settings_values(database=SERVER_URL))
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.server_radio.isChecked()
    assert dialog.url_edit.echoMode() == QLineEdit.EchoMode.Password
    assert "s3cret" not in visible_texts(dialog)
    # The host stays readable in the masked preview under the field.
    assert dialog.url_preview.text() == "postgresql://ffdesk:****@db.studio.lan:5432/ffdesk"
    dialog.url_show.click()
    assert dialog.url_edit.echoMode() == QLineEdit.EchoMode.Normal
    assert "s3cret" in dialog.url_edit.displayText()
    assert not dialog.url_preview.isVisibleTo(dialog)
    dialog.url_show.click()
    assert "s3cret" not in visible_texts(dialog)
    assert dialog.values()["database"] == SERVER_URL


def test_share_toggle_and_join_url(qtbot):
    dialog = SettingsDialog(settings_values(), share_port=5433)
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.join_copy.isEnabled()
    with qtbot.waitSignal(dialog.share_toggled, timeout=1000) as blocker:
        dialog.share_check.click()
    assert blocker.args == [True, 5433]
    assert not dialog.share_port.isEnabled()  # unshare first to change the port
    assert dialog.join_edit.placeholderText() == "Starting to share…"

    dialog.set_join_url(JOIN_URL)
    assert dialog.join_edit.text() == "postgresql://ffdesk:****@render-01.studio.lan:5432/ffdesk"
    assert "Zx81pQ" not in visible_texts(dialog)
    dialog.join_copy.click()
    assert QGuiApplication.clipboard().text() == JOIN_URL  # the real one, password included
    dialog.join_show.click()
    assert dialog.join_edit.text() == JOIN_URL
    dialog.join_show.click()

    # The window reports a failed share: the box unticks without a second signal.
    with qtbot.assertNotEmitted(dialog.share_toggled):
        dialog.set_sharing(False, "Port 5433 is already in use")
    assert not dialog.share_check.isChecked()
    assert dialog.share_error.isVisibleTo(dialog)
    assert dialog.join_edit.text() == ""
    assert dialog.share_port.isEnabled()

    with qtbot.waitSignal(dialog.share_toggled, timeout=1000) as blocker:
        dialog.share_check.click()
    with qtbot.waitSignal(dialog.share_toggled, timeout=1000) as blocker:
        dialog.share_check.click()
    assert blocker.args == [False, 5433]
    # Sharing means the built-in database; with a server it is not offered.
    dialog.server_radio.setChecked(True)
    assert not dialog.share_check.isEnabled()


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        (lambda d: d.identifier_edit.setText(""), "identifier", "name"),
        (lambda d: d.identifier_edit.setText("render 01"), "identifier", "No spaces"),
        (lambda d: d.tags_edit.setText("gpu, big mem"), "tags", "big mem"),
        (
            lambda d: (d.server_radio.setChecked(True), d.url_edit.setText("mysql://x@y/z")),
            "url",
            "postgresql://",
        ),
        (lambda d: d.server_radio.setChecked(True), "url", "Enter the server"),
    ],
)
def test_settings_validation_is_inline(qtbot, change, field, fragment):
    dialog = SettingsDialog(settings_values())
    qtbot.addWidget(dialog)
    dialog.show()
    change(dialog)
    with qtbot.assertNotEmitted(dialog.accepted):
        dialog.accept()
    assert dialog.isVisible()
    error = getattr(dialog, f"{field}_error")
    assert error.isVisibleTo(dialog)
    assert fragment in error.text()


def test_settings_accept_with_valid_values(qtbot):
    dialog = SettingsDialog(settings_values())
    qtbot.addWidget(dialog)
    dialog.server_radio.setChecked(True)
    dialog.url_edit.setText("postgres://u:p@h/db")
    with qtbot.waitSignal(dialog.accepted, timeout=1000):
        dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted


@pytest.mark.skipif(FFMPEG is None, reason="needs ffmpeg on PATH")
def test_ffmpeg_test_button_runs_the_real_ffmpeg(qtbot, tmp_path: Path):
    dialog = SettingsDialog(
        settings_values(ffmpeg=FFMPEG), sharing=True, join_url=JOIN_URL, probe_cache_dir=tmp_path
    )
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    with qtbot.waitSignal(dialog.ffmpeg_tested, timeout=20000) as blocker:
        dialog.ffmpeg_test.click()
        assert not dialog.ffmpeg_test.isEnabled()  # no second probe while one runs
        assert dialog.ffmpeg_result.text() == "Testing…"
    ok, message = blocker.args
    assert ok, message
    text = dialog.ffmpeg_result.text()
    assert text == message
    assert "libx264" in text
    assert "5.1" in text  # Debian 12's ffmpeg 5.1.x on this machine
    assert "hardware:" in text
    assert dialog.ffmpeg_test.isEnabled()
    qtbot.waitUntil(lambda: dialog.height() >= dialog.layout().totalHeightForWidth(600))
    assert dialog.grab().save("/tmp/settings_dialog.png")


def test_ffmpeg_test_reports_errors_in_red(qtbot, tmp_path: Path):
    dialog = SettingsDialog(settings_values())
    qtbot.addWidget(dialog)
    dialog.ffmpeg_edit.setText(str(tmp_path / "no-such-ffmpeg"))
    with qtbot.waitSignal(dialog.ffmpeg_tested, timeout=5000) as blocker:
        dialog.ffmpeg_test.click()
    ok, message = blocker.args
    assert not ok
    assert "not found" in message
    assert dialog.ffmpeg_result.text() == message
    assert "color" in dialog.ffmpeg_result.styleSheet()


def test_settings_screenshot_with_server(qtbot):
    dialog = SettingsDialog(settings_values(database=SERVER_URL))
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    dialog.identifier_edit.setText("render 01")
    dialog.accept()  # shows the inline error
    qtbot.waitUntil(lambda: dialog.identifier_error.isVisible())
    qtbot.waitUntil(lambda: dialog.height() >= dialog.layout().totalHeightForWidth(dialog.width()))
    assert dialog.grab().save("/tmp/settings_dialog_server.png")


# --------------------------------------------------------------------------- settings file

NASTY = 'quote " back \\ tab \t nl \n cr \r nul \0 bell \x07 del \x7f é 日本 🎬 {stem} \\u0041'


def test_write_settings_file_round_trips(tmp_path: Path):
    places = Places.resolve(tmp_path)
    places.ensure()
    values = {
        "database": "postgresql://u:p%40ss@db:5432/ffdesk",
        "identifier": "render-01",
        "slots": 4,
        "tags": "gpu,big-mem",
        "ffmpeg": None,  # automatic: not written at all
        "heartbeat": 2.5,
        "grace": 1e-3,
        "listen": False,
        "debug": NASTY,
    }
    write_settings_file(places.settings_file, values)
    data = read_settings_file(places.settings_file)
    assert data == {k: v for k, v in values.items() if v is not None}
    settings = load_settings(places, {}, {})
    assert (settings.database, settings.slots, settings.heartbeat) == (values["database"], 4, 2.5)
    assert settings.listen is False
    assert settings.debug == NASTY
    assert settings.ffmpeg is None
    assert stat.S_IMODE(places.settings_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in places.config_dir.iterdir()) == ["settings.toml"]


def test_write_settings_file_keeps_other_keys_and_drops_none(tmp_path: Path):
    path = tmp_path / "cfg" / "settings.toml"
    path.parent.mkdir()
    path.write_text(
        "# written by hand\n"
        'database = "postgresql://old@db/ffdesk"\n'
        "poll_interval = 7.0\n"
        "future_option = [1, 2, 3]\n"
        "when = 1979-05-27T07:32:00Z\n"
        "[extra]\n"
        'name = "kept"\n'
        "nested = { a = 1, b = [true, false] }\n",
        encoding="utf-8",
    )
    path.chmod(0o644)
    write_settings_file(path, {"database": None, "slots": 2})
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert "database" not in data  # None: back to the built-in database
    assert data["slots"] == 2
    assert data["poll_interval"] == 7.0
    assert data["future_option"] == [1, 2, 3]
    assert data["when"].isoformat() == "1979-05-27T07:32:00+00:00"
    assert data["extra"] == {"name": "kept", "nested": {"a": 1, "b": [True, False]}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # tightened: it may hold a password


def test_write_settings_file_refuses_bad_input_and_leaves_the_file_alone(tmp_path: Path):
    path = tmp_path / "settings.toml"
    write_settings_file(path, {"slots": 3})
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="not a setting"):
        write_settings_file(path, {"theme": "dark"})  # UI state belongs in QSettings
    with pytest.raises(ConfigError, match="at least 1"):
        write_settings_file(path, {"slots": 0})
    assert path.read_bytes() == before
    path.write_text("slots = [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot update"):
        write_settings_file(path, {"slots": 2})
    assert path.read_text(encoding="utf-8") == "slots = [unclosed\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.toml"]


def test_settings_dialog_values_can_be_saved(qtbot, tmp_path: Path):
    """The window's save path: Settings fields to the file, the rest elsewhere."""
    dialog = SettingsDialog(settings_values(database=SERVER_URL, tags="gpu"))
    qtbot.addWidget(dialog)
    values = dialog.values()
    autostart, theme = values.pop("autostart"), values.pop("theme")
    places = Places.resolve(tmp_path)
    write_settings_file(places.settings_file, values)
    settings = load_settings(places, {}, {})
    assert (settings.database, settings.identifier, settings.tags) == (
        SERVER_URL,
        "render-01",
        "gpu",
    )
    assert (autostart, theme) == (True, "system")
