"""The git adapter, second half: what a branch changed against its base, whether two
branches would conflict, and landing a branch on its base by merge, rebase or squash.

Everything that only looks runs on objects, never on a checkout: ``git merge-tree
--write-tree`` predicts a merge (git 2.38+) and makes its tree, ``commit-tree`` makes the
merge or squash commit, a rebase runs in a throwaway detached worktree. Only the last step
touches anything: a checkout that has the base (or the branch, after a rebase) checked out
moves from the old commit to the new one (``read-tree -m -u``, a two-tree fast-forward of
a clean checkout) and then its ref moves (``update-ref`` with the old value: nothing moves
that someone else moved meanwhile). ``Landing`` records each of those moves and undoes
them in reverse on any failure or interrupt, so base and branch end exactly as they were.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from devbox.core.errors import Cancelled, GitError
from devbox.core.git import GIT_ENV, HARDENED, HARDENED_DIFF, _git, status_entries
from devbox.core.proc import run

STRATEGIES = ("merge", "rebase", "squash")


@dataclass(frozen=True)
class FileChange:
    path: str
    status: str  # A, M, D, R (renamed from ``old``), T (type), C
    added: int | None  # None: binary
    deleted: int | None
    old: str = ""


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str


@dataclass(frozen=True)
class Uncommitted:
    staged: tuple[str, ...] = ()
    unstaged: tuple[str, ...] = ()
    untracked: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return bool(self.staged or self.unstaged or self.untracked)

    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.staged, *self.unstaged, *self.untracked)))


@dataclass(frozen=True)
class Prediction:
    """What merging ``theirs`` into ``ours`` would do, from ``git merge-tree``."""

    clean: bool
    tree: str  # the merged tree (with conflict markers when not clean)
    conflicts: tuple[str, ...] = ()


# looking -------------------------------------------------------------------------------
def merge_base(repo: Path, a: str, b: str) -> str:
    res = _git(repo, "merge-base", a, b, check=False)
    return res.stdout.strip() if res.ok else ""


def commits(repo: Path, since: str, until: str) -> tuple[Commit, ...]:
    """The commits in ``until`` and not in ``since``, oldest first."""
    out = _git(repo, "log", "--reverse", "--format=%H%x1f%s%x1e", f"{since}..{until}").stdout
    found = []
    for record in out.split("\x1e"):
        record = record.strip("\n")
        if "\x1f" in record:
            sha, subject = record.split("\x1f", 1)
            found.append(Commit(sha, subject))
    return tuple(found)


def changes(repo: Path, a: str, b: str | None = None, *, cached: bool = False) -> tuple[FileChange, ...]:
    """Files changed from ``a`` to ``b`` (None: the worktree at ``repo``; ``cached``: its
    index), with lines added and deleted (None for a binary file), renames detected."""
    span = [a] if b is None else [a, b]
    extra = ["--cached"] if cached else []
    numstat = _git(
        repo, "diff", *HARDENED_DIFF, "--numstat", "-z", "-M", *extra, *span, errors="surrogateescape"
    ).stdout
    status = _git(
        repo, "diff", *HARDENED_DIFF, "--name-status", "-z", "-M", *extra, *span, errors="surrogateescape"
    ).stdout
    counts: dict[str, tuple[int | None, int | None]] = {}
    parts = numstat.split("\0")
    i = 0
    while i < len(parts) - 1:
        head = parts[i]
        i += 1
        fields = head.split("\t")
        if len(fields) < 3:
            continue
        added, deleted, path = fields[0], fields[1], fields[2]
        if path == "":  # a rename: old and new names follow
            path = parts[i + 1]
            i += 2
        counts[path] = (None, None) if added == "-" else (int(added), int(deleted))
    found = []
    parts = status.split("\0")
    i = 0
    while i < len(parts) - 1:
        code = parts[i]
        i += 1
        if code[:1] in ("R", "C"):
            old, path = parts[i], parts[i + 1]
            i += 2
        else:
            old, path = "", parts[i]
            i += 1
        plus, minus = counts.get(path, (None, None))
        found.append(FileChange(path, code[:1], plus, minus, old))
    return tuple(found)


def uncommitted(worktree: Path) -> Uncommitted:
    """Staged, unstaged and untracked files of the checkout at ``worktree``."""
    staged: list[str] = []
    unstaged: list[str] = []
    untracked: list[str] = []
    for x, y, path in status_entries(worktree):
        if x == "?":
            untracked.append(path)
            continue
        if x != " ":
            staged.append(path)
        if y != " ":
            unstaged.append(path)
    return Uncommitted(tuple(staged), tuple(unstaged), tuple(untracked))


def patch(repo: Path, a: str, b: str | None, path: str, *, cached: bool = False, limit: int = 2 << 20) -> str:
    """The diff of one file (every file when ``path`` is ""; ``b`` None: the worktree),
    cut at ``limit`` bytes."""
    span = [a] if b is None else [a, b]
    extra = ["--cached"] if cached else []
    paths = ["--", path] if path else []
    out = _git(repo, "diff", *HARDENED_DIFF, "-M", *extra, *span, *paths, errors="replace").stdout
    return out if len(out) <= limit else out[:limit] + f"\n… (cut at {limit >> 20} MiB)\n"


def predict(repo: Path, ours: str, theirs: str, cancel: threading.Event | None = None) -> Prediction:
    """``git merge-tree --write-tree``: the merged tree and the conflicted files, with no
    checkout, index or ref touched."""
    res = _git(repo, "merge-tree", "--write-tree", "--name-only", "--no-messages", ours, theirs, check=False,
               cancel=cancel, errors="surrogateescape")  # fmt: skip
    if res.returncode not in (0, 1):
        raise GitError(f"git merge-tree failed: {res.last_error()}", "git 2.38 or newer is needed for a merge preview")
    lines = [ln for ln in res.stdout.split("\n") if ln]
    if not lines:
        raise GitError("git merge-tree printed no tree", "git 2.38 or newer is needed for a merge preview")
    return Prediction(res.returncode == 0, lines[0], tuple(dict.fromkeys(lines[1:])))


def changed_since_base(repo: Path, base: str, head: str) -> tuple[str, ...]:
    """The paths ``head`` changed since its merge base with ``base`` (a rename as both its
    names: a conflict is named by either)."""
    out = _git(repo, "diff", *HARDENED_DIFF, "--name-only", "--no-renames", "-z", f"{base}...{head}",
               errors="surrogateescape").stdout  # fmt: skip
    return tuple(p for p in out.split("\0") if p)


def tree_of(repo: Path, commit: str) -> str:
    return _git(repo, "rev-parse", "--verify", f"{commit}^{{tree}}").stdout.strip()


def lands_nothing(repo: Path, base_head: str, head: str, cancel: threading.Event | None = None) -> bool:
    """Whether merging ``head`` would leave ``base_head``'s files as they are: what the
    branch changed is on the base already (squashed or rebased there), whatever the commits'
    ancestry says. Landed is a question of content."""
    p = predict(repo, base_head, head, cancel)
    return p.clean and p.tree == tree_of(repo, base_head)


# landing --------------------------------------------------------------------------------
def commit_tree(repo: Path, tree: str, parents: list[str], message: str, env: dict[str, str]) -> str:
    """A commit of ``tree`` (objects only); ``env``: the author identity."""
    args = [x for p in parents for x in ("-p", p)]
    res = run(["git", *HARDENED, "-C", str(repo), "commit-tree", tree, *args, "-m", message], tool="git",
              env={**GIT_ENV, **env}, timeout=120)  # fmt: skip
    if not res.ok:
        raise GitError(f"git commit-tree failed: {res.last_error()}", "see the git message")
    return res.stdout.strip()


def rebased(repo: Path, onto: str, branch_head: str, env: dict[str, str], cancel: threading.Event) -> str:
    """``branch_head``'s commits replayed onto ``onto`` in a throwaway detached worktree;
    the new head. Nothing but objects remains (the worktree goes, whatever happens)."""
    tmp = Path(tempfile.mkdtemp(prefix="devbox-rebase-"))
    tmp.rmdir()
    try:
        _git(repo, "worktree", "add", "--detach", "--quiet", str(tmp), branch_head, cancel=cancel)
        res = _run_quiet(tmp, env, cancel, "rebase", "--quiet", onto)
        if res is not None:
            _git(tmp, "rebase", "--abort", check=False)
            raise GitError(f"the rebase onto {onto[:12]} stopped: {res}", "rebase the branch in its worktree by hand")
        return _git(tmp, "rev-parse", "HEAD").stdout.strip()
    finally:
        _git(repo, "worktree", "remove", "--force", str(tmp), check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        _git(repo, "worktree", "prune", check=False)


def _run_quiet(cwd: Path, env: dict[str, str], cancel: threading.Event, *args: str) -> str | None:
    res = run(["git", *HARDENED, "-C", str(cwd), *args], tool="git", env={**GIT_ENV, **env}, timeout=600, cancel=cancel)
    return None if res.ok else res.last_error()


@dataclass
class Landing:
    """The moves of one merge-back, undone in reverse when it does not finish."""

    repo: Path
    done: list[tuple[str, Path | None, str, str]] = field(default_factory=list)  # (ref, checkout, old, new)

    def move(self, ref: str, checkout: Path | None, old: str, new: str, cancel: threading.Event) -> None:
        """``ref`` from ``old`` to ``new``; its checkout (clean) first, then the ref."""
        if cancel.is_set():
            raise Cancelled("merge interrupted", "nothing changed: run it again")
        self.done.append((ref, checkout, old, new))
        if checkout is not None:
            _git(checkout, "read-tree", "-m", "-u", old, new)
        _git(self.repo, "update-ref", ref, new, old)

    def undo(self) -> None:
        """Back to where it started: each move reversed, newest first, never interrupted."""
        for ref, checkout, old, new in reversed(self.done):
            current = _git(self.repo, "rev-parse", "--verify", "--quiet", ref, check=False).stdout.strip()
            if current == new:
                _git(self.repo, "update-ref", ref, old, new, check=False)
            if checkout is not None:
                with contextlib.suppress(GitError):
                    # the files as ``old`` has them, whichever way the checkout was left
                    _git(checkout, "read-tree", "--reset", "-u", old)
        self.done.clear()


def commit_all(worktree: Path, message: str, env: dict[str, str]) -> str:
    """Everything uncommitted in ``worktree`` (untracked files too) as one commit."""
    for args in (["add", "-A"], ["commit", "--quiet", "--no-verify", "-m", message]):
        res = run(["git", *HARDENED, "-C", str(worktree), *args], tool="git", env={**GIT_ENV, **env}, timeout=120)
        if not res.ok:
            raise GitError(f"git {args[0]} failed: {res.last_error()}", "see the git message")
    return _git(worktree, "rev-parse", "HEAD").stdout.strip()


def upstream_remote(repo: Path, branch: str) -> str:
    res = _git(repo, "config", "--get", f"branch.{branch}.remote", check=False)
    return res.stdout.strip() if res.ok else ""


def push(repo: Path, remote: str, branch: str, cancel: threading.Event) -> None:
    """``git push REMOTE refs/heads/BRANCH`` (never a prompt; its refusal is one line)."""
    res = _git(repo, "push", "--porcelain", remote, f"refs/heads/{branch}:refs/heads/{branch}", check=False,
               cancel=cancel, timeout=600)  # fmt: skip
    if not res.ok:
        raise GitError(f"git push to {remote} failed: {res.last_error()}",
                       "check the remote (git remote -v) and your access to it, then run again")  # fmt: skip
