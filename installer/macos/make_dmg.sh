#!/usr/bin/env bash
# Package dist/ffdesk.app (pyinstaller packaging/ffdesk.spec on macOS) into
# dist/ffdesk-<version>-macos-<arch>.dmg, signed and notarized when credentials are given.
#
# Environment (each step is skipped, with a message, when its variables are unset):
#   MACOS_CODESIGN_IDENTITY   "Developer ID Application: Name (TEAMID)", in the keychain
#   MACOS_NOTARY_PROFILE      a notarytool keychain profile (xcrun notarytool store-credentials)
#     or MACOS_NOTARY_APPLE_ID + MACOS_NOTARY_TEAM_ID + MACOS_NOTARY_PASSWORD (app password)
set -euo pipefail
cd "$(dirname "$0")/../.."

APP=dist/ffdesk.app
ENTITLEMENTS=installer/macos/entitlements.plist
die() { echo "make_dmg: $*" >&2; exit 1; }

[ "$(uname -s)" = Darwin ] || die "run this on macOS"
[ -d "$APP" ] || die "$APP not found: run 'pyinstaller packaging/ffdesk.spec' first"
VERSION=$(/usr/libexec/PlistBuddy -c "Print CFBundleShortVersionString" "$APP/Contents/Info.plist")
ARCH=$(uname -m)  # arm64 or x86_64: one DMG per architecture
DMG=dist/ffdesk-$VERSION-macos-$ARCH.dmg
IDENTITY=${MACOS_CODESIGN_IDENTITY:-}

# ---------------------------------------------------------------- sign
sign() {
  codesign --force --timestamp --options runtime --entitlements "$ENTITLEMENTS" \
    --sign "$IDENTITY" "$@"
}
if [ -n "$IDENTITY" ]; then
  echo "make_dmg: signing with '$IDENTITY'"
  # Inside out: loose Mach-O files first (PyInstaller signs what it collects as binaries, but
  # the embedded PostgreSQL and ffmpeg are collected as data files), then frameworks, then the
  # app. Symlinks are skipped: their targets are signed.
  find "$APP/Contents" -type f ! -path '*.framework/*' -print0 |
    while IFS= read -r -d '' f; do
      if file -b "$f" | grep -q 'Mach-O'; then sign "$f"; fi
    done
  find "$APP/Contents" -type d -name '*.framework' -prune -print0 |
    while IFS= read -r -d '' fw; do sign "$fw"; done
  sign "$APP"
  codesign --verify --deep --strict --verbose=2 "$APP"
else
  echo "make_dmg: MACOS_CODESIGN_IDENTITY is not set: not signing (the app keeps PyInstaller's" \
       "ad-hoc signature; Gatekeeper will ask users to confirm the first start)"
fi

# ---------------------------------------------------------------- disk image
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
ditto "$APP" "$STAGE/ffdesk.app"
ln -s /Applications "$STAGE/Applications"
rm -f "$DMG"
for attempt in 1 2 3 4 5; do  # hdiutil fails now and then with "Resource busy"
  if hdiutil create -volname "ffdesk $VERSION" -srcfolder "$STAGE" -fs HFS+ -format UDZO \
      -ov "$DMG"; then
    break
  fi
  [ "$attempt" = 5 ] && die "hdiutil create failed 5 times"
  echo "make_dmg: hdiutil create failed, retrying in 5 s"
  sleep 5
done
if [ -n "$IDENTITY" ]; then codesign --force --timestamp --sign "$IDENTITY" "$DMG"; fi

# ---------------------------------------------------------------- notarize
notary=()
if [ -n "${MACOS_NOTARY_PROFILE:-}" ]; then
  notary=(--keychain-profile "$MACOS_NOTARY_PROFILE")
elif [ -n "${MACOS_NOTARY_APPLE_ID:-}" ] && [ -n "${MACOS_NOTARY_TEAM_ID:-}" ] &&
     [ -n "${MACOS_NOTARY_PASSWORD:-}" ]; then
  notary=(--apple-id "$MACOS_NOTARY_APPLE_ID" --team-id "$MACOS_NOTARY_TEAM_ID"
          --password "$MACOS_NOTARY_PASSWORD")
fi
if [ -z "$IDENTITY" ]; then
  echo "make_dmg: not signed, so not notarized"
elif [ ${#notary[@]} -eq 0 ]; then
  echo "make_dmg: no MACOS_NOTARY_PROFILE or MACOS_NOTARY_APPLE_ID/_TEAM_ID/_PASSWORD:" \
       "skipping notarization"
else
  echo "make_dmg: notarizing (this waits for Apple, usually a few minutes)"
  xcrun notarytool submit "$DMG" "${notary[@]}" --wait
  xcrun stapler staple "$DMG"
  xcrun stapler validate "$DMG"
  spctl --assess --type open --context context:primary-signature --verbose=2 "$DMG"
fi

hdiutil verify "$DMG"
echo "make_dmg: $DMG ($(du -h "$DMG" | cut -f1))"
