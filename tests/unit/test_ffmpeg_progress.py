"""ProgressParser on real ``-progress pipe:1`` captures (tests/data/capture_progress.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ffdesk.ffmpeg.progress import Progress, ProgressParser

DATA = Path(__file__).resolve().parent.parent / "data"
VERSIONS = ["5.1", "9.0"]


def parse(text: str) -> list[Progress]:
    parser = ProgressParser()
    return [p for line in text.splitlines(keepends=True) if (p := parser.feed(line))]


def capture(kind: str, version: str) -> str:
    return (DATA / f"progress{kind}-ffmpeg-{version}.txt").read_text()


@pytest.mark.parametrize("version", VERSIONS)
def test_full_encode(version: str) -> None:
    text = capture("", version)
    blocks = parse(text)
    assert len(blocks) == text.count("progress=") >= 3
    assert [b.done for b in blocks] == [False] * (len(blocks) - 1) + [True]
    times = [b.out_time_s for b in blocks]
    assert all(t is not None and t >= 0 for t in times)
    assert times == sorted(times)  # media time never goes back
    last = blocks[-1]
    assert last.out_time_s == pytest.approx(2.0, abs=0.05)  # 2 s clip
    assert last.frame == 20  # 10 fps x 2 s
    assert last.total_size and last.total_size > 1000
    assert last.bitrate_kbps and last.bitrate_kbps > 0
    assert last.speed and 0.3 < last.speed < 2  # -re: about realtime
    assert last.fps is not None
    assert last.percent(2.0) == pytest.approx(100, abs=2.5)
    assert all(0 <= (b.percent(2.0) or 0) <= 100 for b in blocks)
    assert last.eta_s(2.0) == pytest.approx(0, abs=0.1)


def test_ffmpeg_51_start_values() -> None:
    # 5.1 reports "bitrate=N/A" and "speed=   0x" (padded) before the first packet is out.
    first = parse(capture("", "5.1"))[0]
    assert first.bitrate_kbps is None
    assert first.speed == 0.0
    assert first.out_time_s == 0.0
    assert first.eta_s(2.0) is None  # speed 0: no honest estimate


@pytest.mark.parametrize("version", VERSIONS)
def test_canceled_with_q_still_ends_with_progress_end(version: str) -> None:
    blocks = parse(capture("-cancel", version))
    assert blocks[-1].done  # progress=end does not mean success
    assert blocks[-1].out_time_s is not None and blocks[-1].out_time_s < 10
    assert blocks[-1].percent(30.0) < 35  # stopped early in a 30 s input


@pytest.mark.parametrize("version", VERSIONS)
def test_audio_only_has_no_frame_keys(version: str) -> None:
    text = capture("-audio", version)
    assert "frame=" not in text.replace("_frames=", "")
    last = parse(text)[-1]
    assert last.done and last.frame is None and last.fps is None
    assert last.out_time_s == pytest.approx(1.0, abs=0.05)


def test_blocks_are_independent_and_lines_may_end_with_crlf() -> None:
    parser = ProgressParser()
    for line in ["frame=5\r\n", "out_time_us=500000\r\n", "speed= 1.5x\r\n"]:
        assert parser.feed(line) is None
    first = parser.feed("progress=continue\r\n")
    assert first == Progress(frame=5, speed=1.5, out_time_s=0.5, done=False)
    second = parser.feed("progress=continue\n")  # keys do not leak into the next block
    assert second == Progress()


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["out_time_us=N/A", "out_time_ms=2500000"], 2.5),  # ms is microseconds too
        (["out_time_us=N/A", "out_time_ms=N/A", "out_time=01:02:03.500000"], 3723.5),
        (["out_time_us=-23220", "out_time=-00:00:00.023220"], 0.0),  # priming: "start"
        (["out_time=-00:00:00.023220"], 0.0),
        (["out_time_us=N/A", "out_time=N/A"], None),
        ([], None),
    ],
)
def test_out_time_fallbacks(lines: list[str], expected: float | None) -> None:
    parser = ProgressParser()
    for line in lines:
        parser.feed(line)
    assert parser.feed("progress=end").out_time_s == expected


def test_padding_and_na() -> None:
    parser = ProgressParser()
    for line in ["frame=  12", "fps=0.00", "bitrate= 351.3kbits/s", "total_size=N/A",
                 "speed=N/A", "garbage line without equals", ""]:
        parser.feed(line)
    p = parser.feed("progress=continue")
    assert (p.frame, p.fps, p.bitrate_kbps, p.total_size, p.speed) == (12, 0.0, 351.3, None, None)


def test_percent_and_eta() -> None:
    p = Progress(out_time_s=3.0, speed=2.0)
    assert p.percent(4.0) == 75.0
    assert p.eta_s(4.0) == 0.5
    assert Progress(out_time_s=4.01).percent(4.0) == 100.0  # observed 100.2 %: clamp
    assert p.percent(None) is None and p.percent(0) is None
    assert p.eta_s(None) is None
    assert Progress(out_time_s=3.0).eta_s(4.0) is None  # speed unknown
    assert Progress(out_time_s=5.0, speed=1.0).eta_s(4.0) == 0.0
    assert Progress().percent(4.0) is None
