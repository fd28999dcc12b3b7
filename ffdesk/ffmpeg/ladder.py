"""ABR ladders: one input, one job per rendition, and an HLS master playlist job after them.

Each rendition is its own job (claimed by any node, retried alone when it fails, with its own
audit trail); the master playlist job depends on all of them and is written by the node
itself from the renditions' playlists (no FFmpeg run). All files of one input go into one
folder: ``1080p.m3u8`` + ``1080p_000.ts``... per rendition, and ``master.m3u8``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MASTER_NAME = "master.m3u8"
TASK_MASTER = "hls-master"  # jobs.meta["task"] of the master playlist job
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")


class LadderError(ValueError):
    pass


@dataclass(frozen=True)
class Rendition:
    name: str  # also the file stem: 1080p.m3u8, 1080p_000.ts
    height: int
    video_bitrate: str  # FFmpeg syntax: "5000k", "5M"
    audio_bitrate: str = "128k"

    @property
    def bandwidth(self) -> int:
        """Peak bits per second for the master playlist (video maxrate + audio)."""
        return int(bitrate(self.video_bitrate) * 1.07) + bitrate(self.audio_bitrate)


def bitrate(text: str) -> int:
    found = _RATE.match(text.strip())
    if not found:
        raise LadderError(f"'{text}' is not a bitrate such as 5000k or 5M")
    scale = {"": 1, "k": 1000, "m": 1_000_000}[found.group(2).lower()]
    return int(float(found.group(1)) * scale)


def parse_renditions(value: object, where: str) -> tuple[Rendition, ...]:
    if not isinstance(value, list) or not value:
        raise LadderError(f"{where}: 'renditions' must be a non-empty list of tables")
    out: list[Rendition] = []
    for item in value:
        if not isinstance(item, dict):
            raise LadderError(f"{where}: each rendition must be a table")
        unknown = set(item) - {"name", "height", "video_bitrate", "audio_bitrate"}
        if unknown:
            raise LadderError(f"{where}: unknown rendition key(s) {', '.join(sorted(unknown))}")
        name, height = item.get("name"), item.get("height")
        if not isinstance(name, str) or not _NAME.match(name):
            raise LadderError(f"{where}: rendition 'name' must be letters, digits, '-', '_'")
        if not isinstance(height, int) or isinstance(height, bool) or not 64 <= height <= 4320:
            raise LadderError(f"{where}: rendition '{name}' needs a 'height' of 64-4320")
        rendition = Rendition(name, height, str(item.get("video_bitrate", "")),
                              str(item.get("audio_bitrate", "128k")))
        bitrate(rendition.video_bitrate)
        bitrate(rendition.audio_bitrate)
        out.append(rendition)
    names = [r.name for r in out]
    if len(set(names)) != len(names) or MASTER_NAME.split(".")[0] in names:
        raise LadderError(f"{where}: rendition names must be unique and not 'master'")
    return tuple(out)


def rendition_args(r: Rendition, segment_seconds: float) -> list[str]:
    """FFmpeg arguments for one rendition: H.264/AAC HLS VOD, keyframes on segment
    boundaries (so players can switch renditions there), never upscaled."""
    rate = bitrate(r.video_bitrate)
    return [
        "-i", "{input}",
        "-map", "0:v:0", "-map", "0:a:0?",
        "-vf", f"scale=-2:'min({r.height},ih)'",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-b:v", r.video_bitrate, "-maxrate", str(int(rate * 1.07)),
        "-bufsize", str(int(rate * 1.5)),
        "-force_key_frames", f"expr:gte(t,n_forced*{segment_seconds:g})",
        "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", r.audio_bitrate, "-ac", "2",
        "-f", "hls", "-hls_time", f"{segment_seconds:g}", "-hls_playlist_type", "vod",
        "-hls_flags", "independent_segments",
        "-hls_segment_filename", f"{{output_dir}}/{r.name}_%03d.ts",
        "{output}",
    ]


def master_playlist(variants: list[dict[str, Any]]) -> str:
    """The HLS master playlist text. ``variants``: {uri, bandwidth, width?, height?}."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in sorted(variants, key=lambda v: -int(v["bandwidth"])):
        attrs = [f"BANDWIDTH={int(v['bandwidth'])}"]
        if v.get("width") and v.get("height"):
            attrs.append(f"RESOLUTION={int(v['width'])}x{int(v['height'])}")
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(str(v["uri"]))
    return "\n".join(lines) + "\n"
