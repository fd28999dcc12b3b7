#!/usr/bin/env bash
# Build the Linux release of ffdesk from this checkout:
#   dist/ffdesk/                                 PyInstaller one-folder bundle (packaging/ffdesk.spec)
#   dist/ffdesk-<version>-linux-x86_64.tar.gz     that folder, for any glibc Linux
#   dist/ffdesk_<version>_amd64.deb               /opt/ffdesk + /usr/bin/ffdesk, .desktop, icons
#
#   tools/build_linux.sh [--no-selftest] [--keep-build]
#
# Needs: Debian/Ubuntu (apt for missing system packages; root or sudo), network only to the
# package registries (apt, PyPI). The bundle is smoke-tested before it is packaged: --version,
# `presets`, and `selftest --json` (offscreen) unless --no-selftest. Exits non-zero on any failure.
# PYTHON=/path/to/python picks the interpreter (default: .venv/bin/python, created if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)
SELFTEST=1
KEEP_BUILD=0
for arg in "$@"; do
  case "$arg" in
    --no-selftest) SELFTEST=0 ;;
    --keep-build) KEEP_BUILD=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build_linux: unknown option $arg" >&2; exit 2 ;;
  esac
done

step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - START ))"; }
die() { echo "build_linux: $*" >&2; exit 1; }

[ "$(uname -s)" = Linux ] || die "this builds the Linux packages; run it on Linux"
[ "$(uname -m)" = x86_64 ] || die "only x86_64 is built for now (got $(uname -m))"
DEB_ARCH=$(dpkg --print-architecture 2>/dev/null) || die "dpkg not found: build on Debian/Ubuntu"

# ---------------------------------------------------------------- tools
step "system packages"
# ffmpeg + the Qt/X libraries (PyInstaller copies the ones Qt links into the bundle, so they
# must be present here), binutils for PyInstaller's objdump, desktop-file-utils to validate.
bash tools/system-deps.sh
need=()
command -v objdump >/dev/null || need+=(binutils)
command -v desktop-file-validate >/dev/null || need+=(desktop-file-utils)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

step "python environment"
PYTHON=${PYTHON:-.venv/bin/python}
if [ ! -x "$PYTHON" ]; then
  [ "$PYTHON" = .venv/bin/python ] || die "PYTHON=$PYTHON is not executable"
  bash tools/install.sh
fi
if grep -Eq '^build *= *\[' pyproject.toml; then
  "$PYTHON" -m pip install -q -e '.[build]'
else
  "$PYTHON" -m pip install -q 'pyinstaller>=6.10,<7'
fi
VERSION=$("$PYTHON" -c 'import ffdesk; print(ffdesk.__version__)')
PYI_VERSION=$("$PYTHON" -m PyInstaller --version)
echo "ffdesk $VERSION, PyInstaller $PYI_VERSION, $("$PYTHON" --version)"

# ---------------------------------------------------------------- bundle
step "PyInstaller bundle"
rm -rf dist/ffdesk build/pyinstaller
T0=$(date +%s)
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath dist --workpath build/pyinstaller packaging/ffdesk.spec
PYI_SECONDS=$(( $(date +%s) - T0 ))
BIN=dist/ffdesk/ffdesk
[ -x "$BIN" ] || die "PyInstaller produced no $BIN"

step "smoke test of the bundle"
SMOKE_HOME=$(mktemp -d)
trap 'rm -rf "$SMOKE_HOME"' EXIT
got=$("$BIN" --version)
[ "$got" = "ffdesk $VERSION" ] || die "--version printed '$got', expected 'ffdesk $VERSION'"
echo "$got"
QT_QPA_PLATFORM=offscreen "$BIN" presets --home "$SMOKE_HOME" >/dev/null || die "'ffdesk presets' failed"
echo "presets: ok"
# Every ELF file must find its libraries (bundle first, like the bootloader's LD_LIBRARY_PATH).
# shellcheck disable=SC2016  # the inner sh expands them
missing=$(find dist/ffdesk -type f \( -name '*.so*' -o -perm -u+x \) -print0 |
  xargs -0 -n 50 sh -c 'for f; do
      case "$(head -c 4 "$f" | od -An -c | tr -d " ")" in *ELF*) ;; *) continue ;; esac
      LD_LIBRARY_PATH="$0" ldd "$f" 2>/dev/null | sed -n "s|^\s*\(.*not found\)|$f: \1|p"
    done' "$ROOT/dist/ffdesk/_internal")
[ -z "$missing" ] || die "unresolved libraries:"$'\n'"$missing"
echo "libraries: every bundled ELF file resolves its dependencies"
if [ "$SELFTEST" = 1 ]; then
  if "$BIN" selftest --help >/dev/null 2>&1; then
    QT_QPA_PLATFORM=offscreen "$BIN" selftest --json --home "$SMOKE_HOME" > build/selftest.json \
      || { cat build/selftest.json >&2; die "selftest failed (build/selftest.json)"; }
    echo "selftest: passed (build/selftest.json)"
  else
    echo "selftest: this ffdesk has no 'selftest' command yet; skipped"
  fi
fi

# ---------------------------------------------------------------- tarball
step "tarball"
TARBALL=dist/ffdesk-$VERSION-linux-x86_64.tar.gz
rm -f "$TARBALL"
tar -C dist --owner=0 --group=0 --numeric-owner --sort=name -czf "$TARBALL" ffdesk

# ---------------------------------------------------------------- .deb
step ".deb"
# Debian orders 1.0~rc1 before 1.0; Python writes 1.0rc1 / 1.0.dev3.
DEB_VERSION=$(printf '%s' "$VERSION" | sed -E 's/([0-9])\.?(a|b|rc|dev)([0-9]*)/\1~\2\3/')
DEB=dist/ffdesk_${DEB_VERSION}_${DEB_ARCH}.deb
STAGE=build/deb/ffdesk
rm -rf build/deb "$DEB"
umask 022
mkdir -p "$STAGE/DEBIAN" "$STAGE/opt" "$STAGE/usr/bin" "$STAGE/usr/share/applications" \
  "$STAGE/usr/share/icons/hicolor/scalable/apps" "$STAGE/usr/share/doc/ffdesk"
cp -a dist/ffdesk "$STAGE/opt/ffdesk"
ln -s /opt/ffdesk/ffdesk "$STAGE/usr/bin/ffdesk"
desktop-file-validate resources/linux/ffdesk.desktop
install -m 644 resources/linux/ffdesk.desktop "$STAGE/usr/share/applications/ffdesk.desktop"
install -m 644 resources/icons/ffdesk.svg "$STAGE/usr/share/icons/hicolor/scalable/apps/ffdesk.svg"
QT_QPA_PLATFORM=offscreen "$PYTHON" packaging/icons.py png build/icons >/dev/null
for png in build/icons/*/ffdesk.png; do
  size=$(basename "$(dirname "$png")")
  install -D -m 644 "$png" "$STAGE/usr/share/icons/hicolor/$size/apps/ffdesk.png"
done
cat > "$STAGE/usr/share/doc/ffdesk/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ffdesk

Files: *
License: MIT

Files: opt/ffdesk/_internal/*
Comment: third-party components bundled by PyInstaller, each under its own license:
 CPython (PSF-2.0), Qt 6 and PySide6 (LGPL-3.0), PostgreSQL (PostgreSQL License),
 psycopg (LGPL-3.0), numpy (BSD-3-Clause), pyqtgraph (MIT), qasync (BSD-2-Clause),
 psutil (BSD-3-Clause), platformdirs (MIT), fasteners (Apache-2.0), and the system
 libraries they link (X11/xcb, fontconfig, freetype, glib, dbus, OpenSSL, ICU, ...).
EOF

# The lowest glibc the bundle runs on: the highest GLIBC_x.y symbol version any file needs.
GLIBC_MIN=$(find "$STAGE/opt/ffdesk" -type f \( -name '*.so*' -o -perm -u+x \) -print0 |
  xargs -0 objdump -T 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' |
  sort -uV | tail -1)
[ -n "$GLIBC_MIN" ] || die "could not determine the glibc version the bundle needs"
# ffmpeg: used from the system. libstdc++/libgcc: left out of the bundle on purpose (see the
# spec). The rest: what Qt's xcb platform plugin, OpenGL and fonts need at run time (PyInstaller
# bundles most of them; listing them keeps a minimal system complete). glib was renamed t64.
DEPENDS="libc6 (>= $GLIBC_MIN), ffmpeg, libstdc++6, libgcc-s1, libegl1, libgl1, libfontconfig1, libfreetype6, libdbus-1-3, libglib2.0-0t64 | libglib2.0-0, libxkbcommon0,
 libxkbcommon-x11-0, libx11-6, libx11-xcb1, libxcb1, libxcb-cursor0, libxcb-glx0, libxcb-icccm4,
 libxcb-image0, libxcb-keysyms1, libxcb-randr0, libxcb-render0, libxcb-render-util0,
 libxcb-shape0, libxcb-shm0, libxcb-sync1, libxcb-xfixes0, libxcb-xinerama0, libxcb-xkb1,
 libwayland-client0, libwayland-cursor0, libwayland-egl1"
DEPENDS=$(printf '%s' "$DEPENDS" | tr '\n' ' ' | tr -s ' ')
INSTALLED_KB=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat > "$STAGE/DEBIAN/control" <<EOF
Package: ffdesk
Version: $DEB_VERSION
Architecture: $DEB_ARCH
Maintainer: ${DEB_MAINTAINER:-ffdesk maintainers <maintainers@ffdesk.invalid>}
Installed-Size: $INSTALLED_KB
Depends: $DEPENDS
Recommends: xdg-utils
Section: video
Priority: optional
Homepage: ${DEB_HOMEPAGE:-https://github.com/ffdesk/ffdesk}
Description: FFmpeg cluster on your desktop
 Every workstation is a worker and a console; one PostgreSQL database is the
 queue. Drop videos on the window or the tray icon, pick a preset, and every
 machine running ffdesk encodes them. Without a database server configured,
 ffdesk starts its own embedded PostgreSQL 18 (bundled).
 .
 Installs to /opt/ffdesk with /usr/bin/ffdesk (CLI and desktop app).
EOF
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z |
  xargs -0 md5sum | sed 's| \./| |' > DEBIAN/md5sums)
T0=$(date +%s)
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >/dev/null
DEB_SECONDS=$(( $(date +%s) - T0 ))
dpkg-deb --info "$DEB" >/dev/null || die "dpkg-deb cannot read $DEB back"

# External libraries the bundle links (not bundled): each must come from a package we depend on.
step "dependency check"
# shellcheck disable=SC2016  # the inner sh expands them
external=$(find dist/ffdesk -type f \( -name '*.so*' -o -perm -u+x \) -print0 |
  xargs -0 -n 50 sh -c 'for f; do LD_LIBRARY_PATH="$0" ldd "$f" 2>/dev/null; done' \
    "$ROOT/dist/ffdesk/_internal" |
  awk '$2 == "=>" && $3 ~ /^\// {print $3}' | grep -v "^$ROOT/" | sort -u)
owner() {  # the package that owns a library path ("" if none); merged-/usr aware
  local p
  for p in "$1" "$(dirname "$1")/$(basename "$(readlink -f "$1")")" "$(readlink -f "$1")"; do
    dpkg -S "$p" 2>/dev/null | head -1 | cut -d: -f1 && return 0
  done
  return 0
}
for lib in $external; do
  pkg=$(owner "$lib")
  printf '  %-28s %s\n' "$(basename "$lib")" "${pkg:-?}"
  case "$pkg" in
    libc6|libgcc-s1|libstdc++6) ;;
    libglx0|libglvnd0) ;;  # libgl1 / libegl1 depend on them
    "") echo "build_linux: warning: $lib belongs to no package" >&2 ;;
    *) grep -q "\b${pkg%t64}\b" <<<"$DEPENDS" \
         || echo "build_linux: warning: $lib comes from $pkg, which is not in Depends" >&2 ;;
  esac
done

# ---------------------------------------------------------------- summary
[ "$KEEP_BUILD" = 1 ] || rm -rf build/pyinstaller build/deb build/icons
END=$(date +%s)
step "done"
printf 'bundle   %8s  dist/ffdesk/ (%s files)\n' "$(du -sh dist/ffdesk | cut -f1)" \
  "$(find dist/ffdesk -type f | wc -l)"
printf 'tarball  %8s  %s\n' "$(du -h "$TARBALL" | cut -f1)" "$TARBALL"
printf 'deb      %8s  %s (installed %s MB, glibc >= %s)\n' "$(du -h "$DEB" | cut -f1)" "$DEB" \
  "$(( INSTALLED_KB / 1024 ))" "$GLIBC_MIN"
printf 'time     %ss total: PyInstaller %ss, dpkg-deb %ss\n' "$(( END - START ))" \
  "$PYI_SECONDS" "$DEB_SECONDS"
