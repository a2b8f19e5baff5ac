#!/bin/sh
# Installs this unpacked Corolla for the current user: the `corolla` command in ~/.local/bin, a menu
# entry and its icon. Nothing outside the home folder is touched; run it again after moving the folder.
#   ./install.sh            install
#   ./install.sh --remove   remove the command, the menu entry and the icon (settings and history stay)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${XDG_BIN_HOME:-$HOME/.local/bin}
DATA=${XDG_DATA_HOME:-$HOME/.local/share}
RES="$HERE/_internal/corolla/resources"
ENTRY="$DATA/applications/org.corolla.Corolla.desktop"
ICON="$DATA/icons/hicolor/scalable/apps/corolla.svg"

if [ "${1:-}" = "--remove" ]; then
    [ "$(readlink "$BIN/corolla" 2>/dev/null)" = "$HERE/corolla" ] && rm -f "$BIN/corolla"
    rm -f "$ENTRY" "$ICON"
    echo "Corolla's command, menu entry and icon are removed; delete $HERE to remove the program."
    exit 0
fi
mkdir -p "$BIN" "$DATA/applications" "$(dirname "$ICON")"
ln -sf "$HERE/corolla" "$BIN/corolla"
cp "$RES/icon.svg" "$ICON"
# The menu entry starts this folder's program wherever it was unpacked.
sed "s|^Exec=.*|Exec=\"$HERE/corolla\"|" "$RES/corolla.desktop" > "$ENTRY"
command -v update-desktop-database >/dev/null && update-desktop-database -q "$DATA/applications" || true
echo "Corolla is installed: find it in your applications menu, or run: corolla"
case ":$PATH:" in *":$BIN:"*) ;; *) echo "($BIN is not on your PATH: add it, or run $HERE/corolla)";; esac
