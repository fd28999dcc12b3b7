"""Regenerate the real ``-progress pipe:1`` captures used by tests/unit/test_ffmpeg_progress.py.

    .venv/bin/python tests/data/capture_progress.py

Captures, for Debian's /usr/bin/ffmpeg (5.1) and imageio-ffmpeg's bundled build (9.0):
  progress-ffmpeg-X.Y.txt         2 s realtime (-re) video+audio encode, several blocks
  progress-cancel-ffmpeg-X.Y.txt  30 s realtime encode stopped with "q" after ~1 s
  progress-audio-ffmpeg-X.Y.txt   audio-only encode (no frame=/fps= keys)
The files are stdout byte for byte.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VIDEO = "testsrc2=size=160x120:rate=10:duration={d}"
AUDIO = "sine=frequency=440:duration={d}"


def binaries() -> list[Path]:
    found = [Path("/usr/bin/ffmpeg")] if Path("/usr/bin/ffmpeg").exists() else []
    try:
        import imageio_ffmpeg

        found.append(Path(imageio_ffmpeg.get_ffmpeg_exe()))
    except (ImportError, RuntimeError):
        pass
    return found


def version(ffmpeg: Path) -> str:
    """'5.1' / '9.0' from "ffmpeg version 5.1.9-0+deb12u1" / "ffmpeg version n9.0.2-17-g..."."""
    first = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout
    token = first.split()[2].lstrip("n")
    return ".".join(token.split(".")[:2])


def base(ffmpeg: Path) -> list[str]:
    return [str(ffmpeg), "-hide_banner", "-nostats", "-loglevel", "error",
            "-progress", "pipe:1", "-stats_period", "0.5", "-y"]


def capture(argv: list[str], quit_after_s: float | None = None) -> bytes:
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    out = bytearray()
    sent_q = False
    for line in proc.stdout:
        out += line
        # Quit on a condition (media time reached), not after a sleep.
        if quit_after_s is not None and not sent_q and line.startswith(b"out_time_us="):
            value = line.split(b"=", 1)[1].strip()
            if value != b"N/A" and int(value) >= quit_after_s * 1e6:
                proc.stdin.write(b"q\n")
                proc.stdin.flush()
                sent_q = True
    proc.wait(timeout=30)
    return bytes(out)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="ffdesk-progress-"))
    try:
        for ffmpeg in binaries():
            ver = version(ffmpeg)
            av = ["-re", "-f", "lavfi", "-i", VIDEO.format(d=2), "-re", "-f", "lavfi",
                  "-i", AUDIO.format(d=2), "-c:v", "libx264", "-preset", "veryfast",
                  "-c:a", "aac", str(tmp / "out.mp4")]
            (HERE / f"progress-ffmpeg-{ver}.txt").write_bytes(capture(base(ffmpeg) + av))
            long = ["-re", "-f", "lavfi", "-i", VIDEO.format(d=30), "-re", "-f", "lavfi",
                    "-i", AUDIO.format(d=30), "-c:v", "libx264", "-preset", "veryfast",
                    "-c:a", "aac", str(tmp / "cancel.mp4")]
            (HERE / f"progress-cancel-ffmpeg-{ver}.txt").write_bytes(
                capture(base(ffmpeg) + long, quit_after_s=1.0)
            )
            audio = ["-f", "lavfi", "-i", AUDIO.format(d=1), "-c:a", "aac",
                     str(tmp / "out.m4a")]
            (HERE / f"progress-audio-ffmpeg-{ver}.txt").write_bytes(capture(base(ffmpeg) + audio))
            print(f"captured ffmpeg {ver} ({ffmpeg})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
