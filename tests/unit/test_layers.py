"""Imports point down only: core <- ffmpeg, db <- engine <- cli/ui (see ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import ffdesk

ROOT = Path(ffdesk.__file__).parent

# What each layer may not import (directly).
FORBIDDEN = {
    "core": (
        "ffdesk.db",
        "ffdesk.engine",
        "ffdesk.ffmpeg",
        "ffdesk.ui",
        "ffdesk.cli",
        "psycopg",
        "PySide6",
    ),
    "ffmpeg": ("ffdesk.db", "ffdesk.engine", "ffdesk.ui", "ffdesk.cli", "psycopg", "PySide6"),
    "db": ("ffdesk.engine", "ffdesk.ui", "ffdesk.cli", "PySide6"),
    "engine": ("ffdesk.ui", "ffdesk.cli", "PySide6"),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_layers_only_import_downwards():
    violations = []
    for layer, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / layer).rglob("*.py")):
            for name in imported_modules(path):
                if name.startswith(forbidden):
                    violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert violations == []


def test_sql_lives_in_db():
    """SQL statements are kept in ffdesk/db (the engine and CLI call functions)."""
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if "db" in path.relative_to(ROOT).parts:
            continue
        text = path.read_text(encoding="utf-8")
        for keyword in ("SELECT ", "UPDATE ", "INSERT INTO", "DELETE FROM"):
            if f'"{keyword}' in text or f'"""{keyword}' in text:
                offenders.append(f"{path.relative_to(ROOT)}: {keyword.strip()}")
    assert offenders == []
