"""Several agents on one task, compared side by side.

``start_task`` makes branches TASK-1..N from one base commit, each its own environment
running an agent with the same prompt (optionally a different agent per copy), and
records each as a copy of TASK (git config, beside the recorded base). ``compare`` puts
the copies' diff stats, commits, uncommitted files, predicted conflicts with the base and
check results side by side; ``run_checks`` runs ``review.check_command`` inside each
environment at once, each line in the operation's log, the result kept under
``.build/checks/`` with the commit it ran on (a result on an older commit reads as stale).
Picking one is ``review.merge``; ``discard_plan`` names what tearing down the other copies
would lose (their branches go too: they were alternatives) and ``discard`` does it.

Everything is refused before anything starts when it cannot all start: an existing
TASK-i branch, a missing credential, an unknown agent.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shlex
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from devbox.core import branch_notes, containers, git, proc, proc_table
from devbox.core.containers import Container
from devbox.core.errors import BadName, Cancelled, DevboxError, NotFound, Refused
from devbox.core.events import Reporter, Sink, Stream, Subject, null_sink
from devbox.core.filesystem import read_json, write_json
from devbox.core.git_merge import Commit
from devbox.core.ops.containers import start_several
from devbox.core.ops.egress import choose_policy
from devbox.core.ops.envsync import sync_branches
from devbox.core.ops.fleet import AgentStarted, _spec, agent_rows, launch_agent, needed_env
from devbox.core.ops.results import Problem, Removed, StartResult
from devbox.core.ops.review import base_of, diff_branch, predict_merge
from devbox.core.ops.views import Section
from devbox.core.ops.worktrees import find_worktree, remove_worktree, worktree_loss
from devbox.core.session import Devbox

MAX_COPIES = 20
TAIL = 12  # lines of a check's output kept with its result (all of it is in the log)
PARALLEL_CHECKS = 4  # checks at once (each is usually a test suite)


@dataclass(frozen=True)
class TaskStarted:
    task: str
    base: str
    base_commit: str
    started: tuple[AgentStarted, ...]
    failed: tuple[tuple[str, Problem], ...] = ()  # (copy, why): the others started regardless


@dataclass(frozen=True)
class CheckResult:
    branch: str
    head: str  # the commit it ran on
    status: int | None  # the command's exit status; None: it could not run (``problem``)
    seconds: float
    tail: tuple[str, ...]
    when: float
    problem: str = ""
    stale: bool = False  # the branch has moved since

    @property
    def passed(self) -> bool:
        return self.status == 0

    def label(self) -> str:
        if self.status is None:
            what = f"not run: {self.problem}"
        else:
            what = ("passed" if self.passed else f"failed (exit {self.status})") + f" in {self.seconds:.0f} s"
        return what + (" (stale: the branch moved since)" if self.stale else "")

    def to_json(self) -> dict[str, object]:
        return {"head": self.head, "status": self.status, "seconds": round(self.seconds, 2), "tail": list(self.tail),
                "when": self.when, "problem": self.problem, "stale": self.stale}  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    branch: str
    agent: str
    agent_state: str
    container: str
    container_state: str
    commits: tuple[Commit, ...]
    files: int
    added: int
    deleted: int
    binary: int
    uncommitted: tuple[str, ...]
    conflicts: tuple[str, ...]  # with the base, predicted
    check: CheckResult | None

    def to_json(self) -> dict[str, object]:
        return {
            "branch": self.branch, "agent": self.agent, "agent_state": self.agent_state,
            "container": self.container, "container_state": self.container_state,
            "commits": [{"sha": c.sha, "subject": c.subject} for c in self.commits],
            "files": self.files, "added": self.added, "deleted": self.deleted, "binary": self.binary,
            "uncommitted": list(self.uncommitted), "conflicts": list(self.conflicts),
            "check": self.check.to_json() if self.check else None,
        }  # fmt: skip


@dataclass(frozen=True)
class Comparison:
    task: str
    base: str
    check_command: tuple[str, ...]
    candidates: tuple[Candidate, ...]

    def to_json(self) -> dict[str, object]:
        return {"task": self.task, "base": self.base, "check_command": list(self.check_command),
                "candidates": [c.to_json() for c in self.candidates]}  # fmt: skip


@dataclass(frozen=True)
class Discard:
    branch: str
    losses: tuple[str, ...]


def copy_names(task: str, count: int) -> list[str]:
    return [f"{task}-{i}" for i in range(1, count + 1)]


def start_task(
    session: Devbox, task: str, *, count: int, prompt: str | None, agents: Sequence[str] = ("claude",),
    from_ref: str | None = None, egress: str = "", allow: Sequence[str] = (), sink: Sink = null_sink,
    cancel: threading.Event | None = None,
) -> TaskStarted:  # fmt: skip
    """TASK-1..N from the same base commit, each with its environment and agent, all at once
    (``start_several``; four copies took 4.9-5.4 s here, against 6.9-7.7 s one after
    another). A copy that fails does not stop the others; the result names it and why."""
    cancel = cancel or threading.Event()
    repo = session.settings.repo
    git.check_branch_name(task)
    if not 1 <= count <= MAX_COPIES:
        raise BadName(f"--count {count}: between 1 and {MAX_COPIES} copies", "e.g. --count 3")
    if len(agents) not in (1, count):
        raise BadName(f"{len(agents)} agents for {count} copies", "give one --agent for all, or one per copy")
    per_copy = list(agents) * count if len(agents) == 1 else list(agents)
    specs = {name: _spec(session, name) for name in dict.fromkeys(per_copy)}  # every agent known,
    secrets = {name: needed_env(spec, name) for name, spec in specs.items()}  # its credentials present, first
    branches = copy_names(task, count)
    taken = [b for b in branches if git.rev(repo, f"refs/heads/{b}")]
    if taken:
        raise Refused(f"branch {taken[0]} exists already", f"pick another task name, or see `devbox compare {task}`")
    base_commit = git.rev(repo, from_ref or "HEAD")
    if not base_commit:
        raise NotFound(f"no commit {from_ref or 'HEAD'!r} to start {task} from", "give --from REF")
    base = from_ref if from_ref and git.rev(repo, f"refs/heads/{from_ref}") else git.current_branch(repo)
    report = Reporter(sink, "agent-start", Subject("task", task))
    report.step("start", f"{count} copies of {task} from {base or base_commit[:12]} ({base_commit[:12]})")
    agent_of = dict(zip(branches, per_copy, strict=True))
    policies = {b: choose_policy(session, mode=egress, allow=allow, agent=agent_of[b]) for b in branches}
    started: dict[str, AgentStarted] = {}

    def launch(branch: str, res: StartResult, one_at_a_time: Sink) -> None:  # in the copy's own worker
        name = agent_of[branch]
        started[branch] = launch_agent(session, branch, res.container, specs[name], secrets[name], prompt,
                                       one_at_a_time)  # fmt: skip

    try:  # every copy at once (start_several), each from the commit: they all start at one point
        several = start_several(session, branches, from_ref=base_commit, sink=sink, cancel=cancel, then=launch,
                                policies={b: p for b, p in policies.items() if p is not None})  # fmt: skip
    finally:  # each copy that was made is the task's, whatever became of the others
        for branch in branches:
            if git.rev(repo, f"refs/heads/{branch}"):
                if base:
                    branch_notes.record_base(repo, branch, base)
                branch_notes.record_task(repo, branch, task)
    agents_started = tuple(started[b] for b in branches if b in started)
    names = ", ".join(a.branch for a in agents_started) or "none"
    if several.failed:
        report.step("done", f"{len(agents_started)} of {count} agents on {task}: {names}")
    else:
        report.step("done", f"{count} agents on {task}: {names} (devbox compare {task})")
    return TaskStarted(task, base, base_commit, agents_started, several.failed)


def task_of(session: Devbox, branch: str) -> str:
    """The task ``branch`` is a copy of, or ""."""
    return branch_notes.recorded_tasks(session.settings.repo).get(branch, "")


def task_branches(session: Devbox, task: str) -> tuple[str, ...]:
    """The copies of ``task`` that still exist, in their numbered order."""
    repo = session.settings.repo
    found = [b for b, t in branch_notes.recorded_tasks(repo).items() if t == task and git.rev(repo, f"refs/heads/{b}")]
    if not found:
        raise NotFound(f"no copies of task {task!r}", f"start some: devbox agent start {task} --count 3 --prompt ...")
    return tuple(sorted(found, key=_number))


def _number(branch: str) -> tuple[int, str]:
    m = re.search(r"-(\d+)$", branch)
    return (int(m.group(1)) if m else 0, branch)


def compare(session: Devbox, task: str) -> Comparison:
    """The copies of ``task`` side by side (git and the state directories; no process runs
    in an environment)."""
    branches = task_branches(session, task)
    listed = Section.fetch(lambda: tuple(containers.list_containers(session.settings, session.podman)))
    conts = {c.branch: c for c in listed.value or () if c.branch in branches}  # podman down: "unknown"
    sync_branches(session, branches, conts=conts.values())
    states = {r.branch: r for r in agent_rows(session, tuple(conts.values()))}
    found = []
    for b in branches:
        d = diff_branch(session, b)
        c = conts.get(b)
        record = read_json(containers.agent_record(session.settings, c.name)) if c else None
        row = states.get(b)
        where = c.state if c else ("none" if listed.value is not None else "unknown")
        found.append(Candidate(
            branch=b, agent=str(record.get("agent", "")) if isinstance(record, dict) else "",
            agent_state=row.agent.state if row else "no agent", container=c.name if c else "",
            container_state=where, commits=d.commits, files=len(d.committed),
            added=sum(f.added or 0 for f in d.committed), deleted=sum(f.deleted or 0 for f in d.committed),
            binary=sum(1 for f in d.committed if f.added is None), uncommitted=d.uncommitted.names(),
            conflicts=predict_merge(session, b, into=d.base).conflicts, check=_stored(session, b),
        ))  # fmt: skip
    return Comparison(task, base_of(session, branches[0]), session.settings.check_command, tuple(found))


def _check_file(session: Devbox, branch: str) -> Path:
    return session.settings.build_path("checks", quote(branch, safe="") + ".json")


def _stored(session: Devbox, branch: str) -> CheckResult | None:
    data = read_json(_check_file(session, branch))
    if not isinstance(data, dict):
        return None
    try:
        tail = tuple(str(x) for x in data["tail"])
        res = CheckResult(branch, str(data["head"]), data["status"], float(data["seconds"]), tail,
                          float(data["when"]), str(data.get("problem", "")))  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None  # an unreadable record is no result
    head = git.rev(session.settings.repo, f"refs/heads/{branch}")
    return CheckResult(**{**res.__dict__, "stale": head != res.head})


def run_checks(
    session: Devbox, task: str, *, branches: Sequence[str] | None = None, sink: Sink = null_sink,
    cancel: threading.Event | None = None,
) -> tuple[CheckResult, ...]:  # fmt: skip
    """``review.check_command`` in each copy's environment at once (at most
    ``PARALLEL_CHECKS``); each result is kept, an interrupted check is not."""
    cancel = cancel or threading.Event()
    command = session.settings.check_command
    if not command:
        raise NotFound("no check is configured", 'set review.check_command in devbox.toml, e.g. ["make", "test"]')
    chosen = tuple(branches) if branches else task_branches(session, task)
    conts = {c.branch: c for c in containers.list_containers(session.settings, session.podman)}
    # each check is kept with the commit it ran on: the copies' own commits on the host first
    sync_branches(session, chosen, conts=[c for b, c in conts.items() if b in chosen], sink=sink, cancel=cancel)
    report = Reporter(sink, "check", Subject("task", task))
    report.step("start", f"{shlex.join(command)} in {len(chosen)} environment(s)")

    def one(branch: str) -> CheckResult:
        return _check(session, conts.get(branch), branch, command, _Labelled(sink, "check", Subject("branch", branch)),
                      cancel)  # fmt: skip

    with ThreadPoolExecutor(max_workers=min(PARALLEL_CHECKS, len(chosen)), thread_name_prefix="check") as pool:
        results = tuple(pool.map(one, chosen))
    if cancel.is_set():
        raise Cancelled("checks interrupted: no result kept for an unfinished one", "run them again")
    passed = sum(r.passed for r in results)
    report.step("done", f"{passed} of {len(results)} passed: " + "; ".join(f"{r.branch} {r.label()}" for r in results))
    return results


class _Labelled(Reporter):
    """A check's output lines, each led by its branch: several checks print at once."""

    __slots__ = ()

    def log(self, text: str, *, source: str = "devbox", stream: Stream = "devbox", raw: bytes | None = None) -> None:
        super().log(f"{self.subject.name}| {text}", source=source, stream=stream)


def _check(
    session: Devbox, c: Container | None, branch: str, command: tuple[str, ...], report: Reporter,
    cancel: threading.Event,
) -> CheckResult:  # fmt: skip
    head = git.rev(session.settings.repo, f"refs/heads/{branch}")
    began = time.time()
    if c is None or not c.running:
        why = "no container" if c is None else f"{c.name} is {c.state}"
        res = CheckResult(branch, head, None, 0.0, (), began, f"{why} (devbox agent start {branch}, or ./start-work)")
        report.log(f"check not run: {res.problem}")
        return res
    pidfile = f"/tmp/devbox-check-{secrets.token_hex(4)}.pid"  # the check's process group, to stop it
    user = session.user
    inner = ["sh", "-c", 'echo $$ >"$0"; exec "$@"', pidfile, *command]
    argv = session.podman.exec_argv(c.name, containers.drop_privileges(user, inner), user="0:0",
                                    workdir=c.worktree or "/", env=containers.exec_env(user), tty=False)  # fmt: skip

    def stop(p: object) -> None:  # the podman client's death leaves the exec'd command running
        kill = ["sh", "-c", 'kill -TERM -- "-$(cat "$0")"; rm -f "$0"', pidfile]
        kill_argv = session.podman.exec_argv(c.name, kill, user="0:0", workdir="/", env={}, tty=False)
        with contextlib.suppress(DevboxError):
            proc.run(kill_argv, tool="podman", timeout=30)
        proc_table.kill([p.pid], signal.SIGTERM)  # type: ignore[attr-defined]

    try:
        done = proc.stream(argv, report, cancel, source=branch, tail_lines=TAIL, stop=stop,
                           timeout=session.settings.check_timeout)  # fmt: skip
    except DevboxError as exc:
        res = CheckResult(branch, head, None, time.time() - began, (), began, exc.message)
    else:
        if done.cancelled:
            return CheckResult(branch, head, None, time.time() - began, done.tail, began, "interrupted")
        res = CheckResult(branch, head, done.returncode, time.time() - began, done.tail, began)
    write_json(_check_file(session, branch), {k: v for k, v in res.to_json().items() if k != "stale"})
    report.log(f"check {res.label()}")
    return res


def discard_plan(session: Devbox, task: str, keep: str) -> tuple[Discard, ...]:
    """What tearing down every copy of ``task`` but ``keep`` would lose: each worktree, its
    container and home volume, and its branch (with the commits only it holds)."""
    plans = []
    for b in task_branches(session, task):
        if b == keep:
            continue
        try:
            wt = find_worktree(session, b)
        except NotFound:
            plans.append(Discard(b, (f"branch {b} (no worktree)",)))
            continue
        found = worktree_loss(session, wt, delete_branch=True)
        lines = (*found.loss.lines(), *([f"containers not checked: {found.unchecked}"] if found.unchecked else ()))
        plans.append(Discard(b, (f"worktree {wt.path}", *lines)))
    return tuple(plans)


def discard(
    session: Devbox, branches: Sequence[str], *, sink: Sink = null_sink, cancel: threading.Event | None = None
) -> Removed:
    """Remove each branch's worktree, container and the branch itself (confirmed by the caller
    from ``discard_plan``); stops between copies when cancelled, never halfway through one."""
    cancel = cancel or threading.Event()
    repo = session.settings.repo
    removed: list[str] = []
    for b in branches:
        if cancel.is_set():
            raise Cancelled(f"interrupted after removing {', '.join(removed) or 'nothing'}", "run it again")
        try:
            removed += remove_worktree(session, b, force=True, delete_branch=True, sink=sink, cancel=cancel).what
        except NotFound:  # a copy without a worktree: the branch alone
            git.delete_branch(repo, b, force=True, report=Reporter(sink, "worktree-remove", Subject("branch", b)))
            removed.append(f"branch {b}")
        with contextlib.suppress(OSError):
            _check_file(session, b).unlink()
    return Removed(tuple(removed))
