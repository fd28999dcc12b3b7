"""Which files count as media when a folder is submitted or dropped."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

MEDIA_EXTENSIONS = frozenset(
    [
        "3g2",
        "3gp",
        "aac",
        "ac3",
        "aif",
        "aiff",
        "amr",
        "ape",
        "asf",
        "avi",
        "dts",
        "dv",
        "f4v",
        "flac",
        "flv",
        "h264",
        "h265",
        "hevc",
        "m2t",
        "m2ts",
        "m2v",
        "m4a",
        "m4v",
        "mj2",
        "mka",
        "mkv",
        "mov",
        "mp2",
        "mp3",
        "mp4",
        "mpeg",
        "mpg",
        "mts",
        "mxf",
        "oga",
        "ogg",
        "ogv",
        "opus",
        "ts",
        "vob",
        "wav",
        "webm",
        "wma",
        "wmv",
        "y4m",
    ]
)

# Files that are being written by someone else, or are ours: never pick them up.
_TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".!qb", ".download")


def is_media_name(path: Path) -> bool:
    name = path.name
    if name.startswith(".") or name.lower().endswith(_TEMP_SUFFIXES):
        return False
    return path.suffix.lower().lstrip(".") in MEDIA_EXTENSIONS


def expand(paths: Iterable[Path], *, recursive: bool = True) -> Iterator[Path]:
    """Files as given; folders expanded to the media files inside, in a stable order."""
    for path in paths:
        if path.is_dir():
            walker = os.walk(path) if recursive else [(str(path), [], os.listdir(path))]
            for root, dirs, files in walker:
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    candidate = Path(root) / name
                    if candidate.is_file() and is_media_name(candidate):
                        yield candidate
        else:
            yield path
