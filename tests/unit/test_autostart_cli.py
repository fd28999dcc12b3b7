"""``ffdesk autostart on|off|status`` through the real CLI entry point, against a temporary
HOME and XDG_CONFIG_HOME (the real ~/.config is never touched)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ffdesk import cli
from tests.unit.test_autostart import desktop_values, parse_exec

pytestmark = pytest.mark.skipif(
    sys.platform in ("win32", "darwin"), reason="XDG autostart is the Linux/BSD mechanism"
)


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """cli.main() configures the ``ffdesk`` logger; give later tests theirs back."""
    logger = logging.getLogger("ffdesk")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp HOME, XDG_CONFIG_HOME and ffdesk home; returns the expected entry path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("FFDESK_HOME", str(tmp_path / "ffdesk"))
    return tmp_path / "config" / "autostart" / "ffdesk.desktop"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["autostart", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_on_writes_an_entry_that_starts_minimised(env: Path, tmp_path: Path, capsys):
    code, out, _ = run(capsys, "on")
    assert code == 0
    assert env.is_file()
    assert str(env) in out and "autostart on" in out
    text = env.read_text(encoding="utf-8")
    assert "--minimized" in text
    argv = parse_exec(desktop_values(env)["Exec"])
    # This ffdesk (a venv here: python -m ffdesk), the tray app, and the same ffdesk home.
    assert argv == [
        sys.executable,
        "-m",
        "ffdesk",
        "gui",
        "--minimized",
        "--home",
        str(tmp_path / "ffdesk"),
    ]
    assert desktop_values(env)["Hidden"] == "false"


def test_status_says_where_the_entry_lives(env: Path, capsys):
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert out.startswith("autostart: off") and str(env) in out
    run(capsys, "on")
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert out.strip() == f"autostart: on ({env})"
    code, out, _ = run(capsys, "status", "--json")
    assert json.loads(out) == {"enabled": True, "entry": str(env), "exists": True}


def test_off_removes_the_entry_and_is_idempotent(env: Path, capsys):
    run(capsys, "on")
    code, out, _ = run(capsys, "off")
    assert code == 0
    assert not env.exists()
    assert str(env) in out
    code, out, _ = run(capsys, "off")
    assert code == 0 and "already off" in out
    code, out, _ = run(capsys, "status", "--json")
    assert json.loads(out)["enabled"] is False and json.loads(out)["exists"] is False


def test_without_xdg_config_home_the_entry_goes_under_home(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    monkeypatch.delenv("XDG_CONFIG_HOME")
    run(capsys, "on")
    expected = tmp_path / "home" / ".config" / "autostart" / "ffdesk.desktop"
    assert expected.is_file() and not env.exists()
    run(capsys, "off")
    assert not expected.exists()


def test_an_entry_disabled_by_the_desktop_is_reported_and_repaired(env: Path, capsys):
    run(capsys, "on")
    # GNOME Tweaks / KDE keep the file and flip a key when the user switches it off there.
    env.write_text(
        env.read_text(encoding="utf-8").replace("Hidden=false", "Hidden=true"), encoding="utf-8"
    )
    _, out, _ = run(capsys, "status")
    assert out.startswith("autostart: off") and "disabled" in out
    assert json.loads(run(capsys, "status", "--json")[1])["exists"] is True
    run(capsys, "on")
    assert desktop_values(env)["Hidden"] == "false"
    assert run(capsys, "status")[1].startswith("autostart: on")


def test_a_wrong_action_is_a_one_line_usage_error(env: Path, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["autostart", "maybe"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "invalid choice" in err
    assert not env.exists()
