"""The git adapter: worktrees of the main repository, and branch-name validation.

Only this module runs git. Names are checked twice: by devbox's own rules (which also
refuse things git would take, like a leading '-' that a later command could read as an
option) and then by ``git check-ref-format --branch``.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devbox.core.errors import BadName, DevboxError, DiskFull, GitError, NotFound, Refused
from devbox.core.events import LogLine, Sink
from devbox.core.proc import run

NAME_REMEDY = "use letters, digits and - _ . / (e.g. feature/login)"
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


@dataclass(frozen=True)
class Worktree:
    path: Path
    branch: str | None  # None: detached HEAD
    head: str
    is_main: bool


@dataclass(frozen=True)
class WorktreeState:
    dirty: bool
    ahead: int | None  # None: no upstream
    behind: int | None


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        res = run(["git", "-C", str(repo), *args])
    except FileNotFoundError:
        raise GitError("git is not installed", "install git: sudo dnf install git") from None
    if check and res.returncode != 0:
        msg = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
        if "no space left" in res.stderr.lower():
            raise DiskFull(f"git {args[0]}: {msg}", "free disk space and run the command again")
        raise GitError(f"git {args[0]} failed: {msg}", "see the git message; fix it and run the command again")
    return res


def check_branch_name(name: str) -> str:
    """Return ``name`` if it is a branch name devbox will act on, else raise BadName."""
    shown = repr(name)
    why = None
    if not name:
        why = "it is empty"
    elif name.startswith("-"):
        why = "it starts with '-'"
    elif _BAD_CHARS.search(name):
        why = "it contains a space, a control character or one of ~ ^ : ? * [ \\"
    elif ".." in name:
        why = "it contains '..'"
    elif "@{" in name or name == "@":
        why = "it contains '@{' or is '@'"
    elif name.startswith("/") or name.endswith("/") or "//" in name:
        why = "it starts or ends with '/' or contains '//'"
    elif name.endswith((".", ".lock")) or any(p.startswith(".") for p in name.split("/")):
        why = "a part of it starts with '.' or it ends with '.' or '.lock'"
    elif name == "HEAD":
        why = "HEAD is not a branch"
    elif len(name) > 200:
        why = "it is longer than 200 characters"
    if why is None:
        try:
            res = run(["git", "check-ref-format", "--branch", name])
        except FileNotFoundError:
            raise GitError("git is not installed", "install git: sudo dnf install git") from None
        if res.returncode != 0:
            why = "git check-ref-format refuses it"
    if why:
        raise BadName(f"invalid branch name {shown}: {why}", NAME_REMEDY)
    return name


def list_worktrees(repo: Path) -> list[Worktree]:
    out = _git(repo, "worktree", "list", "--porcelain").stdout
    result: list[Worktree] = []
    for block in out.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value
        if "worktree" not in fields:
            continue
        branch = fields.get("branch", "").removeprefix("refs/heads/") or None
        result.append(Worktree(Path(fields["worktree"]), branch, fields.get("HEAD", ""), not result))
    return result


def find_worktree(repo: Path, branch: str) -> Worktree | None:
    return next((w for w in list_worktrees(repo) if w.branch == branch), None)


def state(wt: Worktree) -> WorktreeState:
    dirty = bool(_git(wt.path, "status", "--porcelain", "--untracked-files=normal").stdout.strip())
    ahead = behind = None
    if wt.branch:
        res = _git(
            wt.path, "rev-list", "--left-right", "--count", f"{wt.branch}...{wt.branch}@{{upstream}}", check=False
        )
        if res.returncode == 0:
            a, b = res.stdout.split()
            ahead, behind = int(a), int(b)
    return WorktreeState(dirty, ahead, behind)


def worktree_path(worktrees_dir: Path, branch: str) -> Path:
    path = (worktrees_dir / branch).resolve()
    base = worktrees_dir.resolve()
    if path == base or base not in path.parents:
        raise BadName(f"branch {branch!r} would put its worktree outside {base}", NAME_REMEDY)
    return path


def _remote_branches(repo: Path, branch: str) -> list[str]:
    out = _git(repo, "for-each-ref", "--format=%(refname:short)", f"refs/remotes/*/{branch}").stdout
    return [r for r in out.split() if r.split("/", 1)[1:] == [branch]]


def add_worktree(repo: Path, branch: str, path: Path, sink: Sink, from_ref: str | None = None) -> Worktree:
    """Check ``branch`` out at ``path``: the local branch, else a remote one, else a new one."""
    if path.exists() and any(path.iterdir()):
        raise Refused(
            f"{path} already exists and is not a worktree of {branch!r}", f"move it away or remove it: {path}"
        )
    local = _git(repo, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}", check=False).returncode == 0
    if local:
        if from_ref:
            raise Refused(f"branch {branch!r} already exists; --from applies to new branches only", "drop --from")
        args = ["worktree", "add", str(path), branch]
        how = "existing branch"
    else:
        remotes = _remote_branches(repo, branch)
        if from_ref:
            if from_ref.startswith("-") or _BAD_CHARS.search(from_ref.replace("^", "").replace("~", "")):
                raise BadName(f"--from {from_ref!r} is not a revision", "e.g. --from main or --from origin/main")
            if _git(repo, "rev-parse", "--verify", "--quiet", f"{from_ref}^{{commit}}", check=False).returncode != 0:
                raise NotFound(f"--from {from_ref!r} is not a commit in this repository", "git log --oneline")
            args = ["worktree", "add", "-b", branch, str(path), from_ref]
            how = f"new branch from {from_ref}"
        elif len(remotes) == 1:
            args = ["worktree", "add", "--track", "-b", branch, str(path), remotes[0]]
            how = f"tracking {remotes[0]}"
        elif len(remotes) > 1:
            raise Refused(
                f"branch {branch!r} exists on several remotes: {', '.join(remotes)}",
                f"create it from one: --from {remotes[0]}",
            )
        else:
            args = ["worktree", "add", "-b", branch, str(path), "HEAD"]
            how = "new branch from HEAD"
    made = [d for d in (path, *path.parents) if not d.exists()]  # what a failure must take back
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        res = _git(repo, *args)
    except (DevboxError, OSError) as exc:
        free = _free_bytes(path)
        _roll_back(repo, branch, created_branch=not local, made=made)
        if isinstance(exc, OSError):
            raise _os_error(exc, f"creating {path}") from None
        if free is not None and free < 16 << 20:  # git only says "unable to write file"
            raise DiskFull(
                f"disk full while checking out {branch!r} into {path.parent} ({free // 1024} KiB free)",
                "free disk space (or set paths.worktrees elsewhere) and run the command again",
            ) from None
        raise
    for line in (res.stdout + res.stderr).splitlines():
        sink(LogLine("git", line))
    wt = find_worktree(repo, branch)
    if wt is None:
        raise GitError(f"git worktree add did not create a worktree for {branch!r}", "run `git worktree list`")
    sink(LogLine("git", f"worktree {path} ({how})"))
    return wt


def _roll_back(repo: Path, branch: str, *, created_branch: bool, made: list[Path]) -> None:
    """Undo a failed ``worktree add``: its directories, git's admin entry, the new branch."""
    for d in made:  # innermost first
        shutil.rmtree(d, ignore_errors=True)
    _git(repo, "worktree", "prune", check=False)
    if created_branch and find_worktree(repo, branch) is None:
        _git(repo, "branch", "-D", branch, check=False)


def _free_bytes(path: Path) -> int | None:
    for d in (path, *path.parents):
        if d.exists():
            try:
                st = os.statvfs(d)
            except OSError:
                return None
            return st.f_bavail * st.f_frsize
    return None


def _os_error(exc: OSError, doing: str) -> DevboxError:
    if exc.errno == errno.ENOSPC:
        return DiskFull(f"disk full while {doing}", "free disk space and run the command again")
    return DevboxError(f"{doing} failed: {exc.strerror or exc}", "check the path and its permissions")


def unique_commits(repo: Path, branch: str) -> int:
    """How many commits of ``branch`` are on no other branch and no remote (capped at 100)."""
    res = _git(
        repo,
        "rev-list",
        "--max-count=100",
        f"refs/heads/{branch}",
        "--not",
        f"--exclude={branch}",  # --branches matches names without refs/heads/
        "--branches",
        "--remotes",
    )
    return len(res.stdout.split())


def remove_worktree(repo: Path, wt: Worktree, *, force: bool, delete_branch: bool, sink: Sink) -> None:
    if wt.is_main:
        raise Refused(f"{wt.path} is the main checkout, not a linked worktree", "remove linked worktrees only")
    if not force:
        if state(wt).dirty:
            raise Refused(f"worktree {wt.path} has uncommitted changes", "commit or stash them, or pass --force")
        if wt.branch and (n := unique_commits(repo, wt.branch)):
            raise Refused(
                f"branch {wt.branch!r} has {n}{'+' if n >= 100 else ''} commit(s) on no other branch or remote",
                "push or merge them, or pass --force (the branch itself is kept)",
            )
    _git(repo, "worktree", "remove", *(["--force"] if force else []), str(wt.path))
    sink(LogLine("git", f"removed worktree {wt.path}"))
    if delete_branch and wt.branch:
        _git(repo, "branch", "-D" if force else "-d", wt.branch)
        sink(LogLine("git", f"deleted branch {wt.branch}"))


def identity(repo: Path) -> dict[str, str]:
    """The host's git author identity, for commits made inside a container."""
    env: dict[str, str] = {}
    for key, names in (
        ("user.name", ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME")),
        ("user.email", ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL")),
    ):
        value = _git(repo, "config", "--get", key, check=False).stdout.strip()
        if value:
            env.update(dict.fromkeys(names, value))
    return env
