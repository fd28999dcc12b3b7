"""The desktop app's composition root: engine thread, database, event bus, local node, window,
tray, and the orderly way out.

Start-up shows the window first and connects in the background (the embedded server may take a
second to start), so the window is there in well under the 3 s budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication, QMessageBox, QSystemTrayIcon

from ffdesk.core.config import Settings, write_settings_file
from ffdesk.core.model import TERMINAL_STATES, JobState
from ffdesk.core.places import Places
from ffdesk.core.secrets import mask_url
from ffdesk.db import presets_store
from ffdesk.db.connect import Database, open_database
from ffdesk.db.embedded import EmbeddedServer
from ffdesk.engine.console import ClusterConsole
from ffdesk.engine.events import EventBus, JobChanged, NodeChanged, Resynced
from ffdesk.engine.node import Node
from ffdesk.engine.submit import submitter
from ffdesk.ffmpeg.presets import Preset, load_presets
from ffdesk.ui.engine_thread import EngineThread, EventRelay
from ffdesk.ui.main_window import MainWindow
from ffdesk.ui.tray import TrayIcon, tray_available

log = logging.getLogger("ffdesk.cli")

NODES_REFRESH_MS = 2000
NOTIFY_BATCH_MS = 2000
SAMPLES_POLL_MS = 5000


def apply_theme(theme: str) -> None:
    """"system" follows the OS (and its live changes); "light"/"dark" force a scheme."""
    schemes = {"light": Qt.ColorScheme.Light, "dark": Qt.ColorScheme.Dark}
    hints = QGuiApplication.styleHints()
    if theme in schemes:
        hints.setColorScheme(schemes[theme])
    else:
        hints.unsetColorScheme()


class FileOpenFilter(QObject):
    """macOS delivers files dropped on the Dock icon or opened with "Open With" as
    QEvent.FileOpen on the application, not as command-line arguments."""

    def __init__(self, open_files: Callable[[list[str]], None]) -> None:
        super().__init__()
        self._open_files = open_files

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.FileOpen:
            path = event.file() or event.url().toLocalFile()  # type: ignore[attr-defined]
            if path:
                self._open_files([path])
                return True
        return False


def ffdesk_command() -> list[str]:
    """How to start this ffdesk again (autostart, restart): the frozen app or the module."""
    if getattr(sys, "frozen", False):
        exe = Path(sys.executable)
        # The Windows bundle has a console twin for the command line: autostart and
        # restarts must use the windowed one, or a console window opens at login.
        windowed = exe.with_name("ffdesk.exe")
        if exe.name.lower() == "ffdesk-cli.exe" and windowed.exists():
            return [str(windowed)]
        return [sys.executable]
    return [sys.executable, "-m", "ffdesk"]


class DesktopApp(QObject):
    #: the database connection state changed: "connecting", "connected", "reconnecting",
    #: "offline" (with a reason)
    connection_changed = Signal(str, str)

    def __init__(
        self,
        settings: Settings,
        places: Places,
        *,
        files: list[str] | None = None,
        minimized: bool = False,
        tray: bool | None = None,
    ) -> None:
        """``tray``: None = use the system tray if there is one (tests force it)."""
        super().__init__()
        # The app lives on in the tray: closing (or deleting) the last window must not end
        # Qt's event loop behind the engine's back.
        QApplication.setQuitOnLastWindowClosed(False)
        self.settings = settings
        self.places = places
        self.initial_files = files or []
        self.minimized = minimized
        self.ui_state = QSettings(
            str(places.config_dir / "ui-state.ini"), QSettings.Format.IniFormat
        )
        self.engine = EngineThread()
        self.relay = EventRelay()
        self.db: Database | None = None
        self.console: ClusterConsole | None = None
        self._stored_presets: list[presets_store.StoredPreset] = []  # the database's library
        self.node: Node | None = None
        self.bus: EventBus | None = None
        self._node_future: Any = None
        self._bus_future: Any = None
        self.me = submitter()
        self.accepting = self.ui_state.value("accepting", True, type=bool)
        self.window = MainWindow(self)
        use_tray = tray_available() if tray is None else tray
        self.tray: TrayIcon | None = TrayIcon(self.window) if use_tray else None
        self._quit = asyncio.Event()
        self._stopping = False
        self._finished_mine: list[Any] = []
        self._notify_timer = QTimer(self, singleShot=True, interval=NOTIFY_BATCH_MS)
        self._notify_timer.timeout.connect(self._flush_notifications)
        self._nodes_timer = QTimer(self, interval=NODES_REFRESH_MS)
        self._nodes_timer.timeout.connect(lambda: self._on_timer(self.refresh_nodes))
        self._samples_timer = QTimer(self, interval=SAMPLES_POLL_MS)
        self._samples_timer.timeout.connect(lambda: self._on_timer(self.poll_samples))
        self.restart_requested = False
        self._tasks: set[asyncio.Task] = set()
        self.relay.events_arrived.connect(self._on_events)
        if self.tray is not None:
            self.tray.accept_toggled.connect(lambda on: self.spawn(self.set_accepting(on)))
            self.tray.drain_requested.connect(lambda: self.spawn(self.drain_local()))
            self.tray.open_requested.connect(self.window.bring_forward)
            self.tray.quit_requested.connect(lambda: self.spawn(self.request_quit("ask")))
            self.tray.set_accepting(self.accepting)

    # ------------------------------------------------------------------ helpers

    def _on_timer(self, action: Callable[[], Any]) -> None:
        # A timer may fire once more after shutdown began (or after the loop closed).
        if not self._stopping:
            self.spawn(action())

    def spawn(self, coro) -> asyncio.Task:
        """Run a coroutine on the GUI loop, keeping a reference and reporting failures."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                log.error("desktop task failed: %s", exc, exc_info=exc)
                self.window.show_error(mask_url(str(exc)) or exc.__class__.__name__)

        task.add_done_callback(done)
        return task

    async def call(self, coro):
        """Await a console call on the engine thread."""
        return await self.engine.call(coro)

    # ------------------------------------------------------------------ life cycle

    async def run(self) -> int:
        if self.minimized and self.tray is not None:
            self.tray.show()
        else:
            self.window.show()
            if self.tray is not None:
                self.tray.show()
        self._log_startup_time()
        self.engine.start()
        self.relay.loop = self.engine.loop
        self.spawn(self._connect())
        await self._quit.wait()
        return 0

    def _log_startup_time(self) -> None:
        import psutil

        QApplication.processEvents()  # let the window reach the screen before timing it
        elapsed = time.time() - psutil.Process().create_time()
        log.info("window shown %.2f s after the process started", elapsed)

    async def _connect(self) -> None:
        self.connection_changed.emit("connecting", "")
        try:
            self.db = await self.call(asyncio.to_thread(open_database, self.settings, self.places))
            self.console = ClusterConsole(
                self.db.url, roots=self.settings.roots, node=self.settings.identifier
            )
            await self.call(self.console.open())
            snapshot = await self.call(self.console.snapshot())
        except Exception as exc:
            reason = mask_url(" ".join(str(exc).split())) or exc.__class__.__name__
            log.error("cannot open the database: %s", reason)
            self.connection_changed.emit("offline", reason)
            if self.tray is not None:
                self.tray.set_state("disconnected", reason)
            return
        self.window.load_snapshot(snapshot)
        # The snapshot's objects live as long as the app: keep them out of every future
        # full garbage collection (100-170 ms with 100 000 jobs).
        gc.freeze()
        self.connection_changed.emit("connected", mask_url(self.db.url))
        self.bus = EventBus(self.db.url, on_event=self.relay.offer, start_after=snapshot.watermark)
        self._bus_future = self.engine.submit(self.bus.run())
        self.node = Node(
            self.settings,
            self.db.url,
            cache_dir=self.places.cache_dir,
            data_dir=self.places.data_dir,
        )
        self._node_future = self.engine.submit(self.node.run())
        self._node_future.add_done_callback(self._node_ended)
        await self.call(self.node.ready.wait())
        if not self.accepting:
            await self.call(self.console.node_action(self.node.identifier, "pause"))
        self.window.set_local_node(self.node.identifier)
        await self.refresh_nodes()
        if not self._stopping:  # a quick quit may have overtaken the connection
            self._nodes_timer.start()
            self._samples_timer.start()
        self._files_ready = True
        if self.initial_files:
            self.window.open_drop_dialog(self.initial_files)

    def open_files(self, files: list[str]) -> None:
        """Files handed to the app by the desktop (Dock drop, "Open With"): the queue
        dialog now, or as soon as the app is connected."""
        if getattr(self, "_files_ready", False):
            self.handle_message({"files": files})
        else:
            self.initial_files.extend(files)

    def _node_ended(self, future) -> None:
        """Engine thread: the local node stopped (quit, or it failed)."""
        if future.cancelled() or self._stopping:
            return
        exc = future.exception()
        if exc is not None:
            message = mask_url(" ".join(str(exc).split()))
            log.error("the local node stopped: %s", message)
            QTimer.singleShot(0, lambda: self._show_node_failure(message))

    def _show_node_failure(self, message: str) -> None:
        self.window.show_error(f"This computer's node stopped: {message}")
        if self.tray is not None:
            self.tray.set_state("error", message)

    # ------------------------------------------------------------------ events

    def _on_events(self, events: list) -> None:
        jobs, nodes_changed = [], False
        for event in events:
            if isinstance(event, JobChanged):
                jobs.append(event)
                if (
                    event.job.submitted_by == self.me
                    and event.job.state in TERMINAL_STATES
                    and event.previous_state not in TERMINAL_STATES
                ):
                    self._finished_mine.append(event.job)
            elif isinstance(event, NodeChanged):
                nodes_changed = True
            elif isinstance(event, Resynced):
                self.connection_changed.emit("connected", "caught up after reconnecting")
        self.window.apply_events(events)
        if nodes_changed:
            self.spawn(self.refresh_nodes())
        if self._finished_mine and not self._notify_timer.isActive():
            self._notify_timer.start()

    def _flush_notifications(self) -> None:
        """One desktop notification for any number of this computer's jobs that finished."""
        jobs, self._finished_mine = self._finished_mine, []
        if not jobs or self.tray is None:
            return
        ok = [j for j in jobs if j.state == JobState.SUCCEEDED]
        bad = [j for j in jobs if j.state != JobState.SUCCEEDED]
        if len(jobs) == 1:
            job = jobs[0]
            title = f"{Path(job.input).name}: {job.state}"
            body = job.reason or job.output
        else:
            title = f"{len(ok)} job(s) finished" + (f", {len(bad)} failed" if bad else "")
            body = ", ".join(Path(j.input).name for j in (bad or ok)[:4])
        icon = (
            QSystemTrayIcon.MessageIcon.Warning if bad else QSystemTrayIcon.MessageIcon.Information
        )
        self.tray.showMessage(title, body, icon, 6000)

    async def refresh_nodes(self) -> None:
        if self.console is None or self._stopping:
            return
        try:
            rows = await self.call(self.console.nodes())
            counts = await self.call(self.console.counts())
        except Exception as exc:  # the status bar tells; the next refresh tries again
            self.connection_changed.emit("reconnecting", " ".join(str(exc).split())[:200])
            return
        if self.bus is not None and self.bus.connected:
            self.connection_changed.emit("connected", "")
        self.window.set_nodes(rows, counts)
        self._update_tray(rows, counts)
        await self.refresh_presets()

    async def refresh_presets(self) -> None:
        """Keep the database's preset library for :meth:`presets` (Qt asks it synchronously)."""
        if self.console is None or self._stopping:
            return
        with contextlib.suppress(Exception):  # refresh_nodes already reports connection trouble
            self._stored_presets = await self.call(
                self.console.pool.run(presets_store.list_presets)
            )

    def _update_tray(self, rows: list[dict], counts: dict[str, int]) -> None:
        if self.tray is None or self.node is None:
            return
        mine = next((r for r in rows if r["identifier"] == self.node.identifier), None)
        if mine is None:
            self.tray.set_state("disconnected")
        elif mine["state"] in ("paused", "offline", "quarantined"):
            self.tray.set_state(
                "error" if mine["state"] == "quarantined" else "paused",
                mine.get("state_reason") or "",
            )
        elif mine["running"]:
            self.tray.set_state("working", f"{mine['running']} job(s)")
        else:
            self.tray.set_state("idle", "draining" if mine["state"] == "draining" else "")
        self.tray.set_counts(
            counts.get("queued", 0),
            counts.get("running", 0),
            counts.get("failed", 0) + counts.get("dead", 0),
        )

    # ------------------------------------------------------------------ actions

    async def set_accepting(self, accepting: bool) -> None:
        """The tray switch: this computer takes jobs, or gives them back and pauses."""
        self.accepting = accepting
        self.ui_state.setValue("accepting", accepting)
        if self.tray is not None:
            self.tray.set_accepting(accepting)
        self.window.set_accepting(accepting)
        if self.console is not None and self.node is not None:
            await self.call(
                self.console.node_action(self.node.identifier, "resume" if accepting else "pause")
            )
            await self.refresh_nodes()

    async def drain_local(self) -> None:
        if self.console is not None and self.node is not None:
            await self.call(self.console.node_action(self.node.identifier, "drain"))
            await self.refresh_nodes()

    def handle_message(self, message: dict) -> None:
        """From a second launch (single instance) or ``ffdesk gui --quit``."""
        if message.get("quit"):
            self.spawn(self.request_quit(str(message["quit"])))
            return
        self.window.bring_forward()
        files = [str(f) for f in message.get("files") or []]
        if files:
            self.window.open_drop_dialog(files)

    # ------------------------------------------------------------------ presets, graphs

    def presets(self) -> dict[str, Preset]:
        """Built-ins, the user file, and the database's library as last read (every
        NODES_REFRESH_MS); a library preset unusable here is left out."""
        extra = [self.places.user_presets_file] if self.places.user_presets_file.exists() else []
        return load_presets(extra, stored=[(p.name, p.table()) for p in self._stored_presets],
                            problems=[])

    async def history(self, seconds: float) -> Any:
        if self.console is None:
            return None
        return await self.call(self.console.history(seconds))

    async def poll_samples(self) -> None:
        """Live points for the graphs: the rows written since the newest one shown."""
        if self.console is None or self._stopping:
            return
        after = self.window.graphs.resume_after()
        if after is None:
            after = time.time() - 60
        try:
            recent = await self.call(self.console.recent_samples(after))
        except Exception:
            return  # the status bar already tells about connection trouble
        self.window.graphs.extend(recent)

    # ------------------------------------------------------------------ settings

    def make_settings_dialog(self, parent: Any) -> Any:
        """The settings dialog filled with the current values and wired for sharing."""
        from ffdesk.system import autostart
        from ffdesk.ui.settings_dialog import SettingsDialog

        values = {**asdict(self.settings), "autostart": autostart.is_enabled(),
                  "theme": self.ui_state.value("theme", "system")}
        server = EmbeddedServer(self.places.embedded_dir)
        share_port = server.status().shared_port
        dialog = SettingsDialog(values, sharing=share_port is not None, share_port=share_port,
                                join_url=None, probe_cache_dir=self.places.cache_dir,
                                parent=parent)
        if share_port is not None and not self.settings.database:
            self.spawn(self._show_join_url(dialog, share_port))
        dialog.share_toggled.connect(
            lambda on, port: self.spawn(self._toggle_share(dialog, on, port)))
        return dialog

    def open_settings(self, parent: Any) -> None:
        from ffdesk.system import autostart

        dialog = self.make_settings_dialog(parent)
        if dialog.exec() != dialog.DialogCode.Accepted:
            return
        chosen = dialog.values()
        wants_autostart = bool(chosen.pop("autostart"))
        theme = str(chosen.pop("theme"))
        self.ui_state.setValue("theme", theme)
        apply_theme(theme)
        if wants_autostart != autostart.is_enabled():
            if wants_autostart:
                autostart.enable([*ffdesk_command(), "gui", "--minimized"])
            else:
                autostart.disable()
        before = {k: getattr(self.settings, k) for k in chosen}
        write_settings_file(self.places.settings_file, chosen)
        if chosen != before:
            answer = QMessageBox.question(
                parent, "Restart ffdesk?",
                "The database, identifier, slots, tags and FFmpeg settings take effect when "
                "ffdesk restarts. Restart now? Running jobs on this computer are handed back "
                "to the queue.")
            if answer == QMessageBox.StandardButton.Yes:
                self.restart_requested = True
                self.spawn(self.request_quit("now"))

    async def _toggle_share(self, dialog: Any, on: bool, port: int) -> None:
        server = EmbeddedServer(self.places.embedded_dir)
        try:
            if on:
                info = await self.call(asyncio.to_thread(server.share, port))
                dialog.set_join_url(info.join_url)
            else:
                await self.call(asyncio.to_thread(server.unshare))
                dialog.set_join_url(None)
        except Exception as exc:
            dialog.set_sharing(False, " ".join(str(exc).split()))

    async def _show_join_url(self, dialog: Any, port: int) -> None:
        server = EmbeddedServer(self.places.embedded_dir)
        info = await self.call(asyncio.to_thread(server.share, port))  # same port: no restart
        dialog.set_join_url(info.join_url)

    # ------------------------------------------------------------------ quitting

    @property
    def stopping(self) -> bool:
        return self._stopping

    def local_running(self) -> int:
        return len(self.node.running) if self.node is not None else 0

    async def request_quit(
        self, mode: str = "ask", ask: Callable[[int], str] | None = None
    ) -> None:
        """``mode``: "ask" (a dialog when jobs run here), "drain" (finish them first) or
        "now" (stop them and hand them back to the queue)."""
        if self._stopping:
            return
        running = self.local_running()
        if mode == "ask":
            mode = (ask or self._ask_how_to_quit)(running) if running else "now"
        if mode == "cancel":
            return
        if mode == "drain" and running:
            self.window.show_message(f"Finishing {running} running job(s) before quitting…")
            await self.drain_local()
            # The count lives on the engine thread; polling it five times a second is the
            # simplest thing that is correct across the two loops.
            while self.local_running():  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        await self.shutdown()

    def _ask_how_to_quit(self, running: int) -> str:
        box = QMessageBox(self.window)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Quit ffdesk")
        box.setText(f"{running} job(s) are running on this computer.")
        box.setInformativeText(
            "Finish them before quitting, or stop them now and hand them "
            "back to the queue for another computer?"
        )
        finish = box.addButton("Finish them first", QMessageBox.ButtonRole.AcceptRole)
        now = box.addButton("Stop and hand back", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(finish)
        box.exec()
        clicked = box.clickedButton()
        return "drain" if clicked is finish else "now" if clicked is now else "cancel"

    async def shutdown(self) -> None:
        """Stop everything in order: node (hands back its jobs), bus, console, database,
        engine thread; then let the GUI loop end."""
        if self._stopping:
            return
        self._stopping = True
        self._nodes_timer.stop()
        self._samples_timer.stop()
        self._notify_timer.stop()
        self.window.show_message("Stopping…")
        if self.node is not None and self._node_future is not None:
            assert self.engine.loop is not None
            self.engine.loop.call_soon_threadsafe(
                lambda: self.node.request_stop(immediately=True)  # type: ignore[union-attr]
            )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.wrap_future(self._node_future), 60)
        if self.bus is not None and self._bus_future is not None:
            self.engine.loop.call_soon_threadsafe(self.bus.stop)  # type: ignore[union-attr]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.wrap_future(self._bus_future), 15)
        if self.console is not None:
            with contextlib.suppress(Exception):
                await self.call(self.console.close())
        if self.db is not None:
            with contextlib.suppress(Exception):
                await self.call(asyncio.to_thread(self.db.close))
        self.engine.stop()
        if self.tray is not None:
            self.tray.hide()
        self.window.save_state()
        self._quit.set()


def run_gui(settings: Settings, places: Places, *, files: list[str], minimized: bool) -> int:
    """``ffdesk`` / ``ffdesk gui``: one instance per user; later launches hand over."""
    import qasync

    from ffdesk.ui.icons import app_icon
    from ffdesk.ui.single_instance import SingleInstance

    qt_app = QApplication.instance() or QApplication([sys.argv[0]])
    qt_app.setApplicationName("ffdesk")
    qt_app.setOrganizationName("ffdesk")
    qt_app.setDesktopFileName("ffdesk")
    qt_app.setWindowIcon(app_icon())
    qt_app.setQuitOnLastWindowClosed(False)
    apply_theme(str(QSettings(str(places.config_dir / "ui-state.ini"),
                              QSettings.Format.IniFormat).value("theme", "system")))
    instance = SingleInstance(places.data_dir)
    absolute = [str(Path(f).absolute()) for f in files]
    if instance.hand_over(absolute):
        return 0
    if not instance.claim():
        # Another instance is starting right now: give it a moment, then hand over.
        for _ in range(20):
            if instance.hand_over(absolute):
                return 0
            time.sleep(0.25)
        print("ffdesk: error: another ffdesk is starting and does not answer", file=sys.stderr)
        return 1
    loop = qasync.QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    desktop = DesktopApp(settings, places, files=absolute, minimized=minimized)
    instance.message_received.connect(desktop.handle_message)
    file_open = FileOpenFilter(desktop.open_files)
    qt_app.installEventFilter(file_open)
    try:
        with loop:
            code = loop.run_until_complete(desktop.run())
    finally:
        instance.release()
    # Tear Qt objects down in a fixed order while the interpreter is still whole: letting
    # the garbage collector do it at exit is what ends in "Fatal Python error".
    desktop.window.close()
    desktop.window.deleteLater()
    if desktop.tray is not None:
        desktop.tray.deleteLater()
    desktop.deleteLater()
    qt_app.processEvents()
    if desktop.restart_requested:  # after the lock is released: the new one becomes the app
        subprocess.Popen([*ffdesk_command(), "gui"], start_new_session=True,
                         stdin=subprocess.DEVNULL)
    return code
