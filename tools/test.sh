#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system packages, .venv, lint, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh --test
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
