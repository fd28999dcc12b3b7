"""Read a media file's duration and streams with ffprobe, or with ``ffmpeg -i`` without one."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ffdesk.core.errors import FfdeskError, FfmpegNotFound
from ffdesk.ffmpeg.failure import classify_failure, last_error_line
from ffdesk.ffmpeg.locate import child_env, popen_flags

_KINDS = ("video", "audio", "subtitle", "data", "attachment")


@dataclass
class StreamInfo:
    index: int
    kind: str  # 'video' | 'audio' | 'subtitle' | 'data' | 'attachment'
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    channels: int | None = None
    sample_rate: int | None = None
    # Cover art is a "video" stream with one picture; it must not satisfy needs=("video",).
    attached_pic: bool = False


@dataclass
class ProbeResult:
    duration: float | None
    format_name: str | None
    size: int | None
    bit_rate: int | None
    streams: list[StreamInfo] = field(default_factory=list)

    @property
    def has_video(self) -> bool:
        return any(s.kind == "video" and not s.attached_pic for s in self.streams)

    @property
    def has_audio(self) -> bool:
        return any(s.kind == "audio" for s in self.streams)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (fps is rounded, never NaN/inf)."""
        return asdict(self)

    def summary(self) -> str:
        """One short line, e.g. ``mov,mp4 · 2.00 s · h264 160x120 10 fps · aac 48 kHz 1 ch``."""
        parts = [",".join((self.format_name or "?").split(",")[:2])]
        parts.append(f"{self.duration:.2f} s" if self.duration is not None else "duration ?")
        for s in self.streams:
            bits = [s.codec or "?"]
            if s.kind == "video":
                if s.width and s.height:
                    bits.append(f"{s.width}x{s.height}")
                if s.attached_pic:
                    bits.append("cover")
                elif s.fps:
                    bits.append(f"{round(s.fps, 2):g} fps")
            elif s.kind == "audio":
                if s.sample_rate:
                    bits.append(f"{s.sample_rate / 1000:g} kHz")
                if s.channels:
                    bits.append(f"{s.channels} ch")
            else:
                bits.append(s.kind)
            parts.append(" ".join(bits))
        return " · ".join(parts)


class ProbeError(FfdeskError):
    """The file cannot be read as media; ``reason`` is one readable line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = str(self)


def probe(path: Path, *, ffprobe: Path | None, ffmpeg: Path, timeout: float = 30) -> ProbeResult:
    """Probe ``path``; raises :class:`ProbeError` with a readable reason if it is not media."""
    return probe_as(path, ffprobe=ffprobe, ffmpeg=ffmpeg, timeout=timeout, role="input")


def probe_as(
    path: Path, *, ffprobe: Path | None, ffmpeg: Path, timeout: float = 30, role: str = "input"
) -> ProbeResult:
    """:func:`probe` whose error reasons say ``role`` ("input"/"output") about the file."""
    # Absolute, so a name like "a:b.mp4" is not taken for a protocol and "-x.mp4" not for
    # an option.
    path = Path(os.path.abspath(path))
    try:
        try:
            size = check_input(path)
            if ffprobe is not None:
                return _with_ffprobe(path, ffprobe, size, timeout)
            return _with_ffmpeg(path, ffmpeg, size, timeout)
        except subprocess.TimeoutExpired as exc:
            raise ProbeError(f"input could not be probed within {timeout:g} s") from exc
    except ProbeError as exc:
        if role == "input" or not exc.reason.startswith("input"):
            raise
        raise ProbeError(role + exc.reason[len("input") :]) from exc


def check_input(path: Path) -> int:
    """Fail fast, with clear words, before spending a process on a hopeless file; returns
    its size. A ``stat``, no process: the node runs it before every job."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ProbeError(f"input file not found: {path}") from None
    except OSError as exc:
        raise ProbeError(f"input file cannot be read: {exc.strerror}") from None
    if path.is_dir():
        raise ProbeError(f"input is a folder, not a file: {path}")
    # A FIFO or device reports size 0 and is still a valid (streamed) input.
    if st.st_size == 0 and stat.S_ISREG(st.st_mode):
        raise ProbeError("input file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ProbeError("input file is not readable: Permission denied")
    return st.st_size


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    try:
        # popen_flags(): no console window on Windows; own session so a Ctrl+C aimed at us
        # does not hit the prober halfway.
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=child_env(),
            check=False,
            **popen_flags(),
        )
    except OSError as exc:
        raise FfmpegNotFound(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc


def _failure_reason(stderr: str, tool: str) -> str:
    matched = classify_failure(1, stderr)
    if matched.kind != "unknown":
        return matched.reason
    line = last_error_line(stderr)
    return f"input cannot be read by {tool}: {line}" if line else f"input cannot be read by {tool}"


# --- ffprobe -------------------------------------------------------------------------------


def _num(value: Any, kind: type[int] | type[float]) -> Any:
    """ffprobe numbers arrive as strings, sometimes "N/A" or missing."""
    if value is None or value in ("N/A", ""):
        return None
    try:
        number = kind(float(value)) if kind is int else float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _rate(text: Any) -> float | None:
    if not isinstance(text, str) or "/" not in text:
        return _num(text, float)
    num, _, den = text.partition("/")
    n, d = _num(num, float), _num(den, float)
    return round(n / d, 3) if n and d else None  # "0/0" for audio and some VFR video


def _hms(text: Any) -> float | None:
    """Matroska's tags.DURATION: "00:01:00.000000000"."""
    match = re.fullmatch(r"\s*(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)\s*", str(text or ""))
    if not match:
        return None
    h, m, s = match.groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


def parse_ffprobe_json(data: dict[str, Any], size: int | None = None) -> ProbeResult:
    """Build a ProbeResult from ``ffprobe -print_format json -show_format -show_streams``."""
    fmt = data.get("format") or {}
    streams: list[StreamInfo] = []
    stream_durations: list[float] = []
    tag_durations: list[float] = []
    for raw in data.get("streams") or []:
        kind = raw.get("codec_type")
        if kind not in _KINDS:
            continue
        fps = _rate(raw.get("avg_frame_rate")) or _rate(raw.get("r_frame_rate"))
        streams.append(
            StreamInfo(
                index=int(raw.get("index", len(streams))),
                kind=kind,
                codec=raw.get("codec_name"),
                width=_num(raw.get("width"), int) or None,
                height=_num(raw.get("height"), int) or None,
                fps=fps if kind == "video" else None,
                channels=_num(raw.get("channels"), int) or None,
                sample_rate=_num(raw.get("sample_rate"), int) or None,
                attached_pic=bool((raw.get("disposition") or {}).get("attached_pic")),
            )
        )
        if (d := _num(raw.get("duration"), float)) is not None:
            stream_durations.append(d)
        for key, value in (raw.get("tags") or {}).items():
            # mkvmerge writes DURATION, some muxers DURATION-eng.
            if key.upper().startswith("DURATION") and (d := _hms(value)) is not None:
                tag_durations.append(d)
    duration = _num(fmt.get("duration"), float)
    if duration is None and stream_durations:
        duration = max(stream_durations)
    if duration is None and tag_durations:
        duration = max(tag_durations)
    return ProbeResult(
        duration=duration,
        format_name=fmt.get("format_name"),
        size=_num(fmt.get("size"), int) or size,
        bit_rate=_num(fmt.get("bit_rate"), int),
        streams=streams,
    )


def _with_ffprobe(path: Path, ffprobe: Path, size: int, timeout: float) -> ProbeResult:
    # -v warning, not error: the "detected only with low score" warning is what tells
    # random bytes ("not a media file") from a cut-off mp4 ("truncated").
    argv = [
        str(ffprobe),
        "-v",
        "warning",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        str(path),
    ]
    proc = _run(argv, timeout)
    stderr = proc.stderr.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        raise ProbeError(_failure_reason(stderr, "ffprobe"))
    try:
        data = json.loads(proc.stdout.decode("utf-8", errors="replace") or "{}")
    except json.JSONDecodeError as exc:
        raise ProbeError(f"ffprobe printed unreadable output: {exc}") from exc
    result = parse_ffprobe_json(data, size)
    if not result.streams:
        raise ProbeError("input contains no audio, video or subtitle streams")
    return result


# --- ffmpeg -i fallback (imageio-ffmpeg ships no ffprobe) ----------------------------------

_INPUT_RE = re.compile(r"^Input #0, (.+?), from '")
_DURATION_RE = re.compile(r"^\s*Duration: (N/A|(\d+):(\d+):(\d+(?:\.\d+)?))")
_BITRATE_RE = re.compile(r"bitrate: (\d+) kb/s")
_STREAM_RE = re.compile(
    r"^\s*Stream #0:(\d+)(?:\[[^\]]*\])?(?:\([^)]*\))?: "
    r"(Video|Audio|Subtitle|Data|Attachment): ([^\s,]+)(.*)$"
)
_SIZE_RE = re.compile(r", (\d+)x(\d+)\b")  # ", 160x120" (not "0x31637661" after "/ ")
_FPS_RE = re.compile(r", (\d+(?:\.\d+)?)(k?) (fps|tbr)\b")
_HZ_RE = re.compile(r", (\d+) Hz\b")
_CHANNELS_RE = re.compile(r"(\d+) channels\b")
_LAYOUTS = {
    "mono": 1,
    "stereo": 2,
    "2.1": 3,
    "3.0": 3,
    "quad": 4,
    "4.0": 4,
    "4.1": 5,
    "5.0": 5,
    "5.1": 6,
    "6.0": 6,
    "6.1": 7,
    "7.0": 7,
    "7.1": 8,
    "downmix": 2,
}


def parse_ffmpeg_banner(stderr: str, size: int | None = None) -> ProbeResult | None:
    """Parse the input dump ``ffmpeg -hide_banner -i FILE`` prints; None if there is none."""
    result: ProbeResult | None = None
    for line in stderr.splitlines():
        if result is None:
            if m := _INPUT_RE.match(line):
                result = ProbeResult(None, m.group(1), size, None, [])
            continue
        if line.startswith(("Input #1", "Output #", "Stream mapping")):
            break
        if m := _DURATION_RE.match(line):
            if m.group(2):
                result.duration = int(m[2]) * 3600 + int(m[3]) * 60 + float(m[4])
            if b := _BITRATE_RE.search(line):
                result.bit_rate = int(b.group(1)) * 1000
        elif m := _STREAM_RE.match(line):
            result.streams.append(_banner_stream(int(m[1]), m[2].lower(), m[3], m[4]))
    return result


_LEVEL_PREFIX = re.compile(r"^\[(?:trace|debug|verbose|info|warning|error|fatal|panic)\] ")


def input_from_log(stderr: str, size: int | None = None) -> ProbeResult | None:
    """The input as FFmpeg described it in a run's own log (``-loglevel level+info``): the
    facts ffprobe would give, without a second process (~60 ms of CPU each with Debian's
    FFmpeg, which loads some 200 shared libraries)."""
    plain = "\n".join(_LEVEL_PREFIX.sub("", line) for line in stderr.splitlines())
    return parse_ffmpeg_banner(plain, size)


_OUTPUT_RE = re.compile(r"^Output #0, (.+?), to '")


def output_from_log(stderr: str) -> ProbeResult | None:
    """The first output as FFmpeg described it when it opened it (format and streams; the
    duration is not known then). None if the log has no ``Output #0``."""
    result: ProbeResult | None = None
    for raw in stderr.splitlines():
        line = _LEVEL_PREFIX.sub("", raw)
        if result is None:
            if m := _OUTPUT_RE.match(line):
                result = ProbeResult(None, m.group(1), None, None, [])
            continue
        if line.startswith(("Output #", "Stream mapping", "Press [q]")) or not line.startswith(" "):
            break
        if m := _STREAM_RE.match(line):
            result.streams.append(_banner_stream(int(m[1]), m[2].lower(), m[3], m[4]))
    return result


def _banner_stream(index: int, kind: str, codec: str, rest: str) -> StreamInfo:
    info = StreamInfo(index=index, kind=kind, codec=codec)
    if kind == "video":
        if m := _SIZE_RE.search(rest):
            info.width, info.height = int(m[1]), int(m[2])
        # Prefer "fps" (average) over "tbr" (a guess) when both are printed.
        rates = {m[3]: float(m[1]) * (1000 if m[2] else 1) for m in _FPS_RE.finditer(rest)}
        info.fps = rates.get("fps") or rates.get("tbr")
        info.attached_pic = "(attached pic)" in rest
    elif kind == "audio":
        if m := _HZ_RE.search(rest):
            info.sample_rate = int(m[1])
        if m := _CHANNELS_RE.search(rest):
            info.channels = int(m[1])
        else:
            for part in rest.split(", "):
                layout = part.strip().split("(")[0]
                if layout in _LAYOUTS:
                    info.channels = _LAYOUTS[layout]
                    break
    return info


def _with_ffmpeg(path: Path, ffmpeg: Path, size: int, timeout: float) -> ProbeResult:
    # Without an output ffmpeg always exits 1 ("At least one output file must be specified"),
    # so success is judged by the input dump, not the exit code.
    proc = _run([str(ffmpeg), "-hide_banner", "-nostdin", "-i", str(path)], timeout)
    stderr = proc.stderr.decode("utf-8", errors="replace")
    result = parse_ffmpeg_banner(stderr, size)
    if result is None:
        raise ProbeError(_failure_reason(stderr, "ffmpeg"))
    if not result.streams:
        raise ProbeError("input contains no audio, video or subtitle streams")
    return result
