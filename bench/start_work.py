"""No-op ``start-work --detach`` vs a raw ``podman run -d`` of the same image.

Run: .venv/bin/python bench/start_work.py [--rounds N]
Needs podman and its API socket (as the tests do). Builds a throwaway project from the
test fixture (local base image), starts its container once, then alternates the two
commands and prints medians and their ratio. Target: ratio <= 1.5 (podman-py, imported
lazily, costs ~0.25 s of it: printed beside, measured in the same run). Everything it
makes (containers, their /var and /etc volumes, the image) is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import BASE_IMAGE, make_project  # noqa: E402
from rootfs import import_base, make_rootfs  # noqa: E402


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    podman = shutil.which("podman")
    if podman is None:
        sys.exit("podman is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        made_base = subprocess.run([podman, "image", "exists", BASE_IMAGE], capture_output=True).returncode != 0
        if made_base:
            make_rootfs(Path(tmp) / "rootfs")
            import_base(podman, Path(tmp) / "rootfs", BASE_IMAGE)
        proj = make_project(Path(tmp))
        env = proj.env
        devbox = [str(Path(sys.executable).with_name("devbox")), "start-work", "bench", "--detach"]
        subprocess.run(devbox, env=env, check=True, capture_output=True)
        image_id = proj.image_id()
        assert image_id
        raw = [
            podman,
            "run",
            "-d",
            "--env",
            f"DEVBOX_UID={os.getuid()}",
            "--env",
            f"DEVBOX_GID={os.getgid()}",
            "--label",
            "devbox.bench=1",
            image_id,
            "sleep",
            "1000",
        ]
        base, ours, bare, imports = [], [], [], []
        python = [sys.executable, "-c"]
        try:
            for _ in range(args.rounds):
                base.append(timed(raw, env))
                ours.append(timed(devbox, env))
                bare.append(timed([*python, "pass"], env))
                imports.append(timed([*python, "import podman"], env))
        finally:
            ids = subprocess.run(
                [podman, "ps", "-aq", "--filter", "label=devbox.bench=1"], capture_output=True, text=True
            ).stdout.split()
            if ids:
                subprocess.run([podman, "rm", "-f", "-t", "0", *ids], capture_output=True)
            rm = [str(Path(sys.executable).with_name("devbox")), "container", "rm", "--force", "bench"]
            subprocess.run(rm, env=env, capture_output=True)  # the container and its two volumes
            subprocess.run([podman, "rmi", "-f", proj.image], capture_output=True)
            if made_base:
                subprocess.run([podman, "rmi", "-f", BASE_IMAGE], capture_output=True)
    b, o = statistics.median(base), statistics.median(ours)
    cost = statistics.median(imports) - statistics.median(bare)
    print(f"rounds: {args.rounds} (medians, interleaved)")
    print(f"baseline `podman run -d`:           {b:7.1f} ms")
    print(f"no-op `start-work --detach`:        {o:7.1f} ms")
    print(f"  of which `import podman` (podman-py): {cost:5.1f} ms")
    print(f"ratio start-work / podman run:      {o / b:7.2f}   target <= 1.5: {'OK' if o / b <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
