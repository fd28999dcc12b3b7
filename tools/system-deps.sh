#!/usr/bin/env bash
# Install the Debian/Ubuntu packages ffdesk needs, only those that are missing.
#   tools/system-deps.sh          what running ffdesk needs (Python venv support, FFmpeg)
#   tools/system-deps.sh --test   plus what the test suite needs (Xvfb, PostgreSQL 15, chattr)
set -euo pipefail
# Qt's libraries (PySide6 wheels bring Qt itself, not these): EGL/GL, fonts, xkb, and the
# xcb platform plugin's extras.
qt_libs=(libegl1 libgl1 libfontconfig1 libdbus-1-3 libglib2.0-0 libxkbcommon0
         libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0
         libxcb-image0 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1)
packages=(python3-venv ffmpeg "${qt_libs[@]}")
if [ "${1:-}" = "--test" ]; then
  packages+=(xvfb xauth x11-utils postgresql-15 e2fsprogs imagemagick)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "system-deps: not a Debian-like system; please install: ${missing[*]}" >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
