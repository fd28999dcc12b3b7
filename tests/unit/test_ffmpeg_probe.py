"""ffdesk.ffmpeg.probe on real files, through ffprobe and through the ``ffmpeg -i`` fallback."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest

from ffdesk.core.errors import FfdeskError
from ffdesk.ffmpeg.probe import ProbeError, ProbeResult, parse_ffprobe_json, probe

DEBIAN_FFMPEG = Path("/usr/bin/ffmpeg")
DEBIAN_FFPROBE = Path("/usr/bin/ffprobe")
imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
BUNDLED_FFMPEG = Path(imageio_ffmpeg.get_ffmpeg_exe())
VIDEO = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration={d}"]
AUDIO = ["-f", "lavfi", "-i", "sine=frequency=440:duration={d}"]

pytestmark = pytest.mark.skipif(
    not (DEBIAN_FFMPEG.exists() and DEBIAN_FFPROBE.exists()), reason="needs Debian ffmpeg"
)

# (ffprobe, ffmpeg): the ffprobe path, and the fallback with both ffmpeg builds.
MODES = {
    "ffprobe": (DEBIAN_FFPROBE, DEBIAN_FFMPEG),
    "ffmpeg-5.1": (None, DEBIAN_FFMPEG),
    "ffmpeg-9.0": (None, BUNDLED_FFMPEG),
}


def _lavfi(kind: list[str], seconds: float) -> list[str]:
    return [a.format(d=seconds) for a in kind]


def _encode(out: Path, *args: str) -> Path:
    subprocess.run([str(DEBIAN_FFMPEG), "-v", "error", "-nostdin", "-y", *args, str(out)],
                   check=True)
    return out


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("probe")
    good = _encode(d / "good.mp4", *_lavfi(VIDEO, 2), *_lavfi(AUDIO, 2),
                   "-c:v", "libx264", "-c:a", "aac")
    data = good.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (d / "zero.mp4").write_bytes(b"")
    # Deterministic "random" bytes: no magic numbers, so only the extension suggests mp4.
    (d / "random.mp4").write_bytes(bytes((i * 7919 + 13) % 251 for i in range(20000)))
    # FFmpeg's own metadata text format: a valid file with no streams at all.
    (d / "nostreams.mp4").write_text(";FFMETADATA1\ntitle=hello\n")
    _encode(d / "audio.m4a", *_lavfi(AUDIO, 1), "-c:a", "aac")
    _encode(d / "cover.m4a", *_lavfi(AUDIO, 1), "-f", "lavfi", "-i", "color=red:s=64x64:d=0.1",
            "-map", "0", "-map", "1", "-c:a", "aac", "-c:v", "png",
            "-disposition:v", "attached_pic", "-frames:v", "1")
    _encode(d / "clip.mkv", *_lavfi(VIDEO, 1), *_lavfi(AUDIO, 1), "-ac", "2",
            "-c:v", "libx264", "-c:a", "libopus")
    odd = d / "it's a \"$HOME\"; rm -rf x – ünïcødé 日本 a:b.mp4"
    odd.write_bytes(data)
    return {p.stem: p for p in d.iterdir() if p != odd} | {"odd": odd}


def _probe(path: Path, mode: str) -> ProbeResult:
    ffprobe, ffmpeg = MODES[mode]
    return probe(path, ffprobe=ffprobe, ffmpeg=ffmpeg)


def _reason(path: Path, mode: str) -> str:
    with pytest.raises(ProbeError) as info:
        _probe(path, mode)
    assert isinstance(info.value, FfdeskError) and "\n" not in info.value.reason
    return info.value.reason


@pytest.mark.parametrize("mode", MODES)
def test_good_clip(media: dict[str, Path], mode: str) -> None:
    result = _probe(media["good"], mode)
    assert result.duration == pytest.approx(2.0, abs=0.1)
    assert result.format_name == "mov,mp4,m4a,3gp,3g2,mj2"
    assert result.size == media["good"].stat().st_size
    assert result.bit_rate and result.bit_rate > 1000
    video, audio = result.streams
    assert (video.index, video.kind, video.codec) == (0, "video", "h264")
    assert (video.width, video.height, video.fps) == (160, 120, 10.0)
    assert (audio.index, audio.kind, audio.codec) == (1, "audio", "aac")
    assert (audio.sample_rate, audio.channels) == (44100, 1)
    assert result.has_video and result.has_audio
    assert result.summary() == "mov,mp4 · 2.00 s · h264 160x120 10 fps · aac 44.1 kHz 1 ch"
    assert json.loads(json.dumps(result.to_dict()))["streams"][0]["codec"] == "h264"


@pytest.mark.parametrize("mode", MODES)
def test_audio_only_and_cover_art(media: dict[str, Path], mode: str) -> None:
    audio = _probe(media["audio"], mode)
    assert [s.kind for s in audio.streams] == ["audio"]
    assert audio.has_audio and not audio.has_video
    assert audio.duration == pytest.approx(1.0, abs=0.1)
    cover = _probe(media["cover"], mode)
    assert [s.kind for s in cover.streams] == ["audio", "video"]
    assert cover.streams[1].attached_pic
    assert not cover.has_video  # a cover picture is not video


@pytest.mark.parametrize("mode", MODES)
def test_matroska(media: dict[str, Path], mode: str) -> None:
    result = _probe(media["clip"], mode)
    assert result.format_name == "matroska,webm"
    assert [(s.codec, s.channels) for s in result.streams] == [("h264", None), ("opus", 2)]
    assert result.streams[1].sample_rate == 48000


@pytest.mark.parametrize("mode", MODES)
def test_odd_file_name(media: dict[str, Path], mode: str) -> None:
    # Quotes, $, ;, unicode and a colon (relative "a:b.mp4" would be protocol "a").
    assert _probe(media["odd"], mode).has_video


@pytest.mark.parametrize("mode", MODES)
def test_bad_inputs(media: dict[str, Path], mode: str, tmp_path: Path) -> None:
    assert _reason(media["zero"], mode) == "input file is empty (0 bytes)"
    missing = tmp_path / "x" / "y.mp4"
    assert _reason(missing, mode) == f"input file not found: {missing}"
    assert _reason(media["truncated"], mode) == "input is truncated: moov atom not found"
    assert _reason(media["random"], mode) == (
        "input is not a media file: Invalid data found when processing input"
    )
    assert _reason(media["nostreams"], mode) == (
        "input contains no audio, video or subtitle streams"
    )
    assert _reason(tmp_path, mode).startswith("input is a folder")


def _ffprobe_json(path: Path) -> dict:
    out = subprocess.run([str(DEBIAN_FFPROBE), "-v", "error", "-print_format", "json",
                          "-show_format", "-show_streams", str(path)],
                         check=True, capture_output=True).stdout
    return json.loads(out)


def test_duration_fallbacks(media: dict[str, Path]) -> None:
    # Real JSON with the format duration knocked out: mp4 falls back to stream durations,
    # Matroska (no per-stream duration) to tags.DURATION.
    mp4 = _ffprobe_json(media["good"])
    del mp4["format"]["duration"]
    assert parse_ffprobe_json(mp4).duration == pytest.approx(2.0, abs=0.1)
    mkv = _ffprobe_json(media["clip"])
    assert all("duration" not in s for s in mkv["streams"])
    mkv["format"]["duration"] = "N/A"
    assert parse_ffprobe_json(mkv).duration == pytest.approx(1.0, abs=0.05)
    stripped = copy.deepcopy(mkv)
    for stream in stripped["streams"]:
        stream.pop("tags", None)
    assert parse_ffprobe_json(stripped).duration is None


def test_numbers_as_strings_and_missing_keys() -> None:
    data = {
        "format": {"format_name": "x", "size": "N/A", "bit_rate": "12345", "duration": "3.5"},
        "streams": [
            {"index": 0, "codec_type": "video", "width": 640, "height": 360,
             "avg_frame_rate": "0/0", "r_frame_rate": "30000/1001"},
            {"index": 1, "codec_type": "audio", "sample_rate": "N/A", "channels": 6},
            {"index": 2, "codec_type": "data"},
        ],
    }
    result = parse_ffprobe_json(data, size=99)
    assert (result.size, result.bit_rate, result.duration) == (99, 12345, 3.5)
    assert result.streams[0].fps == pytest.approx(29.97)
    assert result.streams[0].codec is None
    assert (result.streams[1].sample_rate, result.streams[1].channels) == (None, 6)
    assert result.summary() == "x · 3.50 s · ? 640x360 29.97 fps · ? 6 ch · ? data"
