"""Node-local hooks: commands a machine runs before and after a job, on its own terms.

A preset (in the shared database) can only *name* a hook. What runs is looked up in the
running node's own settings (``[hooks]`` in its settings file): a name that machine did not
list is refused, so nobody with access to the database can make a node run a command its
owner did not put there. Hooks run from an argv list (no shell), get the job as a JSON
sidecar file (its path is the last argument and in ``FFDESK_JOB_SIDECAR``), have a timeout,
and their exit code and output go into the attempt's audit trail.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ffdesk.core.model import Job

OUTPUT_CAP = 64 * 1024  # a hook's output kept in the audit trail


@dataclass(frozen=True)
class HookResult:
    name: str
    phase: str  # "pre" or "post"
    argv: list[str]
    exit_code: int | None  # None: it could not start or ran out of time
    output: str  # stdout and stderr together, cut at OUTPUT_CAP
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def summary(self) -> str:
        if self.error:
            return f"{self.phase} hook '{self.name}' {self.error}"
        last = next((ln for ln in reversed(self.output.splitlines()) if ln.strip()), "")
        tail = f": {last[:200]}" if last else ""
        return f"{self.phase} hook '{self.name}' exited with code {self.exit_code}{tail}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def refused(job: Job, allowed: Mapping[str, list[str]], node: str) -> str | None:
    """Why this node will not run the hooks the job names; None when it will."""
    for phase in ("pre", "post"):
        name = (job.policy or {}).get(f"{phase}_hook")
        if name and name not in allowed:
            return (
                f"{phase} hook '{name}' (named by preset '{job.preset}') is not allowed on "
                f"node {node}: it is not listed under [hooks] in that node's settings"
            )
    return None


def run_hook(
    name: str,
    phase: str,
    argv: list[str],
    sidecar: dict[str, Any],
    *,
    timeout: float,
) -> HookResult:
    """Run one hook to completion (blocking: call it in a thread). Never raises for the
    hook's own failures; they are in the result."""
    fd, path = tempfile.mkstemp(prefix=f"ffdesk-hook-{phase}-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(sidecar, fh, ensure_ascii=False, default=str, indent=2)
    full = [*argv, path]
    env = {
        **os.environ,
        "FFDESK_HOOK": name,
        "FFDESK_HOOK_PHASE": phase,
        "FFDESK_JOB_ID": str(sidecar.get("id", "")),
        "FFDESK_JOB_SIDECAR": path,
    }
    started = time.monotonic()
    try:
        proc = subprocess.run(
            full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=timeout,
            check=False,
        )
        output = proc.stdout[:OUTPUT_CAP].decode("utf-8", "replace")
        return HookResult(name, phase, full, proc.returncode, output,
                          time.monotonic() - started)
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"")[:OUTPUT_CAP].decode("utf-8", "replace")
        return HookResult(name, phase, full, None, output, time.monotonic() - started,
                          error=f"ran longer than {timeout:g} s and was killed")
    except OSError as exc:
        return HookResult(name, phase, full, None, "", time.monotonic() - started,
                          error=f"could not start: {exc.strerror or exc}")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
