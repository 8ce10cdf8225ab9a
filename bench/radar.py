"""The conflict radar with 20 active branches (190 pairs, and each against its base).

Run: .venv/bin/python bench/radar.py [--branches N] [--rounds R]
A generated repository with N worktrees, each branch with its own commits (some touching
the same files). Measured each round, on a fresh cache: the first full pass (every pair
asked of ``git merge-tree``), then, after one branch's HEAD moves, the second pass (only
the pairs with that branch are asked again; target: at most a fifth of the first), and
the dashboard's share per poll (``PER_POLL`` new pairs at most). The first pass is the
baseline measured in the same run. Everything lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from devbox.core import config, ops
from devbox.core.ops.radar import CACHE, PER_POLL
from devbox.core.session import Devbox
from test_merge import git, make_repo


def build(root: Path, n: int) -> tuple[Path, list[Path]]:
    rng = random.Random(7)
    repo = make_repo(root, rng)
    trees = []
    for i in range(n):
        wt = root / f"wt-{i:02d}"
        git(repo, "worktree", "add", "-q", "-b", f"agent-{i:02d}", str(wt))
        target = wt / f"f{rng.randrange(8)}.txt"  # eight files, twenty branches: some pairs conflict
        target.write_text(f"agent {i}\n" + target.read_text())
        (wt / f"own-{i}.txt").write_text("mine\n")
        git(wt, "add", "-A")
        git(wt, "commit", "-qm", f"agent {i}")
        trees.append(wt)
    return repo, trees


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--branches", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="devbox-bench-radar-"))
    try:
        repo, trees = build(root, args.branches)
        firsts, seconds, polls = [], [], []
        with Devbox(config.load(repo, env={})) as session:
            for r in range(args.rounds):
                session.settings.build_path(CACHE).unlink(missing_ok=True)
                t0 = time.perf_counter()
                full = ops.conflicts(session)
                firsts.append((time.perf_counter() - t0) * 1000)
                moved = trees[r % len(trees)]
                (moved / f"round-{r}.txt").write_text("x\n")
                git(moved, "add", "-A")
                git(moved, "commit", "-qm", f"round {r}")
                t0 = time.perf_counter()
                again = ops.conflicts(session)
                seconds.append((time.perf_counter() - t0) * 1000)
                session.settings.build_path(CACHE).unlink(missing_ok=True)
                t0 = time.perf_counter()
                ops.conflicts(session, limit=PER_POLL)
                polls.append((time.perf_counter() - t0) * 1000)
        first, second, poll = statistics.median(firsts), statistics.median(seconds), statistics.median(polls)
        print(f"rounds: {args.rounds}; {args.branches} branches: {full.pairs} pairs, {len(full.clashes)} conflicting")
        print(f"baseline: first full pass ({full.asked} pairs asked):     {first:8.1f} ms")
        print(f"after one HEAD moves ({again.asked} pairs asked again):      {second:8.1f} ms")
        print(f"ratio second / first:                          {second / first:8.2f}   target <= 0.2: "
              f"{'OK' if second / first <= 0.2 else 'MISSED'}")  # fmt: skip
        print(f"one dashboard poll on a cold cache ({PER_POLL} pairs):  {poll:8.1f} ms (in the poll thread)")
    finally:
        subprocess.run(["git", "-C", str(root / "repo"), "worktree", "prune"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
