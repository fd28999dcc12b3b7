"""Render ``resources/icons/ffdesk.svg`` into the icon files installers need.

    python packaging/icons.py png DIR      DIR/<size>x<size>/ffdesk.png (hicolor sizes)
    python packaging/icons.py ico FILE     Windows .ico (PNG-compressed entries, Vista+)
    python packaging/icons.py icns FILE    macOS .icns (PNG entries, 10.7+)

Only PySide6 (already a dependency) is needed: no Pillow, no ImageMagick, no iconutil. The
.ico and .icns containers are simple enough to write by hand: both accept PNG payloads.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SVG = ROOT / "resources" / "icons" / "ffdesk.svg"
HICOLOR_SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 20, 24, 32, 40, 48, 64, 128, 256)
# icns OSType per PNG size (ic07..ic10: 128..1024; icp4/icp5: 16/32).
ICNS_TYPES = ((16, b"icp4"), (32, b"icp5"), (128, b"ic07"), (256, b"ic08"), (512, b"ic09"),
              (1024, b"ic10"))


def render_png(size: int, svg: Path = SVG) -> bytes:
    """The SVG rendered at ``size`` x ``size`` pixels, as PNG bytes."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication([])  # kept alive while rendering
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"icons: cannot read {svg}")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(0)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buf, "PNG"):
        raise SystemExit("icons: PNG encoding failed")
    buf.close()
    return bytes(data.data())


def write_pngs(out_dir: Path, sizes=HICOLOR_SIZES) -> list[Path]:
    written = []
    for size in sizes:
        path = out_dir / f"{size}x{size}" / "ffdesk.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(render_png(size))
        written.append(path)
    return written


def write_ico(path: Path, sizes=ICO_SIZES) -> Path:
    images = [(size, render_png(size)) for size in sizes]
    header = struct.pack("<HHH", 0, 1, len(images))
    offset = len(header) + 16 * len(images)
    entries, blobs = b"", b""
    for size, png in images:
        dim = 0 if size >= 256 else size  # 0 means 256 in an ICONDIRENTRY
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(png), offset)
        blobs += png
        offset += len(png)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + entries + blobs)
    return path


def write_icns(path: Path) -> Path:
    body = b""
    for size, ostype in ICNS_TYPES:
        png = render_png(size)
        body += ostype + struct.pack(">I", 8 + len(png)) + png
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"icns" + struct.pack(">I", 8 + len(body)) + body)
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("png", "ico", "icns"):
        print(__doc__, file=sys.stderr)
        return 2
    kind, target = argv[0], Path(argv[1])
    if kind == "png":
        for p in write_pngs(target):
            print(p)
    elif kind == "ico":
        print(write_ico(target))
    else:
        print(write_icns(target))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
