"""``ffdesk selftest`` as the packaging smoke test runs it: a subprocess, offscreen Qt."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from ffdesk import __version__
from ffdesk.selftest import CHECKS
from tests.conftest import ffdesk_cmd

pytestmark = pytest.mark.integration


def selftest(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FFDESK_")}
    environ.update(FFDESK_HOME=str(home), QT_QPA_PLATFORM="offscreen", PYTHONUNBUFFERED="1")
    environ.update(env)
    return subprocess.run(
        ffdesk_cmd("selftest", *args),
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def checks_by_name(data: dict) -> dict[str, dict]:
    return {c["name"]: c for c in data["checks"]}


def test_selftest_json_passes_every_check(tmp_path: Path):
    started = time.monotonic()
    proc = selftest(tmp_path / "home", "--json")
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)  # stdout is the JSON document and nothing else
    assert data["ok"] is True
    assert data["version"] == __version__
    assert data["frozen"] is False
    assert [c["name"] for c in data["checks"]] == list(CHECKS)
    for check in data["checks"]:
        assert check["ok"] is True, check
        assert check["error"] is None
        assert check["detail"] and "\n" not in check["detail"]
        assert isinstance(check["seconds"], float | int) and check["seconds"] >= 0
    found = checks_by_name(data)
    assert found["psycopg"]["info"]["impl"] in ("binary", "c", "python")
    assert found["qt"]["info"]["platform"] == "offscreen"
    assert found["pyqtgraph"]["info"]["curve_pixels"] > 0
    assert "enqueued and claimed" in found["database"]["detail"]
    assert found["ffmpeg"]["info"]["ffmpeg_version"]
    assert found["encode"]["info"]["probe"]["duration"] == pytest.approx(1.0, abs=0.2)
    assert isinstance(found["hwprobe"]["info"]["hardware"], list)  # none is fine
    # The throw-away server lived in a temp dir: nothing under the user's data dir.
    assert not (tmp_path / "home" / "data" / "postgres").exists()
    assert wall < 45, f"selftest took {wall:.1f} s"  # ~3 s normally; generous under load


def test_missing_ffmpeg_fails_the_selftest_and_names_the_check(tmp_path: Path):
    proc = selftest(tmp_path / "home", "--json", "--ffmpeg", "/nonexistent/ffmpeg")
    assert proc.returncode != 0
    data = json.loads(proc.stdout)
    assert data["ok"] is False
    assert [c["name"] for c in data["checks"]] == list(CHECKS)
    found = checks_by_name(data)
    assert found["ffmpeg"]["ok"] is False
    assert "/nonexistent/ffmpeg" in found["ffmpeg"]["error"]
    assert "not found" in found["ffmpeg"]["error"]
    for name in ("encode", "hwprobe"):  # they need ffmpeg: failed, saying why
        assert found[name]["ok"] is False and "ffmpeg" in found[name]["error"]
    for name in ("python", "psycopg", "qt", "pyqtgraph", "database"):
        assert found[name]["ok"] is True, found[name]
    err = proc.stderr.strip().splitlines()
    assert err[-1] == "ffdesk: error: selftest failed: ffmpeg, encode, hwprobe"


def test_text_output_is_one_line_per_check_and_a_summary(tmp_path: Path):
    # FFmpeg missing through the environment this time (FFDESK_FFMPEG), as a node sets it.
    proc = selftest(tmp_path / "home", FFDESK_FFMPEG=str(tmp_path / "no-ffmpeg"))
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(CHECKS) + 1
    for line, name in zip(lines, CHECKS, strict=False):
        assert line.split()[1] == name
    status = {line.split()[1]: line.split()[0] for line in lines[:-1]}
    assert status["ffmpeg"] == "FAIL" and status["database"] == "ok"
    assert str(tmp_path / "no-ffmpeg") in next(x for x in lines if x.split()[1] == "ffmpeg")
    assert lines[-1].startswith("selftest FAILED: ffmpeg, encode, hwprobe (5 of 8 passed)")
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_qt_crash_fails_the_qt_checks_but_not_the_selftest_process(tmp_path: Path):
    # An unknown platform plugin makes Qt abort the process: only the child dies.
    proc = selftest(tmp_path / "home", "--json", QT_QPA_PLATFORM="no-such-platform")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    found = checks_by_name(data)
    assert found["qt"]["ok"] is False
    assert "no-such-platform" in found["qt"]["error"]  # Qt's own words, from the child
    assert found["pyqtgraph"]["ok"] is False and "qt check" in found["pyqtgraph"]["error"]
    assert all(c["ok"] for c in data["checks"] if c["name"] not in ("qt", "pyqtgraph"))
