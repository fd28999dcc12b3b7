"""A node's list of the temp outputs its FFmpeg processes are writing right now.

A node that crashes (kill -9, power cut, a frozen desktop killed by the user) leaves its
half-written ``.part`` files behind; the database only knows about the jobs it still holds.
This journal, one small JSON file per node identifier in the data folder, lists every temp
file before FFmpeg starts writing it and forgets it once the run has ended; at the next
start, whatever is still listed is removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from ffdesk.ffmpeg.runner import discard_output

log = logging.getLogger("ffdesk.node")


class TempJournal:
    def __init__(self, folder: Path, identifier: str) -> None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in identifier)
        self.path = folder / f"temp-files-{safe}.json"
        self._paths: set[str] = set()

    def sweep(self) -> list[Path]:
        """At start: delete the temp files a previous run of this node left behind."""
        try:
            listed = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("temp file journal %s unreadable (%s): starting a new one", self.path, exc)
            listed = []
        removed = []
        for name in listed if isinstance(listed, list) else []:
            path = Path(str(name))
            if path.exists():
                discard_output(path)
                if not path.exists():
                    removed.append(path)
        self._paths.clear()
        self._save()
        return removed

    def add(self, path: Path) -> None:
        self._paths.add(str(path))
        self._save()

    def remove(self, path: Path) -> None:
        if str(path) in self._paths:
            self._paths.discard(str(path))
            self._save()

    def _save(self) -> None:
        # Write-then-rename: a crash mid-write must not lose the list of files to clean.
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(sorted(self._paths), ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot update temp file journal %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                self.path.with_suffix(".tmp").unlink()
