#!/usr/bin/env bash
# Packs the one-folder bundle as corolla-<version>-linux-<arch>.tar.gz, with install.sh inside.
#   packaging/linux/make-tarball.sh [BUNDLE_DIR] [OUT_DIR]    (defaults: build/bundle/dist/corolla build/bundle)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=${1:-build/bundle/dist/corolla}
OUT=${2:-build/bundle}
version=$("$BUNDLE/corolla" --version | awk '{print $2}')  # also proves the bundle starts
name="corolla-$version-linux-$(uname -m)"
cp packaging/linux/install.sh "$BUNDLE/install.sh"
echo "==> $OUT/$name.tar.gz"
# Unpacks as one folder named after the version; nothing is compiled or downloaded at install.
tar -C "$(dirname "$BUNDLE")" --transform "s,^$(basename "$BUNDLE"),$name," -czf "$OUT/$name.tar.gz" \
    "$(basename "$BUNDLE")"
