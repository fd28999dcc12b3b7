"""Start at login: the XDG autostart entry for real (in a temp XDG_CONFIG_HOME), the macOS
LaunchAgent and the Windows Run value as pure functions.

``winreg`` exists only on Windows, so the registry calls themselves cannot run here; what
goes into the registry (the quoted command line) is tested instead. Nothing is mocked.
"""

from __future__ import annotations

import ast
import plistlib
import sys
from pathlib import Path

import pytest

import ffdesk.system
from ffdesk.system import autostart

linux_only = pytest.mark.skipif(
    sys.platform in ("win32", "darwin"), reason="XDG autostart is the Linux/BSD mechanism"
)

COMMAND = ["/opt/ffdesk/bin/ffdesk", "gui", "--minimized"]
# Everything the Desktop Entry spec says needs quoting or escaping, in one command.
AWKWARD = [
    "/home/ann/My Apps/ffdesk",
    "gui",
    "--minimized",
    'say "hi"',
    "cost=$5 & `x`",
    "back\\slash",
    "100%",
    "it's; (ok) #1 ~ | < > * ?",
    "tab\there",
    "ünïcødé 日本",
]


def parse_exec(value: str) -> list[str]:
    """Split an ``Exec=`` value back into argv, following the Desktop Entry spec step by step
    (written independently of the module under test, to catch quoting mistakes)."""
    # 1. String-value escapes (\s \n \t \r \\) come first.
    unescaped = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            unescaped.append(
                {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}.get(nxt, ch + nxt)
            )
            i += 2
        else:
            unescaped.append(ch)
            i += 1
    text = "".join(unescaped)
    # 2. Then arguments: space separated, double-quoted ones with \" \` \$ \\ escapes.
    args: list[str] = []
    current: list[str] = []
    in_arg = quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\" and i + 1 < len(text) and text[i + 1] in '"`$\\':
                current.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                quoted = False
            else:
                current.append(ch)
        elif ch == '"':
            quoted = in_arg = True
        elif ch == " ":
            if in_arg:
                args.append("".join(current))
                current, in_arg = [], False
        else:
            assert ch not in "\"'\\><~|&;$*?#()`\t\n", f"unquoted reserved {ch!r} in {text!r}"
            current.append(ch)
            in_arg = True
        i += 1
    assert not quoted, "unterminated quote"
    if in_arg:
        args.append("".join(current))
    # 3. Field codes: "%%" is a literal percent; we never use real field codes.
    return [a.replace("%%", "%") for a in args]


def desktop_values(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "[Desktop Entry]"
    return dict(line.split("=", 1) for line in lines[1:] if line and not line.startswith("#"))


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # HOME too: a mistake must land in the temp dir, never in the real ~/.config.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


@linux_only
def test_enable_writes_an_xdg_autostart_entry(xdg: Path):
    assert not autostart.is_enabled()
    autostart.enable(COMMAND)
    path = xdg / "autostart" / "ffdesk.desktop"
    assert autostart.desktop_file_path() == path
    values = desktop_values(path)
    assert values["Type"] == "Application"
    assert values["Name"] == "ffdesk"
    assert values["X-GNOME-Autostart-enabled"] == "true"
    assert values["Hidden"] == "false"
    assert values["Exec"] == "/opt/ffdesk/bin/ffdesk gui --minimized"
    assert autostart.is_enabled()
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["ffdesk.desktop"]  # no temp leftovers


@linux_only
def test_exec_quoting_round_trips_awkward_arguments(xdg: Path):
    autostart.enable(AWKWARD)
    values = desktop_values(xdg / "autostart" / "ffdesk.desktop")
    assert parse_exec(values["Exec"]) == AWKWARD
    # Spot-check the spec's own examples: a quoted backslash is four in the file.
    assert '"back\\\\\\\\slash"' in values["Exec"]
    assert "100%%" in values["Exec"]
    assert "\t" not in values["Exec"]  # control characters escaped, the entry stays one line


@linux_only
def test_enable_again_replaces_and_disable_removes(xdg: Path):
    autostart.enable(["/old/ffdesk", "gui", "--minimized"])
    autostart.enable(COMMAND)
    assert parse_exec(desktop_values(autostart.desktop_file_path())["Exec"]) == COMMAND
    autostart.disable()
    assert not autostart.desktop_file_path().exists()
    assert not autostart.is_enabled()
    autostart.disable()  # idempotent


@linux_only
def test_entry_switched_off_by_the_desktop_counts_as_disabled(xdg: Path):
    autostart.enable(COMMAND)
    path = autostart.desktop_file_path()
    # GNOME Tweaks / KDE's autostart settings keep the file and flip one of these keys.
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("Hidden=false", "Hidden=true"), encoding="utf-8")
    assert not autostart.is_enabled()
    path.write_text(
        text.replace("X-GNOME-Autostart-enabled=true", "X-GNOME-Autostart-enabled=false"),
        encoding="utf-8",
    )
    assert not autostart.is_enabled()
    autostart.enable(COMMAND)  # switching it on again in ffdesk repairs the entry
    assert autostart.is_enabled()


@linux_only
def test_relative_xdg_config_home_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/config")  # the spec says: ignore it
    assert autostart.autostart_dir() == tmp_path / "home" / ".config" / "autostart"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert autostart.autostart_dir() == tmp_path / "home" / ".config" / "autostart"


def test_empty_command_is_refused():
    for build in (
        autostart.exec_line,
        autostart.launch_agent_plist,
        autostart.windows_command_line,
    ):
        with pytest.raises(ValueError):
            build([])


def test_macos_launch_agent_plist():
    command = ["/Applications/ffdesk.app/Contents/MacOS/ffdesk", "gui", "--minimized"]
    data = autostart.launch_agent_plist(command)
    assert data.startswith(b"<?xml")
    agent = plistlib.loads(data)
    assert agent["Label"] == "dev.ffdesk.app"
    assert agent["ProgramArguments"] == command  # an argv array: no shell, no quoting
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] is False
    assert autostart._launch_agent_enabled(data)
    assert not autostart._launch_agent_enabled(b"not a plist")
    assert autostart.launch_agent_path().name == "dev.ffdesk.app.plist"
    assert autostart.launch_agent_path().parent.name == "LaunchAgents"
    # Spaces and quotes survive as they are, because launchd gets the list itself.
    assert plistlib.loads(autostart.launch_agent_plist(AWKWARD))["ProgramArguments"] == AWKWARD


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            [r"C:\Program Files\ffdesk\ffdesk.exe", "gui", "--minimized"],
            r'"C:\Program Files\ffdesk\ffdesk.exe" gui --minimized',
        ),
        ([r"C:\ffdesk\ffdesk.exe", "gui", "--minimized"], r"C:\ffdesk\ffdesk.exe gui --minimized"),
        # MS C runtime rules: a quote is escaped; a trailing backslash outside quotes stays
        # single, inside quotes it is doubled so it does not escape the closing quote.
        (
            [r"C:\a b\ffdesk.exe", 'say "hi"', "trail\\", "dir with space\\"],
            r'"C:\a b\ffdesk.exe" "say \"hi\"" trail\ "dir with space\\"',
        ),
        ([r"C:\x\ffdesk.exe", ""], r'C:\x\ffdesk.exe ""'),
    ],
)
def test_windows_run_value_command_line(command, expected):
    assert autostart.windows_command_line(command) == expected
    assert autostart.RUN_KEY == r"Software\Microsoft\Windows\CurrentVersion\Run"


def test_system_package_imports_no_qt_and_no_psycopg():
    root = Path(ffdesk.system.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("PySide6", "psycopg", "ffdesk.db", "ffdesk.ui")), (
                    f"{path.name} imports {name}"
                )
