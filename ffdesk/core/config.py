"""Settings with one precedence rule: flag > ``FFDESK_*`` environment > settings file > default.

The settings file is TOML (``settings.toml`` in the config dir). Every field below can be set in
all three places; the environment variable is ``FFDESK_`` + the upper-case name.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ffdesk.core.errors import ConfigError
from ffdesk.core.places import Places


def default_slots() -> int:
    # x264/x265 already use several threads per encode; one slot per two cores keeps a
    # workstation usable while still overlapping the I/O-bound parts of short jobs.
    return max(1, (os.cpu_count() or 2) // 2)


def default_identifier() -> str:
    return socket.gethostname().split(".")[0] or "node"


@dataclass
class Settings:
    database: str | None = None  # None: the embedded server
    identifier: str = field(default_factory=default_identifier)
    slots: int = field(default_factory=default_slots)
    ffmpeg: str | None = None
    ffprobe: str | None = None
    poll_interval: float = 5.0  # fallback poll when NOTIFY is lost; seconds
    listen: bool = True  # False: poll-only mode (for benchmarks and PgBouncer setups)
    heartbeat: float = 5.0  # seconds
    lease_beats: int = 3  # a lease lasts this many heartbeats
    grace: float = 30.0  # on SIGTERM, let running jobs finish this long
    max_attempts: int = 3
    output_dir: str | None = None  # default output folder for submit (None: next to input)
    tags: str = ""  # comma separated labels jobs can ask for, e.g. "gpu,big-mem"
    debug: str = ""  # comma separated areas: db,queue,ffmpeg,cluster,node or "all"

    @property
    def lease_seconds(self) -> float:
        return self.heartbeat * self.lease_beats


_TYPES: dict[str, type] = {f.name: f.type for f in fields(Settings)}  # type: ignore[misc]


def _coerce(name: str, value: Any, origin: str) -> Any:
    kind = str(_TYPES[name])
    try:
        if value is None:
            return None
        if kind.startswith("int"):
            if isinstance(value, bool):
                raise ValueError
            result: Any = int(value)
        elif kind.startswith("float"):
            result = float(value)
        elif kind.startswith("bool"):
            if isinstance(value, bool):
                result = value
            elif str(value).strip().lower() in ("1", "true", "yes", "on"):
                result = True
            elif str(value).strip().lower() in ("0", "false", "no", "off"):
                result = False
            else:
                raise ValueError
        else:
            result = str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: '{name}' has an invalid value {value!r}") from None
    if name == "slots" and result < 1:
        raise ConfigError(f"{origin}: 'slots' must be at least 1")
    if name in ("heartbeat", "poll_interval") and result <= 0:
        raise ConfigError(f"{origin}: '{name}' must be greater than 0")
    if name == "lease_beats" and result < 2:
        raise ConfigError(f"{origin}: 'lease_beats' must be at least 2")
    return result


def read_settings_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc}") from None
    unknown = sorted(set(data) - set(_TYPES))
    if unknown:
        raise ConfigError(f"settings file {path}: unknown setting(s) {', '.join(unknown)}")
    return data


def load_settings(
    places: Places,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge default < settings file < environment < flags (flags with value None are unset)."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    for name, value in read_settings_file(places.settings_file).items():
        merged[name] = _coerce(name, value, f"settings file {places.settings_file}")
    for name in _TYPES:
        env_name = f"FFDESK_{name.upper()}"
        if environ.get(env_name, "") != "":
            merged[name] = _coerce(name, environ[env_name], f"environment {env_name}")
    for name, value in (flags or {}).items():
        if value is not None and name in _TYPES:
            merged[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    return Settings(**merged)
