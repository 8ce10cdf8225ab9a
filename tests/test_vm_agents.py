"""An agent in the TCG test guest (issue 15, VM mode): ``vm up`` boots the guest, whose
initramfs carries tmux, the stand-in agent and the image's hook in Claude Code's managed
settings (tests/bootdisk.py), then ``agent start --vm`` over real ssh; the agent's state
reaches ``devbox agents`` and the dashboard on the poll (one ssh per poll)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from test_vm import VmProject, bootable_builder, env_of, ssh, vm_project  # noqa: F401 - the fixtures

pytestmark = pytest.mark.podman


def agents(vm: VmProject, env: dict[str, str]) -> dict[str, dict[str, object]]:
    out = vm.devbox("agents", "--json", env=env)
    assert out.returncode == 0, out.stderr
    return {str(r["branch"]): r for r in json.loads(out.stdout)}


def wait_state(vm: VmProject, env: dict[str, str], branch: str, state: str, timeout: float = 90) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        row = agents(vm, env).get(branch, {})
        if row.get("state") == state:
            return row
        assert time.monotonic() < deadline, row
        time.sleep(1)


def test_an_agent_in_the_guest_asks_is_answered_and_reaches_the_dashboard(vm_project: VmProject) -> None:  # noqa: F811
    vm, env = vm_project, env_of(vm_project)
    with (vm.root / "devbox.toml").open("a") as fh:
        fh.write('[agents.claude]\ncommand = ["claude"]\nenv = []\n')
    up = vm.devbox("vm", "up", env=env, timeout=900)
    assert up.returncode == 0, up.stderr
    ip = up.stdout.strip().splitlines()[-1].split(": ")[-1]
    assert ssh(vm, ip, "true").returncode == 0  # the lease comes a moment before dropbear listens
    started = vm.devbox("agent", "start", "--vm", "guest-agent", "--prompt", "work 1; ask Bash deploy; work 600",
                        env=env, timeout=300)  # fmt: skip
    assert started.returncode == 0, started.stderr
    row = wait_state(vm, env, "guest-agent", "needs you")  # the image's hook, in the guest, read over ssh
    assert row["container_state"] == "vm" and "deploy" in str(row["message"])
    assert vm.devbox("agent", "send", "--vm", "guest-agent", "y", env=env).returncode == 0
    wait_state(vm, env, "guest-agent", "working")

    from devbox.core.session import Devbox
    from devbox.tui.app import make_app
    from devbox.tui.fleet import FleetTable

    session = Devbox.open(vm.root, env=env)

    async def go() -> None:
        app = make_app(session)
        async with app.run_test(size=(120, 36)) as pilot:
            table = app.query_one(FleetTable)
            deadline = time.monotonic() + 60
            while "working" not in str(table._shown.get("guest-agent", "")):
                assert time.monotonic() < deadline, table._shown
                await pilot.pause(0.2)
            assert table._shown["guest-agent"][2] == "vm"

    try:
        asyncio.run(go())
    finally:
        session.close()
    assert vm.devbox("agent", "stop", "--vm", "guest-agent", env=env).returncode == 0
    wait_state(vm, env, "guest-agent", "exited", 60)
