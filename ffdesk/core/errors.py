"""User-facing errors.

Every error a person can cause (bad flag, missing file, unreachable database) is raised as an
``FfdeskError``: the CLI prints its message as one line and exits non-zero, no traceback.
Messages must never contain a password; build them with :func:`ffdesk.core.secrets.mask_url`.
"""

from __future__ import annotations


class FfdeskError(Exception):
    """An error whose message is fit to show a user as one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # one line, always

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(FfdeskError):
    """A setting, flag or settings file is wrong."""


class DatabaseError(FfdeskError):
    """The database cannot be reached, or is not one ffdesk can use."""

    exit_code = 3


class FfmpegNotFound(FfdeskError):
    """No usable ffmpeg binary."""
