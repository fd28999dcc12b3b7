"""Find the ffmpeg/ffprobe binaries, identify a build, and prepare child-process settings."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffdesk.core.errors import FfmpegNotFound

_WINDOWS = sys.platform == "win32"
_VERSION_RE = re.compile(r"^ffmpeg version n?([0-9][0-9.]*)")


def _exe(name: str) -> str:
    return f"{name}.exe" if _WINDOWS else name


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _frozen_dirs() -> list[Path]:
    """Folders a frozen (PyInstaller) app may carry its own binaries in."""
    if not getattr(sys, "frozen", False):
        return []
    app_dir = Path(sys.executable).resolve().parent
    dirs = [app_dir, app_dir / "ffmpeg"]
    # PyInstaller >= 6 puts bundled data under _internal (sys._MEIPASS), not next to the exe.
    meipass = getattr(sys, "_MEIPASS", None)
    if meipass:
        dirs += [Path(meipass), Path(meipass) / "ffmpeg"]
    return list(dict.fromkeys(dirs))


def _check_explicit(explicit: str, name: str) -> Path:
    path = Path(explicit).expanduser()
    if path.is_dir() and _is_executable(path / _exe(name)):
        # Accepting the folder is friendlier than failing on a path the user clearly meant.
        path = path / _exe(name)
    if not path.exists():
        raise FfmpegNotFound(f"{name} not found at {path} (from the {name} path setting)")
    if not _is_executable(path):
        raise FfmpegNotFound(f"{name} at {path} is not an executable file")
    return path.absolute()


def find_ffmpeg(explicit: str | None = None) -> Path:
    """Return the ffmpeg to use: explicit path, frozen-app folder, PATH, then imageio-ffmpeg."""
    if explicit:
        return _check_explicit(explicit, "ffmpeg")
    tried: list[str] = []
    for folder in _frozen_dirs():
        candidate = folder / _exe("ffmpeg")
        if _is_executable(candidate):
            return candidate
        tried.append(str(folder))
    found = shutil.which("ffmpeg")
    if found:
        return Path(found).absolute()
    tried.append("PATH")
    try:
        # Imported lazily: the wheel is optional, and importing it is not free.
        import imageio_ffmpeg  # type: ignore[import-untyped]
    except ImportError:
        tried.append("imageio-ffmpeg (not installed)")
    else:
        try:
            exe = Path(imageio_ffmpeg.get_ffmpeg_exe())
        except Exception as exc:  # it raises RuntimeError, but any failure means "not there"
            tried.append(f"imageio-ffmpeg ({exc})")
        else:
            if _is_executable(exe):
                return exe
            tried.append(f"imageio-ffmpeg ({exe} is not executable)")
    raise FfmpegNotFound(
        "ffmpeg not found; tried " + ", ".join(tried) + ". Install FFmpeg or set the ffmpeg path"
    )


def find_ffprobe(explicit: str | None = None, ffmpeg: Path | None = None) -> Path | None:
    """Return an ffprobe, or None (callers then probe with ffmpeg itself).

    Next to ffmpeg comes first so the pair stays one build; both the given and the
    symlink-resolved folder count (``/usr/local/bin/ffmpeg`` may point into ``/opt``).
    """
    if explicit:
        return _check_explicit(explicit, "ffprobe")
    folders: list[Path] = []
    if ffmpeg is not None:
        folders += [ffmpeg.parent, Path(os.path.realpath(ffmpeg)).parent]
    folders += _frozen_dirs()
    for folder in dict.fromkeys(folders):
        candidate = folder / _exe("ffprobe")
        if _is_executable(candidate):
            return candidate.absolute()
    found = shutil.which("ffprobe")
    return Path(found).absolute() if found else None


@dataclass(frozen=True)
class Identity:
    """What build of ffmpeg ran a job; ``fingerprint`` changes with the binary or its libs."""

    path: str
    version_line: str
    version: str
    binary_sha256: str
    fingerprint: str


_identity_cache: dict[tuple[str, int, int], Identity] = {}
_identity_lock = threading.Lock()


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def identify(path: Path) -> Identity:
    """Run ``ffmpeg -version`` and hash the binary; cached per (realpath, mtime, size)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError as exc:
        raise FfmpegNotFound(f"ffmpeg not found at {path}: {exc.strerror}") from exc
    key = (real, st.st_mtime_ns, st.st_size)
    with _identity_lock:
        cached = _identity_cache.get(key)
    if cached is not None:
        return cached
    try:
        proc = subprocess.run(
            [real, "-version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            env=child_env(),
            check=False,
            **popen_flags(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FfmpegNotFound(f"ffmpeg at {path} does not run: {exc}") from exc
    output = proc.stdout.decode("utf-8", errors="replace")
    first = output.splitlines()[0].strip() if output.strip() else ""
    if proc.returncode != 0 or not first.startswith("ffmpeg version"):
        raise FfmpegNotFound(f"{path} is not a working ffmpeg (-version exited {proc.returncode})")
    match = _VERSION_RE.match(first)
    # Git builds say "N-112345-gdeadbeef": keep the raw token, it is still a useful label.
    tokens = first.split()
    version = match.group(1).rstrip(".") if match else (tokens[2] if len(tokens) > 2 else "?")
    binary_sha = _sha256_file(real)
    fingerprint = hashlib.sha256(f"{binary_sha}\n{output}".encode()).hexdigest()[:16]
    ident = Identity(real, first, version, binary_sha, fingerprint)
    with _identity_lock:
        _identity_cache[key] = ident
    return ident


def child_env() -> dict[str, str]:
    """Environment for ffmpeg children.

    A PyInstaller-frozen app on Linux points LD_LIBRARY_PATH at its bundled libs; a system
    ffmpeg would then load our (wrong) copies of libssl etc. PyInstaller saves the user's
    value in LD_LIBRARY_PATH_ORIG, so put that back.
    """
    env = dict(os.environ)
    if getattr(sys, "frozen", False) and sys.platform.startswith("linux"):
        orig = env.pop("LD_LIBRARY_PATH_ORIG", None)
        if orig is not None:
            env["LD_LIBRARY_PATH"] = orig
        else:
            env.pop("LD_LIBRARY_PATH", None)
    return env


def popen_flags() -> dict[str, Any]:
    """Popen keywords that put ffmpeg in its own process group.

    Then a terminal's Ctrl+C does not reach ffmpeg behind our back (we decide how it stops),
    and we can signal the whole group; on Windows also no console window flashes up.
    """
    if _WINDOWS:
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        return {"creationflags": flags}
    return {"start_new_session": True}
