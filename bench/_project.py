"""What every benchmark needs: podman, a throwaway project built from the tests' fixture on
a local base image, and everything removed afterwards (containers labelled
``devbox.bench=<label>``, the project's image, the base image when the bench made it)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import BASE_IMAGE, Project, make_project  # noqa: E402
from rootfs import import_base, make_rootfs  # noqa: E402


@contextlib.contextmanager
def bench_project(label: str) -> Iterator[tuple[str, Project, Path]]:
    """(podman CLI, project, scratch dir); cleans up whatever the bench labelled ``label``."""
    podman = shutil.which("podman")
    if podman is None:
        sys.exit("podman is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        made_base = subprocess.run([podman, "image", "exists", BASE_IMAGE], capture_output=True).returncode != 0
        if made_base:
            make_rootfs(Path(tmp) / "rootfs")
            import_base(podman, Path(tmp) / "rootfs", BASE_IMAGE)
        proj = make_project(Path(tmp))
        try:
            yield podman, proj, Path(tmp)
        finally:
            ids = subprocess.run(
                [podman, "ps", "-aq", "--filter", f"label=devbox.bench={label}"], capture_output=True, text=True
            ).stdout.split()
            if ids:
                subprocess.run([podman, "rm", "-f", "-t", "0", *ids], capture_output=True)
            subprocess.run([podman, "rmi", "-f", proj.image], capture_output=True)
            if made_base:
                subprocess.run([podman, "rmi", "-f", BASE_IMAGE], capture_output=True)
