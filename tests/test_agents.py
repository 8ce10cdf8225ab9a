"""Agents in their containers (issue 15), against the stand-in for Claude Code (tests/
fake_claude: it reads the same settings files and runs the configured hooks with Claude
Code's JSON payloads), real podman and tmux inside the container."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Project

pytestmark = pytest.mark.podman


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True)


def agents(project: Project) -> dict[str, dict[str, object]]:
    res = project.devbox("agents", "--json")
    assert res.returncode == 0, res.stderr
    return {row["branch"]: row for row in json.loads(res.stdout)}


def wait_for(cond: Callable[[], object], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)


def state_of(project: Project, branch: str) -> str:
    return str(agents(project).get(branch, {}).get("state"))


def test_an_agent_asks_is_answered_finishes_and_exits(project: Project) -> None:
    secret = "s3cr3t-value-" + str(time.time_ns())
    with (project.root / "devbox.toml").open("a") as fh:
        fh.write('[agents.claude]\ncommand = ["claude"]\nenv = ["DEVBOX_TEST_SECRET"]\n')
    env = {**project.env, "DEVBOX_TEST_SECRET": secret}
    res = project.devbox("agent", "start", "a1", "--prompt", "work 1; ask Bash deploy; work 1", env=env)
    assert res.returncode == 0, res.stderr
    name = next(r["container"] for b, r in agents(project).items() if b == "a1")
    wait_for(lambda: state_of(project, "a1") == "needs you", 60, "the question")
    row = agents(project)["a1"]
    assert row["message"] == "Claude needs your permission to use Bash deploy"
    # the credential reached the agent only: not the container's configuration, not a log
    assert secret not in podman("inspect", str(name)).stdout
    assert not any(secret in p.read_text(errors="replace") for p in (project.root / ".build" / "logs").glob("*.log"))
    pid = podman("exec", str(name), "pidof", "claude").stdout.split()[0]
    environ = podman("exec", str(name), "cat", f"/proc/{pid}/environ").stdout
    assert f"DEVBOX_TEST_SECRET={secret}" in environ.split("\0")

    sent = project.devbox("agent", "send", "a1", "y")
    assert sent.returncode == 0 and sent.stdout.startswith("sent to the agent on a1: y"), sent  # not silent
    wait_for(lambda: state_of(project, "a1") in ("working", "done"), 30, "working again")
    wait_for(lambda: state_of(project, "a1") == "done", 60, "done")
    again = project.devbox("agent", "start", "a1", env=env)
    assert again.returncode == 11 and "already runs" in again.stderr  # one agent per environment

    killed = podman("exec", str(name), "sh", "-c", "kill $(pidof claude)")  # killed inside the container
    assert killed.returncode == 0, killed.stderr
    wait_for(lambda: state_of(project, "a1") == "exited", 30, "exited")
    assert podman("inspect", "-f", "{{.State.Status}}", str(name)).stdout.strip() == "running"
    plain = project.devbox("agents")
    assert plain.returncode == 0 and "a1" in plain.stdout and "exited" in plain.stdout
    assert plain.stdout.split()[:6] == ["BRANCH", "STATE", "FOR", "ENV", "EGRESS", "MESSAGE"]  # a header row
    a1 = next(line.split() for line in plain.stdout.splitlines() if line.startswith("a1 "))
    assert a1[4] == "allow", a1  # an agent's own policy: its endpoints only


def test_the_users_own_hooks_run_and_an_emptied_state_dir_is_written_again(project: Project) -> None:
    with (project.root / "devbox.toml").open("a") as fh:
        fh.write('[agents.claude]\ncommand = ["claude"]\nenv = []\n')
    res = project.devbox("start-work", "b1", "--detach", "--egress", "allow")  # the agent's mode, for it
    assert res.returncode == 0, res.stderr
    name = res.stdout.strip().splitlines()[-1]
    user_settings = '{"hooks": {"Stop": [{"hooks": [{"type": "command", "command": "echo ran >> $HOME/user-hook"}]}]}}'
    script = f"mkdir -p $HOME/.claude && printf '%s' '{user_settings}' > $HOME/.claude/settings.json"
    made = project.devbox("container", "exec", "b1", "--", "sh", "-c", script)
    assert made.returncode == 0, made.stderr
    assert project.devbox("agent", "start", "b1", "--prompt", "work 0.2").returncode == 0
    wait_for(lambda: state_of(project, "b1") == "done", 60, "done")
    ran = project.devbox("container", "exec", "b1", "--", "sh", "-c", "cat $HOME/user-hook")
    assert ran.stdout.strip() == "ran"  # beside devbox's own hooks

    # the state directory emptied under a running agent (the agent may: it is its own tmpfs)
    emptied = podman("exec", "--user", f"{os.getuid()}:{os.getgid()}", name, "sh", "-c", "rm -f /run/devbox-agent/*")
    assert emptied.returncode == 0, emptied.stderr
    assert agents(project)["b1"]["state"] != "done"  # what it said before is not kept
    assert project.devbox("agent", "send", "b1", "work 0.2").returncode == 0
    pane = ["exec", name, "tmux", "-u", "capture-pane", "-p", "-t", "devbox-agent"]
    wait_for(lambda: podman(*pane).stdout.count("done: your move") >= 2, 30, "the turn after the deletion")
    wait_for(lambda: state_of(project, "b1") == "done", 30, "the next hook writes it again")
    assert podman("exec", name, "pidof", "claude").returncode == 0  # the agent keeps running
    other = project.devbox("agent", "start", "b2", "--prompt", "work 0.1")
    assert other.returncode == 0, other.stderr
    wait_for(lambda: state_of(project, "b2") == "done", 60, "another agent")


def test_agent_start_names_a_branch_after_its_prompt_and_refuses_bad_input(project: Project) -> None:
    res = project.devbox("agent", "start", "--prompt", "Fix the login timeout!", "--agent", "nope")
    assert res.returncode == 9 and "no agent named 'nope'" in res.stderr
    with (project.root / "devbox.toml").open("a") as fh:
        fh.write('[agents.claude]\ncommand = ["claude"]\nenv = []\n')
    res = project.devbox("agent", "start", "--prompt", "Fix the login timeout!")
    assert res.returncode == 0, res.stderr
    assert "agent/fix-login-timeout" in agents(project)
    assert project.devbox("agent", "send", "no-such-branch", "hi").returncode == 9
    assert project.devbox("agent", "stop", "agent/fix-login-timeout").returncode == 0
    wait_for(lambda: state_of(project, "agent/fix-login-timeout") == "exited", 30, "stopped")
    assert (Path(project.root.parent) / "proj.worktrees" / "agent" / "fix-login-timeout").is_dir()  # kept


def test_status_json_has_the_agents_section(project: Project) -> None:
    with (project.root / "devbox.toml").open("a") as fh:
        fh.write('[agents.claude]\ncommand = ["claude"]\nenv = []\n')
    assert project.devbox("agent", "start", "s1", "--prompt", "work 0.1").returncode == 0
    wait_for(lambda: state_of(project, "s1") == "done", 60, "done")
    data = json.loads(project.devbox("status", "--json").stdout)
    assert data["schema"] == 3 and [(a["branch"], a["state"]) for a in data["agents"]] == [("s1", "done")]
    # schema 3: each environment's egress (an agent's own by default: its endpoints, nothing else)
    assert data["agents"][0]["egress"] == {"mode": "allow", "allow": ["api.anthropic.com", "statsig.anthropic.com"],
                                           "refused": 0, "last_refused": ""}  # fmt: skip
    assert [c["egress"] for c in data["containers"]] == ["allow"]


def test_watch_notifies_once_per_transition(project: Project, tmp_path: Path) -> None:
    """`agents --watch`: each move printed; notify.command once per move into needs you / done."""
    import signal
    import sys

    got = tmp_path / "notified"
    with (project.root / "devbox.toml").open("a") as fh:
        fh.write('[agents.claude]\ncommand = ["claude"]\nenv = []\n')
        fh.write(f'[notify]\ncommand = ["sh", "-c", "echo \\"$1|$2|$3\\" >> {got}", "notify"]\n')
    watcher = subprocess.Popen([sys.executable, "-m", "devbox.cli", "agents", "--watch"], cwd=project.root,
                               env=project.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert project.devbox("agent", "start", "w1", "--prompt", "ask Bash deploy").returncode == 0
        wait_for(lambda: got.exists() and "w1|needs you|" in got.read_text(), 60, "the needs-you notification")
        assert project.devbox("agent", "send", "w1", "y").returncode == 0
        wait_for(lambda: "w1|done|" in got.read_text(), 60, "the done notification")
        time.sleep(1.5)  # three more looks of the watcher: nothing new may be sent
        lines = got.read_text().splitlines()
        assert [ln.split("|")[1] for ln in lines] == ["needs you", "done"], lines
        assert lines[0] == "w1|needs you|Claude needs your permission to use Bash deploy"
    finally:
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=30)
    assert "w1: " in out and "-> needs you" in out and "-> done" in out and "Traceback" not in err


def test_the_fleet_shows_a_question_at_once_and_notifies_once(project: Project, tmp_path: Path) -> None:
    """The live dashboard: a hook's write reaches the fleet row through the state-file poll
    (no full status needed), the dashboard notifies once (notify.command), and `]` selects
    the agent that needs you."""
    import asyncio

    from devbox.core.session import Devbox
    from devbox.tui.app import make_app
    from devbox.tui.fleet import FleetTable

    got = tmp_path / "notified"
    with (project.root / "devbox.toml").open("a") as fh:
        fh.write('[agents.claude]\ncommand = ["claude"]\nenv = []\n')
        fh.write(f'[notify]\ncommand = ["sh", "-c", "echo \\"$1|$2\\" >> {got}", "notify"]\n')
    assert project.devbox("agent", "start", "f1", "--prompt", "work 0.1").returncode == 0
    assert project.devbox("agent", "start", "f2", "--prompt", "work 2; ask Bash ship").returncode == 0
    session = Devbox.open(project.root, env=project.env)

    async def go() -> None:
        app = make_app(session)
        async with app.run_test(size=(120, 36)) as pilot:
            deadline = time.monotonic() + 60
            while app.last_update is None or not (app.last_update.status.agents.value or ()):
                assert time.monotonic() < deadline
                await pilot.pause(0.1)
            table = app.query_one(FleetTable)
            assert app.view == "fleet" and table.has_focus  # where devbox-tui starts
            while "needs you" not in str(table._shown.get("f2", "")):
                assert time.monotonic() < deadline, table._shown
                await pilot.pause(0.05)
            await pilot.press("right_square_bracket")
            assert table.selected_key() == "f2"
            while not (got.exists() and "f2|needs you" in got.read_text()):
                assert time.monotonic() < deadline
                await pilot.pause(0.1)

    try:
        asyncio.run(go())
    finally:
        session.close()
    assert got.read_text().count("f2|needs you") == 1


def test_an_agent_without_hooks_gets_a_labelled_guess(project: Project) -> None:
    """hooks = "none": the state is a guess from tmux's activity clock, shown as "working?"
    while the terminal prints and "idle?" once it has been quiet, never as fact; its end
    is still exited (the wrapper's line)."""
    script = "i=0; while [ $i -lt 8 ]; do echo tick $i; sleep 1; i=$((i+1)); done; read x; echo got $x; sleep 2"
    with (project.root / "devbox.toml").open("a") as fh:
        fh.write(f'[agents.plain]\ncommand = ["sh", "-c", "{script}"]\nprompt = "none"\nhooks = "none"\n')
    res = project.devbox("agent", "start", "g1", "--agent", "plain")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: state_of(project, "g1") == "working?", 20, "working? while it prints")
    assert "guess" in str(agents(project)["g1"]["message"])
    wait_for(lambda: state_of(project, "g1") == "idle?", 30, "idle? once quiet")
    assert project.devbox("agent", "send", "g1", "hello").returncode == 0  # it reads, prints, then ends
    wait_for(lambda: state_of(project, "g1") == "exited", 30, "exited")
    name = str(agents(project)["g1"]["container"])
    assert podman("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "running"


def test_a_killed_agent_reads_exited_not_its_last_hook(project: Project) -> None:
    """issue 33 item 1: tmux killed inside (the agent dies, no exit line is written): the row
    reads exited with why, never the last hook's done."""
    with (project.root / "devbox.toml").open("a") as fh:
        fh.write('[agents.claude]\ncommand = ["claude"]\nenv = []\n')
    assert project.devbox("agent", "start", "k1", "--prompt", "work 0.1").returncode == 0
    wait_for(lambda: state_of(project, "k1") == "done", 60, "done")
    name = str(agents(project)["k1"]["container"])
    # the wrapper shell first (SIGKILL: it writes no exit line), then the agent and tmux at
    # once: a SIGHUP'd agent may still say SessionEnd itself, and this is about the agent
    # that says nothing
    kill = "pane=$(tmux -u display -p -t devbox-agent '#{pane_pid}') && kill -9 $pane $(pidof claude) $(pidof tmux)"
    assert podman("exec", name, "sh", "-c", kill).returncode == 0
    row = agents(project)["k1"]
    assert row["state"] == "exited" and "tmux session is gone" in str(row["message"]), row


def test_a_worktree_deleted_by_hand_reads_missing_and_the_agent_is_still_reached(project: Project) -> None:
    """issue 33 item 7: after rm -rf of an agent's worktree the row read done, the Diff said
    0 uncommitted, agent send said no agent runs (exit 9) though it ran, and runc's "possible
    container breakout detected" reached the user. The row reads MISSING with the fix, the
    agent is still reached, no tool's raw words are shown, and --recreate brings it back."""
    import shutil

    with (project.root / "devbox.toml").open("a") as fh:
        fh.write('[agents.claude]\ncommand = ["claude"]\nenv = []\n')
    assert project.devbox("agent", "start", "m1", "--prompt", "work 0.1").returncode == 0
    wait_for(lambda: state_of(project, "m1") == "done", 60, "done")
    row = agents(project)["m1"]
    worktree = Path(str(podman("inspect", "--format", "{{index .Config.Labels \"devbox.worktree\"}}",
                               str(row["container"])).stdout.strip()))  # fmt: skip
    assert worktree.is_dir(), worktree
    shutil.rmtree(worktree)
    row = agents(project)["m1"]
    assert row["state"] == "missing" and "--recreate" in str(row["message"]), row
    outputs = []
    sent = project.devbox("agent", "send", "m1", "work 0.1")  # the agent still runs: it is reached
    outputs.append(sent.stdout + sent.stderr)
    assert sent.returncode == 0, sent.stderr
    diff = project.devbox("diff", "m1", "--json")
    outputs.append(diff.stdout + diff.stderr)
    assert diff.returncode == 0 and json.loads(diff.stdout)["worktree_missing"] is True, diff.stderr
    shell = project.devbox("container", "exec", "m1", "--", "true")
    outputs.append(shell.stdout + shell.stderr)
    assert shell.returncode != 0 and "missing" in shell.stderr and "--recreate" in shell.stderr
    assert not any("breakout" in o or "runc" in o or "Traceback" in o for o in outputs), outputs
    again = project.devbox("start-work", "m1", "--recreate")
    assert again.returncode == 0, again.stderr
    assert worktree.is_dir() and agents(project)["m1"]["state"] != "missing"


def test_attach_from_inside_tmux_says_how_to_detach_and_that_key_works(project: Project) -> None:
    """issue 33 item 11: run inside the user's tmux, the user's tmux takes C-b first, so C-b d
    detached the user's own session and left the agent on screen. The agent's status line
    says what detaches (the prefix twice), and that key does: the agent runs on."""
    import uuid

    with (project.root / "devbox.toml").open("a") as fh:
        fh.write('[agents.claude]\ncommand = ["claude"]\nenv = []\n')
    assert project.devbox("agent", "start", "n1", "--prompt", "work 0.1").returncode == 0
    wait_for(lambda: state_of(project, "n1") == "done", 60, "done")
    name = str(agents(project)["n1"]["container"])
    outer = ["tmux", "-L", f"devbox-test-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]  # the user's own tmux
    attach = [*project.devbox_argv(), "agent", "attach", "n1"]
    started = subprocess.run([*outer, "new-session", "-d", "-s", "user", "-x", "150", "-y", "30", *attach],
                             env=project.env, cwd=project.root, capture_output=True, text=True)  # fmt: skip
    assert started.returncode == 0, started.stderr

    def screen() -> str:
        return subprocess.run([*outer, "capture-pane", "-p", "-t", "user"], capture_output=True, text=True).stdout

    import fcntl
    import struct
    import termios

    main, sub = os.openpty()  # the user's terminal, with their tmux client attached in it
    fcntl.ioctl(sub, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 150, 0, 0))  # the session's size: no resize
    client = subprocess.Popen([*outer, "attach", "-t", "user"], stdin=sub, stdout=sub, stderr=sub,
                              env={**project.env, "TERM": "xterm-256color"}, start_new_session=True)  # fmt: skip
    os.close(sub)
    try:
        wait_for(lambda: "C-b C-b d detaches from the agent" in screen(), 30, "the hint on the agent's status line")
        clients = [*outer, "list-clients", "-t", "user"]
        wait_for(lambda: subprocess.run(clients, capture_output=True, text=True).stdout.strip(), 30, "the client")

        def gone() -> bool:
            return subprocess.run([*outer, "has-session", "-t", "user"], capture_output=True).returncode != 0

        for _ in range(3):  # typed by the user, key by key: C-b C-b d (again if a busy machine lost it)
            for key in (b"\x02", b"\x02", b"d"):
                os.write(main, key)
                time.sleep(0.2)
            deadline = time.monotonic() + 10
            while not gone() and time.monotonic() < deadline:
                time.sleep(0.2)
            if gone():
                break
        assert gone(), "the attach ended: the agent's tmux detached, the user's own pane closed"
        client.wait(timeout=30)
    finally:
        client.kill()
        os.close(main)
        subprocess.run([*outer, "kill-server"], capture_output=True)
    inner = podman("exec", name, "tmux", "-u", "has-session", "-t", "devbox-agent")
    assert inner.returncode == 0, inner.stderr  # the agent runs on
