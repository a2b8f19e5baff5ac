"""What a user's site-packages receives: one `corolla` package and its dist-info, nothing generic."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_installs_only_corolla(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    wheel = next(tmp_path.glob("corolla-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"corolla", wheel.name.split("-")[0] + "-" +
                                                wheel.name.split("-")[1] + ".dist-info"}
    for package in ("app", "core", "p2p", "ui"):
        assert f"corolla/{package}/__init__.py" in names
    assert "corolla/app/chat/reply.py" in names and "corolla/ui/bridge/services.py" in names
    assert not any(n.startswith("corolla/__init__") for n in names)  # a namespace: nothing to collide with
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "corolla = corolla.ui.main:main" in entry
