#!/usr/bin/env bash
# Install the .deb that tools/build_linux.sh made and check the *installed* app, the way a
# user gets it: `ffdesk selftest --json` passes (offscreen), and the desktop app starts under
# Xvfb, shows its main window and quits cleanly when asked.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls -t dist/ffdesk_*_amd64.deb 2>/dev/null | head -1)
[ -n "$deb" ] || { echo "check_installed: no dist/ffdesk_*_amd64.deb; run tools/build_linux.sh" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get install -y -qq "./$deb" >/dev/null
app=/usr/bin/ffdesk
echo "check_installed: $("$app" --version) from $deb"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Run from elsewhere so nothing can come from this checkout by accident.
cd "$work"
if ! env -u PYTHONPATH QT_QPA_PLATFORM=offscreen "$app" selftest --json --home "$work/home" \
        > "$work/selftest.json"; then
  echo "check_installed: the installed selftest failed:" >&2
  cat "$work/selftest.json" >&2
  exit 1
fi
python3 - "$work/selftest.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
assert report["ok"] and report["frozen"], report
print("check_installed: selftest ok:", ", ".join(c["name"] for c in report["checks"]),
      f"({report['seconds']:.1f} s)")
PY

# The desktop app under Xvfb: its window appears, then `--quit now` ends it with exit 0.
export FFDESK_CHECK_HOME="$work/gui-home" FFDESK_APP="$app"
xvfb-run -a -s "-screen 0 1280x800x24" bash -c '
  set -euo pipefail
  "$FFDESK_APP" gui --home "$FFDESK_CHECK_HOME" > "$FFDESK_CHECK_HOME.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    # The main window, titled "ffdesk", mapped and viewable (not just created).
    if xwininfo -name ffdesk 2>/dev/null | grep -q "Map State: IsViewable"; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "check_installed: the app exited before showing a window:" >&2
      cat "$FFDESK_CHECK_HOME.log" >&2; exit 1
    fi
    sleep 0.1
  done
  xwininfo -name ffdesk | grep -E "Width|Height|Map State" | sed "s/^ */check_installed: window: /"
  "$FFDESK_APP" gui --home "$FFDESK_CHECK_HOME" --quit now
  code=0; wait "$pid" || code=$?
  if [ "$code" -ne 0 ]; then
    echo "check_installed: the app exited with $code:" >&2
    cat "$FFDESK_CHECK_HOME.log" >&2; exit 1
  fi
  echo "check_installed: the app showed its window and quit with exit code 0"
'
