"""PyInstaller runtime hook (Linux): programs ffdesk starts must not load ffdesk's libraries.

The bootloader puts the bundle's ``_internal`` folder on ``LD_LIBRARY_PATH`` (and saves the
user's value in ``LD_LIBRARY_PATH_ORIG``). Every child inherits that: ``xdg-open`` started by
``QDesktopServices.openUrl`` (Open output folder) would run the file manager or video player
against our copies of glib, dbus, xcb, OpenSSL ... instead of the system's, and may fail with
"undefined symbol" on a newer distribution.

The dynamic loader read ``LD_LIBRARY_PATH`` once, when this process started, so putting the
user's value back here changes nothing for ffdesk itself (Qt plugins loaded later still come
from the bundle); it only fixes what children see. ``LD_LIBRARY_PATH_ORIG`` stays, so
``ffdesk.ffmpeg.locate.child_env`` computes the same environment as before. Children that need
the bundle find it on their own: another ffdesk (selftest's Qt child, a restart) runs the
bootloader again, and the embedded PostgreSQL programs link their libraries through their RPATH.
"""

import os
import sys

if sys.platform.startswith("linux") and getattr(sys, "frozen", False):
    _orig = os.environ.get("LD_LIBRARY_PATH_ORIG")
    if _orig is not None:
        os.environ["LD_LIBRARY_PATH"] = _orig
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)
