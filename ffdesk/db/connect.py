"""Which database to use, and how to connect to it with errors a person can read."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from ffdesk.core.config import Settings
from ffdesk.core.errors import DatabaseError
from ffdesk.core.places import Places
from ffdesk.core.secrets import mask_url
from ffdesk.db.embedded import EmbeddedServer

log = logging.getLogger("ffdesk.db")

CONNECT_TIMEOUT = 10  # seconds; an unreachable host must fail, not hang


@dataclass
class Database:
    """A resolved database: its URL and, for the embedded server, the handle to release."""

    url: str
    embedded: EmbeddedServer | None = None

    @property
    def display_url(self) -> str:
        return mask_url(self.url)

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection:
        return connect(self.url, autocommit=autocommit)

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.release()
            self.embedded = None


def describe_error(url: str, exc: BaseException) -> str:
    """One line for a failed connection, never with the password in it."""
    # psycopg says e.g. 'connection failed: connection to server at "h", port 1 failed:
    # Connection refused\n\tIs the server running...': keep all of it, on one line.
    detail = " ".join(str(exc).split()) or exc.__class__.__name__
    detail = detail.removeprefix("connection failed: ")
    return mask_url(f"cannot connect to the database {url}: {detail}")


def connection_kwargs() -> dict[str, object]:
    return {"connect_timeout": CONNECT_TIMEOUT, "application_name": "ffdesk"}


def check_url(url: str) -> None:
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise DatabaseError(mask_url(f"invalid database URL {url}: {exc}")) from None


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    check_url(url)
    try:
        return psycopg.connect(url, autocommit=autocommit, **connection_kwargs())
    except psycopg.Error as exc:
        raise DatabaseError(describe_error(url, exc)) from None


async def connect_async(
    url: str, *, autocommit: bool = False, application_name: str = "ffdesk"
) -> psycopg.AsyncConnection:
    check_url(url)
    kwargs = connection_kwargs() | {"application_name": application_name}
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=autocommit, **kwargs)
    except psycopg.Error as exc:
        raise DatabaseError(describe_error(url, exc)) from None


def open_database(settings: Settings, places: Places) -> Database:
    """The ``--database`` URL if given, else the embedded server (started or reused)."""
    if settings.database:
        check_url(settings.database)
        return Database(settings.database)
    server = EmbeddedServer(places.embedded_dir)
    url = server.acquire()
    log.debug("using the embedded server at %s", mask_url(url))
    return Database(url, embedded=server)


@contextlib.contextmanager
def database(settings: Settings, places: Places) -> Iterator[Database]:
    db = open_database(settings, places)
    try:
        yield db
    finally:
        db.close()
