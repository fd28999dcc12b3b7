"""The engine's own thread and the bridge between it and the GUI.

psycopg's async mode refuses the Proactor loop that qasync uses on Windows, so the node engine,
the event bus and the console's queries run on a second thread with a ``SelectorEventLoop``
(on every OS, so Linux CI runs the Windows code path). The GUI thread runs qasync.

* GUI -> engine: ``await engine.call(coro)`` (``run_coroutine_threadsafe`` + ``wrap_future``).
* engine -> GUI: :class:`EventRelay` batches events on the engine side and emits one queued Qt
  signal per batch (at most every 50 ms), never one cross-thread signal per event.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from PySide6.QtCore import QObject, Signal

log = logging.getLogger("ffdesk.node")
T = TypeVar("T")

RELAY_INTERVAL = 0.05


class EngineThread:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="ffdesk-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def _main(self) -> None:
        loop = asyncio.SelectorEventLoop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the engine loop; the returned future is thread-safe."""
        assert self.loop is not None, "engine thread not started"
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` running on the engine loop, from the GUI loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class EventRelay(QObject):
    """Lives in the GUI thread; ``offer`` is called on the engine thread."""

    #: a list of engine events, in order, delivered on the GUI thread
    events_arrived = Signal(list)

    def __init__(self) -> None:
        super().__init__()
        self._buffer: list[Any] = []
        self._lock = threading.Lock()
        self._scheduled = False
        self.loop: asyncio.AbstractEventLoop | None = None

    def offer(self, event: Any) -> None:
        """Engine thread: keep the event; flush the batch soon."""
        with self._lock:
            self._buffer.append(event)
            if self._scheduled or self.loop is None:
                return
            self._scheduled = True
        self.loop.call_later(RELAY_INTERVAL, self._flush)

    def _flush(self) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, []
            self._scheduled = False
        if batch:
            self.events_arrived.emit(batch)  # queued to the GUI thread by Qt
