"""Input/output fingerprints for the audit trail."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ffdesk.core.fingerprint import EDGE, fast_hash, fingerprint


def _expected(data: bytes) -> str:
    digest = hashlib.blake2b(digest_size=32)
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data[:EDGE])
    if len(data) > EDGE:
        digest.update(data[max(EDGE, len(data) - EDGE):])
    return digest.hexdigest()


def test_small_file_is_hashed_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"hello")
    size, mtime, value = fast_hash(path)
    assert (size, value) == (5, _expected(b"hello"))
    assert mtime == os.stat(path).st_mtime


def test_large_file_reads_only_its_edges_and_notices_changes_there(tmp_path: Path) -> None:
    data = bytearray(os.urandom(EDGE * 2 + 4096))
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    before = fingerprint(path)
    assert before.fast_hash == _expected(bytes(data))
    assert before.full_hash is None
    data[-1] ^= 0xFF  # a re-exported tail
    path.write_bytes(data)
    assert fingerprint(path).fast_hash != before.fast_hash
    path.write_bytes(data[:-1])  # truncated by one byte: the size alone changes the hash
    assert fingerprint(path).fast_hash != before.fast_hash


def test_full_hash_on_request(tmp_path: Path) -> None:
    path = tmp_path / "c.bin"
    data = os.urandom(EDGE + 10)
    path.write_bytes(data)
    assert fingerprint(path, full=True).full_hash == hashlib.blake2b(
        data, digest_size=32
    ).hexdigest()


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO nobody writes to would block forever (and reading it would steal
    FFmpeg's bytes): the fingerprint refuses it instead."""
    import pytest

    fifo = tmp_path / "stalled.mp4"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        fingerprint(fifo)
