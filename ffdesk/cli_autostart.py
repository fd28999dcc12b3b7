"""``ffdesk autostart on|off|status``: start ffdesk (minimised to the tray) when you log in.

The entry itself is written by :mod:`ffdesk.system.autostart` (XDG autostart file, macOS
LaunchAgent or the Windows Run key), the same module the settings dialog's "Start ffdesk when I
log in" box uses, so both always agree on what "on" means.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ffdesk.core.config import Settings
from ffdesk.core.places import Places


def ffdesk_command() -> list[str]:
    """How to start this ffdesk again: the frozen executable, or this Python with ``-m``.

    Qt-free twin of ``ffdesk.ui.app.ffdesk_command`` (the CLI must work where PySide6 cannot
    load, e.g. on a headless node).
    """
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "ffdesk"]


def entry_location() -> str:
    """Where the autostart entry lives on this OS (a file, or the registry value)."""
    from ffdesk.system import autostart

    if sys.platform == "win32":
        return f"HKEY_CURRENT_USER\\{autostart.RUN_KEY}\\{autostart.RUN_VALUE}"
    if sys.platform == "darwin":
        return str(autostart.launch_agent_path())
    return str(autostart.desktop_file_path())


def autostart_command(args: argparse.Namespace) -> list[str]:
    """The command the login session runs: ``ffdesk gui --minimized`` (plus ``--home`` when
    this ffdesk keeps its files somewhere special, so the autostarted app finds the same ones).
    """
    command = [*ffdesk_command(), "gui", "--minimized"]
    home = getattr(args, "home", None) or os.environ.get("FFDESK_HOME")
    if home:
        command += ["--home", str(Path(home).expanduser().absolute())]
    return command


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    text = "start ffdesk minimised to the tray when you log in: on, off, status"
    parser = sub.add_parser("autostart", parents=[common], help=text, description=text)
    parser.add_argument("action", choices=["on", "off", "status"])
    parser.add_argument("--json", action="store_true", help="with status: as JSON")


def cmd_autostart(args: argparse.Namespace, settings: Settings, places: Places) -> int:
    from ffdesk.system import autostart

    where = entry_location()
    if args.action == "on":
        command = autostart_command(args)
        autostart.enable(command)
        print(f"autostart on: ffdesk starts minimised to the tray when you log in ({where})")
        return 0
    if args.action == "off":
        was = autostart.is_enabled() or _entry_exists()
        autostart.disable()
        print(f"autostart off (removed {where})" if was else "autostart was already off")
        return 0
    enabled = autostart.is_enabled()
    exists = _entry_exists()
    if args.json:
        print(json.dumps({"enabled": enabled, "entry": where, "exists": exists}, indent=2))
    elif enabled:
        print(f"autostart: on ({where})")
    elif exists:
        print(
            f"autostart: off (the entry {where} exists but your desktop has disabled it; "
            "'ffdesk autostart on' switches it on again)"
        )
    else:
        print(f"autostart: off (the entry would be {where})")
    return 0


def _entry_exists() -> bool:
    if sys.platform == "win32":
        from ffdesk.system import autostart

        return autostart.is_enabled()
    return Path(entry_location()).exists()
