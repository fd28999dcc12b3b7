"""The engine's event loop: a SelectorEventLoop on every OS.

psycopg's async mode refuses Windows' Proactor loop, so the engine always runs on a selector
loop (on Linux CI this exercises the Windows code path too). FFmpeg children do not need the
loop: they are plain ``Popen`` objects with reader threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(coro)
