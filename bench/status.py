"""``ops.status`` in-process vs the raw tool calls it replaces, with 50 worktrees and 50
containers.

Run: .venv/bin/python bench/status.py [--worktrees N] [--rounds R]
Needs podman and its API socket. Makes a throwaway repo with N worktrees (one dirty in
five) and N containers (``podman create``, never started), then times, interleaved:
- baseline: ``git worktree list --porcelain`` + ``git status --porcelain=v2 --branch`` in
  each worktree, one after another + ``podman ps -a --format json`` (what a shell script
  would run for the same view);
- ``ops.status(session)`` on a warm session, as the dashboard polls it (plus the first
  call, podman-py's import included, printed beside).
Target: ratio <= 1.0. Everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from _project import bench_project

from devbox.core import ops
from devbox.core.containers import LABEL_BRANCH, LABEL_REPO
from devbox.core.session import Devbox

from conftest import BASE_IMAGE


def ms(fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worktrees", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    with bench_project("status") as (podman, proj, scratch):
        wts = []
        for i in range(args.worktrees):
            path = scratch / "wts" / f"w{i}"
            subprocess.run(["git", "-C", str(proj.root), "worktree", "add", "-q", "-b", f"w{i}", str(path)], check=True)
            if i % 5 == 0:
                (path / "dirty.txt").write_text("x")
            wts.append(path)
        for i in range(args.worktrees):
            subprocess.run(
                [
                    *(podman, "create", "--label", f"{LABEL_REPO}={proj.root}", "--label", f"{LABEL_BRANCH}=w{i}"),
                    *("--label", "devbox.bench=status", BASE_IMAGE, "true"),
                ],
                check=True,
                capture_output=True,
            )

        def raw() -> None:
            git = ["git", "-C"]
            subprocess.run([*git, str(proj.root), "worktree", "list", "--porcelain"], capture_output=True, check=True)
            for w in [proj.root, *wts]:
                subprocess.run([*git, str(w), "status", "--porcelain=v2", "--branch"], capture_output=True, check=True)
            subprocess.run([podman, "ps", "-a", "--format", "json"], capture_output=True, check=True)

        with Devbox.open(proj.root, env=proj.env) as session:
            first = ms(lambda: ops.status(session))
            st = ops.status(session)
            assert not st.problems(), st.problems()
            assert len(st.worktrees.value or ()) == args.worktrees + 1
            assert len(st.containers.value or ()) == args.worktrees
            base, ours = [], []
            for _ in range(args.rounds):
                base.append(ms(raw))
                ours.append(ms(lambda: ops.status(session)))
    b, o = statistics.median(base), statistics.median(ours)
    print(f"rounds: {args.rounds} (medians, interleaved); {args.worktrees} worktrees, {args.worktrees} containers")
    print(f"baseline raw calls (git x{args.worktrees + 2}, podman ps): {b:7.1f} ms")
    print(f"ops.status, warm session:               {o:7.1f} ms")
    print(f"ops.status, first call (imports podman-py): {first:7.1f} ms")
    print(f"ratio ops.status / raw calls:           {o / b:7.2f}   target <= 1.0: {'OK' if o / b <= 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
