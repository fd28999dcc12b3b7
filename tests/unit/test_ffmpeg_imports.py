"""The ffmpeg layer stays light: no Qt, no psycopg, and no work at import time."""

from __future__ import annotations

import json
import subprocess
import sys

MODULES = ["failure", "hwprobe", "locate", "presets", "probe", "progress", "resources", "runner"]


def test_ffmpeg_layer_imports_nothing_heavy() -> None:
    code = (
        "import json, sys\n"
        + "".join(f"import ffdesk.ffmpeg.{m}\n" for m in MODULES)
        + "print(json.dumps(sorted(sys.modules)))"
    )
    # A fresh interpreter: this test process has long since imported everything.
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                       capture_output=True, text=True).stdout)
    roots = {name.split(".")[0] for name in loaded}
    assert not roots & {"PySide6", "PyQt5", "PyQt6", "shiboken6", "qasync", "psycopg",
                        "psycopg_pool", "imageio_ffmpeg"}
    # The engine owns ffdesk.db / ffdesk.engine / ffdesk.ui; this layer sits below them.
    assert not {n for n in loaded if n.startswith(("ffdesk.db", "ffdesk.engine", "ffdesk.ui"))}
