from __future__ import annotations

from pathlib import Path

from ffdesk.core.media import expand, is_media_name


def test_media_names():
    assert is_media_name(Path("Movie.MKV"))
    assert is_media_name(Path("a b $c.mp4"))
    assert not is_media_name(Path(".hidden.mp4"))
    assert not is_media_name(Path("clip.mp4.part"))
    assert not is_media_name(Path("notes.txt"))


def test_expand_keeps_files_and_walks_folders_in_order(tmp_path: Path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".cache").mkdir()
    for rel in ("z.mp4", "a.mov", "b/c.mkv", ".cache/d.mp4", "e.txt"):
        (tmp_path / rel).write_bytes(b"x")
    single = tmp_path / "e.txt"
    found = list(expand([tmp_path, single]))
    assert found == [tmp_path / "a.mov", tmp_path / "z.mp4", tmp_path / "b" / "c.mkv", single]
