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
from ffdesk.core.policy import PolicyError, parse_size
from ffdesk.core.roots import parse_root_mappings


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
    # How outputs are checked: "auto" trusts FFmpeg's own log when it proves the output
    # (and asks ffprobe when in doubt); "probe" always asks ffprobe (~60 ms of CPU a job).
    verify: str = "auto"
    # Failure handling (issue 5). A transient failure is retried after retry_base * 2^(n-1)
    # seconds (capped at retry_max, with jitter); a node with quarantine_after environment
    # failures in a row stops claiming until someone resumes it.
    retry_base: float = 10.0
    retry_max: float = 600.0
    quarantine_after: int = 3
    stall_timeout: float = 120.0  # seconds without FFmpeg progress before the run is stopped
    memory_limit: str = ""  # per-job FFmpeg RSS cap, e.g. "4G" (a preset may set its own)
    full_hash: bool = False  # hash whole inputs and outputs, not only their first/last 8 MiB
    # Storage roots (issue 6): this machine's path for each cluster-wide root name, e.g.
    # {media = "/mnt/media"}; checked at start and every roots_check seconds.
    roots: dict[str, str] = field(default_factory=dict)
    roots_check: float = 120.0
    # Node-local hooks (issue 7): the allowlist of commands this machine runs around jobs,
    # name -> argv, e.g. {notify = ["/usr/local/bin/notify", "--quiet"]}. A preset can only
    # name one; what runs is decided here.
    hooks: dict[str, list[str]] = field(default_factory=dict)
    hook_timeout: float = 60.0
    # Prometheus endpoint GET /metrics (ffdesk.engine.metrics): 0 is off. Localhost unless
    # told otherwise: elsewhere it shows the queue's counts (never paths) to anyone who asks.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    debug: str = ""  # comma separated areas: db,queue,ffmpeg,cluster,node or "all"

    @property
    def lease_seconds(self) -> float:
        return self.heartbeat * self.lease_beats

    @property
    def memory_limit_bytes(self) -> int | None:
        return parse_size(self.memory_limit, what="memory_limit")


_TYPES: dict[str, type] = {f.name: f.type for f in fields(Settings)}  # type: ignore[misc]


def _coerce(name: str, value: Any, origin: str) -> Any:
    if name == "roots":
        return parse_root_mappings(value, origin)
    if name == "hooks":
        return _parse_hooks(value, origin)
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
    if name == "verify" and result not in ("auto", "probe"):
        raise ConfigError(f"{origin}: 'verify' must be 'auto' or 'probe'")
    if name == "slots" and result < 1:
        raise ConfigError(f"{origin}: 'slots' must be at least 1")
    if name in ("heartbeat", "poll_interval") and result <= 0:
        raise ConfigError(f"{origin}: '{name}' must be greater than 0")
    if (
        name in ("retry_base", "retry_max", "stall_timeout", "roots_check", "hook_timeout")
        and result <= 0
    ):
        raise ConfigError(f"{origin}: '{name}' must be greater than 0")
    if name == "quarantine_after" and result < 1:
        raise ConfigError(f"{origin}: 'quarantine_after' must be at least 1")
    if name == "memory_limit":
        try:
            parse_size(result, what="memory_limit")
        except PolicyError:
            raise ConfigError(
                f"{origin}: 'memory_limit' must be a size such as 512M or 2G"
            ) from None
    if name == "metrics_port" and not 0 <= result <= 65535:
        raise ConfigError(f"{origin}: 'metrics_port' must be 0 (off) to 65535")
    if name == "metrics_host" and not result.strip():
        raise ConfigError(f"{origin}: 'metrics_host' must be a host name or address")
    if name == "lease_beats" and result < 2:
        raise ConfigError(f"{origin}: 'lease_beats' must be at least 2")
    return result


def _parse_hooks(value: Any, origin: str) -> dict[str, list[str]]:
    """Hooks from the settings file only: a table of name = [argv...]. (Not from the
    environment or a flag: an allowlist should be a deliberate edit on the machine.)"""
    import json
    import re

    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise ConfigError(f"{origin}: 'hooks' must be a table of name = [argv...]") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: 'hooks' must be a table of name = [argv...]")
    hooks: dict[str, list[str]] = {}
    for name, argv in value.items():
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", str(name)):
            raise ConfigError(f"{origin}: hook name '{name}' must be letters, digits, '-', '_'")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ConfigError(f"{origin}: hook '{name}' must be a non-empty list of strings "
                              "(the command and its arguments; no shell)")
        hooks[str(name)] = list(argv)
    return hooks


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


def write_settings_file(path: Path, values: dict[str, Any]) -> None:
    """Save ``values`` into the TOML settings file at ``path``, keeping every other key.

    A value of None removes its key (the setting falls back to its default, e.g. the embedded
    database). Names must be ``Settings`` fields, checked like the file is read, so the app
    can never write a file it would refuse at the next start. The file is replaced atomically
    and is private to the user (mode 0600): it may hold a database URL with a password.
    """
    # Imports and helpers live inside: this function was appended to a module others edit.
    import contextlib
    import datetime as dt
    import math
    import re
    import tempfile

    bare_key = re.compile(r"^[A-Za-z0-9_-]+$")
    escapes = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    escapes |= {'"': '\\"', "\\": "\\\\"}

    def toml_string(text: str) -> str:
        out = []
        for ch in text:
            if ch in escapes:
                out.append(escapes[ch])
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\u{ord(ch):04X}")  # TOML forbids raw control characters
            else:
                out.append(ch)  # any other Unicode is fine in a UTF-8 file
        return '"' + "".join(out) + '"'

    def toml_key(key: str) -> str:
        return key if bare_key.match(key) else toml_string(key)

    def toml_value(value: Any) -> str:
        # bool before int: True is an int in Python but must be written true, not 1.
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            if math.isnan(value):
                return "nan"
            if math.isinf(value):
                return "inf" if value > 0 else "-inf"
            return repr(value)  # shortest round-tripping form, always with "." or "e"
        if isinstance(value, str):
            return toml_string(value)
        # The rest only comes from keys kept from the existing file (tomllib's types).
        if isinstance(value, dt.datetime | dt.date | dt.time):
            return value.isoformat()
        if isinstance(value, list | tuple):
            return "[" + ", ".join(toml_value(item) for item in value) + "]"
        if isinstance(value, dict):
            items = (f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items())
            return "{ " + ", ".join(items) + " }" if value else "{}"
        raise ConfigError(f"cannot write {value!r} to the settings file {path}")

    merged: dict[str, Any] = {}
    if path.exists():
        try:
            merged = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            # Overwriting would silently lose whatever the user wrote there; make them look.
            raise ConfigError(f"cannot update settings file {path}: {exc}") from None
    for name, value in values.items():
        if name not in _TYPES:
            raise ConfigError(f"'{name}' is not a setting; it cannot go in {path}")
        coerced = _coerce(name, value, f"setting '{name}'")
        if coerced is None:
            merged.pop(name, None)
        else:
            merged[name] = coerced

    text = "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in merged.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600 before any byte of a password is written into it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
