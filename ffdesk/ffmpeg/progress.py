"""Parse ffmpeg's ``-progress`` key=value blocks into :class:`Progress` snapshots."""

from __future__ import annotations

import re
from dataclasses import dataclass

_HMS = re.compile(r"^(-)?(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


@dataclass
class Progress:
    frame: int | None = None
    fps: float | None = None
    speed: float | None = None
    out_time_s: float | None = None
    total_size: int | None = None
    bitrate_kbps: float | None = None
    # progress=end. Not success: ffmpeg prints it after q, SIGINT and SIGTERM too.
    done: bool = False

    def percent(self, duration: float | None) -> float | None:
        """Share of ``duration`` (seconds of media) written, clamped to 0..100."""
        if self.out_time_s is None or not duration or duration <= 0:
            return None
        return max(0.0, min(100.0, 100.0 * self.out_time_s / duration))

    def eta_s(self, duration: float | None) -> float | None:
        """Wall-clock seconds left: remaining media time / speed; None when unknown."""
        if self.out_time_s is None or not duration or not self.speed or self.speed <= 0:
            return None
        return max(0.0, duration - self.out_time_s) / self.speed


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value in ("", "N/A", "nan", "inf", "-inf") else value


def _float(value: str | None, suffix: str = "") -> float | None:
    value = _clean(value)
    if value is None:
        return None
    if suffix and value.endswith(suffix):
        value = value[: -len(suffix)].strip()
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def _int(value: str | None) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _hms(value: str | None) -> float | None:
    value = _clean(value)
    match = _HMS.match(value) if value else None
    if not match:
        return None
    sign, h, m, s = match.groups()
    seconds = int(h) * 3600 + int(m) * 60 + float(s)
    return -seconds if sign else seconds


class ProgressParser:
    """Feed stdout lines one by one; every ``progress=`` line yields one :class:`Progress`.

    Unknown keys (``stream_0_0_q``, ``dup_frames`` ...) are ignored; keys missing from a block
    (``frame``/``fps`` are absent for audio-only outputs) come out as None.
    """

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def feed(self, line: str) -> Progress | None:
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        key = key.strip()
        if key != "progress":
            self._fields[key] = value
            return None
        fields, self._fields = self._fields, {}
        return Progress(
            frame=_int(fields.get("frame")),
            fps=_float(fields.get("fps")),
            speed=_float(fields.get("speed"), "x"),
            out_time_s=self._out_time(fields),
            total_size=_int(fields.get("total_size")),
            bitrate_kbps=_float(fields.get("bitrate"), "kbits/s"),
            done=value.strip() == "end",
        )

    @staticmethod
    def _out_time(fields: dict[str, str]) -> float | None:
        # out_time_ms is microseconds too (ffmpeg prints the same pts twice).
        micros = _float(fields.get("out_time_us"))
        if micros is None:
            micros = _float(fields.get("out_time_ms"))
        seconds = micros / 1e6 if micros is not None else _hms(fields.get("out_time"))
        if seconds is None:
            return None
        # Audio priming and B-frame delay can make the first pts negative: that is "start".
        return max(0.0, seconds)
