"""The bundle's entry script and child command, run from the checkout (CI builds no bundle)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from corolla.app.serve import child

ENTRY = Path(__file__).resolve().parents[1] / "packaging" / "corolla_main.py"


def test_children_of_a_bundle_are_its_own_executable_with_the_child_flag(monkeypatch):
    assert child.command() == [sys.executable, "-m", "corolla.app.serve.child"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert child.command() == [sys.executable, child.FROZEN_FLAG]


def test_the_entry_script_runs_the_command_line_or_the_child():
    for first in ([], [child.FROZEN_FLAG]):
        # stdin held open, as a parent holds it: a child whose stdin closes leaves at once
        with subprocess.Popen([sys.executable, str(ENTRY), *first, "--version"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
            out, err = run.stdout.read(), run.stderr.read()
            assert run.wait(120) == 0, err
        assert out.strip() == f"corolla {version('corolla')}"
    # Only the child role watches its stdin: closed from the start, a peer that would serve until
    # stopped leaves on its own (without the flag, this same command runs until the timeout).
    try:
        subprocess.run([sys.executable, str(ENTRY), child.FROZEN_FLAG, "bootstrap", "--host", "127.0.0.1"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the child did not leave when its stdin closed: {exc.stdout}") from exc
