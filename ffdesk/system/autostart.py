"""Start ffdesk (minimised to the tray) when the user logs in.

One entry per OS, all per-user so no administrator rights are needed:

* Linux and other XDG desktops: ``$XDG_CONFIG_HOME/autostart/ffdesk.desktop``
  (XDG Autostart specification; GNOME, KDE, Xfce, Cinnamon, MATE and LXQt all read it).
* macOS: a LaunchAgent ``~/Library/LaunchAgents/dev.ffdesk.app.plist`` with ``RunAtLoad``.
* Windows: the ``ffdesk`` value under ``HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run``.

The caller passes the whole command (the ffdesk executable plus ``gui --minimized``) because
only it knows whether it runs frozen, from a venv or from an installed script. Arguments are
never joined for a shell: each format gets the quoting its own launcher expects.
"""

from __future__ import annotations

import contextlib
import os
import plistlib
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

APP_ID = "dev.ffdesk.app"  # macOS LaunchAgent label (reverse-DNS, unique per user)
DESKTOP_FILE = "ffdesk.desktop"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE = "ffdesk"


# --- Linux / XDG ------------------------------------------------------------------------------


def autostart_dir() -> Path:
    """``$XDG_CONFIG_HOME/autostart``; the spec says to ignore a relative XDG_CONFIG_HOME."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "autostart"


def desktop_file_path() -> Path:
    return autostart_dir() / DESKTOP_FILE


# Desktop Entry spec, "The Exec key": an argument containing any of these must be quoted.
_RESERVED = frozenset(" \t\n\"'\\><~|&;$*?#()`")
# Inside double quotes these four must be backslash-escaped.
_QUOTE_ESCAPED = frozenset('"`$\\')


def _exec_argument(arg: str) -> str:
    # "%" starts a field code (%f, %u, ...); a literal percent is written "%%".
    arg = arg.replace("%", "%%")
    if arg and not any(ch in _RESERVED for ch in arg):
        return arg
    return '"' + "".join("\\" + ch if ch in _QUOTE_ESCAPED else ch for ch in arg) + '"'


def _escape_string_value(value: str) -> str:
    # The string-level escapes (\\, \n, \t, \r) are applied to the whole value *after* the
    # Exec quoting: the spec's "four backslashes for one literal backslash" rule follows.
    return (
        value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    )


def exec_line(command: Sequence[str]) -> str:
    """The ``Exec=`` value for ``command``, quoted per the Desktop Entry specification."""
    if not command:
        raise ValueError("autostart command is empty")
    return _escape_string_value(" ".join(_exec_argument(arg) for arg in command))


def desktop_entry(command: Sequence[str]) -> str:
    """Text of the XDG autostart ``.desktop`` file that runs ``command`` at login."""
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=ffdesk\n"
        "Comment=FFmpeg cluster node (starts minimised to the tray)\n"
        f"Exec={exec_line(command)}\n"
        "Icon=ffdesk\n"
        "Terminal=false\n"
        "Categories=AudioVideo;Video;\n"
        "NoDisplay=false\n"
        # Both keys: GNOME honours only its own, other desktops only Hidden.
        "X-GNOME-Autostart-enabled=true\n"
        "Hidden=false\n"
    )


def _desktop_entry_enabled(text: str) -> bool:
    in_group = False
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            in_group = line == "[Desktop Entry]"
            continue
        if in_group and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    if "Exec" not in values:
        return False
    # A user who switched it off in GNOME Tweaks or KDE settings keeps the file with one of
    # these set; that is "disabled", not "enabled by a file that exists".
    return (
        values.get("Hidden", "false").lower() != "true"
        and values.get("X-GNOME-Autostart-enabled", "true").lower() != "false"
    )


# --- macOS ------------------------------------------------------------------------------------


def launch_agent_path() -> Path:
    return Path.home() / "Library" / "LaunchAgents" / f"{APP_ID}.plist"


def launch_agent_plist(command: Sequence[str]) -> bytes:
    """XML property list of a LaunchAgent that runs ``command`` once at login."""
    if not command:
        raise ValueError("autostart command is empty")
    agent = {
        "Label": APP_ID,
        # An argv array: launchd runs it without a shell, so nothing needs quoting.
        "ProgramArguments": list(command),
        "RunAtLoad": True,
        # Not KeepAlive: quitting from the tray must stay quit until the next login.
        "KeepAlive": False,
        # Interactive: launchd must not throttle a GUI app like a background daemon.
        "ProcessType": "Interactive",
        "LimitLoadToSessionType": "Aqua",
    }
    return plistlib.dumps(agent, fmt=plistlib.FMT_XML, sort_keys=True)


def _launch_agent_enabled(data: bytes) -> bool:
    try:
        agent = plistlib.loads(data)
    except (plistlib.InvalidFileException, ValueError):
        return False
    return (
        isinstance(agent, dict)
        and bool(agent.get("RunAtLoad"))
        and not agent.get("Disabled", False)
        and bool(agent.get("ProgramArguments"))
    )


# --- Windows ----------------------------------------------------------------------------------


def windows_command_line(command: Sequence[str]) -> str:
    """The Run value: one command line, quoted the way the MS C runtime splits it."""
    if not command:
        raise ValueError("autostart command is empty")
    return subprocess.list2cmdline(list(command))


def _winreg_enable(value: str) -> None:
    import winreg  # only exists on Windows

    with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
        winreg.SetValueEx(key, RUN_VALUE, 0, winreg.REG_SZ, value)


def _winreg_disable() -> None:
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
            winreg.DeleteValue(key, RUN_VALUE)
    except FileNotFoundError:
        pass  # already gone: disable() is idempotent


def _winreg_enabled() -> bool:
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_READ) as key:
            value, _kind = winreg.QueryValueEx(key, RUN_VALUE)
    except FileNotFoundError:
        return False
    return bool(str(value).strip())


# --- files ------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    # A half-written entry would make the session manager log an error at every login.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


# --- public API -------------------------------------------------------------------------------


def _platform() -> str:
    if sys.platform == "win32":
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return "xdg"  # Linux and the BSDs


def enable(command: list[str]) -> None:
    """Run ``command`` (e.g. ``[exe, "gui", "--minimized"]``) at every login of this user."""
    platform = _platform()
    if platform == "windows":
        _winreg_enable(windows_command_line(command))
    elif platform == "macos":
        _write_atomic(launch_agent_path(), launch_agent_plist(command))
    else:
        _write_atomic(desktop_file_path(), desktop_entry(command).encode("utf-8"))


def disable() -> None:
    """Stop starting at login; does nothing when it was not enabled."""
    platform = _platform()
    if platform == "windows":
        _winreg_disable()
        return
    path = launch_agent_path() if platform == "macos" else desktop_file_path()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def is_enabled() -> bool:
    platform = _platform()
    if platform == "windows":
        return _winreg_enabled()
    if platform == "macos":
        data = _read_bytes(launch_agent_path())
        return data is not None and _launch_agent_enabled(data)
    data = _read_bytes(desktop_file_path())
    return data is not None and _desktop_entry_enabled(data.decode("utf-8", errors="replace"))
