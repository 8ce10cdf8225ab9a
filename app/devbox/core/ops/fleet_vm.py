"""Agents in the VM (``--vm``): the branch is pushed into the VM's repository
(``~/repos/<repo>``, as ``vm-git-push`` does), checked out in a worktree of its own there
(``~/repos/<repo>.worktrees/<slug>``), and the agent runs in a tmux server of its own
(``tmux -L devbox-<slug>``) as the VM's user, so it outlives the ssh connection that
started it. Its hooks write to ``~/.local/state/devbox/agents/<slug>/events.jsonl`` in the
VM, read over ssh on the dashboard's poll: one ssh for every agent in the VM, each file's
tail framed by its length, folded on the host under the same caps as a container's
(core/agent_state.py): the VM is as untrusted as the container.

Credentials reach the agent on ssh's stdin (``NAME=value`` lines read by the remote shell
and exported to the new tmux server only), never on a command line. Which branches have a
VM agent is recorded on the host (``.build/vm-agents.json``), so a poll with none costs
no ssh at all.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import threading
from urllib.parse import quote

from devbox.core import agent_state, git, transfer
from devbox.core.errors import DevboxError, NotFound, Refused
from devbox.core.events import Reporter, Sink, Subject, null_sink
from devbox.core.filesystem import read_json, write_json
from devbox.core.ops import vm_egress
from devbox.core.ops.fleet import EXIT_EVENT, SESSION, AgentStarted, _spec, _wrapper, needed_env, tmux_attach
from devbox.core.ops.steps import record_base
from devbox.core.ops.transfer import _remote_repo, git_push, target
from devbox.core.ops.views import IN_VM, AgentRow
from devbox.core.session import Devbox

STATE_ROOT = ".local/state/devbox/agents"  # under the VM user's home
RECORD = "vm-agents.json"  # under .build/: which branches have an agent in the VM
SLUG = re.compile(r"^[A-Za-z0-9._%-]{1,200}$")
VM = IN_VM  # AgentRow.container_state of a VM agent's row

# one ssh reads every agent: "<slug> <tmux up 0|1> <bytes>\n" then that many bytes of the
# file's tail (never a symlink, never anything but a regular file)
READ_STATES = (
    r"""
root="$HOME/"""
    + STATE_ROOT
    + r""""
tmp=$(mktemp) || exit 1
while [ $# -gt 1 ]; do
  s=$1; sock=$2; shift 2
  d="$root/$s"; f="$d/events.jsonl"; : >"$tmp"
  if [ -d "$d" ] && [ ! -L "$d" ] && [ -f "$f" ] && [ ! -L "$f" ]; then tail -c 1048576 "$f" >"$tmp"; fi
  if tmux -L "$sock" has-session -t devbox-agent 2>/dev/null; then up=1; else up=0; fi
  printf '%s %s %s\n' "$s" "$up" "$(($(wc -c <"$tmp")))"
  cat "$tmp"
done
rm -f "$tmp"
"""
)


def slug(session: Devbox, branch: str) -> str:
    """``proj-1a2b3c%2Fagent%2Ffix``: the checkout and the branch (two checkouts may use one
    VM and one branch name) as one file and socket name, reversible and shell-safe."""
    return quote(f"{session.settings.repo_name}/{branch}", safe="")


def _socket(session: Devbox, branch: str) -> list[str]:
    """tmux on the agent's own server: a hash names it (a socket path holds 107 bytes)."""
    return ["tmux", "-u", "-L", socket_name(slug(session, branch))]


def socket_name(slug: str) -> str:
    return "devbox-" + hashlib.sha256(slug.encode()).hexdigest()[:16]


def recorded(session: Devbox) -> dict[str, str]:
    """branch -> agent name, for the branches started with ``--vm`` (host side, trusted)."""
    data = read_json(session.settings.build_path(RECORD))
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _record(session: Devbox, branch: str, agent: str | None) -> None:
    data = recorded(session)
    if agent is None:
        data.pop(branch, None)
    else:
        data[branch] = agent
    write_json(session.settings.build_path(RECORD), data)


def vm_agent_start(
    session: Devbox, branch: str, *, prompt: str | None = None, agent: str = "claude", from_ref: str | None = None,
    egress: str = "", sink: Sink = null_sink, cancel: threading.Event | None = None,
) -> AgentStarted:  # fmt: skip
    """The branch into the VM, a worktree there, then the agent in its own tmux server. The
    VM's egress is the VM's (``[vm] egress``, enforced on the host): an agent is not started
    in a VM whose egress is open unless ``egress`` says "open" (``--egress open``)."""
    cancel = cancel or threading.Event()
    spec = _spec(session, agent)
    secrets = needed_env(spec, agent)
    fence = vm_egress.recorded(session)
    if egress and egress != fence.mode:
        raise Refused(f"the VM's egress is {fence.mode}, not {egress}: it is the VM's ([vm] egress)",
                      f'set [vm] egress = "{egress}" in devbox.toml, then ./vm-up.sh')  # fmt: skip
    if fence.mode == "open" and egress != "open":
        raise Refused("the VM's egress is open: an agent there would reach anything the host reaches",
                      'fence it: [vm] egress = "allow" in devbox.toml, then ./vm-up.sh; or accept it: '
                      f"devbox agent start --vm {branch} --egress open")  # fmt: skip
    proxy = "".join(f"export {k}={shlex.quote(v)}; " for k, v in fence.env().items())
    repo = session.settings.repo
    git.check_branch_name(branch)
    if not git.rev(repo, f"refs/heads/{branch}"):  # a new branch starts at REF (or HEAD), like start-work
        start = git.rev(repo, from_ref or "HEAD")
        if not start:
            raise NotFound(f"no commit {from_ref or 'HEAD'!r} to start {branch} from", "give --from REF")
        git.update_ref(repo, f"refs/heads/{branch}", start, "")
        record_base(repo, branch, from_ref)
    report = Reporter(sink, "agent-start", Subject("agent", branch))
    t = target(session)
    git_push(session, branch, sink=sink, cancel=cancel)
    remote = _remote_repo(session)
    tree = f"{remote}.worktrees/{quote(branch, safe='')}"
    state = f"{STATE_ROOT}/{slug(session, branch)}"
    tmux = shlex.join(_socket(session, branch))
    names = " ".join(secrets)
    repo_q, branch_q = shlex.quote(remote), shlex.quote(branch)
    script = (
        "set -e; cd; "
        # the branch the VM's checkout is on runs there (git would refuse a second checkout)
        f'if [ "$(git -C {repo_q} symbolic-ref --short -q HEAD || true)" = {branch_q} ]; then tree="$HOME"/{repo_q}; '
        f'else tree="$HOME"/{shlex.quote(tree)}; '
        f'test -d "$tree" || git -C {repo_q} worktree add -q "$tree" {branch_q}; '
        f"fi; mkdir -p {shlex.quote(state)}; "
        f"if {tmux} has-session -t {SESSION} 2>/dev/null; then echo devbox-agent-running; exit 3; fi; "
        # the credentials, one NAME=value line each on stdin, for the new tmux server only
        f'for n in {names}; do IFS= read -r line; export "$n=${{line#*=}}"; done; '
        f'{proxy}export DEVBOX_AGENT_STATE="$HOME/{state}"; cd "$tree"; echo "devbox-agent-dir ${{tree#"$HOME"/}}"; '
        f"{tmux} new-session -d -s {SESSION} -x 200 -y 50 sh -c {shlex.quote(_wrapper(spec, prompt))}"
    )
    report.step("start", f"{agent} in the VM")
    lines = "".join(f"{n}={v}\n" for n, v in secrets.items()).encode()
    done = transfer.run_remote(t, ["sh", "-c", script], "agent start", timeout=t.timeout + 60, cancel=cancel,
                               check=False, input=lines)  # fmt: skip
    if done.returncode == 3 and "devbox-agent-running" in done.stdout:
        raise Refused(f"an agent already runs on {branch} in the VM",
                      f"devbox agent attach --vm {branch}, or devbox agent stop --vm {branch}")  # fmt: skip
    if not done.ok:
        raise transfer.SshFailed(f"the agent did not start in the VM: {done.last_error()}",
                                 "is tmux in the VM's image? see bootc/Containerfile")  # fmt: skip
    where = next((ln.split(" ", 1)[1] for ln in done.stdout.splitlines() if ln.startswith("devbox-agent-dir ")), tree)
    _record(session, branch, agent)
    if prompt and spec.prompt == "type":
        vm_agent_send(session, branch, prompt)
    report.step("done", f"{agent} runs in the VM in ~/{where} (devbox agent attach --vm {branch})")
    return AgentStarted(branch, f"{t.alias}:~/{where}", agent)


def _known(session: Devbox, branch: str) -> None:
    if branch not in recorded(session):
        raise NotFound(f"no agent was started on {branch} in the VM", f"devbox agent start --vm {branch}")


def vm_agent_send(session: Devbox, branch: str, text: str) -> None:
    _known(session, branch)
    t = target(session)
    for keys in (["-l", text], ["Enter"]):
        transfer.run_remote(t, [*_socket(session, branch), "send-keys", "-t", SESSION, *keys], "agent send", timeout=60)


def vm_agent_stop(session: Devbox, branch: str, *, sink: Sink = null_sink) -> None:
    _known(session, branch)
    report = Reporter(sink, "agent-stop", Subject("agent", branch))
    events = f'"$HOME/{STATE_ROOT}/{slug(session, branch)}/events.jsonl"'
    exit_line = (
        f'printf \'{{"ts":%s,"payload":{{"hook_event_name":"{EXIT_EVENT}","status":"stopped"}}}}\\n\' '
        f'"$(date +%s)" >>{events}'
    )
    # the exit line, never through a symlink the agent may have planted
    script = (
        f"{shlex.join(_socket(session, branch))} kill-session -t {SESSION} && {{ test -L {events} || {exit_line}; }}"
    )
    try:
        transfer.run_remote(target(session), ["sh", "-c", script], "agent stop", timeout=60)
    except transfer.SshFailed:
        raise NotFound(f"no agent runs on {branch} in the VM", f"devbox agent start --vm {branch}") from None
    report.step("done", f"the agent on {branch} stopped; the VM keeps running")


def vm_agent_attach_argv(session: Devbox, branch: str, *, nested: bool = False) -> list[str]:
    _known(session, branch)
    inner = tmux_attach(nested)[2:]  # after "tmux -u": the VM's tmux runs on the agent's own socket
    return transfer.ssh_argv(target(session), [*_socket(session, branch), *inner], tty=True)


def vm_agent_preview(session: Devbox, branch: str, *, lines: int = 200) -> str:
    argv = [*_socket(session, branch), "capture-pane", "-p", "-J", "-S", f"-{lines}", "-t", SESSION]
    try:
        return transfer.run_remote(target(session), argv, "preview", timeout=30).stdout.rstrip("\n")
    except DevboxError as exc:
        return f"({exc.message})"


def vm_agent_rows(session: Devbox, timeout: float = 20) -> tuple[AgentRow, ...]:
    """Every VM agent's state: one ssh, nothing when none was started. The VM unreachable:
    each row says so (unknown), the rest of the fleet is unaffected."""
    known = recorded(session)
    if not known:
        return ()
    slugs = {slug(session, b): b for b in known}
    try:
        pairs = [x for s in slugs for x in (s, socket_name(s))]
        done = transfer.run_remote(target(session), ["sh", "-c", READ_STATES, "sh", *pairs],
                                   "reading agent states", timeout=timeout, errors="surrogateescape")  # fmt: skip
        out = done.stdout.encode("utf-8", "surrogateescape")  # the bytes as sent
    except DevboxError as exc:
        return tuple(AgentRow(b, "", VM, agent_state.AgentState("unknown", problem=exc.message)) for b in known)
    found = parse_states(out, set(slugs))
    rows = []
    for s, branch in slugs.items():
        up, data = found.get(s, (False, b""))
        state = agent_state.fold(data, cut=len(data) >= agent_state.MAX_BYTES)
        if state.problem == "no event yet" or (state.state == "unknown" and not data):
            state = agent_state.AgentState("unknown", problem="no event yet")
        if not up and state.state not in ("exited", "unknown"):  # a VM reboot ends tmux without a word
            state = agent_state.AgentState(
                "exited", state.last_event or state.since, "the agent's tmux is gone in the VM"
            )
        rows.append(AgentRow(branch, "", VM, state))
    return tuple(rows)


def parse_states(out: bytes, slugs: set[str]) -> dict[str, tuple[bool, bytes]]:
    """``READ_STATES``'s output, framed by length; anything unexpected ends the parse."""
    found: dict[str, tuple[bool, bytes]] = {}
    pos = 0
    while pos < len(out):
        end = out.find(b"\n", pos, pos + 300)
        if end < 0:
            break
        head = out[pos:end].decode("ascii", "replace").split(" ")
        if len(head) != 3 or head[0] not in slugs or not SLUG.match(head[0]) or not head[2].isdigit():
            break
        size = int(head[2])
        if size > agent_state.MAX_BYTES:
            break
        found[head[0]] = (head[1] == "1", out[end + 1 : end + 1 + size])
        pos = end + 1 + size
    return found


def forget(session: Devbox, branch: str) -> None:
    """Drop the host's record of a VM agent (``vm down`` takes them all)."""
    _record(session, branch, None)
