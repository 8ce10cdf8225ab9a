"""Agents run detached inside their environments: ``agent start`` makes or reuses the
worktree and container (the start-work path) and starts the agent in a tmux session
inside the container, as the container's user, so it outlives the terminal that started
it; ``send`` types into it, ``stop`` ends it (the worktree and container stay), ``agents``
lists every environment with its agent's state (from its hooks: core/agent_state.py).

Credentials: the agent's ``env`` names are passed as ``podman exec --env NAME`` with the
value in podman's own environment, so a value never appears on a command line, in the
container's configuration (``podman inspect``) or in a log; only the agent's tmux server
and the agent receive it. When the agent's command ends, however it ends, a wrapper
writes a ``DevboxAgentExit`` line to the state directory: a killed agent reads as exited.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devbox.core import agent_state, containers, labels, proc, proc_table
from devbox.core.agent_config import AgentSpec
from devbox.core.containers import Container
from devbox.core.errors import BadName, ContainerFailed, NotFound, Refused
from devbox.core.events import Reporter, Sink, Subject, null_sink
from devbox.core.filesystem import read_json, write_json
from devbox.core.ops.containers import find_container, start_work
from devbox.core.ops.egress import choose_policy
from devbox.core.ops.egress import view as egress_view
from devbox.core.ops.views import AgentRow
from devbox.core.session import Devbox

SESSION = "devbox-agent"  # the tmux session inside the container (tmux -u: UTF-8 whatever the locale)
EXIT_EVENT = "DevboxAgentExit"
QUIET = 5.0  # seconds without terminal output after which a hookless agent is guessed idle


@dataclass(frozen=True)
class AgentStarted:
    branch: str
    container: str
    agent: str


def _spec(session: Devbox, name: str) -> AgentSpec:
    spec = session.settings.agents.get(name)
    if spec is None:
        known = ", ".join(sorted(session.settings.agents))
        raise NotFound(f"no agent named {name!r}", f"known agents: {known} (define more as [agents.NAME])")
    return spec


def needed_env(spec: AgentSpec, agent: str) -> dict[str, str]:
    """The credentials the agent lists, from this environment (all of them, or refused)."""
    missing = [n for n in spec.env if n not in os.environ]
    if missing:
        raise NotFound(f"agent {agent!r} needs {', '.join(missing)} in your environment",
                       f"export {missing[0]}=... (only the agent's process receives it)")  # fmt: skip
    return {n: os.environ[n] for n in spec.env}


def _exec(
    session: Devbox,
    c: Container,
    command: list[str],
    *,
    pass_env: tuple[str, ...] = (),
    secrets: dict[str, str] | None = None,
    timeout: float = 30,
    workdir: str = "/",
) -> proc.Completed:
    """``command`` in ``c`` as the user (no privileges), its output captured. Talking to the
    agent's tmux needs no working directory: "/" keeps it working when the worktree was
    deleted by hand (runc refuses a working directory that is gone, with its own words)."""
    user = session.user
    argv = session.podman.exec_argv(
        c.name, containers.drop_privileges(user, command), user="0:0", workdir=workdir,
        env={**containers.exec_env(user), "DEVBOX_AGENT_STATE": containers.AGENT_STATE_MOUNT}, tty=False,
        pass_env=pass_env,
    )  # fmt: skip
    return proc.run(argv, tool="podman", env=secrets, timeout=timeout)


def _running(session: Devbox, c: Container) -> bool:
    return _exec(session, c, ["tmux", "-u", "has-session", "-t", SESSION]).returncode == 0


def _wrapper(spec: AgentSpec, prompt: str | None) -> str:
    """The agent's command under ``sh``: when it ends (a crash, a kill), one exit line."""
    argv = list(spec.command) + ([prompt] if prompt and spec.prompt == "arg" else [])
    exit_line = (
        f'printf \'{{"ts":%s,"payload":{{"hook_event_name":"{EXIT_EVENT}","status":%s}}}}\\n\' '
        f'"$(date +%s)" "$rc" >>"${{DEVBOX_AGENT_STATE:-{containers.AGENT_STATE_MOUNT}}}/events.jsonl" 2>/dev/null'
    )
    return f"{shlex.join(argv)}; rc=$?; {exit_line}; exit $rc"


def agent_start(
    session: Devbox, branch: str, *, prompt: str | None = None, agent: str = "claude", from_ref: str | None = None,
    egress: str = "", allow: Sequence[str] = (), sink: Sink = null_sink, cancel: threading.Event | None = None,
) -> AgentStarted:  # fmt: skip
    """Worktree, container, then the agent in its tmux session (refused when one runs). A
    new environment gets the agent's egress (``egress``/``allow``: ``--egress``/``--allow``
    over it); one that exists with another mode is refused with the way to change it."""
    cancel = cancel or threading.Event()
    spec = _spec(session, agent)
    secrets = needed_env(spec, agent)
    policy = choose_policy(session, mode=egress, allow=allow, agent=agent)
    res = start_work(session, branch, from_ref=from_ref, sink=sink, cancel=cancel, policy=policy)
    return launch_agent(session, branch, res.container, spec, secrets, prompt, sink)


def launch_agent(
    session: Devbox, branch: str, c: Container, spec: AgentSpec, secrets: dict[str, str], prompt: str | None,
    sink: Sink,
) -> AgentStarted:  # fmt: skip
    """The agent ``spec`` in the tmux session of ``branch``'s running container ``c``
    (refused when one runs there); ``secrets`` as ``needed_env`` found them."""
    report = Reporter(sink, "agent-start", Subject("agent", branch))
    if c.worktree and not os.path.isdir(c.worktree):
        raise Refused(f"the worktree of {branch} is missing: {c.worktree}", labels.missing_worktree_fix(branch))
    if _running(session, c):
        raise Refused(
            f"an agent already runs on {branch}", f"devbox agent attach {branch}, or devbox agent stop {branch}"
        )
    report.step("start", f"{spec.name} in {c.name}")
    command = ["tmux", "-u", "new-session", "-d", "-s", SESSION, "-x", "200", "-y", "50",
               "sh", "-c", _wrapper(spec, prompt)]  # fmt: skip
    done = _exec(session, c, command, pass_env=spec.env, secrets=secrets, workdir=c.worktree or "/")
    if not done.ok:
        raise ContainerFailed(f"the agent did not start in {c.name}: {done.last_error()}",
                              "is tmux in the image? see bootc/Containerfile")  # fmt: skip
    # which agent runs here, kept on the host beside (not in) the directory the agent can write
    write_json(containers.agent_record(session.settings, c.name), {"agent": spec.name, "hooks": spec.hooks})
    if prompt and spec.prompt == "type":
        _type(session, c, prompt)
    report.step("done", f"{spec.name} runs in tmux session {SESSION!r} of {c.name} (devbox agent attach {branch})")
    return AgentStarted(branch, c.name, spec.name)


def _type(session: Devbox, c: Container, text: str) -> None:
    for keys in (["-l", text], ["Enter"]):
        done = _exec(session, c, ["tmux", "-u", "send-keys", "-t", SESSION, *keys])
        if not done.ok:
            raise NotFound(f"no agent runs in {c.name}", f"start one: devbox agent start {c.branch}")


def agent_send(session: Devbox, branch: str, text: str) -> None:
    """Type ``text`` (then Enter) into the agent's terminal."""
    if "\x00" in text:
        raise BadName("the text contains a NUL character", "send printable text")
    _type(session, find_container(session, branch), text)


def agent_stop(session: Devbox, branch: str, *, sink: Sink = null_sink) -> None:
    """End the agent's tmux session (the worktree and container stay)."""
    c = find_container(session, branch)
    report = Reporter(sink, "agent-stop", Subject("agent", branch))
    done = _exec(session, c, ["tmux", "-u", "kill-session", "-t", SESSION])
    if not done.ok:
        raise NotFound(f"no agent runs on {branch}", f"start one: devbox agent start {branch}")
    # the wrapper died with the session: say it ended (never through a planted symlink)
    state_dir = containers.agent_state_dir(c)
    if state_dir is not None:
        agent_state.append(state_dir, {"hook_event_name": EXIT_EVENT, "status": "stopped"}, time.time())
    report.step("done", f"the agent on {branch} stopped; {c.name} keeps running")


NESTED_HINT = "devbox: in your tmux, C-b C-b d detaches from the agent (C-b d detaches your own tmux)"


def attach_hint(nested: bool) -> str:
    """What a face says before attaching from inside the user's tmux ("" otherwise)."""
    return NESTED_HINT if nested else ""


def tmux_attach(nested: bool) -> list[str]:
    """The agent's tmux attach. Inside the user's own tmux (``nested``) that tmux takes the
    prefix key first, so its detach key would leave the agent on screen and detach the
    user's session: the agent's status line then says how to reach the inner tmux (the
    prefix twice: tmux binds C-b C-b to send-prefix), and a direct attach puts it back."""
    if nested:
        hint = ["set-option", "-t", SESSION, "status-right", NESTED_HINT, ";",
                "set-option", "-t", SESSION, "status-right-length", str(len(NESTED_HINT))]  # fmt: skip
    else:
        hint = ["set-option", "-u", "-t", SESSION, "status-right", ";", "set-option", "-u", "-t", SESSION,
                "status-right-length"]  # fmt: skip
    return ["tmux", "-u", *hint, ";", "attach", "-t", SESSION]


def agent_attach_argv(session: Devbox, branch: str, *, nested: bool = False) -> list[str]:
    """``podman exec -it … tmux attach`` (tmux's detach key brings you back; ``nested``: the
    face runs inside the user's tmux, see ``tmux_attach``)."""
    c = find_container(session, branch)
    if not c.running:
        raise Refused(f"container {c.name} is not running", f"start it: devbox agent start {branch}")
    user = session.user
    return session.podman.exec_argv(
        c.name, containers.drop_privileges(user, tmux_attach(nested)), user="0:0",
        workdir="/", env=containers.exec_env(user), tty=True,
    )  # fmt: skip


def agent_preview(session: Devbox, branch: str, *, lines: int = 200) -> str:
    """The agent's terminal as text (``tmux capture-pane``), for the selected row only."""
    c = find_container(session, branch)
    if not c.running:
        return f"({c.name} is {c.state})"
    done = _exec(session, c, ["tmux", "-u", "capture-pane", "-p", "-J", "-S", f"-{lines}", "-t", SESSION])
    if not done.ok:
        return "(no agent runs here: devbox agent start " + branch + ")"
    return done.stdout.rstrip("\n")


def branch_from_prompt(prompt: str) -> str:
    """``agent/fix-login-timeout`` from "Fix the login timeout!" (checked like any branch)."""
    words = [w for w in "".join(c if c.isalnum() else " " for c in prompt.lower()).split() if w not in STOP_WORDS]
    slug = "-".join(words[:5])[:48].strip("-") or "task"
    return f"agent/{slug}"


STOP_WORDS = frozenset({"the", "a", "an", "of", "to", "in", "and", "please", "for", "on", "it"})


def list_agents(session: Devbox) -> tuple[AgentRow, ...]:
    """Every environment of this checkout with its agent's state (from the state directory,
    no process per row), most urgent first."""
    from devbox.core.ops.fleet_host import host_agent_rows  # (they import this module)
    from devbox.core.ops.fleet_vm import vm_agent_rows

    rows = agent_rows(session, tuple(containers.list_containers(session.settings, session.podman)))
    return tuple(sorted(rows + vm_agent_rows(session) + host_agent_rows(session), key=_urgency))


HOOK_ALIVE = frozenset({"working", "needs you", "done", "error"})  # states a live agent reports


def _believable_time(state: agent_state.AgentState, c: Container) -> agent_state.AgentState:
    """The hook's clock is the agent's to write: a ``since`` before the container started (its
    state tmpfs is new at every start) or in the future is not shown as an age."""
    since = state.since
    if since is not None and ((c.started_at and since < c.started_at - 60) or since > time.time() + 60):
        return dataclasses.replace(state, since=None)
    return state


def _tmux_runs(c: Container, live: dict[str, set[str]]) -> bool:
    """Whether a tmux server runs in ``c`` (the agent's session lives in it), from /proc:
    no process per row. Unknowable (the namespace unreadable): taken as running."""
    ns = proc_table.pid_namespace(c.pid)
    if not ns:
        return True
    if "tmux" not in live:
        live["tmux"] = proc_table.namespaces_running("tmux")
    return ns in live["tmux"]


def agent_rows(session: Devbox, conts: tuple[Container, ...]) -> tuple[AgentRow, ...]:
    rows = []
    live: dict[str, set[str]] = {}  # one /proc pass per call, when a row needs it
    for c in conts:
        state_dir = containers.agent_state_dir(c)
        record = read_json(containers.agent_record(session.settings, c.name))
        if state_dir is None:  # its state lived in the container's tmpfs: gone with it
            rows.append(AgentRow(c.branch, c.name, c.state, agent_state.AgentState(
                "exited" if record else "no agent", problem=f"its container is {c.state}"),
                egress=egress_view(session, c.name, c.egress, False)))  # fmt: skip
            continue
        state = _believable_time(agent_state.read(state_dir), c)
        hookless = isinstance(record, dict) and record.get("hooks") == "none"
        if not hookless and state.state in HOOK_ALIVE and not _tmux_runs(c, live):
            # a hook's word never outlives the process that said it: no exit line was
            # written (tmux was killed), so the agent is gone however its last hook read
            gone = f"its tmux session is gone (killed?): devbox agent start {c.branch}"
            state = agent_state.AgentState("exited", state.since, gone, state.last_event, state.events)
        if hookless and c.running and state.state != "exited":
            state = _guess(session, c)
        elif state.problem == "no event yet":
            state = agent_state.AgentState("no agent")
        if c.worktree and not os.path.isdir(c.worktree):  # what the agent said is about work that is gone
            why = f"its worktree {c.worktree} was deleted: {labels.missing_worktree_fix(c.branch)}"
            state = agent_state.AgentState("missing", state.since, why, state.last_event, state.events)
        rows.append(
            AgentRow(c.branch, c.name, c.state, state, egress=egress_view(session, c.name, c.egress, c.running))
        )
    return tuple(sorted(rows, key=_urgency))


def agent_state_dirs(conts: tuple[Container, ...]) -> list[tuple[str, Path]]:
    """Each running container's state directory as the host reads it (its tmpfs), for the
    dashboard's cheap poll (``agent_state.signature``)."""
    return [(c.name, d) for c in conts if (d := containers.agent_state_dir(c)) is not None]


def _guess(session: Devbox, c: Container) -> agent_state.AgentState:
    """An agent without hooks: "working?" while its terminal printed in the last ``QUIET``
    seconds, else "idle?"; a guess from tmux's activity clock, labelled as one."""
    done = _exec(session, c, ["tmux", "-u", "display-message", "-p", "-t", SESSION, "#{window_activity}"])
    if not done.ok:
        return agent_state.AgentState("exited", None, "its tmux session is gone (guessed: no hooks)")
    try:
        last = float(done.stdout.strip())
    except ValueError:
        return agent_state.AgentState("unknown", problem="tmux gave no activity time")
    quiet = time.time() - last
    if quiet < QUIET:
        return agent_state.AgentState("working?", last, "guessed from terminal output (no hooks)")
    return agent_state.AgentState("idle?", last, f"no output for {int(quiet)} s (guessed: no hooks)")


def _urgency(r: AgentRow) -> tuple[int, str]:
    return (agent_state.URGENCY.get(r.agent.state, 9), r.branch)
