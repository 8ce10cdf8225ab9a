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

from devbox.core import git, transfer
from devbox.core.errors import DevboxError, NotFound, Refused
from devbox.core.events import Reporter, Sink, Subject, null_sink
from devbox.core.session import Devbox

REMOTE_REPOS = "repos"  # pushed branches land in ~/repos/<repo name> in the VM


def target(session: Devbox) -> transfer.Target:
    """Where ssh goes for this checkout (``vm.ssh``, else the VM's address)."""
    return transfer.target(session.settings, session.user.name)


def ssh_argv(session: Devbox, command: list[str], *, tty: bool) -> list[str]:
    return transfer.ssh_argv(target(session), command, tty=tty)


def vm_ssh(session: Devbox, command: list[str], *, tty: bool) -> int:
    """A shell (or ``command``) in the VM on this terminal; the remote exit code comes back."""
    return transfer.interactive(target(session), command, tty=tty)


def _home(t: transfer.Target, path: str) -> str | None:
    return transfer.remote_home(t) if os.path.isabs(path) else None


def _announce_deletes(t: transfer.Target, src: str, dest: str, report: Reporter, cancel: threading.Event) -> None:
    dry = transfer.rsync(t, src, dest, report, cancel, delete=True, dry_run=True)
    for gone in dry.deleted:
        report.log(f"will delete {gone}")


def dir_push(
    session: Devbox, local: Path, remote: str | None = None, *, delete: bool = False, dry_run: bool = False,
    allow_outside_home: bool = False, sink: Sink = null_sink, cancel: threading.Event | None = None,
) -> transfer.Synced:  # fmt: skip
    """``local``'s contents into ``remote`` (default: a same-named directory in the VM user's home)."""
    cancel = cancel or threading.Event()
    if not local.is_dir():
        raise NotFound(f"local directory {local} does not exist", "give an existing directory")
    remote = remote if remote is not None else local.resolve().name
    t = target(session)
    transfer.remote_path(remote, _home(t, remote), allow_outside_home=allow_outside_home)
    report = Reporter(sink, "dir-push", Subject("vm", t.alias))
    src = str(local.absolute()) + "/"
    dest = f"{t.login}:{remote.rstrip('/')}/"
    report.step("start", f"{local} → {t.alias}:{remote}" + (" (dry run)" if dry_run else ""))
    if delete and not dry_run:
        _announce_deletes(t, src, dest, report, cancel)
    res = transfer.rsync(t, src, dest, report, cancel, delete=delete, dry_run=dry_run)
    for line in res.changes if dry_run else ():
        report.log(line)
    report.step("done", _summary(res))
    return res


def dir_pull(
    session: Devbox, remote: str, local: Path | None = None, *, delete: bool = False, dry_run: bool = False,
    force: bool = False, allow_outside_home: bool = False, sink: Sink = null_sink,
    cancel: threading.Event | None = None,
) -> transfer.Synced:  # fmt: skip
    """``remote``'s contents into ``local`` (default: a same-named directory here). Refuses to
    overwrite a file with uncommitted git changes unless ``force``."""
    cancel = cancel or threading.Event()
    t = target(session)
    transfer.remote_path(remote, _home(t, remote), allow_outside_home=allow_outside_home)
    local = local if local is not None else Path(Path(remote.rstrip("/")).name or "vm-pull")
    report = Reporter(sink, "dir-pull", Subject("vm", t.alias))
    src = f"{t.login}:{remote.rstrip('/')}/"
    dest = str(local.absolute()) + "/"
    report.step("start", f"{t.alias}:{remote} → {local}" + (" (dry run)" if dry_run else ""))
    plan = transfer.rsync(t, src, dest, report, cancel, delete=delete, dry_run=True)
    if not force:
        dirty = _dirty_targets(local, plan.changes)
        if dirty:
            raise Refused(
                f"pull would overwrite {len(dirty)} file(s) with uncommitted changes: {', '.join(dirty[:5])}",
                "commit or stash them first, or pass --force",
            )
    if dry_run:
        for line in plan.changes:
            report.log(line)
        report.step("done", _summary(plan))
        return plan
    for gone in plan.deleted:
        report.log(f"will delete {gone}")
    res = transfer.rsync(t, src, dest, report, cancel, delete=delete, dry_run=False)
    report.step("done", _summary(res))
    return res


def _dirty_targets(local: Path, changes: tuple[str, ...]) -> list[str]:
    """Which of the files rsync would write or delete have uncommitted changes in git."""
    if not local.is_dir():
        return []
    try:
        dirty = git.dirty_paths(local)
    except DevboxError:
        return []  # not a git worktree: nothing git could lose
    touched = []
    for line in changes:
        name = transfer.item_name(line)
        if (local / name).resolve() in dirty:
            touched.append(name)
    return touched


def _summary(res: transfer.Synced) -> str:
    what = "would change" if res.dry_run else "sent"
    n = len([c for c in res.changes if not c.startswith("*deleting")]) if res.dry_run else res.files
    deleted = f", {len(res.deleted)} deleted" if res.deleted else ""
    return f"{what} {n} file(s){deleted}; {res.bytes_sent} bytes out, {res.bytes_received} in"


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
    # what the VM has now, so the next pull and push compare against it
    git.update_ref(repo, f"refs/remotes/vm/{name}", after)
    commits, files = git.moved(repo, before, after)
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
        forwarded = _fast_forward(session, name, after, report)
    report.step("done", f"vm/{name}: {commits} commit(s), {len(files)} file(s) moved"
                + (f"; {name} fast-forwarded" if forwarded else ""))  # fmt: skip
    return Moved(name, before, after, commits, files, forwarded)


def _fast_forward(session: Devbox, name: str, new: str, report: Reporter) -> bool:
    repo = session.settings.repo
    old = git.rev(repo, f"refs/heads/{name}")
    if old == new:
        return False
    if old and not git.is_ancestor(repo, old, new):
        raise Refused(f"{name} and vm/{name} have diverged: not a fast-forward", f"merge or rebase onto vm/{name}")
    wt = git.find_worktree(repo, name)
    if wt is not None:
        if git.dirty_paths(wt.path):
            raise Refused(f"{wt.path} has uncommitted changes: {name} not moved", "commit or stash them, then --ff")
        git.fast_forward_checkout(wt.path, new)
    else:
        git.update_ref(repo, f"refs/heads/{name}", new, old)
    report.log(f"{name} fast-forwarded to {new[:12]}")
    return True
