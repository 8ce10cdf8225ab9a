"""An environment's commits, brought to the host before devbox looks at its branch.

An environment commits into its own git directory (core/envgit.py), never into the main
repository. Every operation that reads a branch (status, the fleet's poll, diff, merge,
compare, radar, worktree remove) first calls ``sync_branches``: a branch whose
environment's files say nothing moved costs a few ``open`` calls and no process; one that
moved is fetched from inside its running container. So ``git log BRANCH`` on the host
shows an agent's commit after the next poll, as when the repository was shared.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from devbox.core import containers, envgit
from devbox.core.containers import Container
from devbox.core.errors import DevboxError
from devbox.core.events import Reporter, Sink, Subject, null_sink
from devbox.core.session import Devbox


@dataclass(frozen=True)
class SyncResult:
    moved: tuple[str, ...] = ()  # branches that moved on the host
    failed: tuple[str, ...] = ()  # branches whose environment could not be read (logged)


def upload_pack_argv(session: Devbox, c: Container) -> list[str]:
    """``git upload-pack`` of the environment's git directory, run inside ``c`` as its user
    with no privileges: what the agent planted there is read only where it already is."""
    gitdir = envgit.of(session.settings, c.name).gitdir
    user = session.user
    return session.podman.exec_argv(
        c.name, containers.drop_privileges(user, ["git", "upload-pack", "--strict", str(gitdir)]), user="0:0",
        workdir="/", env=containers.exec_env(user), tty=False,
    )  # fmt: skip


def holds_unsynced(session: Devbox, c: Container) -> bool:
    """``c``'s environment holds commits the host does not have (one whose fetch failed too):
    what removing it would lose."""
    return envgit.pending(envgit.of(session.settings, c.name), c.branch, again=True)


def sync_container(
    session: Devbox, c: Container, report: Reporter, cancel: threading.Event | None = None, *, again: bool = False
) -> envgit.Synced | None:
    """``c``'s branch from its environment, when it moved there and ``c`` runs; ``again``:
    even when this commit's fetch failed before (``devbox fetch``)."""
    if not c.branch or not c.running:
        return None
    return envgit.sync(session.settings, c.name, c.branch, Path(c.worktree), upload_pack_argv(session, c), report,
                       cancel, again=again)  # fmt: skip


def sync_branches(
    session: Devbox, branches: Iterable[str] | None = None, *, conts: Iterable[Container] | None = None,
    sink: Sink = null_sink, cancel: threading.Event | None = None,
) -> SyncResult:  # fmt: skip
    """Bring every named branch's (or every local environment's) new commits to the host.
    ``conts``: the containers, when the caller has listed them already. A failure is logged
    and named in the answer, never raised: the branch then reads as the host last had it."""
    settings = session.settings
    report = Reporter(sink, "sync")
    wanted = None if branches is None else set(branches)
    if conts is None:
        names = {b: containers.container_name(settings, b) for b in wanted or ()}
        if wanted is None:  # every environment with a git directory here
            root = settings.build_dir / "gitdirs"
            known = {p.name for p in root.iterdir()} if root.is_dir() else set()
            if not known:
                return SyncResult()
            conts = [c for c in containers.list_containers(settings, session.podman) if c.name in known]
        else:
            changed = [b for b, n in names.items() if envgit.pending(envgit.of(settings, n), b)]
            if not changed:
                return SyncResult()  # the usual answer: no process, no podman call
            conts = [c for c in (containers.get(session.podman, names[b]) for b in changed) if c is not None]
    moved: list[str] = []
    failed: list[str] = []
    for c in conts:
        if wanted is not None and c.branch not in wanted:
            continue
        try:
            done = sync_container(session, c, report.about(Subject("branch", c.branch)), cancel)
        except DevboxError as exc:
            report.log(exc.one_line())
            failed.append(c.branch)
            continue
        if done is not None and done.moved:
            moved.append(c.branch)
    return SyncResult(tuple(moved), tuple(failed))
