"""The Qt binding itself must not leak references to None.

PySide6 6.12.0 decrements None's reference count on every call that returns nothing; on
CPython 3.11 (where None is not immortal) a long-running app then dies with "Fatal Python
error: none_dealloc". pyproject excludes that release; this test fails on any release that
brings the bug back.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QObject


def test_void_calls_keep_none_alive():
    obj = QObject()
    before = sys.getrefcount(None)
    for _ in range(10_000):
        obj.setObjectName("x")
    # On 3.12+ None is immortal and its count is a constant; on 3.11 it must not drift.
    assert abs(sys.getrefcount(None) - before) < 100


def test_signal_emits_keep_true_alive():
    """6.12.0 also dropped a reference to True on every Python-side emit() and connect()."""
    from PySide6.QtCore import Signal

    class Emitter(QObject):
        fired = Signal(bool)

    emitter = Emitter()
    seen = [0]

    def count(_value: bool) -> None:
        seen[0] += 1

    emitter.fired.connect(count)
    before = sys.getrefcount(True)
    for _ in range(10_000):
        emitter.fired.emit(True)
    assert abs(sys.getrefcount(True) - before) < 100
    assert seen[0] == 10_000
