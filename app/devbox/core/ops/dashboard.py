"""What the dashboard follows beyond ``status``: podman's event and stats streams, a
container's own log, the worktrees' recent activity (cached by commit), and which agents'
states the user has seen (kept across restarts of the dashboard)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from devbox.core import git
from devbox.core.containers import LABEL_REPO, Container
from devbox.core.events import Reporter, Sink, Subject
from devbox.core.filesystem import read_json, write_json
from devbox.core.ops.containers import find_container
from devbox.core.ops.views import WorktreeRow
from devbox.core.podman_records import ContainerEvent, ContainerStats
from devbox.core.session import Devbox


def watch_containers(session: Devbox, cancel: threading.Event) -> Iterator[ContainerEvent]:
    """This repo's container events (created, started, died, removed) until ``cancel``."""
    repo = str(session.settings.repo)
    for ev in session.podman.events(cancel):
        if ev.labels.get(LABEL_REPO) == repo:
            yield ev


def container_stats(session: Devbox, conts: Sequence[Container]) -> dict[str, ContainerStats]:
    return session.podman.stats([c.name for c in conts if c.running])


def follow_container_log(session: Devbox, ref: str, *, sink: Sink, cancel: threading.Event) -> None:
    """A container's own output (``podman logs -f``) as log lines, until ``cancel``."""
    c = find_container(session, ref)
    report = Reporter(sink, "container-log", Subject("container", c.name))
    report.step("start", f"following the log of {c.name}")
    for line in session.podman.follow_logs(c.name, cancel):
        report.log(line, source="container", stream="stdout")
    report.step("done", f"stopped following {c.name}")


_ACTIVITY_CACHE: dict[tuple[Path, str, str], git.Activity] = {}


def activity(session: Devbox, rows: Sequence[WorktreeRow]) -> dict[Path, git.Activity]:
    """Last commit and diff stat against the main checkout's branch for each worktree,
    recomputed only when a worktree's HEAD or the base branch moved."""
    main = next((r.worktree for r in rows if r.worktree.is_main), None)
    base, base_head = (main.branch, main.head) if main is not None else (None, "")
    out: dict[Path, git.Activity] = {}
    for r in rows:
        key = (r.worktree.path, r.worktree.head, base_head)
        hit = _ACTIVITY_CACHE.get(key)
        if hit is None:
            hit = git.activity(r.worktree, base)
            if len(_ACTIVITY_CACHE) > 4096:
                _ACTIVITY_CACHE.clear()
            _ACTIVITY_CACHE[key] = hit
        out[r.worktree.path] = hit
    return out


SEEN = "fleet-seen.json"
_SEEN_LOCK = threading.Lock()
MAX_SEEN = 1000  # branches remembered


def seen_marks(session: Devbox) -> dict[str, float | None]:
    """Which state of each branch's agent the user has looked at (the state's start time),
    as the dashboard last saved them; {} when there is no such file or it is not ours."""
    data = read_json(session.settings.build_path(SEEN))
    if not isinstance(data, dict):
        return {}
    return {b: t for b, t in data.items() if isinstance(b, str) and (t is None or type(t) in (int, float))}


def save_seen_marks(session: Devbox, marks: dict[str, float | None]) -> None:
    """Keep ``marks`` for the next dashboard (the newest ``MAX_SEEN``); a failed write only
    loses the marks."""
    # one writer at a time: the temporary file's name is per process
    with _SEEN_LOCK, contextlib.suppress(OSError):
        write_json(session.settings.build_path(SEEN), dict(list(marks.items())[-MAX_SEEN:]))
