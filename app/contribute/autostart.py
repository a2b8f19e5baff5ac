"""Start at login: the tray app starts when the user logs in, so a volunteer's machine lends itself
without being remembered. One mechanism per OS, each the one its users know:

- Linux and other XDG desktops: a .desktop file in $XDG_CONFIG_HOME/autostart (~/.config/autostart);
- Windows: a value named "Corolla" under HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run;
- macOS: a LaunchAgent plist in ~/Library/LaunchAgents with RunAtLoad.

What each writes is built by a pure function (tested on every OS); `set_start_at_login` writes or
removes it, and `starts_at_login` reads it back.
"""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from pathlib import Path
from typing import Any

from corolla.core.errors import CorollaError

APP_ID = "org.corolla.Corolla"  # the LaunchAgent's label and the .desktop file's name
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
RUN_VALUE = "Corolla"


class AutostartError(CorollaError):
    """Start at login could not be switched on or off (the reason, in words)."""


def launch_command() -> list[str]:
    """The command that starts the tray app: the bundle's own program when frozen, else this Python."""
    if os.environ.get("APPIMAGE"):  # inside an AppImage sys.executable is a mount that lasts one run
        return [os.environ["APPIMAGE"]]
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "corolla.ui"]


def desktop_entry(command: list[str]) -> str:
    """The XDG autostart file for `command` (Exec quoted as the Desktop Entry spec asks)."""
    return "\n".join([
        "[Desktop Entry]",
        "Type=Application",
        "Name=Corolla",
        "Comment=Lend this computer to a Corolla swarm and chat with its models",
        "Exec=" + " ".join(_desktop_quote(arg) for arg in command),
        "Icon=corolla",
        "Terminal=false",
        "X-GNOME-Autostart-enabled=true",
        "",
    ])


def launch_agent(command: list[str]) -> bytes:
    """The macOS LaunchAgent plist for `command`: run once at login, not kept alive (Quit means quit)."""
    return plistlib.dumps({"Label": APP_ID, "ProgramArguments": list(command), "RunAtLoad": True,
                           "KeepAlive": False, "ProcessType": "Interactive"})


def run_value(command: list[str]) -> str:
    """The Windows Run key's value for `command`: one command line, quoted as Windows parses it."""
    return subprocess.list2cmdline(command)


def autostart_file(platform: str | None = None) -> Path:
    """Where the login item lives on Linux (XDG) or macOS (LaunchAgents); not used on Windows."""
    platform = platform or sys.platform
    if platform == "darwin":
        return Path.home() / "Library" / "LaunchAgents" / f"{APP_ID}.plist"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "autostart" / f"{APP_ID}.desktop"


def starts_at_login(registry: Any = None) -> bool:
    """Whether this user's login starts Corolla now (`registry`: winreg, or a stand-in in tests)."""
    if sys.platform == "win32" or registry is not None:
        reg = registry or _winreg()
        try:
            with reg.OpenKey(reg.HKEY_CURRENT_USER, RUN_KEY) as key:
                reg.QueryValueEx(key, RUN_VALUE)
            return True
        except OSError:
            return False
    return autostart_file().exists()


def set_start_at_login(on: bool, command: list[str] | None = None, registry: Any = None) -> None:
    """Write (on) or remove (off) this user's login item; AutostartError says why it failed."""
    command = command or launch_command()
    try:
        if sys.platform == "win32" or registry is not None:
            _set_run_key(on, command, registry or _winreg())
            return
        path = autostart_file()
        if not on:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        data = launch_agent(command) if sys.platform == "darwin" else desktop_entry(command).encode()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        where = "the Run key" if sys.platform == "win32" or registry is not None else str(autostart_file())
        raise AutostartError(f"could not turn start at login {'on' if on else 'off'} ({where}: "
                             f"{exc.strerror or exc})") from None


def _set_run_key(on: bool, command: list[str], reg: Any) -> None:
    with reg.CreateKeyEx(reg.HKEY_CURRENT_USER, RUN_KEY, 0, reg.KEY_SET_VALUE) as key:
        if on:
            reg.SetValueEx(key, RUN_VALUE, 0, reg.REG_SZ, run_value(command))
            return
        try:
            reg.DeleteValue(key, RUN_VALUE)
        except FileNotFoundError:
            pass  # already off


def _winreg() -> Any:
    import winreg  # Windows only

    return winreg


def _desktop_quote(arg: str) -> str:
    # Desktop Entry spec: quote arguments with reserved characters; inside quotes " ` $ take one
    # backslash, a backslash four (the string escape is undone before the Exec quoting).
    if arg and not any(c in arg for c in " \t\n\"'\\><~|&;$*?#()`="):
        return arg.replace("%", "%%")
    escaped = "".join("\\\\\\\\" if c == "\\" else "\\" + c if c in '"`$' else c for c in arg)
    return '"' + escaped.replace("%", "%%") + '"'
