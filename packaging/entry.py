"""PyInstaller entry point: the frozen ``ffdesk`` is exactly the ``ffdesk`` console script.

One binary serves the command line and the desktop app (``ffdesk`` without a command opens the
GUI), so the CLI, autostart and the .desktop launcher all run the same executable.
"""

import sys

from ffdesk.cli import main

if __name__ == "__main__":
    sys.exit(main())
