"""The wheel works outside the repository, styles included; devbox-tui starts."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path


def test_wheel_carries_styles_and_templates_and_runs_outside_the_repo(tmp_path: Path, devbox_wheel: Path) -> None:
    wheel = devbox_wheel
    names = zipfile.ZipFile(wheel).namelist()
    assert "devbox/styles/devbox.tcss" in names
    assert "devbox/core/freshness.py" in names
    for template in ("bootc/Containerfile", "bootc/entrypoint.sh", "bootc/agent-hook.sh", "terraform/main.tf"):
        assert f"devbox/templates/{template}" in names  # what `devbox init` writes travels in the wheel
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "devbox = devbox.entry:run" in entry_points and "devbox-tui = devbox.tui:run" in entry_points

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin" / "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], check=True)
    out = subprocess.run([venv / "bin" / "devbox", "--version"], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "devbox 0.1.0"
    check = "import importlib.resources as r; print(r.files('devbox').joinpath('styles/devbox.tcss').is_file())"
    out = subprocess.run([venv / "bin" / "python", "-c", check], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_tui_starts_with_its_stylesheet_and_reports_bad_repo(tmp_path: Path) -> None:
    import os

    from devbox.tui.app import styles_path

    assert styles_path().is_file()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_")}
    res = subprocess.run(
        [sys.executable, "-m", "devbox.tui.app", "--repo", str(tmp_path / "nope")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 3 and res.stderr.startswith("devbox-tui: project") and "(fix:" in res.stderr
    assert "Traceback" not in res.stderr
