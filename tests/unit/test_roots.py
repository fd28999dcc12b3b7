"""Storage roots: references <-> each node's local paths, on every OS flavour."""

from __future__ import annotations

import unicodedata

import pytest

from ffdesk.core.errors import ConfigError
from ffdesk.core.roots import RootMap, is_ref, parse_ref, parse_root_mappings

LINUX = RootMap({"media": "/mnt/media", "exports": "/mnt/media/exports"}, windows=False)
MAC = RootMap({"media": "/Volumes/media"}, windows=False)
WIN_DRIVE = RootMap({"media": "Z:\\"}, windows=True)
WIN_UNC = RootMap({"media": "\\\\nas\\media\\"}, windows=True)


@pytest.mark.parametrize(
    ("text", "ref"),
    [("media:shows/a.mkv", True), ("media:", True), ("C:\\a.mkv", False), ("c:/a", False),
     ("/mnt/a", False), ("http://x/y", False), ("Media:x", False), ("rtmp://h/live", False)],
)
def test_what_is_a_reference(text: str, ref: bool) -> None:
    assert is_ref(text) is ref


def test_the_same_file_from_four_machines() -> None:
    ref = LINUX.to_ref("/mnt/media/shows/Ep 01 $ \"x\".mkv")
    assert ref == 'media:shows/Ep 01 $ "x".mkv'
    assert MAC.to_local(ref) == '/Volumes/media/shows/Ep 01 $ "x".mkv'
    assert WIN_DRIVE.to_local(ref) == 'Z:\\shows\\Ep 01 $ "x".mkv'
    assert WIN_UNC.to_local(ref) == '\\\\nas\\media\\shows\\Ep 01 $ "x".mkv'


def test_windows_paths_are_case_and_separator_insensitive() -> None:
    assert WIN_DRIVE.to_ref("z:/Shows/A.mkv") == "media:Shows/A.mkv"
    assert WIN_DRIVE.to_ref("Z:\\Shows\\A.mkv") == "media:Shows/A.mkv"
    assert WIN_UNC.to_ref("\\\\NAS\\Media\\shows\\b.mkv") == "media:shows/b.mkv"
    assert WIN_UNC.to_ref("//nas/media/shows/b.mkv") == "media:shows/b.mkv"
    assert WIN_DRIVE.to_ref("Y:\\shows\\a.mkv") is None


def test_posix_paths_are_case_sensitive_and_bounded_by_separators() -> None:
    assert LINUX.to_ref("/mnt/Media/a.mkv") is None
    assert LINUX.to_ref("/mnt/media-old/a.mkv") is None  # a prefix, not the folder
    assert LINUX.to_ref("/mnt/media/../media/a.mkv") == "media:a.mkv"
    assert LINUX.to_ref("/mnt/media") == "media:"


def test_the_longest_root_wins() -> None:
    assert LINUX.to_ref("/mnt/media/exports/x.mp4") == "exports:x.mp4"
    assert LINUX.to_ref("/mnt/media/exportsx/x.mp4") == "media:exportsx/x.mp4"


def test_unicode_names_compare_in_nfc() -> None:
    nfd = unicodedata.normalize("NFD", "/Volumes/media/ünïcødé 日本.mov")  # as macOS lists it
    ref = MAC.to_ref(nfd)
    assert ref == "media:" + unicodedata.normalize("NFC", "ünïcødé 日本.mov")
    assert parse_ref(ref) == ("media", "ünïcødé 日本.mov")
    assert LINUX.to_local(ref) == "/mnt/media/ünïcødé 日本.mov"


def test_a_node_without_the_root_gets_none_and_escapes_are_refused() -> None:
    assert RootMap({"exports": "/e"}, windows=False).to_local("media:a.mkv") is None
    with pytest.raises(ValueError):
        LINUX.to_local("media:../../etc/passwd")
    with pytest.raises(ValueError):
        WIN_DRIVE.to_local("media:a\\..\\..\\b")
    assert LINUX.resolve("/local/file.mkv") == "/local/file.mkv"
    assert LINUX.resolve("http://h/a.mp4") == "http://h/a.mp4"


def test_root_mappings_from_settings() -> None:
    assert parse_root_mappings({"media": "/mnt/media"}, "file") == {"media": "/mnt/media"}
    assert parse_root_mappings("media=/mnt/media; exports=Z:\\exp", "env") == {
        "media": "/mnt/media", "exports": "Z:\\exp"}
    for bad in ("media", "M=/x", "a=/x", {"media": ""}):
        with pytest.raises(ConfigError):
            parse_root_mappings(bad, "env")
