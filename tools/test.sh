#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system packages, .venv, lint, tests, then the
# release check: build the Linux bundle and .deb, install the .deb on this machine and check
# the installed app (selftest offscreen; the window under Xvfb). FFDESK_SKIP_PACKAGING=1
# skips that last part (e.g. when only iterating on tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh --test
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
if [ "${FFDESK_SKIP_PACKAGING:-0}" != 1 ]; then
  bash tools/build_linux.sh
  bash tools/check_installed.sh
fi
