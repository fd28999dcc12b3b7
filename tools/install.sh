#!/usr/bin/env bash
# Install ffdesk into ./.venv (system packages first, if any are missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/system-deps.sh "$@"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
