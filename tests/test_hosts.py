"""Other hosts (issue 18), first part: ``[hosts.NAME]``, ``devbox host list`` and ``devbox host
check``. "Another machine" is a second account on this one (DEVBOX_TEST_ROOTLESS_USER, made
by .ci/run) reached only through a real sshd on 127.0.0.1 with its own host key, running
its own rootless podman service with its own storage."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sshd import Sshd

from conftest import BASE_IMAGE, Project, git, make_project, stop_group

USER = os.environ.get("DEVBOX_TEST_ROOTLESS_USER", "")
CONF = '[engine]\nruntime = "runc"\n[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'


@dataclass
class Host:
    project: Project
    sshd: Sshd
    uid: int
    service: subprocess.Popen[bytes] | None

    def start_service(self) -> None:
        pw = pwd.getpwnam(USER)
        sock = self.socket
        sock.unlink(missing_ok=True)
        env = {"HOME": pw.pw_dir, "USER": USER, "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
               "XDG_RUNTIME_DIR": f"/run/user/{pw.pw_uid}", **self.sshd.env}  # fmt: skip
        self.service = subprocess.Popen(
            ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--", "podman", "system",
             "service", "--time=0", f"unix://{sock}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # rootless podman re-executes itself in a user namespace: its own group
        )  # fmt: skip
        for _ in range(200):
            if sock.exists():
                return
            time.sleep(0.05)
        pytest.fail("the host's podman service did not start")

    @property
    def root(self) -> Path:
        return Path(pwd.getpwnam(USER).pw_dir) / "devbox-tests" / self.project.root.name

    def podman(self, *args: str) -> subprocess.CompletedProcess[str]:
        """podman as the host's user, on its own storage."""
        pw = pwd.getpwnam(USER)
        env = {"HOME": pw.pw_dir, "USER": USER, "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
               "XDG_RUNTIME_DIR": f"/run/user/{pw.pw_uid}", **self.sshd.env}  # fmt: skip
        argv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--", "podman", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, cwd="/", timeout=300)

    @property
    def socket(self) -> Path:
        """This test's own service socket (another run, or test_rootless, may serve the user's default one)."""
        return Path(f"/run/user/{self.uid}/devbox-test-{self.project.root.name}.sock")

    def stop_service(self) -> None:
        """The service and the copy of itself it runs in the user namespace (stopping only the
        first left the second serving, orphaned, after every test)."""
        if self.service is not None:
            stop_group(self.service)
            self.service = None
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def host(tmp_path: Path, base_image: str) -> Iterator[Host]:
    if not USER or os.getuid() != 0:
        pytest.skip("needs root and DEVBOX_TEST_ROOTLESS_USER (bash .ci/run sets both up)")
    pw = pwd.getpwnam(USER)
    subprocess.run(["usermod", "-p", "*", USER], check=True)  # unlocked, no password: sshd (UsePAM no) lets keys in
    run_dir = Path(f"/run/user/{pw.pw_uid}")
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chown(run_dir, pw.pw_uid, pw.pw_gid)
    run_dir.chmod(0o700)
    proj = make_project(tmp_path, f"proj-{uuid.uuid4().hex[:6]}")  # its mirror there: apart from other runs'
    fd, name = tempfile.mkstemp(prefix="devbox-host-", suffix=".conf")  # the user cannot read pytest's tmp
    os.close(fd)
    conf = Path(name)
    conf.write_text(CONF)
    conf.chmod(0o644)
    sshd_dir = Path(tempfile.mkdtemp(prefix="devbox-host-sshd-"))  # sshd reads the keys file as that user
    sshd_dir.chmod(0o755)
    sshd = Sshd(sshd_dir)
    sshd.authorized.chmod(0o644)
    sshd.env = {"CONTAINERS_CONF": str(conf), "XDG_RUNTIME_DIR": str(run_dir)}
    key = proj.root / ".build" / "ssh" / "id_ed25519"
    key.parent.mkdir(parents=True)
    (proj.root / ".build" / ".gitignore").write_text("*\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    sshd.authorized.write_text(key.with_suffix(".pub").read_text())
    sshd.start()
    with (proj.root / "devbox.toml").open("a") as fh:
        fh.write(f'[hosts.h1]\nssh = "{USER}@127.0.0.1:{sshd.port}"\ntimeout = 3\n')
        fh.write(f'root = "devbox-tests/{proj.root.name}"\n')
        fh.write(f'podman = "unix:///run/user/{pw.pw_uid}/devbox-test-{proj.root.name}.sock"\n')
    git(proj.root, "commit", "-qam", "the host")
    h = Host(proj, sshd, pw.pw_uid, None)
    h.start_service()
    try:
        yield h
    finally:
        names = h.podman("ps", "-a", "--filter", f"label=devbox.repo={h.root}/mirror.git", "--format", "{{.Names}}")
        for name in names.stdout.split():
            h.podman("rm", "--force", "--volumes", name)
            h.podman("rm", "--force", f"{name}-egress")  # its egress proxy and network, if it had them
            h.podman("network", "rm", "--force", f"{name}-net")
        image = next(line.split('"')[1] for line in (proj.root / "devbox.toml").read_text().splitlines()
                     if line.startswith("name = "))  # fmt: skip
        h.podman("rmi", "--force", image, BASE_IMAGE)  # this session's base, copied there by start-work
        h.stop_service()
        shutil.rmtree(h.root, ignore_errors=True)
        sshd.stop()
        conf.unlink(missing_ok=True)
        shutil.rmtree(sshd_dir, ignore_errors=True)


def rows(project: Project) -> dict[str, dict[str, object]]:
    res = project.devbox("host", "list", "--json")
    assert res.returncode == 0, res.stderr
    return {r["name"]: r for r in json.loads(res.stdout)}


@pytest.mark.podman
def test_host_list_and_check_see_the_host_and_a_host_that_is_down_says_so_quickly(host: Host) -> None:
    proj = host.project
    found = rows(proj)
    assert list(found) == ["local", "h1"]
    h1 = found["h1"]
    version = subprocess.run(["podman", "version", "--format", "{{.Client.Version}}"], capture_output=True,
                             text=True).stdout.strip()  # fmt: skip
    assert h1["up"] is True and h1["podman"] == version and h1["cpus"] == os.cpu_count()
    assert int(h1["mem_available"]) > 0 and h1["problem"] is None  # type: ignore[call-overload]
    assert found["local"]["up"] is True

    check = proj.devbox("host", "check", "h1")
    assert check.returncode == 0, check.stdout + check.stderr
    for line in (f"ok    ssh {USER}@127.0.0.1", f"ok    podman service: {host.socket}", "ok    git: git version"):
        assert line in check.stdout

    host.stop_service()  # podman there, its service not
    check = proj.devbox("host", "check", "h1")
    assert check.returncode == 13 and "FAIL  podman service" in check.stdout and "podman.socket" in check.stdout
    assert rows(proj)["h1"]["problem"] is not None
    host.start_service()

    host.sshd.stop()  # the machine goes away
    began = time.monotonic()
    found = rows(proj)
    took = time.monotonic() - began
    assert found["h1"]["up"] is False and "is down" in str(found["h1"]["problem"]) and found["h1"]["fix"]
    assert found["local"]["up"] is True  # the local machine is unaffected
    assert took < 3 + 5, f"host list took {took:.1f} s with the host down (timeout 3 s)"
    plain = proj.devbox("host", "list")
    assert plain.returncode == 0 and "h1" in plain.stdout and "down" in plain.stdout and "fix:" in plain.stdout
    host.sshd.start()  # and comes back: the next look sees it, nothing to restart
    assert rows(proj)["h1"]["up"] is True

    from devbox.core import ops
    from devbox.core.session import Devbox

    with Devbox.open(proj.root, env={}) as session:  # --host auto: the most memory available, and why
        name, why = ops.pick_host(session)
    assert name in ("local", "h1") and why.startswith(f"{name} has the most memory available")


HOLD_TUNNEL = """
import sys, time
from devbox.core import hosts
from devbox.core.session import Devbox
with Devbox.open() as session:
    spec = session.settings.hosts["h1"]
    with hosts.Tunnel(session.settings, spec, sys.argv[1]) as url:
        print(url, flush=True)
        time.sleep(600)
"""


def test_a_forward_to_a_host_ends_with_devbox_even_when_devbox_is_killed(host: Host) -> None:
    """The forwarded socket's ssh is tied to devbox's life: SIGKILL (or a closed terminal,
    which runs no cleanup either) leaves no ssh behind."""
    proj = host.project
    child = subprocess.Popen([sys.executable, "-c", HOLD_TUNNEL, str(host.socket)], env=proj.env, cwd=proj.root,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = child.stdout.readline().strip() if child.stdout else ""
        assert url.startswith("unix://"), url
        local = url.removeprefix("unix://")
        assert [c for c in cmdlines() if local in c], "the forward's ssh is not running"
        child.kill()
        child.wait(10)
        deadline = time.monotonic() + 10
        while [c for c in cmdlines() if local in c] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [c for c in cmdlines() if local in c], "the forward's ssh outlived the killed devbox"
    finally:
        if child.poll() is None:
            child.kill()


def cmdlines() -> list[str]:
    """Every process's command line (those that end meanwhile are skipped)."""
    out = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            out.append(p.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return out


def test_host_settings_are_checked(tmp_path: Path) -> None:
    proj = make_project(tmp_path)
    cases = {
        '[hosts.local]\nssh = "a@b"\n': "not a host name",
        '[hosts.h1]\nssh = "no-user-here"\n': "hosts.h1.ssh must be user@host[:port]",
        '[hosts.h1]\nssh = "a@b"\nport = 2\n': "unknown key port",
        '[hosts.h1]\nssh = "a@b"\npodman = "tcp://x:1"\n': "must be unix:///PATH",
        '[hosts.h1]\nssh = "a@b"\nroot = "a b"\n': "is not a plain path",
    }
    original = (proj.root / "devbox.toml").read_text()
    for text, said in cases.items():
        (proj.root / "devbox.toml").write_text(original + text)
        res = proj.devbox("host", "list")
        assert res.returncode == 3 and said in res.stderr, (text, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1
    (proj.root / "devbox.toml").write_text(original)
    res = proj.devbox("host", "check", "nope")
    assert res.returncode == 9 and "no host named 'nope'" in res.stderr


@pytest.mark.podman
def test_start_work_on_a_host_fetch_its_commits_and_remove_it(host: Host) -> None:
    proj = host.project
    res = proj.devbox("start-work", "feat", "--host", "h1", "--detach", timeout=900)
    assert res.returncode == 0, res.stderr + res.stdout
    name = res.stdout.strip().splitlines()[-1].split()[0]
    there = host.root / "worktrees" / "feat"
    assert (there / ".git").is_file() and (there / "bootc" / "Containerfile").is_file()  # the branch's files there
    assert not (proj.root.parent / f"{proj.root.name}.worktrees" / "feat").exists()  # not made here
    assert name in host.podman("ps", "--format", "{{.Names}}").stdout  # in the host's own storage
    local = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True).stdout
    assert name not in local

    again = proj.devbox("start-work", "feat", "--host", "h1", "--detach")
    assert again.returncode == 0 and "is up to date" in again.stdout and "building" not in again.stdout
    (proj.root / "bootc" / "extra.txt").write_text("a change\n")  # bootc/ changed: exactly one build there
    changed = proj.devbox("start-work", "feat", "--host", "h1", "--detach", timeout=900)
    assert changed.returncode == 0 and changed.stdout.count("==> image: building") == 1, changed.stdout
    assert "bootc/extra.txt" in changed.stdout
    assert "is up to date" in proj.devbox("start-work", "feat", "--host", "h1", "--detach").stdout
    script = "echo made-there > there.txt && git add there.txt && git commit -qm 'made on h1' && pwd"
    inside = proj.devbox("start-work", "feat", "--host", "h1", "--cmd", "sh", "-c", script)
    assert inside.returncode == 0, inside.stderr
    assert str(there) in inside.stdout  # the shell ran in the worktree there

    res = proj.devbox("fetch", "feat", "--ff")
    assert res.returncode == 0 and "1 commit(s) from h1 not on your feat; feat fast-forwarded" in res.stdout, res.stderr
    assert git(proj.root, "log", "-1", "--format=%s", "feat").strip() == "made on h1"  # the local branch moved
    # issue 27 on the other machine: what the container there plants in its git (its config,
    # hooks) and tries on the mirror never runs there when devbox fetches and removes
    marker = host.root.parent / f"planted-ran-{uuid.uuid4().hex[:6]}"
    mirror_config = (host.root / "mirror.git" / "config").read_bytes()
    plant = (f"printf '#!/bin/sh\\necho \"$0 $*\" >>{marker}\\n' >{there}/.run && chmod +x {there}/.run"
             f" && mkdir -p {there}/.hooks && for h in post-checkout reference-transaction post-merge; do"
             f" cp {there}/.run {there}/.hooks/$h; done"
             f" && git config core.fsmonitor {there}/.run && git config core.hooksPath {there}/.hooks"
             f" && git config core.pager {there}/.run && git config uploadpack.packObjectsHook {there}/.run"
             f" && {{ echo '[core] fsmonitor={there}/.run' >>{host.root}/mirror.git/config; true; }}")  # fmt: skip
    planted = proj.devbox("start-work", "feat", "--host", "h1", "--cmd", "sh", "-c", plant)
    assert planted.returncode == 0, planted.stderr
    script = "echo again >> there.txt && git -c core.hooksPath=/dev/null commit -qam 'second on h1'"
    assert proj.devbox("start-work", "feat", "--host", "h1", "--cmd", "sh", "-c", script).returncode == 0
    res = proj.devbox("fetch", "feat")
    assert res.returncode == 0 and "1 commit(s) from h1 not on your feat" in res.stdout, res.stderr
    assert git(proj.root, "log", "-1", "--format=%s", "refs/remotes/h1/feat").strip() == "second on h1"
    assert git(proj.root, "log", "-1", "--format=%s", "feat").strip() == "made on h1"  # no --ff: not moved

    refused = proj.devbox("worktree", "remove", "feat")
    assert refused.returncode == 11 and "1 commit(s) only on h1" in refused.stderr
    assert name in host.podman("ps", "--format", "{{.Names}}").stdout and there.is_dir()  # nothing removed
    res = proj.devbox("worktree", "remove", "feat", "--force")
    assert res.returncode == 0, res.stderr
    assert f"container {name} on h1" in res.stdout and "worktree" in res.stdout
    assert name not in host.podman("ps", "-a", "--format", "{{.Names}}").stdout and not there.exists()
    assert git(proj.root, "log", "-1", "--format=%s", "refs/remotes/h1/feat").strip() == "second on h1"  # kept here
    assert not marker.exists(), marker.read_text()
    assert (host.root / "mirror.git" / "config").read_bytes() == mirror_config


@pytest.mark.podman
def test_egress_on_a_host_is_enforced_by_its_own_podman(host: Host) -> None:
    """issue 28 on the other machine: its podman makes the environment's internal network
    and proxy; no route out there, refusals logged there and read here, net allow reloads
    that proxy over the tunnel (a name let through reaches the proxy's resolver, here
    where the host has no DNS to ask: 502 or 503, rather than the refusal's 403)."""
    proj = host.project
    res = proj.devbox("start-work", "fenced", "--host", "h1", "--detach", "--egress", "allow", "--allow", "ok.test",
                      timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stderr + res.stdout
    name = res.stdout.strip().splitlines()[-1].split()[0]
    assert f"{name}-egress" in host.podman("ps", "--format", "{{.Names}}").stdout  # the host's own podman
    probe = 'ip route | grep -c default; curl -s -m 8 -o /dev/null -w "%{http_code}\n" http://blocked.test/'
    inside = proj.devbox("start-work", "fenced", "--host", "h1", "--cmd", "sh", "-c", probe)
    assert inside.stdout.split()[-2:] == ["0", "403"], inside.stdout + inside.stderr
    log = proj.devbox("net", "log", "fenced", "--json")
    assert log.returncode == 0, log.stderr
    conns = json.loads(log.stdout)["connections"]
    assert [(c["host"], c["refused"]) for c in conns] == [("blocked.test", True)], conns
    assert proj.devbox("net", "allow", "fenced", "blocked.test").returncode == 0
    inside = proj.devbox("start-work", "fenced", "--host", "h1", "--cmd", "sh", "-c", probe)
    assert inside.stdout.split()[-2] == "0" and inside.stdout.split()[-1] in ("502", "503"), inside.stdout
    gone = proj.devbox("worktree", "remove", "fenced", "--force")
    assert gone.returncode == 0 and f"network {name}-net on h1" in gone.stdout, gone.stdout + gone.stderr
    assert f"{name}-egress" not in host.podman("ps", "-a", "--format", "{{.Names}}").stdout


@pytest.mark.podman
def test_an_agent_on_a_host_reports_its_state_to_the_fleet_and_the_dashboard(host: Host) -> None:
    import asyncio

    from devbox.core import ops
    from devbox.core.session import Devbox
    from devbox.tui.app import StatusUpdated, make_app
    from devbox.tui.fleet import FleetTable
    from test_agents import wait_for

    proj = host.project
    with (proj.root / "devbox.toml").open("a") as fh:
        fh.write('[agents.claude]\ncommand = ["claude"]\nenv = ["DEVBOX_TEST_SECRET"]\n')
    git(proj.root, "commit", "-qam", "the agent")
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    env = {**proj.env, "DEVBOX_TEST_SECRET": secret}
    res = proj.devbox("agent", "start", "far", "--host", "h1", "--prompt", "work 1; ask Bash deploy; work 1",
                      env=env, timeout=900)  # fmt: skip
    assert res.returncode == 0, res.stderr + res.stdout

    def state() -> dict[str, object]:
        out = proj.devbox("agents", "--json")
        assert out.returncode == 0, out.stderr
        return next((r for r in json.loads(out.stdout) if r["branch"] == "far"), {})

    wait_for(lambda: state().get("state") == "needs you", 90, "the question, read over ssh")
    row = state()
    assert row["host"] == "h1" and row["message"] == "Claude needs your permission to use Bash deploy"
    assert not any(secret in p.read_text(errors="replace") for p in (proj.root / ".build" / "logs").glob("*.log"))
    name = str(row["container"])
    pid = host.podman("exec", name, "pidof", "claude").stdout.split()[0]
    environ = host.podman("exec", "--user", str(host.uid), name, "cat", f"/proc/{pid}/environ").stdout
    assert f"DEVBOX_TEST_SECRET={secret}" in environ.split("\0")  # the agent got it, as the user there
    assert secret not in host.podman("inspect", name).stdout

    with Devbox.open(proj.root, env={}) as session:  # the dashboard's fleet shows it, with its host
        st = ops.status(session)
        app = make_app(session, watch=False, view="fleet")

        async def go() -> None:
            async with app.run_test(size=(120, 30)) as pilot:
                app.post_message(StatusUpdated(st, {}, {}, None))
                await pilot.pause(0.5)
                table = app.query_one(FleetTable)
                cells = [str(c) for c in table._shown["far"]]
                assert cells[1].startswith("! needs you") and cells[2] == "running@h1"
                table.move_cursor(row=list(table._shown).index("far"))
                await pilot.press("h")  # fetch, from the dashboard
                for _ in range(300):
                    if git(proj.root, "for-each-ref", "refs/remotes/h1/far").strip():
                        break
                    await pilot.pause(0.1)
                assert (
                    git(proj.root, "rev-parse", "refs/remotes/h1/far").strip()
                    == git(proj.root, "rev-parse", "far").strip()
                )

        asyncio.run(go())

    assert proj.devbox("agent", "send", "far", "y").returncode == 0
    wait_for(lambda: state().get("state") == "done", 90, "done")
    assert proj.devbox("agent", "stop", "far").returncode == 0
    wait_for(lambda: state().get("state") == "exited", 30, "stopped")

    with Devbox.open(proj.root, env={}) as session:  # the dashboard's poll, with the host hung

        def poll() -> tuple[float, dict[str, ops.AgentRow]]:
            began = time.monotonic()
            st = ops.status(session, hosts_wait=1.0)
            return time.monotonic() - began, {r.branch: r for r in st.agents.value or ()}

        took, found = poll()
        assert found["far"].agent.state == "exited" and found["far"].host == "h1"
        assert host.sshd.proc is not None
        os.kill(host.sshd.proc.pid, signal.SIGSTOP)  # accepts, never answers: ssh waits its 3 s timeout
        try:
            took, found = poll()
            assert took < 2.9, f"a hung host held the poll up {took:.1f} s"  # bounded by hosts_wait, not ssh
            assert found["far"].agent.state == "exited"  # its last known rows meanwhile
            wait_for(lambda: "is down" in poll()[1]["far"].agent.problem, 30, "the host shown as down")
        finally:
            os.kill(host.sshd.proc.pid, signal.SIGCONT)
        wait_for(lambda: poll()[1]["far"].agent.state == "exited", 30, "back by itself")
    assert proj.devbox("worktree", "remove", "far", "--force").returncode == 0
