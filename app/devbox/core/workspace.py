"""Container mode's use cases: start-work, worktrees, containers, status.

Both faces call these; they report through the sink and never print. ``start_work``
returns what the face should do next (attach with an argv, or just say the name).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devbox.core import containers, git, image
from devbox.core.config import Settings
from devbox.core.containers import Container, HostUser
from devbox.core.errors import (
    BadName,
    Cancelled,
    ContainerFailed,
    NotFound,
    PodmanError,
    PodmanMissing,
    PodmanUnreachable,
    Refused,
)
from devbox.core.events import Sink, Step
from devbox.core.locks import hold
from devbox.core.podman import Podman
from devbox.core.proc import stream


@dataclass(frozen=True)
class StartResult:
    container: Container
    worktree: git.Worktree
    action: str  # "created", "started", "running", "recreated"
    stale_image: bool


def _branch_lock(settings: Settings, branch: str) -> Path:
    key = hashlib.sha256(branch.encode()).hexdigest()[:16]
    return settings.build_path("locks", f"branch-{key}.lock")


def ensure_worktree(settings: Settings, branch: str, sink: Sink, from_ref: str | None = None) -> git.Worktree:
    wt = git.find_worktree(settings.repo, branch)
    if wt is not None:
        if from_ref:
            raise Refused(f"branch {branch!r} already has a worktree at {wt.path}", "drop --from to reuse it")
        sink(Step("worktree", "skip", f"{branch} at {wt.path}"))
        return wt
    path = git.worktree_path(settings.worktrees_dir, branch)
    sink(Step("worktree", "start", f"creating {path}"))
    wt = git.add_worktree(settings.repo, branch, path, sink, from_ref)
    sink(Step("worktree", "done", f"{branch} at {wt.path}"))
    return wt


def add_worktree(settings: Settings, branch: str, sink: Sink, from_ref: str | None = None) -> git.Worktree:
    """``devbox worktree add``: validate the name, then create or reuse the worktree."""
    git.check_branch_name(branch)
    return ensure_worktree(settings, branch, sink, from_ref)


def _rootless(podman: Podman) -> bool:
    if podman.explicit_url:
        return podman.api.rootless()
    return os.geteuid() != 0


def _create(
    settings: Settings,
    podman: Podman,
    name: str,
    branch: str,
    wt: git.Worktree,
    image_id: str,
    sink: Sink,
    cancel: threading.Event,
    *,
    keep_var: bool = False,
) -> Container:
    """``podman run`` the branch's container; a failed or interrupted run leaves nothing behind."""
    argv = containers.run_argv(
        settings,
        name=name,
        branch=branch,
        worktree=wt.path,
        image_id=image_id,
        user=HostUser.current(),
        rootless=_rootless(podman),
        env=git.identity(settings.repo),
    )
    since = int(time.time()) - 1
    done = stream([*podman.cli(), *argv], "podman", sink, cancel)
    if done.returncode != 0 or done.cancelled:
        tail = done.tail[-1] if done.tail else f"exit {done.returncode}"
        if "already in use" in tail:
            raise Refused(
                f"container {name} already exists (made by another devbox run)", "run start-work again to attach"
            )
        half = containers.get(podman, name)
        if half is not None:
            remove_container(podman, half, force=True, keep_var=keep_var)
        if done.cancelled:
            raise Cancelled(f"interrupted while creating {name}", "nothing was left behind")
        raise PodmanError(f"podman run failed: {tail}", "see the podman message above", detail=done.tail)
    return _ensure_running(podman, name, cancel, since)


READY = "devbox-entrypoint: ready"


def _ensure_running(podman: Podman, name: str, cancel: threading.Event, since: int, timeout: float = 30.0) -> Container:
    """Wait for the entrypoint's ready line (logged after ``since``); if the container dies first, say why."""
    deadline = time.monotonic() + timeout
    while True:
        c = containers.get(podman, name)
        lines = podman.api.logs(name, tail=30, since=since)
        if c is not None and c.running and any(READY in line for line in lines):
            return c
        if c is None or c.state in ("exited", "stopped", "dead") or time.monotonic() > deadline:
            state = c.state if c else "gone"
            last = next((ln for ln in reversed(lines) if ln.strip()), "no output")
            raise ContainerFailed(
                f"container {name} did not start ({state}): {last}",
                f"see `podman logs {name}`; after fixing bootc/, run start-work with --recreate",
                detail=tuple(lines[-15:]),
            )
        if cancel.wait(0.05):
            raise Cancelled(f"interrupted while {name} was starting")


def remove_container(podman: Podman, c: Container, *, force: bool, keep_var: bool = False) -> None:
    if c.running and not force:
        raise Refused(
            f"container {c.name} is running", f"stop it first (devbox container stop {c.branch}) or pass --force"
        )
    podman.api.remove(c.name, force=force)
    var_vol, etc_vol = containers.volume_names(c.name)
    podman.api.remove_volume(etc_vol)
    if not keep_var:
        podman.api.remove_volume(var_vol)


def start_work(
    settings: Settings,
    podman: Podman,
    branch: str,
    sink: Sink,
    cancel: threading.Event,
    *,
    from_ref: str | None = None,
    recreate: bool = False,
) -> StartResult:
    """A worktree for ``branch``, a fresh-enough image, and the branch's container running."""
    git.check_branch_name(branch)
    for path, key in ((settings.repo, "the repository"), (settings.worktrees_dir, "paths.worktrees")):
        if ":" in str(path) or "," in str(path):  # podman's --volume syntax cannot carry them
            raise BadName(f"{key} path {path} contains ':' or ','; podman cannot mount it", "move it to a plain path")
    podman.check()  # before anything is created: a missing podman must leave no worktree behind
    with hold(_branch_lock(settings, branch), f"start-work for {branch!r}"):
        wt = ensure_worktree(settings, branch, sink, from_ref)
        img = image.build(settings, podman, sink, cancel)
        assert img.info is not None
        name = containers.container_name(settings, branch)
        existing = containers.get(podman, name)
        stale = existing is not None and existing.stale(img.info.id)
        if existing is not None and recreate:
            sink(Step("container", "start", f"recreating {name} from {img.info.short_id} (keeping its /var)"))
            remove_container(podman, existing, force=True, keep_var=True)
            c = _create(settings, podman, name, branch, wt, img.info.id, sink, cancel, keep_var=True)
            sink(Step("container", "done", f"{name} recreated"))
            return StartResult(c, wt, "recreated", False)
        if existing is None:
            sink(Step("container", "start", f"creating {name}"))
            c = _create(settings, podman, name, branch, wt, img.info.id, sink, cancel)
            sink(Step("container", "done", f"{name} running"))
            return StartResult(c, wt, "created", False)
        note = f" (made from an older image; --recreate switches to {img.info.short_id})" if stale else ""
        if existing.running:
            sink(Step("container", "skip", f"{name} is running{note}"))
            return StartResult(existing, wt, "running", stale)
        sink(Step("container", "start", f"starting stopped {name}{note}"))
        since = int(time.time())
        podman.api.start(name)
        started = _ensure_running(podman, name, cancel, since)
        sink(Step("container", "done", f"{name} {started.state}"))
        return StartResult(started, wt, "started", stale)


def find_container(settings: Settings, podman: Podman, ref: str) -> Container:
    """A container of this repo by branch or by name."""
    for c in containers.list_containers(settings, podman):
        if ref in (c.branch, c.name):
            return c
    raise NotFound(f"no devbox container for {ref!r} in {settings.repo}", "see `devbox container list`")


def exec_in(podman: Podman, c: Container, command: list[str], *, tty: bool) -> list[str]:
    """The full argv that attaches ``command`` to container ``c`` (the face execs it)."""
    if not c.running:
        raise Refused(f"container {c.name} is not running ({c.state})", f"start it: ./start-work {c.branch}")
    return [*podman.cli(), *containers.exec_argv(c, HostUser.current(), command, tty=tty)]


def stop_container(podman: Podman, c: Container, sink: Sink) -> None:
    sink(Step("container", "start", f"stopping {c.name}"))
    podman.api.stop(c.name)
    sink(Step("container", "done", f"{c.name} stopped"))


@dataclass(frozen=True)
class WorktreeRow:
    worktree: git.Worktree
    state: git.WorktreeState
    container: Container | None

    def to_json(self) -> dict[str, Any]:
        return {
            "branch": self.worktree.branch,
            "path": str(self.worktree.path),
            "main": self.worktree.is_main,
            "dirty": self.state.dirty,
            "ahead": self.state.ahead,
            "behind": self.state.behind,
            "container": self.container.name if self.container else None,
            "container_state": self.container.state if self.container else None,
        }


def containers_if_reachable(settings: Settings, podman: Podman) -> tuple[list[Container], str | None]:
    """This repo's containers, or none and the reason when podman cannot be asked."""
    try:
        return containers.list_containers(settings, podman), None
    except (PodmanMissing, PodmanUnreachable) as exc:
        return [], exc.message


def worktree_rows(settings: Settings, conts: list[Container]) -> list[WorktreeRow]:
    by_branch = {c.branch: c for c in conts}
    return [WorktreeRow(w, git.state(w), by_branch.get(w.branch or "")) for w in git.list_worktrees(settings.repo)]


def remove_worktree(
    settings: Settings, podman: Podman, ref: str, sink: Sink, *, force: bool, delete_branch: bool
) -> None:
    """Remove a linked worktree (by branch or path); refuses to lose work unless ``force``."""
    wts = git.list_worktrees(settings.repo)
    target = next((w for w in wts if w.branch == ref), None)
    if target is None:
        p = Path(ref).expanduser()
        resolved = p.resolve() if p.is_absolute() or os.sep in ref else None
        target = next((w for w in wts if resolved is not None and w.path == resolved), None)
    if target is None:
        raise NotFound(
            f"{ref!r} is not a branch or path of a worktree of {settings.repo}", "see `devbox worktree list`"
        )
    conts, unknown = containers_if_reachable(settings, podman)
    if unknown:
        sink(Step("container", "skip", f"not checked for containers on this worktree: {unknown}"))
    c = next((c for c in conts if c.branch == target.branch), None)
    if c is not None:
        if not force:
            raise Refused(f"container {c.name} uses this worktree", "remove it first (devbox container rm) or --force")
        remove_container(podman, c, force=True)
        sink(Step("container", "done", f"removed {c.name}"))
    with hold(_branch_lock(settings, target.branch or str(target.path)), f"work on {ref!r}"):
        git.remove_worktree(settings.repo, target, force=force, delete_branch=delete_branch, sink=sink)
    sink(Step("worktree", "done", f"removed {target.path}"))
