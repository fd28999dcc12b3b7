"""What to do when a run fails, and the per-preset run policy a job carries.

Both are pure: :func:`decide` turns a failure class and the attempt count into the job's next
state, and :class:`RunPolicy` is the part of a preset that governs how its jobs run (attempt
limit, output verification, what to do about an existing output, resource guards).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, fields
from typing import Any, Literal

from ffdesk.core.errors import FfdeskError

Conflict = Literal["keep-both", "replace", "skip"]
CONFLICTS: tuple[str, ...] = ("keep-both", "replace", "skip")


class PolicyError(FfdeskError):
    """A run policy value (in a preset or a setting) is invalid."""


HOOK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(value: object, *, what: str = "size") -> int | None:
    """Bytes from ``1073741824``, ``"512M"``, ``"2G"``, ``"1.5GiB"`` (powers of 1024);
    None for "", 0 or None (no limit)."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, bool):
        raise PolicyError(f"{what} must be a size such as 512M or 2G, not {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise PolicyError(f"{what} must not be negative")
        return int(value)
    found = _SIZE.match(str(value))
    if not found:
        raise PolicyError(f"{what} must be a size such as 512M or 2G, not {value!r}")
    number, unit = float(found.group(1)), found.group(2).lower()
    return int(number * 1024 ** "bkmgt".index(unit or "b")) or None


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


@dataclass(frozen=True)
class RunPolicy:
    """How the jobs of one preset run. ``None`` means "the node's setting decides"."""

    max_attempts: int | None = None
    verify: bool = True  # probe the output before it takes the final name
    # Allowed difference between input and output duration, seconds (None: max(0.5 s, 2 %)).
    duration_tolerance: float | None = None
    # An output that already exists: keep-both writes "name (2).ext" unless the file is the
    # one ffdesk wrote for this same job; replace overwrites; skip leaves it and does nothing.
    on_conflict: Conflict = "keep-both"
    memory_limit: int | None = None  # bytes of FFmpeg RSS; exceeded -> stopped, retried
    stall_timeout: float | None = None  # seconds without progress -> stopped, retried
    # Node-local hooks by name. Only a name: the command is whatever the running node's own
    # settings list under that name ([hooks]); a node without it refuses the job.
    pre_hook: str | None = None
    post_hook: str | None = None

    @classmethod
    def from_table(cls, table: dict[str, Any], where: str) -> RunPolicy:
        """From a preset's TOML keys (already known to be policy keys)."""
        values: dict[str, Any] = {}
        if "max_attempts" in table:
            n = table["max_attempts"]
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 100:
                raise PolicyError(f"{where}: 'max_attempts' must be a whole number 1-100")
            values["max_attempts"] = n
        if "verify" in table:
            if not isinstance(table["verify"], bool):
                raise PolicyError(f"{where}: 'verify' must be true or false")
            values["verify"] = table["verify"]
        for key in ("duration_tolerance", "stall_timeout"):
            if key in table:
                v = table[key]
                if not isinstance(v, int | float) or isinstance(v, bool) or v <= 0:
                    raise PolicyError(f"{where}: '{key}' must be a number of seconds above 0")
                values[key] = float(v)
        if "on_conflict" in table:
            if table["on_conflict"] not in CONFLICTS:
                raise PolicyError(f"{where}: 'on_conflict' must be one of {', '.join(CONFLICTS)}")
            values["on_conflict"] = table["on_conflict"]
        for key in ("pre_hook", "post_hook"):
            if key in table:
                name = table[key]
                if not isinstance(name, str) or not HOOK_NAME.match(name):
                    raise PolicyError(
                        f"{where}: '{key}' must be a hook name (letters, digits, '-', '_')"
                    )
                values[key] = name
        if "memory_limit" in table:
            values["memory_limit"] = parse_size(
                table["memory_limit"], what=f"{where}: 'memory_limit'"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Only what differs from the defaults (stored with every job)."""
        default = RunPolicy()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunPolicy:
        """From a job's stored policy; unknown keys (a newer program wrote them) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


POLICY_KEYS = frozenset(f.name for f in fields(RunPolicy))


# --------------------------------------------------------------------------- retry decisions


@dataclass(frozen=True)
class Decision:
    state: Literal["queued", "failed", "dead"]
    retry_in: float = 0.0  # seconds before the job may be claimed again (queued only)
    avoid_node: bool = False  # never run it on the node that failed again
    why: str = ""  # one line for the event log: "retry 2 of 3 in 14 s"


def backoff_seconds(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with jitter: base * 2^(attempt-1), capped, times 0.5..1.0.

    The jitter keeps a batch that failed together (a share went away) from coming back
    together and failing together again.
    """
    raw = min(cap, base * 2 ** max(0, attempt - 1))
    return raw * (0.5 + 0.5 * (rng or random).random())


def decide(
    kind: str,
    *,
    attempt: int,
    max_attempts: int,
    other_nodes: bool,
    base: float,
    cap: float,
    rng: random.Random | None = None,
) -> Decision:
    """The policy per failure class (issue 5):

    * ``input`` / ``config``: retrying cannot help: ``failed`` at once;
    * ``transient`` (and ``unknown``, which may well be one): back to the queue after an
      exponential backoff with jitter;
    * ``environment``: this node lacks something (encoder, disk, GPU): back to the queue at
      once, avoiding this node; when no other node could take it, after a backoff here;
    * at the attempt limit a retryable failure makes the job ``dead`` (the dead letter).
    """
    if kind in ("input", "config"):
        return Decision("failed", why=f"{kind} problem: not retried")
    if attempt >= max_attempts:
        return Decision("dead", why=f"attempt {attempt} of {max_attempts} failed: dead")
    if kind == "environment" and other_nodes:
        return Decision(
            "queued",
            0.0,
            avoid_node=True,
            why=f"retry {attempt + 1} of {max_attempts} on another node",
        )
    delay = backoff_seconds(attempt, base=base, cap=cap, rng=rng)
    return Decision("queued", delay, why=f"retry {attempt + 1} of {max_attempts} in {delay:.1f} s")
