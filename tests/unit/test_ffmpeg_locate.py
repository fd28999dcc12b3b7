"""ffdesk.ffmpeg.locate against the real Debian ffmpeg and the imageio-ffmpeg build."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from ffdesk.core.errors import FfdeskError, FfmpegNotFound
from ffdesk.ffmpeg import locate

DEBIAN_FFMPEG = Path("/usr/bin/ffmpeg")
DEBIAN_FFPROBE = Path("/usr/bin/ffprobe")
imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
BUNDLED_FFMPEG = Path(imageio_ffmpeg.get_ffmpeg_exe())

pytestmark = pytest.mark.skipif(not DEBIAN_FFMPEG.exists(), reason="needs /usr/bin/ffmpeg")


def _link(target: Path, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / name
    link.symlink_to(target)
    return link


@pytest.fixture
def empty_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))


def test_explicit_path_wins(tmp_path: Path) -> None:
    assert locate.find_ffmpeg(str(DEBIAN_FFMPEG)) == DEBIAN_FFMPEG
    # A folder holding ffmpeg is accepted too.
    folder = tmp_path / "bin"
    _link(DEBIAN_FFMPEG, folder, "ffmpeg")
    assert locate.find_ffmpeg(str(folder)) == folder / "ffmpeg"


def test_explicit_path_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(FfmpegNotFound, match="not found at") as missing:
        locate.find_ffmpeg(str(tmp_path / "no" / "ffmpeg"))
    not_exec = tmp_path / "ffmpeg"
    not_exec.write_text("#!/bin/sh\n")
    not_exec.chmod(0o644)
    with pytest.raises(FfmpegNotFound, match="not an executable") as not_x:
        locate.find_ffmpeg(str(not_exec))
    for exc in (missing.value, not_x.value):
        assert isinstance(exc, FfdeskError)
        assert "\n" not in str(exc)


def test_path_then_imageio(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "pathdir"
    link = _link(DEBIAN_FFMPEG, folder, "ffmpeg")
    monkeypatch.setenv("PATH", str(folder))
    assert locate.find_ffmpeg() == link
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert locate.find_ffmpeg() == BUNDLED_FFMPEG


@pytest.mark.usefixtures("empty_path")
def test_nothing_found_names_what_was_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import now raises ImportError
    with pytest.raises(FfmpegNotFound) as info:
        locate.find_ffmpeg()
    message = str(info.value)
    assert "PATH" in message and "imageio-ffmpeg (not installed)" in message
    assert "\n" not in message


@pytest.mark.usefixtures("empty_path")
def test_frozen_app_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    exe = app / "ffdesk"
    exe.write_text("")
    bundled = _link(DEBIAN_FFMPEG, app / "ffmpeg", "ffmpeg")
    probe_link = _link(DEBIAN_FFPROBE, app / "ffmpeg", "ffprobe")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(exe))
    assert locate.find_ffmpeg() == bundled
    assert locate.find_ffprobe() == probe_link


def test_ffprobe_next_to_ffmpeg_then_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert locate.find_ffprobe(ffmpeg=DEBIAN_FFMPEG) == DEBIAN_FFPROBE
    # A symlinked ffmpeg finds the ffprobe next to its real file.
    link = _link(DEBIAN_FFMPEG, tmp_path / "bin", "ffmpeg")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert locate.find_ffprobe(ffmpeg=link) == DEBIAN_FFPROBE
    # imageio-ffmpeg ships no ffprobe: nothing next to it, nothing on PATH -> None.
    assert locate.find_ffprobe(ffmpeg=BUNDLED_FFMPEG) is None
    monkeypatch.setenv("PATH", str(DEBIAN_FFPROBE.parent))
    assert locate.find_ffprobe(ffmpeg=BUNDLED_FFMPEG) == DEBIAN_FFPROBE
    assert locate.find_ffprobe(str(DEBIAN_FFPROBE)) == DEBIAN_FFPROBE
    with pytest.raises(FfmpegNotFound, match="ffprobe not found"):
        locate.find_ffprobe(str(tmp_path / "ffprobe"))


@pytest.mark.parametrize(
    ("binary", "version_re"),
    [(DEBIAN_FFMPEG, r"^5\.1(\.\d+)?$"), (BUNDLED_FFMPEG, r"^9\.0\.2$")],
    ids=["debian-5.1", "imageio-9.0"],
)
def test_identify(binary: Path, version_re: str) -> None:
    ident = locate.identify(binary)
    assert re.match(version_re, ident.version), ident.version_line
    assert ident.version_line.startswith("ffmpeg version ")
    assert re.fullmatch(r"[0-9a-f]{64}", ident.binary_sha256)
    assert re.fullmatch(r"[0-9a-f]{16}", ident.fingerprint)
    assert ident.path == os.path.realpath(binary)
    assert locate.identify(binary) is ident  # cached: no second 170 MB hash


def test_identify_cache_follows_the_file(tmp_path: Path) -> None:
    copy = tmp_path / "ffmpeg"
    shutil.copy2(DEBIAN_FFMPEG, copy)
    first = locate.identify(copy)
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = locate.identify(copy)
    assert second is not first  # new mtime -> re-identified
    assert second.fingerprint == first.fingerprint  # same bytes, same output


def test_identify_rejects_non_ffmpeg(tmp_path: Path) -> None:
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho hello\n")
    fake.chmod(0o755)
    with pytest.raises(FfmpegNotFound, match="not a working ffmpeg"):
        locate.identify(fake)


def test_child_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/frozen/_internal")
    assert locate.child_env() == dict(os.environ)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("LD_LIBRARY_PATH_ORIG", "/usr/local/lib")
    env = locate.child_env()
    assert env["LD_LIBRARY_PATH"] == "/usr/local/lib"
    assert "LD_LIBRARY_PATH_ORIG" not in env
    monkeypatch.delenv("LD_LIBRARY_PATH_ORIG")
    assert "LD_LIBRARY_PATH" not in locate.child_env()


def test_popen_flags_posix() -> None:
    assert locate.popen_flags() == {"start_new_session": True}
