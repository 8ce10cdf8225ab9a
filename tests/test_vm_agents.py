"""An agent in the TCG test guest (issue 15, VM mode): ``vm up`` boots the guest, whose
initramfs carries tmux, the stand-in agent and the image's hook in Claude Code's managed
settings (tests/bootdisk.py), then ``agent start --vm`` over real ssh; the agent's state
reaches ``devbox agents`` and the dashboard on the poll (one ssh per poll)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest

from egress_world import World
from test_vm import VmProject, bootable_builder, env_of, ssh, virsh, vm_project  # noqa: F401 - the fixtures

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


def test_an_agent_in_the_guest_asks_is_answered_and_reaches_the_dashboard(vm_project: VmProject, world: World) -> None:  # noqa: F811
    """The guest's egress too (issue 28): [vm] egress = "allow" puts libvirt's network filter
    on its interface and devbox's proxy on the host; from inside, the listed name answers
    through the proxy, nothing else is reached (directly, the host, DNS), refusals are in
    ``net log --vm``, and the agent's environment names the proxy."""
    vm, env = vm_project, env_of(vm_project)
    with (vm.root / "devbox.toml").open("a") as fh:
        fh.write('egress = "allow"\nallow = ["allowed.test"]\n')  # (the [vm] table is the fixture's, last)
        fh.write(f'[container]\negress_dns = ["{world.dns}"]\n')
        fh.write('[agents.claude]\ncommand = ["claude"]\nenv = []\n')
    up = vm.devbox("vm", "up", env=env, timeout=900)
    assert up.returncode == 0, up.stderr
    ip = up.stdout.strip().splitlines()[-1].split(": ")[-1]
    assert ssh(vm, ip, "true").returncode == 0  # the lease comes a moment before dropbear listens
    assert f"filterref filter='devbox-egress-{vm.domain}'" in virsh("dumpxml", vm.domain).stdout
    fence = json.loads((vm.root / ".build" / "egress" / "vm.json").read_text())
    proxy = f"http://{fence['address']}:{fence['port']}"
    # (busybox's static wget crashes on name lookups in the guest: plain HTTP over nc instead,
    # its input kept open while the answer comes: busybox's nc hangs up at the end of it)
    ask = " (printf 'GET http://%s/ HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n' {0} {0}; sleep 4) | nc -w 8 {1} {2} | {3}"
    gw, port = fence["address"], fence["port"]
    probe = (f"echo listed=$({ask.format('allowed.test', gw, port, 'tail -n 1')}); "
             f"echo other=$({ask.format('denied.test', gw, port, 'head -n 1')}); "
             f"echo direct=$( (printf 'GET / HTTP/1.0\\r\\n\\r\\n'; sleep 4) | nc -w 5 {world.allowed} 80 | wc -c); "
             f"echo host=$(nc -w 3 {gw} 53 </dev/null >/dev/null 2>&1; echo $?); "
             f"echo dns=$(nslookup allowed.test {gw} >/dev/null 2>&1; echo $?)")  # fmt: skip
    seen = dict(ln.split("=", 1) for ln in ssh(vm, ip, probe).stdout.splitlines() if "=" in ln)
    assert seen["listed"] == "hello from allowed.test", seen  # through the proxy
    assert " 403 " in seen["other"], seen  # the proxy's refusal
    assert seen["direct"] == "0" and seen["host"] != "0" and seen["dns"] != "0", seen  # the filter's
    log = vm.devbox("net", "log", "--vm", "--json", env=env)
    assert log.returncode == 0, log.stderr
    conns = [(c["host"], c["refused"]) for c in json.loads(log.stdout)["connections"]]
    assert ("allowed.test", False) in conns and ("denied.test", True) in conns, conns
    refused = vm.devbox("agent", "start", "--vm", "guest-agent", "--egress", "open", "--prompt", "work 1", env=env)
    assert refused.returncode != 0 and "[vm] egress" in refused.stderr, refused.stderr
    started = vm.devbox("agent", "start", "--vm", "guest-agent", "--prompt", "work 1; ask Bash deploy; work 600",
                        env=env, timeout=300)  # fmt: skip
    assert started.returncode == 0, started.stderr
    environ = ssh(vm, ip, "cat /proc/$(pidof claude)/environ | tr '\\0' '\\n'").stdout
    assert f"HTTPS_PROXY={proxy}" in environ.splitlines(), environ
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
    down = vm.devbox("vm", "down", "--yes", env=env, timeout=600)
    assert down.returncode == 0, down.stderr
    assert f"{vm.domain}-egress" not in subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"],
                                                        capture_output=True, text=True).stdout  # fmt: skip
    assert f"devbox-egress-{vm.domain}" not in virsh("nwfilter-list").stdout
