"""The conflict radar (issue 16) with real git: which active branches would conflict with
each other and with their base, cached by the pair of HEADs (only pairs with a moved HEAD
are asked again), at most ``limit`` new pairs per call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devbox.core import config, ops
from devbox.core.session import Devbox
from test_merge import git, make_repo


def worktree(repo: Path, branch: str, edits: dict[str, str]) -> Path:
    wt = repo.parent / f"wt-{branch}"
    git(repo, "worktree", "add", "-q", "-b", branch, str(wt))
    for name, text in edits.items():
        (wt / name).write_text(text)
    git(wt, "add", "-A")
    git(wt, "commit", "-qm", f"{branch} edits")
    return wt


def test_pairs_and_bases_cached_by_head(tmp_path: Path) -> None:
    import random

    repo = make_repo(tmp_path / "r", random.Random(3))
    worktree(repo, "fan-1", {"f0.txt": "fan-1's f0\n"})
    worktree(repo, "fan-2", {"f0.txt": "fan-2's f0\n"})  # same file as fan-1: a conflict
    c = worktree(repo, "other", {"f1.txt": "other's f1\n"})
    worktree(repo, "late", {"f2.txt": "late's f2\n"})
    (repo / "f2.txt").write_text("main's f2\n")  # main moved on in f2: late conflicts with its base
    git(repo, "commit", "-qam", "main edits f2")
    with Devbox(config.load(repo, env={})) as session:
        first = ops.conflicts(session)
        assert first.pairs == 6 + 4 and first.asked == 10 and first.pending == 0
        found = {(x.a, x.b, x.with_base): x.files for x in first.clashes}
        assert found == {("fan-1", "fan-2", False): ("f0.txt",), ("late", "main", True): ("f2.txt",)}
        assert [x.b for x in first.of("fan-2")] == ["fan-1"]

        again = ops.conflicts(session)
        assert again.asked == 0 and again.clashes == first.clashes  # all from the cache
        (c / "f3.txt").write_text("more\n")
        git(c, "commit", "-qam", "other moves")
        moved = ops.conflicts(session)
        assert moved.asked == 4  # other with the three others and with its base
        git(repo, "commit", "-q", "--allow-empty", "-m", "main moves")
        limited = ops.conflicts(session, limit=2)
        assert limited.asked == 2 and limited.pending == 2  # the 4 base pairs: 2 now, 2 at a later poll

    out = subprocess.run([sys.executable, "-m", "devbox.cli", "conflicts", "--json"], cwd=repo, capture_output=True,
                         text=True, env={**os.environ, "DEVBOX_REPO": str(repo)})  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {(x["a"], x["b"]) for x in data["conflicts"]} == {("fan-1", "fan-2"), ("late", "main")}


def test_a_branch_conflicts_only_where_it_changed_the_file_itself(tmp_path: Path) -> None:
    """Once quick conflicts with main, a branch started at main's tip (no change of its own)
    or one that never touched the file does not conflict with quick: merging them would
    replay main's change, which is the base conflict already counted once."""
    import random

    repo = make_repo(tmp_path / "r", random.Random(4))
    worktree(repo, "quick", {"f0.txt": "quick's f0\n"})
    worktree(repo, "big", {"f5.txt": "big's f5\n", "f6.txt": "big's f6\n"})
    (repo / "f0.txt").write_text("main's f0\n")  # main moves on in f0: quick conflicts with its base
    git(repo, "commit", "-qam", "main edits f0")
    for name in ("fresh-1", "fresh-2"):  # new branches at main's tip, nothing of their own yet
        git(repo, "worktree", "add", "-q", "-b", name, str(repo.parent / f"wt-{name}"))
    worktree(repo, "rival", {"f0.txt": "rival's f0\n"})  # at main's tip, and edits f0 itself
    with Devbox(config.load(repo, env={})) as session:
        for radar in (ops.conflicts(session), ops.conflicts(session)):  # asked, then from the cache
            found = {(x.a, x.b, x.with_base): x.files for x in radar.clashes}
            assert found == {("quick", "main", True): ("f0.txt",), ("quick", "rival", False): ("f0.txt",)}, found
            assert [len(radar.of(b)) for b in ("quick", "big", "fresh-1", "fresh-2")] == [2, 0, 0, 0]
        d = ops.diff_branch(session, "big")
        assert d.commits and not ops.conflicts(session).of("big")
