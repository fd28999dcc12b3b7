"""Regenerate real stderr of failing ffmpeg runs for tests/unit/test_ffmpeg_failure.py.

    .venv/bin/python tests/data/capture_failures.py

Runs each case with the production runner (same flags: -loglevel level+info, -progress ...)
under Debian's /usr/bin/ffmpeg (5.1) and imageio-ffmpeg's build (9.0), and writes
``stderr/{case}-ffmpeg-{X.Y}.txt`` plus ``stderr/exit-codes.json`` ({case: {X.Y: rc}}).
Paths inside the captures point into a scratch folder that no longer exists, and the HTTP
cases use fixed local ports (a tiny server answering 503 or 404, and a port nobody listens
on) so that re-running changes nothing but pointer addresses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ffdesk.ffmpeg.runner import FfmpegProcess, build_argv

HERE = Path(__file__).resolve().parent
OUT = HERE / "stderr"
CLIP = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1"]
SINE = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"]
# Fixed so the URLs in the captures never change; pick others if they are taken here.
HTTP_PORTS = {503: 38503, 404: 38404}
REFUSED_PORT = 38111


def binaries() -> list[Path]:
    found = [Path("/usr/bin/ffmpeg")] if Path("/usr/bin/ffmpeg").exists() else []
    try:
        import imageio_ffmpeg

        found.append(Path(imageio_ffmpeg.get_ffmpeg_exe()))
    except (ImportError, RuntimeError):
        pass
    return found


def version(ffmpeg: Path) -> str:
    first = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout
    return ".".join(first.split()[2].lstrip("n").split(".")[:2])


def make_inputs(tmp: Path) -> None:
    good = tmp / "good.mp4"
    subprocess.run(["/usr/bin/ffmpeg", "-v", "error", "-y", *CLIP, *SINE, "-c:v", "libx264",
                    "-c:a", "aac", str(good)], check=True)
    data = good.read_bytes()
    (tmp / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp / "random.mp4").write_bytes(os.urandom(20000))
    srt = tmp / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n\n")
    subprocess.run(["/usr/bin/ffmpeg", "-v", "error", "-y", "-i", str(good), "-i", str(srt),
                    "-map", "0", "-map", "1", "-c", "copy", str(tmp / "subs.mkv")], check=True)
    readonly = tmp / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    (tmp / "zero.mp4").write_bytes(b"")
    (tmp / "notes.mkv").write_text("Shopping list\n- milk\n- bread\n")


class _StatusHandler(BaseHTTPRequestHandler):
    status = 503

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_servers() -> Iterator[None]:
    """Serve HTTP_PORTS (each answers every request with its status); check REFUSED_PORT."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", REFUSED_PORT)) == 0:
            raise SystemExit(f"port {REFUSED_PORT} must be closed for http-refused")
    servers = []
    try:
        for status, port in HTTP_PORTS.items():
            handler = type(f"Status{status}", (_StatusHandler,), {"status": status})
            server = ThreadingHTTPServer(("127.0.0.1", port), handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
        yield
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def cases(tmp: Path) -> dict[str, list[str]]:
    out = str(tmp / "out.mp4")
    return {
        "truncated-mp4": ["-i", str(tmp / "truncated.mp4"), out],
        "random-bytes": ["-i", str(tmp / "random.mp4"), out],
        "missing-input": ["-i", str(tmp / "missing.mp4"), out],
        "nvenc": [*CLIP, "-c:v", "h264_nvenc", out],
        "bad-option": [*CLIP, "-bogus", "1", out],
        "output-dir-missing": [*CLIP, str(tmp / "no" / "such" / "dir" / "out.mp4")],
        "unknown-encoder": [*CLIP, "-c:v", "nosuchcodec", out],
        "unknown-filter": [*CLIP, "-vf", "nosuchfilter", out],
        "bad-preset-value": [*CLIP, "-c:v", "libx264", "-preset", "bogus", out],
        "codec-not-in-container": ["-i", str(tmp / "subs.mkv"), "-map", "0", "-c", "copy", out],
        "unknown-extension": [*CLIP, str(tmp / "out.tmp")],
        "disk-full": [*CLIP, "-f", "mpegts", "/dev/full"],
        "permission-denied": [*CLIP, str(tmp / "readonly" / "out.mp4")],
        "zero-bytes": ["-i", str(tmp / "zero.mp4"), out],
        "text-as-mkv": ["-i", str(tmp / "notes.mkv"), out],
        "map-matches-nothing": ["-i", str(tmp / "good.mp4"), "-map", "0:s", out],
        "http-503": ["-i", f"http://127.0.0.1:{HTTP_PORTS[503]}/clip.mp4", out],
        "http-404": ["-i", f"http://127.0.0.1:{HTTP_PORTS[404]}/clip.mp4", out],
        "http-refused": ["-i", f"http://127.0.0.1:{REFUSED_PORT}/clip.mp4", out],
    }


def run(argv: list[str], on_first_progress: Callable[[int], None] | None = None) -> tuple:
    proc: FfmpegProcess
    fired = threading.Event()

    def progress(_p: object) -> None:
        if on_first_progress and not fired.is_set():
            fired.set()
            on_first_progress(proc.pid or 0)

    proc = FfmpegProcess(argv, on_progress=progress)
    proc.start()
    result = proc.wait(timeout=60)
    return result.exit_code, result.stderr


def main() -> int:
    OUT.mkdir(exist_ok=True)
    codes_file = OUT / "exit-codes.json"
    codes: dict[str, dict[str, int | None]] = (
        json.loads(codes_file.read_text()) if codes_file.exists() else {}
    )
    tmp = Path(tempfile.gettempdir()) / "ffdesk-capture"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        make_inputs(tmp)
        with http_servers():
            capture_all(tmp, codes)
    finally:
        (tmp / "readonly").chmod(0o755)
        shutil.rmtree(tmp, ignore_errors=True)
    codes_file.write_text(json.dumps(codes, indent=2, sort_keys=True) + "\n")
    return 0


def capture_all(tmp: Path, codes: dict[str, dict[str, int | None]]) -> None:
    for ffmpeg in binaries():
        ver = version(ffmpeg)
        for case, args in cases(tmp).items():
            argv = build_argv(ffmpeg, args)
            if case == "permission-denied" and os.geteuid() == 0:
                # root ignores directory modes: run this one case as "nobody".
                if not shutil.which("setpriv"):
                    print("skip permission-denied: root and no setpriv")
                    continue
                argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
            rc, stderr = run(argv)
            (OUT / f"{case}-ffmpeg-{ver}.txt").write_text(stderr)
            codes.setdefault(case, {})[ver] = rc
        # Stopped while encoding. One SIGTERM: "Exiting normally, received signal 15." and
        # rc 255. SIGKILL from someone else (OOM killer, a user): no last words, rc -9.
        for case, signum in (("sigterm", signal.SIGTERM), ("killed", signal.SIGKILL)):
            long = ["-re", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=30",
                    str(tmp / "long.mp4")]
            rc, stderr = run(build_argv(ffmpeg, long),
                             on_first_progress=lambda pid, s=signum: os.killpg(pid, s))
            (OUT / f"{case}-ffmpeg-{ver}.txt").write_text(stderr)
            codes.setdefault(case, {})[ver] = rc
        print(f"captured ffmpeg {ver} ({ffmpeg})")


if __name__ == "__main__":
    sys.exit(main())
