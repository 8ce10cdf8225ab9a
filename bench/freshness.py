"""Freshness check of a 5,000-file tree, cold and warm, against `podman image exists`.

Run: .venv/bin/python bench/freshness.py [--files N] [--rounds R]
Prints medians and ratios against the baseline measured in the same run. Target: warm
check <= 50 ms median (and well below the podman call it saves).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from devbox.core.freshness import scan


def make_tree(root: Path, files: int) -> None:
    for i in range(files):
        d = root / f"d{i % 50:02d}" / f"e{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_bytes(f"file {i}\n".encode() * (1 + i % 40))


def median_ms(fn: object, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bootc"
        make_tree(root, args.files)
        cache = Path(tmp) / "cache.json"

        def cold() -> None:
            cache.unlink(missing_ok=True)
            cache.with_suffix(".sig").unlink(missing_ok=True)
            scan(root, cache)

        def warm() -> None:
            scan(root, cache)

        podman = shutil.which("podman")

        def exists() -> None:
            assert podman
            subprocess.run([podman, "image", "exists", "localhost/devbox-bench-none"], check=False)

        cold_ms = median_ms(cold, args.rounds)
        scan(root, cache)
        warm_ms = median_ms(warm, args.rounds)
        print(f"tree: {args.files} files, {args.rounds} rounds (medians)")
        print(f"cold scan (hash everything): {cold_ms:8.1f} ms")
        print(
            f"warm scan (stat cache):      {warm_ms:8.1f} ms   target <= 50 ms: {'OK' if warm_ms <= 50 else 'MISSED'}"
        )
        if podman:
            base = median_ms(exists, args.rounds)
            print(f"baseline `podman image exists`: {base:5.1f} ms")
            print(f"ratio warm/baseline: {warm_ms / base:.2f}   cold/baseline: {cold_ms / base:.2f}")
        else:
            print("baseline: podman not installed, no ratio")


if __name__ == "__main__":
    main()
