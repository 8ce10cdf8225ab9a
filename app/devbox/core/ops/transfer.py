"""Moving work in and out of the VM: ssh, directories (rsync) and branches (git over ssh).

Nothing is changed on either side when a check fails: every refusal (a missing local
directory, a remote path outside the home, a pull that would overwrite uncommitted work, a
branch that does not exist) happens before rsync or git runs. ``--delete`` is listed by a
dry run before the real one.
"""

from __future__ import annotations

import os
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devbox.core import git, hosts, transfer
from devbox.core.errors import DevboxError, NotFound, Refused
from devbox.core.events import Reporter, Sink, Subject, null_sink
from devbox.core.session import Devbox

REMOTE_REPOS = "repos"  # pushed branches land in ~/repos/<repo name> in the VM


def target(session: Devbox) -> transfer.Target:
    """Where ssh goes for this checkout (``vm.ssh``, else the VM's address; through the
    host when the VM lives on one)."""
    spec = session.vm_host
    if spec is None or session.settings.vm.ssh:
        return transfer.target(session.settings, session.user.name)
    jump = hosts.target(session.settings, spec)
    return transfer.target(session.settings, session.user.name, session.libvirt_uri, jump)


def ssh_argv(session: Devbox, command: list[str], *, tty: bool) -> list[str]:
    return transfer.ssh_argv(target(session), command, tty=tty)


def vm_ssh(session: Devbox, command: list[str], *, tty: bool) -> int:
    """A shell (or ``command``) in the VM on this terminal; the remote exit code comes back."""
    return transfer.interactive(target(session), command, tty=tty)


def _home(t: transfer.Target, path: str) -> str | None:
    return transfer.remote_home(t) if os.path.isabs(path) else None


def _announce_deletes(
    t: transfer.Target, src: str, dest: str, report: Reporter, cancel: threading.Event, **opts: Any
) -> None:
    dry = transfer.rsync(t, src, dest, report, cancel, delete=True, dry_run=True, **opts)
    for gone in dry.deleted:
        report.log(f"will delete {gone}")


def push_excludes(session: Devbox, local: Path, *, include_git: bool) -> list[str]:
    """What a push never sends: ``.git`` (unless asked for), and devbox's own ``.build/``
    with the project's private SSH key, wherever they sit under ``local``."""
    out = [] if include_git else [".git"]
    root = local.resolve()
    for private in (session.settings.build_path(), session.settings.build_path("ssh", "id_ed25519")):
        p = Path(os.path.abspath(private)).resolve()
        if p == root:
            raise Refused(f"{local} is devbox's own build directory (disk, state, the project key)",
                          "push your project's directories, not .build/")  # fmt: skip
        if p.is_relative_to(root):
            out.append("/" + glob_escape(str(p.relative_to(root))) + ("/" if p.is_dir() else ""))
    return out


def glob_escape(path: str) -> str:
    """A literal path as an rsync pattern (``*?[`` and ``\\`` are special there)."""
    return "".join(f"\\{c}" if c in "*?[\\" else c for c in path)


def is_checkout_root(path: Path) -> bool:
    """A git checkout's top (a ``.git`` directory or a worktree's ``.git`` file in it)."""
    return (path / ".git").exists()


def _local_dir(local: Path) -> None:
    if not local.exists():
        raise NotFound(f"local directory {local} does not exist", "give an existing directory")
    if not local.is_dir():
        raise Refused(f"{local} is a file, not a directory", "give the directory that holds it")


def dir_push(
    session: Devbox, local: Path, remote: str | None = None, *, delete: bool = False, dry_run: bool = False,
    allow_outside_home: bool = False, include_git: bool = False, include_ignored: bool = False,
    sink: Sink = null_sink, cancel: threading.Event | None = None,
) -> transfer.Synced:  # fmt: skip
    """``local``'s contents into ``remote`` (default: a same-named directory in the VM user's
    home): what git would track (``.gitignore`` respected unless ``include_ignored``), never
    ``.git`` (unless ``include_git``), ``.build/`` or the project key."""
    cancel = cancel or threading.Event()
    _local_dir(local)
    excludes = push_excludes(session, local, include_git=include_git)
    remote = remote if remote is not None else local.resolve().name
    t = target(session)
    remote = transfer.remote_path(remote, _home(t, remote), allow_outside_home=allow_outside_home)
    report = Reporter(sink, "dir-push", Subject("vm", t.alias))
    src = str(local.absolute()) + "/"
    dest = f"{t.login}:{remote.rstrip('/')}/"
    opts: dict[str, Any] = {"excludes": excludes, "gitignore": not include_ignored}
    report.step("start", f"{local} → {t.alias}:{remote}" + (" (dry run)" if dry_run else ""))
    if delete and not dry_run:
        _announce_deletes(t, src, dest, report, cancel, **opts)
    # a plain push is counted by --stats: itemizing 2,000 files costs time nobody reads
    res = transfer.rsync(t, src, dest, report, cancel, delete=delete, dry_run=dry_run,
                         itemize=dry_run or delete, **opts)  # fmt: skip
    _report_changes(res, report)
    report.step("done", res.summary())
    return res


def plan_dir_push(
    session: Devbox, local: Path, remote: str | None = None, *, sink: Sink = null_sink,
    cancel: threading.Event | None = None,
) -> transfer.Synced:  # fmt: skip
    """What ``dir_push`` would send (a dry run, quiet): the dashboard shows its size first."""
    return dir_push(session, local, remote, dry_run=True, sink=sink, cancel=cancel)


def _report_changes(res: transfer.Synced, report: Reporter) -> None:
    """A dry run's changes, each once, as log lines in rsync's order (the faces print the
    summary only). A real run reports its counts: 2,000 lines of "sent" would bury them."""
    if not res.dry_run:
        return
    for line in res.changes:
        report.log(line)


def dir_pull(
    session: Devbox, remote: str, local: Path | None = None, *, delete: bool = False, dry_run: bool = False,
    force: bool = False, allow_outside_home: bool = False, include_git: bool = False, into_checkout: bool = False,
    sink: Sink = null_sink, cancel: threading.Event | None = None,
) -> transfer.Synced:  # fmt: skip
    """``remote``'s contents into ``local`` (default: a same-named directory here).

    Never writes into a ``.git`` directory (unless ``include_git``), refuses a git
    checkout's root unless ``into_checkout``, keeps the local owner (files belong to whoever
    pulls, never to the VM user's UID), and refuses to overwrite or delete a file with
    uncommitted git changes unless ``force``."""
    cancel = cancel or threading.Event()
    t = target(session)
    remote = transfer.remote_path(remote, _home(t, remote), allow_outside_home=allow_outside_home)
    local = local if local is not None else Path(Path(remote.rstrip("/")).name or "vm-pull")
    if local.exists() and not local.is_dir():
        raise Refused(f"{local} is a file, not a directory", "give a directory to pull into")
    if is_checkout_root(local) and not into_checkout:
        raise Refused(
            f"{local} is the root of a git checkout: a pull writes over its files",
            "pull into another directory, or pass --into-checkout (its .git is never written; "
            "files with uncommitted changes are refused)",
        )
    report = Reporter(sink, "dir-pull", Subject("vm", t.alias))
    src = f"{t.login}:{remote.rstrip('/')}/"
    dest = str(local.absolute()) + "/"
    opts: dict[str, Any] = {"excludes": [] if include_git else [".git"], "keep_owner": False}
    report.step("start", f"{t.alias}:{remote} → {local}" + (" (dry run)" if dry_run else ""))
    plan = transfer.rsync(t, src, dest, report, cancel, delete=delete, dry_run=True, **opts)
    if not force:
        _refuse_dirty(local, plan)
    if dry_run:
        _report_changes(plan, report)
        report.step("done", plan.summary())
        return plan
    for gone in plan.deleted:
        report.log(f"will delete {gone}")
    res = transfer.rsync(t, src, dest, report, cancel, delete=delete, dry_run=False, **opts)
    _report_changes(res, report)
    report.step("done", res.summary())
    return res


def _refuse_dirty(local: Path, plan: transfer.Synced) -> None:
    """Refuse, naming them, when files the pull would overwrite or delete have uncommitted
    changes. Both sides are the file system's own names (git's ``-z`` list, rsync's
    escapes decoded), so a newline or a non-UTF-8 byte in a name is compared exactly."""
    if not local.is_dir():
        return
    try:
        dirty = git.dirty_paths(local)
    except DevboxError:
        return  # not a git worktree: nothing git could lose
    root = local.resolve()

    def hit(names: tuple[str, ...]) -> list[str]:
        return [n for n in names if (root / n).resolve() in dirty]

    overwrite, delete = hit(plan.written), hit(plan.deleted)
    if overwrite or delete:
        said = [f"overwrite {len(overwrite)}: {', '.join(map(repr, overwrite[:5]))}" if overwrite else "",
                f"delete {len(delete)}: {', '.join(map(repr, delete[:5]))}" if delete else ""]  # fmt: skip
        raise Refused(
            f"pull would {' and '.join(x for x in said if x)} file(s) with uncommitted changes",
            "commit or stash them first, or pass --force",
        )


# -- branches ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moved:
    branch: str
    before: str  # "" when the ref did not exist
    after: str
    commits: int
    files: tuple[str, ...]
    fast_forwarded: bool = False  # git_pull --ff moved the local branch


def _remote_repo(session: Devbox) -> str:
    return f"{REMOTE_REPOS}/{session.settings.repo_name}"


def _branch(session: Devbox, branch: str | None, cwd: Path) -> str:
    name = branch or git.current_branch(cwd)
    if not name:
        raise Refused("HEAD is detached: there is no current branch", "name the branch: ./vm-git-push.sh BRANCH")
    if not git.rev(session.settings.repo, f"refs/heads/{name}"):
        raise NotFound(f"branch {name!r} does not exist here", "git branch --list shows the branches")
    return name


def git_push(
    session: Devbox, branch: str | None = None, *, cwd: Path | None = None, sink: Sink = null_sink,
    cancel: threading.Event | None = None,
) -> Moved:  # fmt: skip
    """Push BRANCH into ~/repos/<repo> in the VM: a non-bare repository with
    ``receive.denyCurrentBranch=updateInstead``, so the VM's checkout follows a push of its
    branch and git refuses the push when that checkout has uncommitted changes."""
    cancel = cancel or threading.Event()
    repo = session.settings.repo
    name = _branch(session, branch, cwd or Path.cwd())
    t = target(session)
    report = Reporter(sink, "git-push", Subject("vm", t.alias))
    remote = _remote_repo(session)
    q = shlex.quote(remote)
    init = (
        f"test -d {q}/.git || {{ git init -q -b {shlex.quote(name)} {q} && "
        f"git -C {q} config receive.denyCurrentBranch updateInstead; }}"
    )
    transfer.run_remote(t, ["sh", "-c", init], f"making ~/{remote}", timeout=t.timeout + 60, cancel=cancel)
    before = git.rev(repo, f"refs/remotes/vm/{name}")
    report.step("start", f"{name} → {t.alias}:~/{remote}")
    refspec = f"refs/heads/{name}:refs/heads/{name}"
    transfer.git_over_ssh(
        t, repo, ["push", "--porcelain", transfer.git_url(t, remote), refspec], report, cancel, "push"
    )
    after = git.rev(repo, f"refs/heads/{name}")
    # counted before the ref moves: the commits no branch the VM is known to hold reaches
    commits, files = git.moved_beyond(repo, after, "refs/remotes/vm/")
    # what the VM has now, so the next pull and push compare against it
    git.update_ref(repo, f"refs/remotes/vm/{name}", after)
    report.step("done", f"{name}: {commits} commit(s), {len(files)} file(s) moved")
    return Moved(name, before, after, commits, files)


def git_pull(
    session: Devbox, branch: str | None = None, *, ff: bool = False, cwd: Path | None = None, sink: Sink = null_sink,
    cancel: threading.Event | None = None,
) -> Moved:  # fmt: skip
    """Fetch BRANCH from the VM into ``refs/remotes/vm/BRANCH``. Never moves a local branch
    unless ``ff`` and it is a fast-forward, and never touches a dirty worktree."""
    cancel = cancel or threading.Event()
    repo = session.settings.repo
    name = branch or git.current_branch(cwd or Path.cwd())
    if not name:
        raise Refused("HEAD is detached: there is no current branch", "name the branch: ./vm-git-pull.sh BRANCH")
    git.check_branch_name(name)
    t = target(session)
    report = Reporter(sink, "git-pull", Subject("vm", t.alias))
    remote = _remote_repo(session)
    before = git.rev(repo, f"refs/remotes/vm/{name}")
    report.step("start", f"{t.alias}:~/{remote} {name} → vm/{name}")
    refspec = f"+refs/heads/{name}:refs/remotes/vm/{name}"
    transfer.git_over_ssh(
        t, repo, ["fetch", "--no-tags", transfer.git_url(t, remote), refspec], report, cancel, "fetch"
    )
    after = git.rev(repo, f"refs/remotes/vm/{name}")
    commits, files = git.moved(repo, before, after)
    forwarded = False
    if ff:
        forwarded = fast_forward(session, name, after, report)
    report.step("done", f"vm/{name}: {commits} commit(s), {len(files)} file(s) moved"
                + (f"; {name} fast-forwarded" if forwarded else ""))  # fmt: skip
    return Moved(name, before, after, commits, files, forwarded)


def fast_forward(session: Devbox, name: str, new: str, report: Reporter, source: str = "") -> bool:
    """Move the local branch ``name`` to ``new`` (fetched into ``source``) only when that is
    a fast-forward, and never under uncommitted changes in its worktree."""
    source = source or f"vm/{name}"
    repo = session.settings.repo
    old = git.rev(repo, f"refs/heads/{name}")
    if old == new:
        return False
    if old and not git.is_ancestor(repo, old, new):
        raise Refused(f"{name} and {source} have diverged: not a fast-forward", f"merge or rebase onto {source}")
    wt = git.find_worktree(repo, name)
    if wt is not None:
        if git.dirty_paths(wt.path):
            raise Refused(f"{wt.path} has uncommitted changes: {name} not moved", "commit or stash them, then --ff")
        git.fast_forward_checkout(wt.path, new)
    else:
        git.update_ref(repo, f"refs/heads/{name}", new, old)
    report.log(f"{name} fast-forwarded to {new[:12]}")
    return True
