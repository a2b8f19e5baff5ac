#!/usr/bin/env bash
# Makes an AppImage from the one-folder bundle: an AppDir (AppRun, the .desktop file, the icon, the
# bundle under usr/lib/corolla), then appimagetool, which must be on PATH (it is not a Debian package;
# without it the AppDir is left in build/bundle/Corolla.AppDir and can be run as Corolla.AppDir/AppRun).
#   packaging/linux/make-appimage.sh [BUNDLE_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=${1:-build/bundle/dist/corolla}
OUT=${2:-build/bundle}
APPDIR="$OUT/Corolla.AppDir"
version=$("$BUNDLE/corolla" --version | awk '{print $2}')
rm -rf "$APPDIR"
mkdir -p "$APPDIR/usr/lib"
cp -al "$BUNDLE" "$APPDIR/usr/lib/corolla" 2>/dev/null || cp -a "$BUNDLE" "$APPDIR/usr/lib/corolla"
cat > "$APPDIR/AppRun" <<'RUN'
#!/bin/sh
HERE=$(dirname "$(readlink -f "$0")")
exec "$HERE/usr/lib/corolla/corolla" "$@"
RUN
chmod +x "$APPDIR/AppRun"
cp resources/corolla.desktop "$APPDIR/corolla.desktop"
cp resources/icon.svg "$APPDIR/corolla.svg"
if ! command -v appimagetool >/dev/null; then
    echo "appimagetool is not on PATH: the AppDir is ready in $APPDIR (run $APPDIR/AppRun)" >&2
    exit 0
fi
ARCH=$(uname -m) appimagetool "$APPDIR" "$OUT/Corolla-$version-$(uname -m).AppImage"
