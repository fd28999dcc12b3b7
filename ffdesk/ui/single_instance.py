"""One app per user and data directory: a second launch hands its files to the first one.

The first instance listens on a ``QLocalServer``; a later launch connects, sends one JSON line
(``{"show": true, "files": [...]}``) and exits. A ``QLockFile`` closes the start-up race two
simultaneous launches would otherwise have (both failing to connect, both listening).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

log = logging.getLogger("ffdesk.cli")


def server_name(data_dir: Path) -> str:
    # Per user and per data directory: a portable install (--home) is its own app.
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    digest = hashlib.sha256(f"{user}:{data_dir.absolute()}".encode()).hexdigest()[:16]
    return f"ffdesk-{digest}"


def ask_running_app(data_dir: Path, message: dict, timeout_ms: int = 1500) -> bool:
    """Send one message to the running app (e.g. ``{"quit": "now"}``). False if none runs."""
    socket = QLocalSocket()
    socket.connectToServer(server_name(data_dir))
    if not socket.waitForConnected(timeout_ms):
        return False
    socket.write(json.dumps(message).encode() + b"\n")
    socket.waitForBytesWritten(timeout_ms)
    socket.disconnectFromServer()
    return True


class SingleInstance(QObject):
    #: another launch asked us to show the window and maybe queue files
    message_received = Signal(dict)

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.name = server_name(data_dir)
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = QLockFile(str(data_dir / "app.lock"))
        self._lock.setStaleLockTime(0)  # only a dead owner's lock is stale
        self._server: QLocalServer | None = None

    def hand_over(self, files: list[str], timeout_ms: int = 1500) -> bool:
        """If another instance runs, give it our request and return True (we then exit)."""
        return ask_running_app(self.data_dir, {"show": True, "files": files}, timeout_ms)

    def claim(self) -> bool:
        """Become the instance. False if another one holds the lock (it is starting up)."""
        if not self._lock.tryLock(2000):
            return False
        QLocalServer.removeServer(self.name)  # a crashed instance's socket file
        self._server = QLocalServer(self)
        self._server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not self._server.listen(self.name):
            log.warning("single-instance server: %s", self._server.errorString())
            return True  # still run; only the hand-over is lost
        self._server.newConnection.connect(self._on_connection)
        return True

    def _on_connection(self) -> None:
        assert self._server is not None
        while (socket := self._server.nextPendingConnection()) is not None:
            socket.readyRead.connect(lambda s=socket: self._read(s))
            socket.disconnected.connect(socket.deleteLater)

    def _read(self, socket: QLocalSocket) -> None:
        while socket.canReadLine():
            line = bytes(socket.readLine().data()).decode("utf-8", "replace").strip()
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                self.message_received.emit(message)

    def release(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._lock.unlock()
