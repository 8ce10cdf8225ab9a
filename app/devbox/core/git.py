"""The git adapter: worktrees of the main repository, and branch-name validation.

Local git (worktrees, refs, status) runs here; git over ssh runs in transfer.py. Branch
names are checked by git's own rules, in Python (no process per keystroke in the dashboard).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from devbox.core.errors import BadName, Cancelled, DevboxError, DiskFull, GitError, NotFound, Refused, ToolMissing
from devbox.core.events import Reporter
from devbox.core.filesystem import free_bytes, os_error
from devbox.core.proc import Completed, run, stream

# git must never stop to ask (a credential prompt would hang a worker) and its messages
# are parsed in English; a pager or external diff named by the caller's environment is not
# devbox's to run
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0", "GIT_EXTERNAL_DIFF": None,
           "GIT_PAGER": "cat", "GIT_EDITOR": "false", "GIT_SEQUENCE_EDITOR": "false", "GIT_ASKPASS": None,
           "SSH_ASKPASS": None}  # fmt: skip
# every git devbox runs on the host runs nothing a repository names: no fsmonitor daemon or
# hook (the environment never sees the main .git, core/envgit.py; this holds for a repository
# someone else could write too), no external diff or text conversion (``HARDENED_DIFF``)
HARDENED = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-c", "core.pager=cat",
            "-c", "core.sshCommand=ssh", "-c", "credential.helper=",
            "-c", "gpg.program=false", "-c", "commit.gpgSign=false", "-c", "tag.gpgSign=false")  # fmt: skip
HARDENED_DIFF = ("--no-ext-diff", "--no-textconv")
STATUS_WORKERS = 8  # git status calls at once: enough to hide latency, few enough for 2 cores

MAX_BRANCH = 200  # a worktree path and a container name are made from it
NAME_REMEDY = "use letters, digits and - _ . / (e.g. feature/login)"
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


@dataclass(frozen=True)
class Worktree:
    path: Path
    branch: str | None  # None: detached HEAD
    head: str
    is_main: bool
    prunable: bool = False  # its directory is gone (deleted by hand); `git worktree prune` forgets it

    @property
    def label(self) -> str:
        return self.branch or f"(detached {self.head[:8]})"


@dataclass(frozen=True)
class WorktreeState:
    changed: int = 0  # tracked files modified, added, deleted, renamed or in conflict
    untracked: int = 0
    files: tuple[str, ...] = ()  # the first few changed or untracked paths
    ahead: int | None = None  # None: no upstream
    behind: int | None = None
    missing: bool = False  # the directory does not exist
    error: str = ""  # git could not tell (the row still lists)

    @property
    def dirty(self) -> bool:
        return bool(self.changed or self.untracked)


WORKTREE_RACE = re.compile(r"failed to read '?\S*worktrees/[^/\s]+/")  # its "locked", commondir, ...
WORKTREE_RACE_WAIT = 5.0  # seconds


def _git(
    repo: Path, *args: str, check: bool = True, cancel: threading.Event | None = None, timeout: float = 120.0,
    errors: str = "replace",
) -> Completed:  # fmt: skip
    deadline = time.monotonic() + WORKTREE_RACE_WAIT
    while True:
        try:
            res = run(
                ["git", *HARDENED, "-C", str(repo), *args],
                tool="git",
                cancel=cancel,
                timeout=timeout,
                env=GIT_ENV,
                errors=errors,
                remedy="a git command hung: check the repository (a stale index.lock?) and run again",
            )
        except ToolMissing:
            raise GitError("git is not installed", "install git: sudo dnf install git") from None
        # another `git worktree add` is writing its admin entry right now: git reads it
        # half-made and dies before changing anything (`worktree add -b` alone does not:
        # add_worktree's own loop); look again shortly
        if res.returncode == 0 or not WORKTREE_RACE.search(res.stderr):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if check and res.returncode != 0:
        msg = res.last_error()
        if "no space left" in res.stderr.lower():
            raise DiskFull(f"git {args[0]}: {msg}", "free disk space and run the command again")
        raise GitError(f"git {args[0]} failed: {msg}", "see the git message; fix it and run the command again")
    return res


def check_branch_name(name: str) -> str:
    """Return ``name`` if it is a branch name devbox will act on, else raise BadName.

    git's own rules (``git check-ref-format --branch``, refs.c), checked here without a
    process (the new-branch dialog checks every keystroke; a test holds the two verdicts
    equal on a list of tricky names), plus devbox's length limit."""
    shown = repr(name)
    parts = name.split("/")
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
    elif name.endswith(".") or any(p.startswith(".") or p.endswith(".lock") for p in parts):
        why = "a part of it starts with '.' or ends with '.lock', or it ends with '.'"
    elif name == "HEAD":
        why = "HEAD is not a branch"
    elif len(name) > MAX_BRANCH:
        why = f"it is {len(name)} characters long, more than {MAX_BRANCH}: shorten it"
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
        path = Path(fields["worktree"])
        gone = "prunable" in fields or not path.is_dir()
        result.append(Worktree(path, branch, fields.get("HEAD", ""), not result, prunable=gone and bool(result)))
    return result


def find_worktree(repo: Path, branch: str) -> Worktree | None:
    return next((w for w in list_worktrees(repo) if w.branch == branch), None)


def state(wt: Worktree, cancel: threading.Event | None = None, sample: int = 5) -> WorktreeState:
    """Dirty counts and ahead/behind from one ``git status --porcelain=v2 --branch``."""
    if wt.prunable or not wt.path.is_dir():
        return WorktreeState(missing=True)
    res = _git(wt.path, "status", "--porcelain=v2", "--branch", "--untracked-files=normal", check=False, cancel=cancel)
    if res.returncode != 0:
        return WorktreeState(error=res.last_error())
    changed = untracked = 0
    files: list[str] = []
    ahead = behind = None
    for line in res.stdout.splitlines():
        if line.startswith("# branch.ab "):
            a, b = line.split()[2:4]
            ahead, behind = int(a), -int(b)
        elif line.startswith(("1 ", "2 ", "u ")):
            changed += 1
            if len(files) < sample:  # 1 XY sub mH mI mW hH hI path; 2 ... path\torig; u ... path
                cut = {"1": 8, "2": 9, "u": 10}[line[0]]
                files.append(line.split(" ", cut)[-1].split("\t")[0])
        elif line.startswith("? "):
            untracked += 1
            if len(files) < sample:
                files.append(line[2:])
    return WorktreeState(changed, untracked, tuple(files), ahead, behind)


@dataclass(frozen=True)
class Activity:
    """When the worktree last committed, and how far it is from its base branch."""

    last_commit: int | None = None  # epoch seconds
    insertions: int = 0
    deletions: int = 0
    files: int = 0


def activity(wt: Worktree, base: str | None) -> Activity:
    """Last commit time and the diff stat of what merging HEAD would change on ``base``
    (three quick git calls; the dashboard caches the answer by HEAD and the base's commit)."""
    if wt.prunable or not wt.path.is_dir():
        return Activity()
    res = _git(wt.path, "log", "-1", "--format=%ct", "HEAD", check=False)
    last = int(res.stdout.strip()) if res.ok and res.stdout.strip().isdigit() else None
    if not base or base == wt.branch:
        return Activity(last)
    # what landing would change on the base, by content: a branch squashed or rebased onto
    # it already has its commits unmerged yet changes nothing (base...HEAD would still count
    # them). A conflicting merge has no tree of its own: its changes since the merge base
    merged = _git(wt.path, "merge-tree", "--write-tree", "--no-messages", base, "HEAD", check=False)
    tree = merged.stdout.split("\n", 1)[0].strip() if merged.returncode == 0 else ""
    span = [base, tree] if tree else [f"{base}...HEAD"]
    diff = _git(wt.path, "diff", *HARDENED_DIFF, "--shortstat", *span, check=False)
    numbers = {m.group(2)[:3]: int(m.group(1)) for m in re.finditer(r"(\d+) (file|insert|delet)", diff.stdout)}
    return Activity(last, numbers.get("ins", 0), numbers.get("del", 0), numbers.get("fil", 0))


def states(wts: list[Worktree], cancel: threading.Event | None = None) -> list[WorktreeState]:
    """``state`` of every worktree, a few at a time (200 worktrees stay correct and quick)."""
    if len(wts) <= 1:
        return [state(w, cancel) for w in wts]
    from concurrent.futures import ThreadPoolExecutor  # only for lists (~9 ms to import)

    with ThreadPoolExecutor(max_workers=min(STATUS_WORKERS, len(wts))) as pool:
        return list(pool.map(lambda w: state(w, cancel), wts))


def worktree_path(worktrees_dir: Path, branch: str) -> Path:
    path = (worktrees_dir / branch).resolve()
    base = worktrees_dir.resolve()
    if path == base or base not in path.parents:
        raise BadName(f"branch {branch!r} would put its worktree outside {base}", NAME_REMEDY)
    return path


def _branch_refs(repo: Path, branch: str) -> tuple[bool, list[str]]:
    """Whether ``branch`` is a local branch, and the remotes' branches of that name
    (``origin/NAME``), from one git call. for-each-ref also matches refs below a pattern
    (``NAME/sub``): only exact names count."""
    out = _git(repo, "for-each-ref", "--format=%(refname)", f"refs/heads/{branch}", f"refs/remotes/*/{branch}").stdout
    refs = out.split()
    remotes = [r.removeprefix("refs/remotes/") for r in refs if r.startswith("refs/remotes/")]
    return f"refs/heads/{branch}" in refs, [r for r in remotes if r.split("/", 1)[1:] == [branch]]


class Added(NamedTuple):
    """What ``add_worktree`` made, and what it learnt on the way (its caller records the
    new branch's base without asking git again)."""

    worktree: Worktree
    created_branch: bool  # the branch is new (it cannot have a recorded base yet)
    main_branch: str  # the main checkout's branch ("": a detached HEAD)


def add_worktree(
    repo: Path, branch: str, path: Path, report: Reporter, cancel: threading.Event, from_ref: str | None = None
) -> Added:
    """Check ``branch`` out at ``path``: the local branch, else a remote one, else a new one."""
    if path.exists() and any(path.iterdir()):
        raise Refused(
            f"{path} already exists and is not a worktree of {branch!r}", f"move it away or remove it: {path}"
        )
    local, remotes = _branch_refs(repo, branch)
    if local:
        if from_ref:
            raise Refused(f"branch {branch!r} already exists; --from applies to new branches only", "drop --from")
        args = ["worktree", "add", str(path), branch]
        how = "existing branch"
    else:
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
    deadline = time.monotonic() + WORKTREE_RACE_WAIT
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # streamed: git's own messages reach the user in the order git printed them
            done = stream(["git", *HARDENED, "-C", str(repo), *args], report, cancel, source="git", env=GIT_ENV)
        except (DevboxError, OSError) as exc:
            _roll_back(repo, branch, created_branch=not local, made=made)
            if isinstance(exc, OSError):
                raise os_error(exc, f"creating {path}") from None
            raise
        # WORKTREE_RACE with someone else's add (devbox's own take a lock): `-b` has made the
        # branch before git dies on it, so take everything back, then add again
        raced = done.returncode != 0 and not done.cancelled and WORKTREE_RACE.search("\n".join(done.err_tail))
        if not raced or time.monotonic() > deadline:
            break
        _roll_back(repo, branch, created_branch=not local, made=made)
        report.log("another git worktree add was writing its entry at the same moment: adding again")
        time.sleep(0.05)
    if done.returncode != 0 or done.cancelled:
        free = free_bytes(path)
        _roll_back(repo, branch, created_branch=not local, made=made)
        if done.cancelled:
            raise Cancelled(f"interrupted while checking out {branch!r}", "nothing was left behind")
        text = "\n".join(done.tail).lower()
        if "no space left" in text or (free is not None and free < 16 << 20):  # git may only say "unable to write"
            raise DiskFull(
                f"disk full while checking out {branch!r} into {path.parent}"
                + (f" ({free // 1024} KiB free)" if free is not None else ""),
                "free disk space (or set paths.worktrees elsewhere) and run the command again",
            )
        raise GitError(
            f"git worktree add failed: {done.last_error()}", "see the git message; fix it and run the command again"
        )
    wts = list_worktrees(repo)
    wt = next((w for w in wts if w.branch == branch), None)
    if wt is None:
        raise GitError(f"git worktree add did not create a worktree for {branch!r}", "run `git worktree list`")
    report.log(f"worktree {path} ({how})", source="git")
    return Added(wt, created_branch=not local, main_branch=wts[0].branch or "")


def _roll_back(repo: Path, branch: str, *, created_branch: bool, made: list[Path]) -> None:
    """Undo a failed ``worktree add``: its directories, git's admin entry, the new branch."""
    for d in made:  # innermost first
        shutil.rmtree(d, ignore_errors=True)
    _git(repo, "worktree", "prune", check=False)
    if created_branch and find_worktree(repo, branch) is None:
        _git(repo, "branch", "-D", branch, check=False)


def unique_commits(repo: Path, wt: Worktree, limit: int = 100) -> int:
    """Commits reachable from the worktree's HEAD (its branch, or a detached HEAD) that are
    on no other branch and no remote: what removing it without its branch would lose."""
    if wt.branch:
        # --exclude takes the short name: --branches matches names without refs/heads/
        args = [f"refs/heads/{wt.branch}", "--not", f"--exclude={wt.branch}", "--branches", "--remotes"]
    elif wt.head:
        args = [wt.head, "--not", "--branches", "--remotes"]
    else:
        return 0
    res = _git(repo, "rev-list", f"--max-count={limit}", *args)
    return len(res.stdout.split())


def prune(repo: Path) -> None:
    """Forget worktrees whose directories are gone."""
    _git(repo, "worktree", "prune")


def remove_worktree(repo: Path, wt: Worktree, *, force: bool, report: Reporter) -> None:
    """``git worktree remove`` (the caller has already refused to lose work unless forced)."""
    if wt.is_main:
        raise Refused(f"{wt.path} is the main checkout, not a linked worktree", "remove linked worktrees only")
    if wt.prunable:
        prune(repo)
        report.log(f"forgot worktree {wt.path} (its directory was already gone)", source="git")
        return
    _git(repo, "worktree", "remove", *(["--force"] if force else []), str(wt.path))
    report.log(f"removed worktree {wt.path}", source="git")


def delete_branch(repo: Path, branch: str, *, force: bool, report: Reporter) -> None:
    _git(repo, "branch", "-D" if force else "-d", branch)
    report.log(f"deleted branch {branch}", source="git")


def identity(repo: Path) -> dict[str, str]:
    """The host's git author identity, for commits made inside a container."""
    # one git call for both keys (a new environment's start waits for it); the last value
    # of a key wins, as ``git config --get`` answers
    out = _git(repo, "config", "--get-regexp", r"^user\.(name|email)$", check=False).stdout
    found = {key: value.strip() for key, _, value in (line.partition(" ") for line in out.splitlines())}
    env: dict[str, str] = {}
    for key, names in (
        ("user.name", ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME")),
        ("user.email", ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL")),
    ):
        if found.get(key):
            env.update(dict.fromkeys(names, found[key]))
    return env


# -- for transfers (core/ops/transfer.py) --------------------------------------------------


def status_entries(path: Path) -> list[tuple[str, str, str]]:
    """``git status --porcelain=v1 -z`` of the checkout at ``path``: (index state, worktree
    state, path) per file, untracked ones too, names as the file system has them."""
    out = _git(path, "status", "--porcelain=v1", "-z", "--untracked-files=all", errors="surrogateescape").stdout
    found: list[tuple[str, str, str]] = []
    entries = out.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        found.append((entry[0], entry[1], entry[3:]))
        if entry[0] in "RC":  # a rename's source follows
            i += 1
    return found


def dirty_paths(path: Path) -> set[Path]:
    """Files with uncommitted changes (modified, staged or untracked) in the worktree at
    ``path``, named exactly as the file system has them (``-z``: no quoting; bytes kept)."""
    top = Path(_git(path, "rev-parse", "--show-toplevel", errors="surrogateescape").stdout.strip())
    return {(top / name).resolve() for _x, _y, name in status_entries(path)}


def current_branch(path: Path) -> str:
    res = _git(path, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return res.stdout.strip() if res.ok else ""


def rev(repo: Path, ref: str) -> str:
    """The commit ``ref`` names, or "" when there is none."""
    res = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return res.stdout.strip() if res.ok else ""


def moved(repo: Path, before: str, after: str) -> tuple[int, tuple[str, ...]]:
    """Commits and files between two commits (``before`` "" = from nothing)."""
    if not after or before == after:
        return 0, ()
    span = f"{before}..{after}" if before else after
    count = int(_git(repo, "rev-list", "--count", span).stdout.strip() or 0)
    base = before or _git(repo, "hash-object", "-t", "tree", "/dev/null").stdout.strip()
    files = _git(repo, "diff", *HARDENED_DIFF, "--name-only", "-z", base, after).stdout.split("\0")
    return count, tuple(f for f in files if f)


def moved_beyond(repo: Path, after: str, known: str) -> tuple[int, tuple[str, ...]]:
    """Commits reachable from ``after`` that no ref under ``known`` (e.g. ``refs/remotes/vm/``,
    what the other side is known to have) reaches, and the files they touch: what a push of
    a new branch really carries."""
    span = [after, "--not", f"--glob={known}*"]
    count = int(_git(repo, "rev-list", "--count", *span).stdout.strip() or 0)
    out = _git(repo, "log", "--format=", "--name-only", "-z", *span).stdout
    return count, tuple(sorted({f.strip("\n") for f in out.split("\0") if f.strip("\n")}))


def is_ancestor(repo: Path, older: str, newer: str) -> bool:
    return _git(repo, "merge-base", "--is-ancestor", older, newer, check=False).returncode == 0


def update_ref(repo: Path, ref: str, new: str, old: str | None = None, *, message: str = "") -> None:
    """Point ``ref`` at ``new`` (only if it still is ``old``, when given; "" = only if it
    does not exist); ``message`` goes to its reflog."""
    old_arg = [] if old is None else [old or "0" * 40]
    _git(repo, "update-ref", *(["-m", message] if message else []), ref, new, *old_arg)


def reset_index(path: Path) -> None:
    """The index of the checkout at ``path`` back to its HEAD, its files untouched: undoes
    ``git add``, and follows a branch that moved under the checkout (commits that came
    from its environment)."""
    _git(path, "reset", "--quiet", "--mixed", "HEAD", check=False)


def fast_forward_checkout(path: Path, commit: str) -> None:
    """``merge --ff-only`` in the worktree at ``path`` (its branch and files move together)."""
    _git(path, "merge", "--ff-only", "--quiet", commit)


def checkout_root(path: Path) -> Path:
    """The top of the main checkout ``path`` is in: refused in a bare repository, in a
    linked worktree, or outside any repository (each with its fix)."""
    res = _git(path, "rev-parse", "--is-bare-repository", "--absolute-git-dir", "--git-common-dir", check=False)
    lines = res.stdout.split()
    if not res.ok or len(lines) < 3:
        raise NotFound(f"{path} is not in a git repository", f"git init {path}, then run this again")
    if lines[0] == "true":
        raise Refused(f"{path} is a bare repository (no checkout to set up)", "clone it, then run this in the clone")
    git_dir, common = Path(lines[1]), Path(lines[2])
    common = common if common.is_absolute() else (path / common).resolve()
    if git_dir.resolve() != common.resolve():
        raise Refused(f"{path} is in a linked worktree", f"run this in the main checkout, {common.parent}")
    top = _git(path, "rev-parse", "--show-toplevel", check=False)
    if not top.ok:
        raise Refused(f"{path} is inside {git_dir}, not a checkout", "run this in the checkout's directory")
    return Path(top.stdout.strip())


def config_get(repo: Path, key: str) -> str:
    res = _git(repo, "config", "--local", "--get", key, check=False)
    return res.stdout.strip() if res.ok else ""


CONFIG_LOCK_WAIT = 5.0  # seconds: git takes .git/config's lock without waiting; devbox waits for it
_CONFIG_WRITES = threading.Lock()  # (start_several's workers each record a base)


def config_set(repo: Path, key: str, value: str | None) -> None:
    """Set ``key`` in the repository's own config; ``None`` unsets it. Several devbox runs
    at once (ten start-works) each write here: git refuses a config whose lock another
    writer holds ("could not lock config file"), so the write is tried again for a while."""
    args = ("--unset", key) if value is None else (key, value)
    deadline = time.monotonic() + CONFIG_LOCK_WAIT
    while True:
        with _CONFIG_WRITES:  # this process's own writers take turns instead of failing on the lock
            res = _git(repo, "config", "--local", *args, check=False)
        if res.ok or (value is None and res.returncode == 5):  # 5: nothing to unset
            return
        if "could not lock config file" not in res.stderr or time.monotonic() > deadline:
            raise GitError(f"git config failed: {res.last_error()}", "see the git message; fix it and run again")
        time.sleep(0.02)


def create_branch(repo: Path, branch: str, start: str) -> None:
    _git(repo, "branch", branch, start)


def count_commits(repo: Path, *revs: str) -> int:
    """``git rev-list --count REVS`` (e.g. ``a..b``, or ``x --not --branches``)."""
    out = _git(repo, "rev-list", "--count", *revs).stdout.strip()
    return int(out or 0)
