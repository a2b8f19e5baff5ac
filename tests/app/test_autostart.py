"""Start at login: the XDG autostart file for real (in a temporary XDG_CONFIG_HOME), and what the
macOS LaunchAgent and the Windows Run key would hold, built by the same functions those OSes use."""

from __future__ import annotations

import configparser
import plistlib
import shlex
import sys

import pytest

from corolla.app.contribute import autostart
from corolla.app.contribute.autostart import (
    AutostartError,
    desktop_entry,
    launch_agent,
    launch_command,
    run_value,
    set_start_at_login,
    starts_at_login,
)

COMMAND = ["/opt/My Apps/corolla/python3", "-m", "corolla.ui"]

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG autostart")


@linux_only
def test_the_xdg_autostart_file_is_written_and_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "xdg" / "autostart" / "org.corolla.Corolla.desktop"
    assert autostart.autostart_file() == path
    assert not starts_at_login()
    set_start_at_login(True)
    assert starts_at_login() and path.exists()
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(path)
    desktop = entry["Desktop Entry"]
    assert desktop["Type"] == "Application" and desktop["Name"] == "Corolla"
    assert shlex.split(desktop["Exec"]) == launch_command()  # this very Python starts the tray app
    set_start_at_login(True)  # again: still one file, still on
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    set_start_at_login(False)
    assert not path.exists() and not starts_at_login()
    set_start_at_login(False)  # already off: nothing to do, no error


@linux_only
def test_without_xdg_config_home_it_goes_to_dot_config(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert autostart.autostart_file() == tmp_path / ".config" / "autostart" / "org.corolla.Corolla.desktop"


@linux_only
def test_an_unwritable_autostart_folder_is_said_plainly(tmp_path, monkeypatch):
    (tmp_path / "xdg").write_text("a file where the folder should be")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    with pytest.raises(AutostartError, match="could not turn start at login on"):
        set_start_at_login(True)


def test_desktop_exec_quotes_what_needs_quoting():
    exec_line = next(line for line in desktop_entry(COMMAND).splitlines() if line.startswith("Exec="))
    assert exec_line == 'Exec="/opt/My Apps/corolla/python3" -m corolla.ui'
    assert shlex.split(exec_line[5:]) == COMMAND
    assert "100%%" in desktop_entry(["/bin/run", "100%"])  # a literal % is doubled (field codes)


def test_the_launch_agent_runs_the_app_at_login():
    agent = plistlib.loads(launch_agent(COMMAND))
    assert agent["Label"] == "org.corolla.Corolla"
    assert agent["ProgramArguments"] == COMMAND
    assert agent["RunAtLoad"] is True and agent["KeepAlive"] is False  # Quit means quit


class FakeRegistry:
    """The part of winreg the Run key uses, over a dict (Windows cannot run here)."""

    HKEY_CURRENT_USER, KEY_SET_VALUE, REG_SZ = "HKCU", 2, 1

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], tuple[int, str]] = {}

    class _Key:
        def __init__(self, path: str) -> None:
            self.path = path

        def __enter__(self):
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    def CreateKeyEx(self, root, path, reserved, access):  # noqa: N802 - winreg's names
        return self._Key(f"{root}\\{path}")

    def OpenKey(self, root, path):  # noqa: N802
        return self._Key(f"{root}\\{path}")

    def SetValueEx(self, key, name, reserved, kind, value):  # noqa: N802
        self.values[(key.path, name)] = (kind, value)

    def QueryValueEx(self, key, name):  # noqa: N802
        if (key.path, name) not in self.values:
            raise FileNotFoundError(name)
        return self.values[(key.path, name)][::-1]

    def DeleteValue(self, key, name):  # noqa: N802
        if self.values.pop((key.path, name), None) is None:
            raise FileNotFoundError(name)


def test_the_windows_run_key_holds_one_quoted_command_line():
    reg = FakeRegistry()
    assert not starts_at_login(registry=reg)
    set_start_at_login(True, [r"C:\Program Files\Corolla\corolla.exe"], registry=reg)
    run = "HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"
    assert reg.values == {(run, "Corolla"): (reg.REG_SZ, r'"C:\Program Files\Corolla\corolla.exe"')}
    assert starts_at_login(registry=reg)
    set_start_at_login(False, registry=reg)
    assert reg.values == {} and not starts_at_login(registry=reg)
    set_start_at_login(False, registry=reg)  # already off
    assert run_value(["C:\\corolla\\python.exe", "-m", "corolla.ui"]) == "C:\\corolla\\python.exe -m corolla.ui"
