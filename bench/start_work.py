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
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _project import bench_project


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    with bench_project("start-work") as (podman, proj, _):
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
            "devbox.bench=start-work",
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
            rm = [str(Path(sys.executable).with_name("devbox")), "container", "rm", "--force", "bench"]
            subprocess.run(rm, env=env, capture_output=True)  # the container and its two volumes
    b, o = statistics.median(base), statistics.median(ours)
    cost = statistics.median(imports) - statistics.median(bare)
    print(f"rounds: {args.rounds} (medians, interleaved)")
    print(f"baseline `podman run -d`:           {b:7.1f} ms")
    print(f"no-op `start-work --detach`:        {o:7.1f} ms")
    print(f"  of which `import podman` (podman-py): {cost:5.1f} ms")
    print(f"ratio start-work / podman run:      {o / b:7.2f}   target <= 1.5: {'OK' if o / b <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
