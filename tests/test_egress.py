"""Egress from inside real containers (issue 28): an environment whose egress is ``allow``
reaches the names on its list through its proxy and nothing else; ``none`` reaches nothing;
``open`` is as before; every refusal is in ``devbox net log`` and the fleet's row.

"Outside" is a world this module makes and removes: a podman network of its own with two
web servers (HTTP on 80, TLS on 443) and a DNS server (dnsmasq, never forwarding) that
answers ``allowed.test``, ``denied.test``, ``api.test``, ``host.test`` (this machine's own
address on that network, where a service of the test listens) and ``meta.test``
(169.254.169.254). No other address is ever a target.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from egress_world import World, must, podman

from conftest import Project
from rootfs import _libs

pytestmark = pytest.mark.podman

USER = "1000:1000"  # the environment's user, as an agent runs


def configure(project: Project, world: World, container: str = "", agents: str = "") -> None:
    with (project.root / "devbox.toml").open("a") as fh:
        fh.write(f'[container]\negress_dns = ["{world.dns}"]\n{container}\n{agents}')


def inside(container: str, script: str, timeout: float = 120) -> dict[str, str]:
    """Run ``script`` in ``container`` as its user; each ``NAME=value`` line it prints, as a dict."""
    res = podman("exec", "--user", USER, container, "sh", "-c", script, timeout=timeout)
    return dict(ln.split("=", 1) for ln in res.stdout.splitlines() if "=" in ln)


def started(project: Project, *args: str) -> str:
    res = project.devbox("start-work", *args, "--detach")
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def agents_json(project: Project) -> dict[str, dict[str, object]]:
    res = project.devbox("agents", "--json")
    assert res.returncode == 0, res.stderr
    return {row["branch"]: row for row in json.loads(res.stdout)}


def net_log(project: Project, branch: str) -> dict[str, object]:
    res = project.devbox("net", "log", branch, "--json")
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


CURL = 'curl -sk -m 8 -o /dev/null -w "%{http_code}"'


def test_allow_reaches_its_names_and_nothing_else(project: Project, world: World) -> None:
    configure(project, world, 'egress = "allow"\nallow = ["allowed.test", "host.test", "meta.test"]')
    other = started(project, "o1", "--egress", "open")  # another environment, on podman's network
    other_ip = must("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", other)
    name = started(project, "a1")
    seen = inside(name, f"""
        echo https_allowed=$(curl -sk -m 8 https://allowed.test/ | grep -q s_server && echo 1)
        echo http_allowed=$(curl -s -m 8 http://allowed.test/)
        echo denied=$({CURL} https://denied.test/; echo " $?")
        echo denied_ip=$({CURL} http://{world.denied}/; echo " $?")
        echo denied_ip_direct=$({CURL} --noproxy '*' http://{world.denied}/; echo " $?")
        echo host_by_name=$({CURL} http://host.test:{world.host_port}/; echo " $?")
        echo host_direct=$({CURL} --noproxy '*' http://{world.gateway}:{world.host_port}/; echo " $?")
        echo host_loopback=$({CURL} http://127.0.0.1:{world.host_port}/; echo " $?")
        echo host_loopback_proxy=$({CURL} --noproxy '' -x "$HTTP_PROXY" http://127.0.0.1:{world.host_port}/; echo " $?")
        echo meta_by_name=$({CURL} http://meta.test/; echo " $?")
        echo meta_direct=$({CURL} --noproxy '*' http://169.254.169.254/; echo " $?")
        echo other_env=$({CURL} --noproxy '*' http://{other_ip}/; echo " $?")
        echo other_env_proxy=$({CURL} http://{other_ip}/; echo " $?")
        echo dns=$(nslookup denied.test >/dev/null 2>&1; echo $?)
        echo routes="$(ip route | tr '\n' ';')"
        echo ipv6=$(cat /proc/sys/net/ipv6/conf/all/disable_ipv6)
    """)  # fmt: skip
    assert seen["https_allowed"] == "1", seen  # TLS through CONNECT, to the real server
    assert seen["http_allowed"] == "hello from allowed.test", seen
    assert seen["denied"] == "000 56", seen  # the proxy said no to the CONNECT (403, curl: 56)
    assert seen["denied_ip"] == "403 0", seen  # an address is refused even by the proxy
    assert seen["host_by_name"] == "403 0", seen  # an allowed name that leads to the host
    assert seen["meta_by_name"] == "403 0", seen  # ... or to cloud metadata
    assert seen["host_loopback_proxy"] == "403 0", seen  # the host's loopback, asked of the proxy
    assert seen["other_env_proxy"] == "403 0", seen
    for key in ("denied_ip_direct", "host_direct", "meta_direct", "other_env", "host_loopback"):
        assert seen[key].endswith(" 7"), (key, seen)  # no route: curl could not connect at all
    assert seen["dns"] != "0", seen  # no name resolves inside (the proxy resolves)
    assert "default" not in seen["routes"] and seen["routes"].count(";") == 1, seen  # its own subnet only
    assert seen["ipv6"] == "1", seen  # no IPv6: not even link-local

    log = net_log(project, "a1")
    refused = {(c["host"], c["port"]) for c in log["connections"] if c["refused"]}  # type: ignore[union-attr]
    for dest in (("denied.test", 443), (world.denied, 80), ("host.test", world.host_port), ("meta.test", 80),
                 ("127.0.0.1", world.host_port), (other_ip, 80)):  # fmt: skip
        assert dest in refused, (dest, refused)
    assert log["refused"] == len([c for c in log["connections"] if c["refused"]]) >= 6  # type: ignore[union-attr]
    row = agents_json(project)["a1"]["egress"]
    assert row["mode"] == "allow" and row["refused"] == log["refused"], row  # type: ignore[index]
    assert agents_json(project)["o1"]["egress"]["mode"] == "open"  # type: ignore[index]
    text = project.devbox("net", "log", "a1", "--refused")
    assert text.returncode == 0 and "refused" in text.stdout and "denied.test:443" in text.stdout
    assert "allowed.test" not in text.stdout.split("\n", 1)[1]  # --refused: only the refusals


def test_net_allow_widens_a_running_agent_at_once_and_recreate_keeps_it(project: Project, world: World) -> None:
    configure(project, world, agents='[agents.claude]\ncommand = ["claude"]\nenv = []\nallow = ["allowed.test"]\n')
    assert project.devbox("agent", "start", "w1", "--prompt", "work 30").returncode == 0
    name = str(agents_json(project)["w1"]["container"])
    assert inside(name, f"echo code=$({CURL} https://denied.test/)")["code"] == "000"
    agent_pid = must("exec", name, "pidof", "claude")
    res = project.devbox("net", "allow", "w1", "denied.test")
    assert res.returncode == 0 and "denied.test allowed" in res.stdout, res.stderr
    t0 = time.monotonic()
    assert inside(name, f"echo code=$({CURL} https://denied.test/)")["code"] == "200"
    assert time.monotonic() - t0 < 3
    assert must("exec", name, "pidof", "claude") == agent_pid  # the agent never restarted
    assert agents_json(project)["w1"]["egress"]["allow"] == ["allowed.test", "denied.test"]  # type: ignore[index]

    assert project.devbox("agent", "stop", "w1").returncode == 0
    assert project.devbox("start-work", "w1", "--recreate", "--detach").returncode == 0
    assert inside(name, f"echo code=$({CURL} https://denied.test/)")["code"] == "200"  # kept
    assert project.devbox("net", "deny", "w1", "denied.test").returncode == 0
    assert inside(name, f"echo code=$({CURL} https://denied.test/)")["code"] == "000"
    bad = project.devbox("net", "allow", "w1", world.denied)
    assert bad.returncode != 0 and "address" in bad.stderr and "Traceback" not in bad.stderr


def test_none_reaches_nothing_and_open_is_as_before(project: Project, world: World) -> None:
    configure(project, world)
    boxed = started(project, "n1", "--egress", "none")
    seen = inside(boxed, f"""
        echo routes=$(ip route | wc -l)
        echo direct=$({CURL} --noproxy '*' http://{world.allowed}/; echo " $?")
        echo lo=$(ip -o link | grep -vc ': lo:')
    """)  # fmt: skip
    assert seen == {"routes": "0", "direct": "000 7", "lo": "0"}, seen
    assert net_log(project, "n1")["policy"] == {"mode": "none", "allow": []}
    opened = started(project, "p1")  # start-work's default: open, as a person's shell
    seen = inside(opened, f"echo direct=$(curl -s -m 8 http://{world.allowed}/)")
    assert seen["direct"] == "hello from allowed.test", seen


def test_an_agent_gets_its_own_endpoints_not_the_internet(project: Project, world: World) -> None:
    """The stand-in agent's API (api.test) is reachable only because its list names it;
    [container] allow adds to every environment's list."""
    configure(project, world, 'allow = ["allowed.test"]',
              '[agents.claude]\ncommand = ["claude"]\nenv = []\nallow = ["api.test"]\n')  # fmt: skip
    assert project.devbox("start-work", "plain", "--detach").returncode == 0  # open: a person's
    refused = project.devbox("agent", "start", "plain", "--prompt", "work 1")
    assert refused.returncode != 0 and "--recreate --egress allow" in refused.stderr, refused.stderr
    assert project.devbox("agent", "start", "g1", "--prompt", "work 30").returncode == 0
    name = str(agents_json(project)["g1"]["container"])
    seen = inside(name, f"""
        echo api=$({CURL} https://api.test/)
        echo listed=$({CURL} https://allowed.test/)
        echo other=$({CURL} https://denied.test/)
    """)  # fmt: skip
    assert seen == {"api": "200", "listed": "200", "other": "000"}, seen  # (000: the CONNECT was refused)
    policy = net_log(project, "g1")["policy"]
    assert policy == {"mode": "allow", "allow": ["api.test", "allowed.test"]}, policy


def test_the_agent_cannot_reach_or_reconfigure_its_proxy(project: Project, world: World) -> None:
    """The proxy is another container: the agent cannot see its processes, read or write its
    configuration, use squid's manager interface, or take a way out around it."""
    configure(project, world, 'egress = "allow"\nallow = ["allowed.test"]')
    name = started(project, "h1")
    proxy = f"{name}-egress"
    addr = must("exec", name, "sh", "-c", "echo $HTTPS_PROXY").removeprefix("http://").rsplit(":", 1)[0]
    seen = inside(name, f"""
        echo squid_seen=$(pidof squid >/dev/null; echo $?)
        echo mgr=$({CURL} http://{addr}:3128/squid-internal-mgr/menu)
        echo mgr_via=$({CURL} http://allowed.test/squid-internal-mgr/config -x http://{addr}:3128 -H 'Host: {addr}')
        echo other_port=$(curl -s -m 5 -o /dev/null --noproxy '*' http://{addr}:22/; echo $?)
        echo own_proxy=$(HTTPS_PROXY=http://{world.allowed}:80 {CURL} https://denied.test/; echo " $?")
        echo set_v6=$(echo 0 > /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null; echo $?)
    """)  # fmt: skip
    assert seen["squid_seen"] == "1", seen  # another PID namespace: nothing to signal
    assert seen["mgr"] in ("403", "404"), seen
    assert seen["other_port"] == "7", seen  # the proxy's port and nothing else
    assert seen["own_proxy"].endswith(" 7") or seen["own_proxy"].startswith("000"), seen  # no route to it
    assert seen["set_v6"] != "0", seen
    conf = must("inspect", "-f", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapAdd}}", proxy)
    assert conf.startswith("65534:65534 true"), conf
    # what it writes on the host is bounded: its log (every request the agent makes) rotates
    assert must("inspect", "-f", "{{.HostConfig.LogConfig.Size}}", proxy) in ("16MB", "16MiB", "16.78MB", "16777216")
    assert shutil.which("podman")  # (the checks above ran through it)


def test_the_proxy_stops_starts_and_goes_with_its_environment(project: Project, world: World) -> None:
    """stop stops both; start-work starts both again under the policy as changed since (its
    proxy was made with the first list); removal takes the proxy and the network and says so."""
    configure(project, world, 'egress = "allow"\nallow = ["allowed.test"]')
    name = started(project, "l1")
    assert project.devbox("net", "allow", "l1", "denied.test").returncode == 0
    assert project.devbox("container", "stop", "l1").returncode == 0
    states = must("inspect", "-f", "{{.Name}} {{.State.Status}}", name, f"{name}-egress")
    assert states.splitlines() == [f"{name} exited", f"{name}-egress exited"], states
    assert started(project, "l1") == name
    assert inside(name, f"echo code=$({CURL} https://denied.test/)")["code"] == "200"  # the changed list
    gone = project.devbox("container", "rm", "l1", "--force")
    assert gone.returncode == 0, gone.stderr
    assert (
        f"container {name}-egress" in gone.stdout + gone.stderr and f"network {name}-net" in gone.stdout + gone.stderr
    )
    assert not must("ps", "-a", "--filter", f"name={name}", "--format", "{{.Names}}")
    assert podman("network", "exists", f"{name}-net").returncode != 0


PYTHON = ("/usr/bin/python3.11", "/usr/lib/python3.11", "/usr/lib/python3/dist-packages/pip")


def test_pip_installs_from_an_index_on_the_list_and_from_nowhere_else(project: Project, world: World) -> None:
    """The agent's own flow: pip (this machine's Python and pip, copied into the project's
    image) installs from the package index its list names, through the proxy; the same
    index under a name not on the list is refused."""
    py = project.bootc / "python"
    for path in PYTHON:  # (the base's /usr/bin is a link to /bin: the interpreter goes there)
        dest = py / path.lstrip("/").replace("usr/bin/", "bin/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if Path(path).is_dir():
            shutil.copytree(path, dest, symlinks=True, ignore=shutil.ignore_patterns("test", "__pycache__", "idlelib"))
        else:
            shutil.copy2(path, dest)
    for lib in _libs(PYTHON[0]):  # the libraries it loads (the base has glibc's own)
        target = py / lib.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), target)
    cf = project.bootc / "Containerfile"
    cf.write_text(cf.read_text().replace("COPY homedir/", "COPY python/ /\nCOPY homedir/", 1))
    configure(project, world, 'egress = "allow"\nallow = ["index.test"]')
    name = started(project, "pip1")
    pip = ("python3.11 -m pip install -q --disable-pip-version-check --no-cache-dir --target /tmp/site "
           "--trusted-host {0} --index-url http://{0}/simple/ tinypkg")  # fmt: skip
    seen = inside(name, f"""
        {pip.format("index.test")} >/tmp/pip.log 2>&1; echo listed=$?
        echo answer="$(PYTHONPATH=/tmp/site python3.11 -c 'import tinypkg; print(tinypkg.ANSWER)')"
        rm -rf /tmp/site; {pip.format(world.index)} >/dev/null 2>&1; echo by_address=$?
        echo log="$(tail -n 1 /tmp/pip.log)"
    """, timeout=300)  # fmt: skip
    assert seen["listed"] == "0" and seen["answer"] == "installed through the egress proxy", seen
    assert seen["by_address"] != "0", seen
    refused = [c for c in net_log(project, "pip1")["connections"] if c["refused"]]  # type: ignore[union-attr]
    assert {c["host"] for c in refused} == {world.index}, refused


def test_the_dashboard_row_counts_refusals_and_e_shows_them(project: Project, world: World) -> None:
    """The fleet's row says blocked N with the last destination (a wide terminal), and ``e``
    follows the environment's net log in the log pane, each refusal with its destination."""
    import asyncio

    from devbox.core import ops
    from devbox.core.session import Devbox
    from devbox.tui.app import StatusUpdated, make_app
    from devbox.tui.fleet import FleetTable
    from devbox.tui.logpane import LogPane
    from tui_wait import until

    configure(project, world, 'egress = "allow"\nallow = ["allowed.test"]')
    name = started(project, "d1")
    assert inside(name, f"echo code=$({CURL} http://denied.test/)")["code"] == "403"
    with Devbox.open(project.root, env=project.env) as session:
        st = ops.status(session)
        app = make_app(session, watch=False, view="fleet")

        async def go() -> None:
            async with app.run_test(size=(160, 45)) as pilot:
                app.post_message(StatusUpdated(st, {}, {}, None))
                table = app.query_one(FleetTable)
                await until(pilot, lambda: "d1" in table._shown)
                assert "running blocked 1 (denied.test:80)" in [str(c) for c in table._shown["d1"]]
                table.focus()
                await pilot.press("e")
                pane = app.query_one(LogPane)
                await until(pilot, lambda: any("refused" in ln and "denied.test:80" in ln for ln in pane.ring), 30)
                for run in pane.running():
                    run.cancel.set()

        asyncio.run(go())
