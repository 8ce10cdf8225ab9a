"""Agents in the VM (``--vm``) over real ssh: the sshd stand-in for the VM (tests/sshd.py),
real tmux and git there, the stand-in agent (tests/fake_claude) with the image's hook
script registered in the project's ``.claude/settings.json`` (the host's ``/etc`` is not
the tests' to write). The state reaches ``devbox agents`` and the dashboard's poll through
one ssh; the VM's files are read under the same caps as a container's."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import fakeagent
from sshd import HOME, vm_project_over_ssh

from conftest import ROOT, Project, git

STATE = HOME / ".local" / "state" / "devbox" / "agents"


TOKEN = "s3cret-" + uuid.uuid4().hex  # the agent's credential (env = ["DEVBOX_TEST_TOKEN"])


def devbox(proj: Project, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devbox.cli", *args], cwd=proj.root,
                          env={**proj.env, "DEVBOX_TEST_TOKEN": TOKEN}, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def agents(proj: Project) -> dict[str, dict[str, object]]:
    out = devbox(proj, "agents", "--json")
    assert out.returncode == 0, out.stderr
    return {str(r["branch"]): r for r in json.loads(out.stdout)}


def wait_state(proj: Project, branch: str, state: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        row = agents(proj).get(branch, {})
        if row.get("state") == state:
            return row
        assert time.monotonic() < deadline, row
        time.sleep(0.5)


@pytest.fixture
def vm_agent_project(tmp_path: Path, podman_service: object):  # type: ignore[no-untyped-def]
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (.ci/run installs it)")
    claude = fakeagent.build()
    with vm_project_over_ssh(tmp_path) as (proj, _sshd):
        hook = proj.root / "agent-hook.sh"
        shutil.copy2(ROOT / "bootc" / "agent-hook.sh", hook)
        events = ("SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Notification", "Stop",
                  "SessionEnd")  # fmt: skip
        settings = {"hooks": {e: [{"hooks": [{"type": "command", "command": str(hook)}]}] for e in events}}
        (proj.root / ".claude").mkdir()
        (proj.root / ".claude" / "settings.json").write_text(json.dumps(settings))
        with (proj.root / "devbox.toml").open("a") as fh:
            fh.write(f'[agents.claude]\ncommand = ["{claude}"]\nenv = ["DEVBOX_TEST_TOKEN"]\n')
        git(proj.root, "add", "-A")
        git(proj.root, "commit", "-qm", "the agent's settings")
        made: list[str] = []
        yield proj, made
        for branch in made:  # each agent's own tmux server, then its state
            devbox(proj, "agent", "stop", "--vm", branch)
        for d in STATE.glob(proj.root.name + "%2F*"):
            shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(HOME / "repos" / f"{proj.root.name}.worktrees", ignore_errors=True)


def test_an_agent_in_the_vm_asks_is_answered_finishes_and_stops(vm_agent_project) -> None:  # type: ignore[no-untyped-def]
    proj, made = vm_agent_project
    branch = f"vm-{uuid.uuid4().hex[:6]}"
    made.append(branch)
    started = devbox(
        proj, "agent", "start", "--vm", "--egress", "open", branch, "--prompt", "work 1; ask Bash deploy; say finished"
    )
    assert started.returncode == 0, started.stderr
    assert f"attach: devbox agent attach --vm {branch}" in started.stdout
    row = wait_state(proj, branch, "needs you")
    assert row["container_state"] == "vm" and "deploy" in str(row["message"])
    # the VM's checkout holds the first branch pushed there; the credential reached the agent only
    assert f"~/repos/{proj.root.name})" in started.stdout
    assert (HOME / "repos" / proj.root.name / ".claude" / "settings.json").exists()
    token = TOKEN
    assert token not in (proj.root / ".build" / "vm-agents.json").read_text()
    logs = proj.root / ".build" / "logs"
    assert not any(token in p.read_text(errors="replace") for p in logs.glob("*.log"))

    again = devbox(proj, "agent", "start", "--vm", "--egress", "open", branch, "--prompt", "work 1")
    assert again.returncode != 0 and "already runs" in again.stderr  # one agent per branch

    other = f"vm-{uuid.uuid4().hex[:6]}"  # a second branch: a worktree of its own in the VM
    made.append(other)
    second = devbox(proj, "agent", "start", "--vm", "--egress", "open", other, "--prompt", "work 300")
    assert second.returncode == 0, second.stderr
    assert (HOME / "repos" / f"{proj.root.name}.worktrees" / other / ".claude").is_dir()
    wait_state(proj, other, "working")

    assert devbox(proj, "agent", "send", "--vm", branch, "y").returncode == 0
    row = wait_state(proj, branch, "done")
    assert devbox(proj, "agent", "stop", "--vm", branch).returncode == 0
    wait_state(proj, branch, "exited", 20)
    assert devbox(proj, "agent", "send", "--vm", "never-started", "x").returncode != 0


def test_vm_state_is_untrusted_and_a_lost_tmux_reads_as_exited(vm_agent_project) -> None:  # type: ignore[no-untyped-def]
    """A symlink planted for the state file is not followed; a 2 MB garbage file costs one
    skipped line; the agent's tmux gone (a VM reboot) without an exit line: exited."""
    from devbox.core.ops import fleet_vm
    from devbox.core.session import Devbox

    proj, made = vm_agent_project
    branch = f"vm-{uuid.uuid4().hex[:6]}"
    made.append(branch)
    assert devbox(proj, "agent", "start", "--vm", "--egress", "open", branch, "--prompt", "work 300").returncode == 0
    wait_state(proj, branch, "working")
    session = Devbox.open(proj.root, env={**proj.env, "DEVBOX_TEST_TOKEN": TOKEN})
    try:
        slug = fleet_vm.slug(session, branch)
        events = STATE / slug / "events.jsonl"
        secret = proj.root.parent / "host-secret.json"
        secret.write_text('{"ts": 1, "payload": {"hook_event_name": "Stop", "last_assistant_message": "LEAK"}}\n')
        saved = events.read_bytes()
        events.unlink()
        os.symlink(secret, events)
        row = wait_state(proj, branch, "unknown")  # nothing read through the link
        assert "LEAK" not in json.dumps(row)
        events.unlink()
        events.write_bytes(saved + os.urandom(2 << 20) + b"\n" + saved.splitlines()[-1] + b"\n")
        wait_state(proj, branch, "working")
        subprocess.run(["tmux", "-L", fleet_vm.socket_name(slug), "kill-server"], check=True)
        row = wait_state(proj, branch, "exited")
        assert "tmux is gone" in str(row["message"])
    finally:
        session.close()


def test_the_dashboard_shows_a_vm_agent_on_its_poll(vm_agent_project) -> None:  # type: ignore[no-untyped-def]
    from devbox.core.session import Devbox
    from devbox.tui.app import make_app
    from devbox.tui.fleet import FleetTable, PreviewPane

    proj, made = vm_agent_project
    branch = f"vm-{uuid.uuid4().hex[:6]}"
    made.append(branch)
    assert (
        devbox(
            proj, "agent", "start", "--vm", "--egress", "open", branch, "--prompt", "work 2; ask Bash ship-it"
        ).returncode
        == 0
    )
    session = Devbox.open(proj.root, env={**proj.env, "DEVBOX_TEST_TOKEN": TOKEN})

    async def go() -> None:
        app = make_app(session)
        async with app.run_test(size=(140, 36)) as pilot:
            table = app.query_one(FleetTable)
            deadline = time.monotonic() + 60
            while "needs you" not in str(table._shown.get(branch, "")):
                assert time.monotonic() < deadline, table._shown
                await pilot.pause(0.2)
            assert table._shown[branch][2] == "vm"
            await pilot.press("right_square_bracket")
            assert table.selected_key() == branch
            preview = app.query_one(PreviewPane)
            while "ship-it" not in str(preview.query_one("#preview").render()):  # the VM's tmux, captured
                assert time.monotonic() < deadline
                await pilot.pause(0.2)

    try:
        asyncio.run(go())
    finally:
        session.close()
