"""The engine's database access: a small pool for writes and retries that ride out outages."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ffdesk.core.errors import DatabaseError
from ffdesk.core.secrets import mask_url
from ffdesk.db.connect import check_url, connection_kwargs, describe_error

log = logging.getLogger("ffdesk.db")
T = TypeVar("T")

Conn = psycopg.AsyncConnection[Any]


def backoff(attempt: int, *, base: float = 0.2, cap: float = 10.0) -> float:
    """Exponential backoff with full jitter, so many nodes do not reconnect in lock step."""
    return random.uniform(0, min(cap, base * 2**attempt))


class Pool:
    def __init__(
        self,
        url: str,
        *,
        size: int = 4,
        timeout: float = 30.0,
        idle_in_transaction_s: float | None = None,
    ) -> None:
        check_url(url)
        self.url = url
        kwargs = dict(connection_kwargs())
        if idle_in_transaction_s:
            # A node frozen mid-transaction (SIGSTOP, a suspended laptop, a debugger) would
            # hold its row locks until it wakes, and SKIP LOCKED rescuers would skip its jobs
            # forever. With this the server ends such a transaction and frees the locks.
            kwargs["options"] = (
                f"-c idle_in_transaction_session_timeout={int(idle_in_transaction_s * 1000)}"
            )
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=size,
            kwargs=kwargs,
            open=False,
            timeout=timeout,  # how long a caller waits for a connection before PoolTimeout
            name="ffdesk",
        )

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=15)
        except PoolTimeout:
            # The pool keeps the real reason to itself; one direct attempt tells it.
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, **connection_kwargs())
                await conn.close()
            except psycopg.Error as exc:
                await self._pool.close()
                raise DatabaseError(describe_error(self.url, exc)) from None
            await self._pool.close()
            raise DatabaseError(
                mask_url(f"timed out connecting to the database {self.url}")
            ) from None

    async def close(self) -> None:
        await self._pool.close()

    async def run(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn`` on a pooled connection, once."""
        async with self._pool.connection() as conn:
            return await fn(conn)

    async def run_retrying(
        self,
        fn: Callable[[Conn], Awaitable[T]],
        what: str,
        *,
        give_up: Callable[[], bool] = lambda: False,
    ) -> T:
        """Run ``fn``, retrying on connection trouble until it works or ``give_up()``.

        Used for writes that must not be lost (a job's result): FFmpeg keeps running and the
        node keeps trying while PostgreSQL is away.
        """
        attempt = 0
        while True:
            try:
                return await self.run(fn)
            except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
                if give_up():
                    raise
                delay = backoff(attempt)
                attempt += 1
                log.warning(
                    "database unavailable while %s (%s); retrying in %.1f s",
                    what,
                    mask_url(str(exc).strip().splitlines()[-1] if str(exc) else "?"),
                    delay,
                )
                await asyncio.sleep(delay)
