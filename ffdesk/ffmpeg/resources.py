"""Locate bundled data files (presets, ...) in a checkout, a wheel or a frozen app."""

from __future__ import annotations

from pathlib import Path

import ffdesk


def resource_path(*parts: str) -> Path:
    """Path of a file under ``resources/``.

    A wheel carries ``resources/`` inside the package (pyproject force-include) and PyInstaller
    puts it at ``sys._MEIPASS/ffdesk/resources``, which is again next to ``ffdesk/__init__``;
    an editable checkout keeps it at the repository root.
    """
    package_dir = Path(ffdesk.__file__).resolve().parent
    base = package_dir / "resources"
    if not base.is_dir():
        base = package_dir.parent / "resources"
    return base.joinpath(*parts)
