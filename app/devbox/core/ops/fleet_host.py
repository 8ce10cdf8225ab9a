"""Agents in environments on other hosts: ``agent start BRANCH --host NAME`` makes the
environment there (core/ops/remote.py), then starts the agent in its container's tmux
session through the host's own podman CLI over ssh, exactly as ``agent start`` does
locally. Its hooks write to the container's state directory there
(its state tmpfs, read there through ``/proc/<pid>/root``); one ssh per host reads every agent's tail,
framed by length and folded here under the same caps as a local one (the host is as
untrusted as the container), each host asked on its own and at once, so a host that is
down makes its rows "unknown" with the reason within its timeout and hides nothing else.

Credentials reach the agent on ssh's stdin (``NAME=value`` lines the remote shell exports
for that one ``podman exec --env NAME``), never on a command line or in a log.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

from devbox.core import agent_state, branch_notes, containers, egress, hosts
from devbox.core.egress import EgressView
from devbox.core.errors import ContainerFailed, DevboxError, NotFound, Refused
from devbox.core.events import Reporter, Sink, Subject, null_sink
from devbox.core.filesystem import write_json
from devbox.core.host_config import HostSpec
from devbox.core.ops.egress import choose_policy
from devbox.core.ops.fleet import EXIT_EVENT, SESSION, AgentStarted, _spec, _wrapper, needed_env, tmux_attach
from devbox.core.ops.fleet_vm import parse_states
from devbox.core.ops.hostlist import spec_of
from devbox.core.ops.remote import HOST_KEY, HostStarted, host_exec_argv, host_of, host_start_work, layout
from devbox.core.ops.views import AgentRow
from devbox.core.session import Devbox

# every agent of this repository on the host: "<container> <running 0|1> <bytes>\n", then
# that many bytes of its events file's tail (a regular file only, never through a symlink),
# read in the running container's state tmpfs through its root (/proc/PID/root)
READ_STATES = r"""
running=$(podman ps --format '{{.Names}} {{.Pid}}' 2>/dev/null)
tmp=$(mktemp) || exit 1
for name in "$@"; do
  : >"$tmp"; up=0
  pid=$(printf '%s\n' "$running" | awk -v n="$name" '$1 == n { print $2 }')
  if [ -n "$pid" ]; then
    up=1; d=/proc/$pid/root/run/devbox-agent; f=$d/events.jsonl
    if [ -d "$d" ] && [ ! -L "$d" ] && [ -f "$f" ] && [ ! -L "$f" ]; then tail -c 1048576 "$f" >"$tmp"; fi
  fi
  printf '%s %s %s\n' "$name" "$up" "$(($(wc -c <"$tmp")))"
  cat "$tmp"
done
rm -f "$tmp"
"""


def host_agent_start(
    session: Devbox, host: str, branch: str, *, prompt: str | None = None, agent: str = "claude",
    from_ref: str | None = None, egress: str = "", allow: Sequence[str] = (), sink: Sink = null_sink,
    cancel: threading.Event | None = None,
) -> AgentStarted:  # fmt: skip
    """The environment on ``host`` (made if needed, under the agent's egress as there), then
    the agent in its tmux session."""
    cancel = cancel or threading.Event()
    a = _spec(session, agent)
    secrets = needed_env(a, agent)
    policy = choose_policy(session, mode=egress, allow=allow, agent=agent)
    started = host_start_work(session, host, branch, from_ref=from_ref, sink=sink, cancel=cancel, policy=policy)
    s = session.settings
    spec = spec_of(session, host)
    f = hosts.known(s, spec)  # host_start_work just probed it
    report = Reporter(sink, "agent-start", Subject("agent", branch))
    has = host_exec_argv(spec, f, started.container, started.worktree, ["tmux", "-u", "has-session", "-t", SESSION])
    if hosts.run(s, spec, has, cancel=cancel).ok:
        raise Refused(f"an agent already runs on {branch} on {host}",
                      f"devbox agent attach {branch}, or devbox agent stop {branch}")  # fmt: skip
    report.step("start", f"{agent} in {started.container} on {host}")
    command = ["tmux", "-u", "new-session", "-d", "-s", SESSION, "-x", "200", "-y", "50", "sh", "-c",
               _wrapper(a, prompt)]  # fmt: skip
    run = host_exec_argv(spec, f, started.container, started.worktree, command, names=tuple(secrets))
    # the credentials, one NAME=value line each on stdin, exported for this podman exec only
    script = 'for n in "$@"; do IFS= read -r line; export "$n=${line#*=}"; done; exec ' + shlex.join(run)
    lines = "".join(f"{n}={v}\n" for n, v in secrets.items()).encode()
    done = hosts.run(s, spec, ["sh", "-c", script, "agent", *secrets], cancel=cancel, input=lines)
    if not done.ok:
        raise ContainerFailed(f"the agent did not start in {started.container} on {host}: {done.last_error()}",
                              "is tmux in the image? see bootc/Containerfile")  # fmt: skip
    write_json(containers.agent_record(s, started.container), {"agent": a.name, "hooks": a.hooks, "host": host})
    if prompt and a.prompt == "type":
        host_agent_send(session, branch, prompt)
    report.step("done", f"{agent} runs on {host} in {started.container} (devbox agent attach {branch})")
    return AgentStarted(branch, started.container, agent)


def _where(session: Devbox, branch: str) -> tuple[HostSpec, hosts.Facts, HostStarted]:
    host = host_of(session, branch)
    if not host:
        raise NotFound(f"{branch} has no environment on another host", f"devbox agent start {branch} --host NAME")
    spec = spec_of(session, host)
    f = hosts.known(session.settings, spec)  # where and as whom: no second ssh per call
    name = containers.container_name(session.settings, branch)
    return spec, f, HostStarted(host, branch, name, layout(f, branch).worktree, "running")


def host_agent_send(session: Devbox, branch: str, text: str) -> None:
    spec, f, at = _where(session, branch)
    for keys in (["-l", text], ["Enter"]):
        argv = host_exec_argv(spec, f, at.container, at.worktree, ["tmux", "-u", "send-keys", "-t", SESSION, *keys])
        if not hosts.run(session.settings, spec, argv).ok:
            raise _no_agent(branch, spec)


def _no_agent(branch: str, spec: HostSpec) -> NotFound:
    return NotFound(f"no agent runs on {branch} on {spec.name}", f"devbox agent start {branch} --host {spec.name}")


def host_agent_stop(session: Devbox, branch: str, *, sink: Sink = null_sink) -> None:
    spec, f, at = _where(session, branch)
    argv = host_exec_argv(spec, f, at.container, at.worktree, ["tmux", "-u", "kill-session", "-t", SESSION])
    if not hosts.run(session.settings, spec, argv).ok:
        raise _no_agent(branch, spec)
    line = f'{{"ts":%s,"payload":{{"hook_event_name":"{EXIT_EVENT}","status":"stopped"}}}}\\n'
    script = (
        'pid=$(podman inspect --format "{{.State.Pid}}" "$1") && f=/proc/$pid/root/run/devbox-agent/events.jsonl'
        f' && {{ test -L "$f" || printf {shlex.quote(line)} "$(date +%s)" >>"$f"; }}'
    )  # never through a symlink
    hosts.run(session.settings, spec, ["sh", "-c", script, "stop", at.container])
    Reporter(sink, "agent-stop", Subject("agent", branch)).step("done", f"the agent on {branch} stopped on {spec.name}")


def host_agent_attach_argv(session: Devbox, branch: str, *, nested: bool = False) -> list[str]:
    from devbox.core.ops.remote import host_attach_argv

    _, _, at = _where(session, branch)
    return host_attach_argv(session, at, tmux_attach(nested), tty=True)


def host_agent_rows(session: Devbox, *, wait: float | None = None) -> tuple[AgentRow, ...]:
    """Every host environment's agent: one ssh per host, all hosts at once. ``wait``: the
    dashboard's bound, after which a host still answering keeps its last rows (or says it
    is being asked) and its answer comes with the next poll; None waits for every host
    (each bounded by its ssh timeout)."""
    if not session.settings.hosts:  # the dashboard's poll: no git call when there are no hosts
        return ()
    by_host: dict[str, list[str]] = {}
    for branch, host in git_hosts(session).items():
        by_host.setdefault(host, []).append(branch)
    if not by_host:
        return ()
    asks: dict[str, Future[list[AgentRow]]] = getattr(session, "_host_asks", {})
    last: dict[str, list[AgentRow]] = getattr(session, "_host_rows", {})
    session._host_asks, session._host_rows = asks, last  # type: ignore[attr-defined]
    for host, branches in by_host.items():
        if host not in asks or asks[host].done():
            asks[host] = _POOL.submit(_rows_on, session, host, sorted(branches))
    futures_wait([asks[h] for h in by_host], timeout=wait)
    out: list[AgentRow] = []
    for host, branches in by_host.items():
        ask = asks[host]
        if ask.done():
            last[host] = ask.result()
        asking = agent_state.AgentState("unknown", problem=f"asking {host}")
        rows = last.get(host) or [AgentRow(b, "", "unknown", asking, host) for b in branches]
        out += [r for r in rows if r.branch in branches]
    return tuple(out)


_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="host-agents")  # each call bounded by its ssh timeout


def git_hosts(session: Devbox) -> dict[str, str]:
    """branch -> host, for every branch whose environment is on another host."""
    return branch_notes.per_branch(session.settings.repo, HOST_KEY)


def _rows_on(session: Devbox, host: str, branches: list[str]) -> list[AgentRow]:
    s = session.settings
    names = {containers.container_name(s, b): b for b in branches}
    try:
        spec = spec_of(session, host)
        done = hosts.run(s, spec, ["sh", "-c", READ_STATES, "states", *names], errors="surrogateescape")
        found = parse_states(done.stdout.encode("utf-8", "surrogateescape"), set(names))
    except DevboxError as exc:
        return [AgentRow(b, n, "unknown", agent_state.AgentState("unknown", problem=exc.message), host)
                for n, b in names.items()]  # fmt: skip
    rows = []
    for name, branch in names.items():
        up, data = found.get(name, (False, b""))
        state = agent_state.fold(data, cut=len(data) >= agent_state.MAX_BYTES)
        if not data:
            state = agent_state.AgentState("no agent")
        rows.append(
            AgentRow(branch, name, "running" if up else "stopped", state, host, egress=_recorded(session, name))
        )
    return rows


def host_agent_preview(session: Devbox, branch: str, *, lines: int = 200) -> str:
    """The agent's terminal on its host (``tmux capture-pane`` through the host's podman)."""
    try:
        spec, f, at = _where(session, branch)
        argv = host_exec_argv(spec, f, at.container, at.worktree,
                     ["tmux", "-u", "capture-pane", "-p", "-J", "-S", f"-{lines}", "-t", SESSION])  # fmt: skip
        done = hosts.run(session.settings, spec, argv)
    except DevboxError as exc:
        return f"({exc.message})"
    return done.stdout.rstrip("\n") if done.ok else f"(no agent runs here: devbox agent start {branch} --host ...)"


def _recorded(session: Devbox, name: str) -> EgressView:
    """An environment's egress on another host as recorded here (its refusals are in its
    proxy's log there: ``devbox net log BRANCH``; a row does not open a tunnel to count them)."""
    p = egress.read_record(session.settings.build_dir, name) or egress.Policy("open")
    return EgressView(p.mode, tuple(r.text() for r in p.allow) if p.mode == "allow" else ())
