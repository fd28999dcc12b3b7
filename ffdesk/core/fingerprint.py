"""File fingerprints for the audit trail: cheap enough to take for every job.

The fast hash reads at most 16 MiB whatever the size (BLAKE2b-256 over the size, the first
8 MiB and the last 8 MiB), so it costs milliseconds on a 50 GB master yet changes when a file
is replaced, re-exported, truncated or grown. The full hash reads everything and is only
taken when the ``full_hash`` setting asks for it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

EDGE = 8 * 1024 * 1024
_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class Fingerprint:
    size: int
    mtime: float  # POSIX seconds
    fast_hash: str  # blake2b-256 hex of size + first and last EDGE bytes
    full_hash: str | None = None  # blake2b-256 hex of the whole content


def _open_regular(path: Path) -> BinaryIO:
    """Open a regular file for reading. A FIFO or device is refused, never read: opening a
    FIFO blocks until a writer comes (forever for one that never delivers), and reading one
    would steal the bytes FFmpeg is waiting for."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)  # reads of the regular file as usual
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def fast_hash(path: Path) -> tuple[int, float, str]:
    """(size, mtime, fast hash) from one open file: the three describe the same content."""
    digest = hashlib.blake2b(digest_size=32)
    with _open_regular(path) as fh:
        st = os.fstat(fh.fileno())
        digest.update(st.st_size.to_bytes(8, "little"))
        digest.update(fh.read(EDGE))
        if st.st_size > EDGE:
            # Overlap when the file is shorter than two edges: every byte is covered once
            # or twice, never skipped.
            fh.seek(max(EDGE, st.st_size - EDGE))
            digest.update(fh.read(EDGE))
    return st.st_size, st.st_mtime, digest.hexdigest()


def full_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=32)
    with _open_regular(path) as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(path: Path, *, full: bool = False) -> Fingerprint:
    size, mtime, fast = fast_hash(path)
    return Fingerprint(size, mtime, fast, full_hash(path) if full else None)
