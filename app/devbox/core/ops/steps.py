"""Steps several operations share: the per-branch lock, making (or reusing) a branch's
worktree, and removing a container with its volumes. Its own module so that the container
and worktree operations both use them without importing each other."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from devbox.core import branch_notes, containers, egress, envgit, git
from devbox.core.containers import Container
from devbox.core.errors import NotFound, Refused
from devbox.core.events import Reporter, Subject
from devbox.core.locks import hold
from devbox.core.ops import egress as egress_ops
from devbox.core.session import Devbox


def branch_lock(session: Devbox, branch: str) -> Path:
    key = hashlib.sha256(branch.encode()).hexdigest()[:16]
    return session.settings.build_path("locks", f"branch-{key}.lock")


UNKNOWN = object()  # ensure_worktree's ``known``: not looked up yet


def ensure_worktree(
    session: Devbox, branch: str, report: Reporter, cancel: threading.Event, from_ref: str | None = None,
    known: git.Worktree | object | None = UNKNOWN,
) -> git.Worktree:  # fmt: skip
    """The branch's worktree, made if missing. ``known``: the caller already looked it up
    (``git worktree list`` runs once per operation)."""
    settings = session.settings
    r = report.about(Subject("worktree", branch))
    wt = git.find_worktree(settings.repo, branch) if known is UNKNOWN else known
    assert wt is None or isinstance(wt, git.Worktree)
    if wt is not None and wt.prunable:
        raise NotFound(
            f"the worktree of {branch!r} at {wt.path} is missing (its directory was deleted)",
            "forget it with `git worktree prune` and run again, or pass --recreate to make it anew",
        )
    if wt is not None:
        if from_ref:
            raise Refused(f"branch {branch!r} already has a worktree at {wt.path}", "drop --from to reuse it")
        r.step("skip", f"{branch} at {wt.path}")
        return wt
    path = git.worktree_path(settings.worktrees_dir, branch)
    r.step("start", f"creating {path}")
    # one `git worktree add` at a time in this repository: git reads every other worktree's
    # admin directory while it adds one, and one being written at that moment made ten
    # start-works at once fail now and then (bench/new_env.py); an add takes tens of ms
    with hold(settings.build_path("locks", "worktree-add.lock"), "adding a worktree", cancel=cancel):
        added = git.add_worktree(settings.repo, branch, path, r, cancel, from_ref)
    record_base(settings.repo, branch, from_ref, added=added)
    wt = added.worktree
    r.step("done", f"{branch} at {wt.path}")
    return wt


def record_base(repo: Path, branch: str, from_ref: str | None, *, added: git.Added | None = None) -> None:
    """The branch a new worktree was started from (``--from`` when it names a local branch,
    else the main checkout's), for ``devbox diff`` and ``devbox merge``; kept if recorded.
    ``added``: what ``git.add_worktree`` learnt (a new branch has no base yet, and the main
    checkout's branch is known): one git call instead of three."""
    if not (added and added.created_branch) and branch_notes.recorded_base(repo, branch):
        return
    if from_ref and git.rev(repo, f"refs/heads/{from_ref}"):
        base = from_ref
    else:
        base = added.main_branch if added else git.current_branch(repo)
    if base and base != branch:
        branch_notes.record_base(repo, branch, base)


def remove_container_record(
    session: Devbox, c: Container, *, force: bool, report: Reporter, keep_var: bool = False
) -> list[str]:
    """Remove ``c`` and its /etc volume (and its /var volume unless ``keep_var``); say what went."""
    if c.running and not force:
        raise Refused(
            f"container {c.name} is running", f"stop it first (devbox container stop {c.branch}) or pass --force"
        )
    podman = session.podman
    podman.remove(c.name, force=force)
    gone = [f"container {c.name}"]
    var_vol, etc_vol = containers.volume_names(c.name)
    for vol in (etc_vol,) if keep_var else (etc_vol, var_vol):
        if podman.remove_volume(vol):
            gone.append(f"volume {vol}")
    gone += egress_ops.unwire(podman, c.name)  # its proxy and network (a recreate makes new ones)
    if not keep_var:  # the record of its agent, its egress and its git directory go with it (the
        # caller has brought its commits to the host first, or named them as lost)
        containers.agent_record(session.settings, c.name).unlink(missing_ok=True)
        egress.drop_record(session.settings.build_dir, c.name)
        envgit.remove(session.settings, c.name)
    report.log(f"removed {', '.join(gone)}", source="podman")
    return gone
