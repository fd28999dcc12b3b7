"""Logging: one named logger per area, a rotating file, passwords masked everywhere.

Areas: ``ffdesk.db``, ``ffdesk.queue``, ``ffdesk.ffmpeg``, ``ffdesk.cluster``, ``ffdesk.node``,
``ffdesk.cli``. ``--debug queue,ffmpeg`` turns those areas up to DEBUG; ``--debug all`` every area.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from ffdesk.core.errors import ConfigError
from ffdesk.core.secrets import mask_url

AREAS = ("db", "queue", "ffmpeg", "cluster", "node", "cli", "events")
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class MaskSecrets(logging.Filter):
    """Last line of defence: whatever a message or traceback says, no password leaves."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_url(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_url(super().format(record))  # also covers exception text


class _ConsoleFormatter(_MaskingFormatter):
    """Tracebacks belong in the log file; a terminal gets one line per message."""

    def format(self, record: logging.LogRecord) -> str:
        plain = logging.makeLogRecord(record.__dict__)
        plain.exc_info = plain.exc_text = plain.stack_info = None
        return super().format(plain)


def parse_debug(spec: str) -> set[str]:
    areas = {a.strip().lower() for a in (spec or "").split(",") if a.strip()}
    if "all" in areas:
        return set(AREAS)
    unknown = areas - set(AREAS)
    if unknown:
        raise ConfigError(
            f"--debug: unknown area(s) {', '.join(sorted(unknown))}; known: {', '.join(AREAS)}"
        )
    return areas


def setup_logging(log_file: Path | None, debug: str = "", *, console: bool = True) -> None:
    """Configure the ``ffdesk`` logger tree. Safe to call more than once."""
    areas = parse_debug(debug)
    root = logging.getLogger("ffdesk")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG)
    root.propagate = False
    formatter = _MaskingFormatter(_FORMAT)
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(_ConsoleFormatter(_FORMAT))
        stream.addFilter(_AreaLevel(areas, default=logging.INFO))
        root.addHandler(stream)
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(
                log_file, maxBytes=5 * 1024 * 1024, backupCount=5, encoding="utf-8"
            )
        except OSError as exc:
            raise ConfigError(f"cannot write the log file {log_file}: {exc.strerror}") from None
        handler.setFormatter(formatter)
        handler.addFilter(_AreaLevel(areas, default=logging.INFO))
        root.addHandler(handler)
    for handler in root.handlers:
        handler.addFilter(MaskSecrets())
    # psycopg_pool reports failed reconnects itself; give them our format and masking
    # instead of Python's bare last-resort handler.
    driver = logging.getLogger("psycopg")
    for handler in list(driver.handlers):
        driver.removeHandler(handler)
    driver.setLevel(logging.WARNING)
    driver.propagate = False
    for handler in root.handlers:
        driver.addHandler(handler)


class _AreaLevel(logging.Filter):
    """INFO and up for every area; DEBUG only for the areas named in --debug."""

    def __init__(self, areas: set[str], default: int) -> None:
        super().__init__()
        self.areas = areas
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.default:
            return True
        parts = record.name.split(".")
        return len(parts) > 1 and parts[1] in self.areas
