"""Worktree operations: list, add, what removing one would lose, remove."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from devbox.core import containers, git
from devbox.core.containers import Container
from devbox.core.errors import Cancelled, DevboxError, NotFound, Refused
from devbox.core.events import Reporter, Sink, Subject, null_sink
from devbox.core.locks import hold
from devbox.core.ops.envsync import holds_unsynced, sync_branches
from devbox.core.ops.results import Loss, Removed
from devbox.core.ops.steps import branch_lock, ensure_worktree, remove_container_record
from devbox.core.ops.views import Section, WorktreeList, WorktreeLoss, WorktreeRow
from devbox.core.session import Devbox


@dataclass
class StateCache:
    """A poller's memory of each worktree's git state, so that a dashboard left open does
    not run ``git status`` in every worktree every poll: a worktree is asked again when its
    HEAD moved, when it is ``wanted`` (the row someone looks at, an agent whose hooks just
    reported), or when its answer is older than ``max_age`` (edits made without a hook:
    a person's, an agent's without hooks). ``forget`` after anything devbox changed."""

    max_age: float = 15.0
    wanted: set[str] = field(default_factory=set)  # branches to ask now; emptied by each use
    known: dict[Path, tuple[str, float, git.WorktreeState]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def want(self, branches: Iterable[str]) -> None:
        with self._lock:
            self.wanted.update(branches)

    def forget(self) -> None:
        with self._lock:
            self.known.clear()

    def states(self, wts: list[git.Worktree], cancel: threading.Event | None) -> list[git.WorktreeState]:
        now = time.monotonic()
        with self._lock:
            wanted, self.wanted = self.wanted, set()
            known = dict(self.known)
        stale = [w for w in wts if (hit := known.get(w.path)) is None or hit[0] != w.head
                 or now - hit[1] > self.max_age or (w.branch or "") in wanted]  # fmt: skip
        fresh = dict(zip((w.path for w in stale), git.states(stale, cancel), strict=True))
        with self._lock:
            for path, st in fresh.items():
                head = next(w.head for w in stale if w.path == path)
                self.known[path] = (head, now, st)
            present = {w.path for w in wts}
            for gone in [p for p in self.known if p not in present]:
                del self.known[gone]
        return [fresh[w.path] if w.path in fresh else known[w.path][2] for w in wts]


def rows(
    session: Devbox, conts: tuple[Container, ...] | None, cancel: threading.Event | None = None,
    cache: StateCache | None = None,
) -> tuple[WorktreeRow, ...]:  # fmt: skip
    """Every worktree with its git state and its container (a missing directory still lists);
    ``cache``: a poller's, to ask git only about the worktrees that may have changed."""
    if conts:
        sync_branches(session, conts=conts, cancel=cancel)  # the environments' new commits first
    wts = git.list_worktrees(session.settings.repo)
    by_branch = {c.branch: c for c in conts or ()}
    states = cache.states(wts, cancel) if cache is not None else git.states(wts, cancel)
    return tuple(WorktreeRow(w, s, by_branch.get(w.branch or "")) for w, s in zip(wts, states, strict=True))


def list_worktrees(session: Devbox, *, cancel: threading.Event | None = None) -> WorktreeList:
    """Worktrees (git only) plus the containers section: podman being down costs only the
    container column. ``cancel`` stops the per-worktree git status calls."""
    conts = Section.fetch(lambda: tuple(containers.list_containers(session.settings, session.podman)))
    return WorktreeList(rows(session, conts.value, cancel), conts)


def add_worktree(
    session: Devbox,
    branch: str,
    *,
    from_ref: str | None = None,
    sink: Sink = null_sink,
    cancel: threading.Event | None = None,
) -> git.Worktree:
    """``devbox worktree add``: validate the name, then create or reuse the worktree."""
    git.check_branch_name(branch)
    with hold(branch_lock(session, branch), f"work on {branch!r}"):
        return ensure_worktree(session, branch, Reporter(sink, "worktree-add"), cancel or threading.Event(), from_ref)


def find_worktree(session: Devbox, ref: str) -> git.Worktree:
    """A linked worktree by branch or by path."""
    repo = session.settings.repo
    wts = git.list_worktrees(repo)
    target = next((w for w in wts if w.branch == ref), None)
    if target is None:
        p = Path(ref).expanduser()
        resolved = Path(os.path.abspath(p)) if p.is_absolute() or os.sep in ref else None
        target = next((w for w in wts if resolved is not None and w.path in (resolved, resolved.resolve())), None)
    if target is None:
        raise NotFound(f"{ref!r} is not a branch or path of a worktree of {repo}", "see `devbox worktree list`")
    return target


def worktree_loss(session: Devbox, wt: git.Worktree, *, delete_branch: bool = False) -> WorktreeLoss:
    """What removing ``wt`` would lose, its container, and why containers were not checked.

    Commits count when nothing else would hold them: a detached HEAD's, or the branch's
    when the branch goes too (without --delete-branch the branch keeps them)."""
    conts = Section.fetch(lambda: tuple(containers.list_containers(session.settings, session.podman)))
    c = next((c for c in conts.value or () if wt.branch and c.branch == wt.branch), None)
    if c is not None:  # what its environment committed counts once it is on the host
        sync_branches(session, [c.branch], conts=[c])
    st = git.state(wt)
    commits = git.unique_commits(session.settings.repo, wt) if (wt.branch is None or delete_branch) else 0
    home = ""
    if c is not None:
        var_vol = containers.volume_names(c.name)[0]
        home = var_vol if session.podman.volume_exists(var_vol) else ""
    loss = Loss(
        dirty=st.changed + st.untracked,
        files=st.files,
        commits=commits,
        detached=wt.branch is None,
        running=c.name if c is not None and c.running else "",
        home=home,
        unsynced=c.name if c is not None and holds_unsynced(session, c) else "",
    )
    return WorktreeLoss(loss, c, conts.problem.one_line() if conts.problem else "")


def remove_worktree(
    session: Devbox,
    ref: str,
    *,
    force: bool = False,
    delete_branch: bool = False,
    sink: Sink = null_sink,
    cancel: threading.Event | None = None,
) -> Removed:
    """Remove a linked worktree (by branch or path) and its container; refuse, naming all of
    it, when that would lose work, unless ``force``. ``cancel`` is honoured until the
    removal starts (never halfway: a container without its worktree, or the reverse)."""
    wt = find_worktree(session, ref)
    report = Reporter(sink, "worktree-remove", Subject("worktree", wt.label))
    if wt.is_main:
        raise Refused(f"{wt.path} is the main checkout, not a linked worktree", "remove linked worktrees only")
    with hold(branch_lock(session, wt.branch or str(wt.path)), f"work on {ref!r}"):
        found = worktree_loss(session, wt, delete_branch=delete_branch)
        loss, c, unknown = found.loss, found.container, found.unchecked
        if unknown:  # nothing of a container is removed then: its home volume stays for `container rm`
            report.log(f"not checked for a container on this worktree: {unknown}")
        if cancel is not None and cancel.is_set():
            raise Cancelled("interrupted: nothing removed")
        if not loss.empty and not force:
            raise Refused(
                f"removing {wt.path} would lose: " + "; ".join(loss.lines()),
                "commit/push what you want to keep, or pass --force to lose all of it",
            )
        removed: list[str] = []
        if c is not None:
            removed += remove_container_record(
                session, c, force=True, report=report.about(Subject("container", c.name))
            )
        git.remove_worktree(session.settings.repo, wt, force=force, report=report)
        removed.append(f"worktree {wt.path}")
        if delete_branch and wt.branch:
            try:
                git.delete_branch(session.settings.repo, wt.branch, force=force, report=report)
            except DevboxError as exc:
                raise Refused(
                    f"worktree removed, but branch {wt.branch!r} was kept: {exc.message}",
                    "merge it first, or pass --force",
                ) from None
            removed.append(f"branch {wt.branch}")
        report.step("done", f"removed {wt.path}")
        return Removed(tuple(removed))
