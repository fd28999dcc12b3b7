"""Putting a finished output in place: replace, never-overwrite, free names, cut detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from ffdesk.ffmpeg.runner import changes_duration, commit_output, free_name


def test_no_clobber_commit_refuses_an_existing_file_and_keeps_both(tmp_path: Path) -> None:
    final = tmp_path / "out.mp4"
    final.write_bytes(b"someone else's")
    temp = tmp_path / ".out.1-1.part.mp4"
    temp.write_bytes(b"ours")
    with pytest.raises(FileExistsError):
        commit_output(temp, final, replace=False)
    assert final.read_bytes() == b"someone else's" and temp.exists()
    target = free_name(final)
    assert target.name == "out (2).mp4"
    commit_output(temp, target, replace=False)
    assert target.read_bytes() == b"ours" and not temp.exists()
    assert free_name(final).name == "out (3).mp4"


def test_replace_commit_overwrites(tmp_path: Path) -> None:
    final = tmp_path / "o.mkv"
    final.write_bytes(b"old")
    temp = tmp_path / ".o.1-1.part.mkv"
    temp.write_bytes(b"new")
    commit_output(temp, final)
    assert final.read_bytes() == b"new"


@pytest.mark.parametrize(
    ("args", "cuts"),
    [
        (["-i", "{input}", "-t", "5", "{output}"], True),
        (["-ss", "10", "-i", "{input}", "{output}"], True),
        (["-i", "{input}", "-frames:v", "1", "{output}"], True),
        (["-i", "{input}", "-vframes", "1", "{output}"], True),
        (["-i", "{input}", "-shortest", "{output}"], True),
        (["-i", "{input}", "-c:v", "libx264", "-tune", "film", "{output}"], False),
    ],
)
def test_changes_duration(args: list[str], cuts: bool) -> None:
    assert changes_duration(args) is cuts


def test_expected_streams_follow_the_input_unless_the_preset_drops_or_maps() -> None:
    from ffdesk.ffmpeg.probe import ProbeResult, StreamInfo
    from ffdesk.ffmpeg.runner import expected_streams

    both = ProbeResult(
        format_name="mov", duration=1.0, size=1, bit_rate=None,
        streams=(StreamInfo(index=0, kind="video", codec="h264"),
                 StreamInfo(index=1, kind="audio", codec="aac")),
    )
    assert expected_streams(["-i", "{input}", "{output}"], ("video",), both) == ("video", "audio")
    assert expected_streams(["-i", "{input}", "-vn", "{output}"], ("audio",), both) == ("audio",)
    assert expected_streams(["-i", "{input}", "-an", "{output}"], ("video",), both) == ("video",)
    assert expected_streams(["-i", "{input}", "-map", "0:v", "{output}"], (), both) == ()
    assert expected_streams(["-i", "{input}", "{output}"], ("video",), None) == ("video",)
