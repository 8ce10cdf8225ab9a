"""The root shims: first run bootstraps the virtualenv, later runs reuse it, and the
project's devbox is used even when another `devbox` comes first on PATH."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from conftest import ROOT


def test_start_work_bootstraps_venv_once_and_ignores_path_devbox(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(
        ROOT, repo, ignore=shutil.ignore_patterns(".venv", ".build", "__pycache__", "*.egg-info", ".git", ".*_cache")
    )
    impostor = tmp_path / "bin"
    impostor.mkdir()
    (impostor / "devbox").write_text("#!/bin/sh\necho 'jetify devbox' >&2\nexit 99\n")
    (impostor / "devbox").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVBOX_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{impostor}:{env['PATH']}"

    first = subprocess.run([repo / "start-work", "--help"], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "setting up" in first.stderr and "usage: devbox start-work" in first.stdout
    assert (repo / ".venv" / "bin" / "devbox").exists()

    second = subprocess.run([repo / "start-work", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "setting up" not in second.stderr and "jetify" not in second.stderr

    # the vm-*.sh shims add the vm extra (libvirt-python) once
    vm = subprocess.run([repo / "vm-status.sh", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert vm.returncode == 0, vm.stderr
    assert json.loads(vm.stdout)["domain"].startswith("devbox-repo-") and "setting up" in vm.stderr
    vm = subprocess.run([repo / "vm-status.sh", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert vm.returncode == 0 and "setting up" not in vm.stderr
    # global options pass through a shim (issue 14 item 16): they go after the command
    vm = subprocess.run([repo / "vm-status.sh", "-v", "--json", "--repo", str(repo)], env=env, capture_output=True,
                        text=True, timeout=60)  # fmt: skip
    assert vm.returncode == 0 and json.loads(vm.stdout)["domain"].startswith("devbox-repo-"), vm.stderr

    cli = subprocess.run([repo / "devbox", "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and cli.stdout.strip() == "devbox 0.1.0"  # README's `./devbox ...` works as shown
    tui = subprocess.run([repo / "devbox-tui", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert tui.returncode == 0 and "--read-only" in tui.stdout and "setting up" not in tui.stderr

    # from a linked worktree, the shims use the main repository's environment (no second venv)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    ident = ["-c", "user.email=a@b", "-c", "user.name=A"]
    subprocess.run(["git", "-C", str(repo), *ident, "commit", "-qm", "init"], check=True)
    linked = tmp_path / "linked"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "-b", "side", str(linked)], check=True)
    inner = subprocess.run([linked / "start-work", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert inner.returncode == 0 and "setting up" not in inner.stderr, inner.stderr
    assert not (linked / ".venv").exists()
