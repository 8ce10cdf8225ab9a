"""An environment's own git directory: what an agent's git writes, kept apart from the
host's repository.

Why it exists: an environment's agent is untrusted, and git reads a repository's config,
hooks and attributes as instructions (``core.fsmonitor``, ``core.hooksPath``, drivers,
``include.path``, ...). Were the main repository's ``.git`` mounted into the environment,
whatever the agent wrote there would run on the host at the next ``git status``, the
user's or devbox's. So an environment never sees the main ``.git``; it gets a git
directory of its own, which no git process on the host ever opens:

- ``.build/gitdirs/<container>/git``: the environment's git directory, mounted read-write
  at the same path inside. Its own ``HEAD``, ``index``, config, hooks and refs (the branch
  and its base); the main repository's objects are reached read-only through
  ``objects/info/alternates`` (the main ``objects`` directory is mounted read-only), so a
  ``gc --prune=now`` inside can drop only the environment's own objects.
- ``.build/gitdirs/<container>/dotgit``: ``gitdir: <that git directory>``, mounted
  read-only over the worktree's ``.git`` file inside. On the host the worktree's ``.git``
  still names the main repository's admin directory: the user's own git in the worktree
  reads only the host's config.
- ``.build/gitdirs/<container>/synced``: the commit devbox last brought to the host
  (host-only, never mounted).

The agent's commits come back with ``sync``: ``git fetch`` on the host with the upload side
run *inside the environment* (``podman exec ... git upload-pack``, git's ext transport), so
what the agent planted in its git directory (config, hooks, symlinks, alternates) is read
only where the agent already is; the host's git receives a pack, checked object by object
(``fetch.fsckObjects``), into ``refs/devbox/env/<container>`` and then moves the branch,
which keeps its reflog: a rewrite inside can be undone on the host.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from devbox.core import git, proc
from devbox.core.config import Settings
from devbox.core.errors import DevboxError
from devbox.core.events import Reporter

SHA = frozenset("0123456789abcdef")
MAX_REF_FILE = 1 << 20  # packed-refs read: at most this much (the agent writes it)
SYNC_TIMEOUT = 120.0  # seconds for one fetch from an environment


@dataclass(frozen=True)
class EnvGit:
    """Where an environment's git lives on the host (the same paths inside)."""

    root: Path  # .build/gitdirs/<container>

    @property
    def gitdir(self) -> Path:
        return self.root / "git"

    @property
    def dotgit(self) -> Path:
        return self.root / "dotgit"

    @property
    def synced_file(self) -> Path:
        return self.root / "synced"

    @property
    def failed_file(self) -> Path:  # the environment's commit whose fetch failed (host-only)
        return self.root / "failed"

    def exists(self) -> bool:
        return self.gitdir.is_dir() and self.dotgit.is_file()


def of(settings: Settings, container: str) -> EnvGit:
    # (not build_path: a look at a branch must not make .build/ where there is none)
    return EnvGit(settings.build_dir / "gitdirs" / container)


def _read_small(dfd: int, name: str, limit: int) -> bytes | None:
    """A regular file's first ``limit`` bytes under ``dfd``, never through a symlink, never
    blocking on a FIFO; None when it is not there or not a regular file."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _open_dir(path: Path, parts: list[str]) -> int | None:
    """``path/parts...`` as a directory fd, each step without following a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    for part in parts:
        try:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nxt
    return fd


def _sha(text: bytes) -> str:
    value = text.strip().decode("ascii", "replace")
    return value if len(value) == 40 and set(value) <= SHA else ""


def read_head(env: EnvGit, branch: str) -> str:
    """The commit the environment's ``refs/heads/<branch>`` names, as its files say (loose
    ref, else packed-refs); "" when it names none. Untrusted input: read without following
    a symlink, bounded, and only a 40-hex value is taken. This is only the trigger for a
    fetch; what reaches the host is what git's upload-pack inside the environment sends."""
    ref = f"refs/heads/{branch}".split("/")
    dfd = _open_dir(env.gitdir, ref[:-1])
    if dfd is not None:
        try:
            loose = _read_small(dfd, ref[-1], 128)
        finally:
            os.close(dfd)
        if loose is not None and _sha(loose):
            return _sha(loose)
    top = _open_dir(env.gitdir, [])
    if top is None:
        return ""
    try:
        packed = _read_small(top, "packed-refs", MAX_REF_FILE) or b""
    finally:
        os.close(top)
    want = "/".join(ref).encode()
    for line in packed.splitlines():
        sha, _, name = line.partition(b" ")
        if name.strip() == want:
            return _sha(sha)
    return ""


def pending(env: EnvGit, branch: str, *, again: bool = False) -> bool:
    """The environment's branch has moved since devbox last brought it to the host (and,
    unless ``again``, is not the commit whose fetch last failed: an agent that names a
    commit its git cannot send must not cost every poll a fetch)."""
    if not env.exists():
        return False
    head = read_head(env, branch)
    return bool(head) and head != synced(env) and (again or head != _recorded(env.failed_file))


def synced(env: EnvGit) -> str:
    return _recorded(env.synced_file)


def _recorded(path: Path) -> str:
    try:
        return _sha(path.read_bytes()[:64])
    except OSError:
        return ""


def _admin_dir(repo: Path, worktree: Path) -> Path | None:
    """The main repository's admin directory of ``worktree`` (``.git/worktrees/<id>``), from
    the worktree's ``.git`` file, accepted only under the main ``.git/worktrees``."""
    try:
        text = (worktree / ".git").read_bytes()[:4096].decode()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("gitdir:"):
        return None
    admin = (worktree / text.split(":", 1)[1].strip()).resolve()
    top = (repo / ".git" / "worktrees").resolve()
    return admin if admin.parent == top else None


CONFIG = """[core]
\trepositoryformatversion = 0
\tfilemode = true
\tbare = false
\tlogallrefupdates = true
"""


def prepare(settings: Settings, container: str, wt: git.Worktree, base: str) -> EnvGit:
    """The environment's git directory, made on the host before its container is created
    (kept when it exists: it holds the agent's own objects and refs, e.g. across
    ``--recreate``). Written with Python alone (no git process): HEAD, a minimal config,
    the alternates line, the branch and its base, the worktree's index (made by the host's
    git) and the repository's hooks (they run inside, as before)."""
    env = EnvGit(settings.build_path("gitdirs", container))  # .build/ made, ignoring itself
    repo = settings.repo
    objects = repo / ".git" / "objects"
    if env.exists():
        return env
    assert wt.branch is not None
    shutil.rmtree(env.root, ignore_errors=True)  # a half-made one (rmtree never follows a symlink)
    g = env.gitdir
    for d in ("objects/info", "objects/pack", "refs/heads", "refs/tags", "hooks", "info"):
        (g / d).mkdir(parents=True, exist_ok=True)
    (g / "HEAD").write_text(f"ref: refs/heads/{wt.branch}\n")
    (g / "config").write_text(CONFIG)
    (g / "objects" / "info" / "alternates").write_text(f"{objects}\n")
    refs = {wt.branch: wt.head}
    if base and base != wt.branch:
        base_head = git.rev(repo, f"refs/heads/{base}")
        if base_head:
            refs[base] = base_head
    for name, sha in refs.items():
        path = g / "refs" / "heads" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{sha}\n")
    admin = _admin_dir(repo, wt.path)
    if admin is not None and (admin / "index").is_file():
        shutil.copyfile(admin / "index", g / "index")
    for src in (repo / ".git" / "hooks").glob("*") if (repo / ".git" / "hooks").is_dir() else ():
        if src.is_file() and not src.name.endswith(".sample"):
            shutil.copy2(src, g / "hooks" / src.name)
    exclude = repo / ".git" / "info" / "exclude"
    if exclude.is_file():
        shutil.copyfile(exclude, g / "info" / "exclude")
    env.dotgit.write_text(f"gitdir: {g}\n")
    env.synced_file.write_text(f"{wt.head}\n")
    return env


def remove(settings: Settings, container: str) -> None:
    shutil.rmtree(of(settings, container).root, ignore_errors=True)


@dataclass(frozen=True)
class Synced:
    branch: str
    before: str  # the host branch's commit before
    after: str  # the environment's commit, now on the host (under refs/devbox/env/...)
    moved: bool  # the host branch moved to it
    diverged: bool = False  # the host branch moved on its own since the last sync: left alone


def devbox_ref(container: str) -> str:
    return f"refs/devbox/env/{container}"


def ext_url(argv: list[str]) -> str:
    """git's ext transport URL running ``argv`` (no shell: git splits on spaces; ``% `` is
    a space inside an argument, ``%%`` a per cent sign)."""
    return "ext::" + " ".join(a.replace("%", "%%").replace(" ", "% ") for a in argv)


def fetch_untrusted(
    repo: Path, url: str, refspec: str, *, cancel: threading.Event | None, timeout: float
) -> proc.Completed:
    """``git fetch`` of one refspec from a repository devbox does not trust (an environment's,
    through ``url``, which runs the upload side there): every object checked as it arrives,
    no tags, submodules, FETCH_HEAD or automatic gc, and nothing the local config could add."""
    return git._git(repo, "-c", "protocol.ext.allow=always", "-c", "fetch.fsckObjects=true",
                "-c", "transfer.fsckObjects=true", "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                "--no-auto-gc", "--no-auto-maintenance", "--no-recurse-submodules", url, refspec,
                check=False, cancel=cancel, timeout=timeout)  # fmt: skip


def sync(
    settings: Settings, container: str, branch: str, worktree: Path, upload_pack: list[str], report: Reporter,
    cancel: threading.Event | None = None, *, again: bool = False,
) -> Synced | None:  # fmt: skip
    """Bring the environment's ``branch`` to the host when its files say it moved (no
    process otherwise). ``upload_pack``: the argv that runs ``git upload-pack <gitdir>``
    inside the environment. The host branch follows when it is where the last sync left it
    (the environment owns its branch: a rewrite inside is taken, the reflog keeps the old
    commit) or when the new commit contains it; otherwise it is left alone and the
    environment's commit waits under ``refs/devbox/env/<container>``."""
    env = of(settings, container)
    if not pending(env, branch, again=again):
        return None
    head = read_head(env, branch)
    last = synced(env)
    repo = settings.repo
    ref = devbox_ref(container)
    res = fetch_untrusted(repo, ext_url(upload_pack), f"+refs/heads/{branch}:{ref}", cancel=cancel,
                              timeout=SYNC_TIMEOUT)  # fmt: skip
    if not res.ok:
        env.failed_file.write_text(f"{head}\n")  # not asked again until it moves (or `devbox fetch`)
        raise DevboxError(
            f"could not bring {branch}'s commits from {container}: {res.last_error()}",
            f"see its branch inside: devbox container exec {branch} -- git log -3; then devbox fetch {branch}",
        )
    after = git.rev(repo, ref)
    before = git.rev(repo, f"refs/heads/{branch}")
    if not after:
        return None
    if before == after:
        env.synced_file.write_text(f"{after}\n")
        return Synced(branch, before, after, moved=False)
    if before and before != last and not git.is_ancestor(repo, before, after):
        report.log(f"{branch} moved on the host and in {container}: the environment's commit "
                   f"{after[:12]} is kept as {ref}")  # fmt: skip
        return Synced(branch, before, after, moved=False, diverged=True)
    git.update_ref(repo, f"refs/heads/{branch}", after, before, message=f"devbox: from {container}")
    env.synced_file.write_text(f"{after}\n")
    if worktree.is_dir():
        git.reset_index(worktree)  # the host's index of the worktree follows its HEAD
    report.log(f"{branch} at {after[:12]} (from {container})", source="git")
    return Synced(branch, before, after, moved=True)
