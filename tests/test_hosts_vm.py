"""VM mode on another host (issue 18): ``vm up --host h1`` applies the real terraform module
with the provider's ``uri`` set to the host's ``qemu+ssh://`` (the provider's own ssh
client, the host's sshd), devbox reads libvirt through an ssh-forwarded socket, and ssh to
the VM goes through the host (ProxyCommand). "The host" is the second account behind its own
sshd (tests/test_hosts.py); its libvirtd is this machine's, reached only through that sshd
(the account is in group libvirt: .ci/run)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox.core.errors import ExitCode
from test_hosts import USER, Host, cmdlines, host  # noqa: F401 (the fixture)
from test_vm import ROOT, bootable_builder, env_of, lease_of, uuid_of, virsh, wait_until  # noqa: F401
from tfmirror import cli_config

from conftest import git

pytestmark = pytest.mark.podman


@pytest.fixture
def vm_host(host: Host, bootable_builder: str, provider_mirror: Path) -> Iterator[Host]:  # noqa: F811
    proj = host.project
    shutil.copytree(ROOT / "terraform", proj.root / "terraform", ignore=shutil.ignore_patterns(".terraform*"))
    proj.root.parent.chmod(0o755)
    name = f"t{proj.root.name[-6:]}"
    toml = proj.root / "devbox.toml"
    text = toml.read_text().replace("[image]\n", f'[image]\nbuilder = "{bootable_builder}"\n', 1)
    toml.write_text(text + '[disk]\nsize_gib = 1\n'
                    f'[vm]\nname = "{name}"\nuser = "dev"\nmemory_mib = 256\nvcpus = 1\ndomain_type = "qemu"\n'
                    'cpu_mode = ""\nqemu_agent = false\n')  # fmt: skip
    git(proj.root, "add", "-A")
    git(proj.root, "commit", "-qm", "VM mode")
    cli_config(provider_mirror, proj.root.parent / "terraformrc")
    host.vm_domain = f"devbox-{name}"  # type: ignore[attr-defined]
    try:
        yield host
    finally:
        subprocess.run([*proj.devbox_argv(), "vm", "down", "--yes"], cwd=proj.root, env=env_of(proj),  # type: ignore[arg-type]
                       capture_output=True, timeout=420)  # fmt: skip
        virsh("destroy", host.vm_domain)  # type: ignore[attr-defined]
        virsh("undefine", host.vm_domain)  # type: ignore[attr-defined]
        for line in virsh("vol-list", "default").stdout.splitlines():
            if line.split() and line.split()[0].startswith(f"{host.vm_domain}-"):  # type: ignore[attr-defined]
                virsh("vol-delete", "--pool", "default", line.split()[0])
        subprocess.run(["podman", "rmi", "--force", proj.image], capture_output=True)


def test_a_vm_on_a_host_through_qemu_ssh_with_ssh_and_transfers_through_the_host(vm_host: Host) -> None:
    proj, domain = vm_host.project, vm_host.vm_domain  # type: ignore[attr-defined]
    env = env_of(proj)  # type: ignore[arg-type]
    typo = proj.devbox("vm", "up", "--host", "h2", env=env)
    assert typo.returncode == ExitCode.CONFIG and "no host 'h2'" in typo.stderr and "local, h1" in typo.stderr
    assert virsh("dominfo", domain).returncode != 0

    up = proj.devbox("vm", "up", "--host", "h1", env=env, timeout=900)
    assert up.returncode == 0, up.stderr + up.stdout[-3000:]
    assert "the VM is on host h1 (qemu+ssh://" in up.stdout
    ip = up.stdout.strip().splitlines()[-1].split(": ")[-1]
    assert ip == lease_of(domain)
    # terraform reached libvirt through the host's sshd: its recorded provider URI says so
    applied = json.loads((proj.root / ".build" / "terraform" / "applied.json").read_text())
    uri = applied["variables"]["libvirt_uri"]
    assert uri.startswith(f"qemu+ssh://{USER}@127.0.0.1:{vm_host.sshd.port}/system?") and "knownhosts=" in uri
    before = uuid_of(domain)

    # ssh, a directory and a branch, all through the host (the lease comes a moment before the guest's sshd)
    wait_until(lambda: proj.devbox("vm", "ssh", "true", env=env).returncode == 0, 60, "the guest's sshd")
    who = proj.devbox("vm", "ssh", "id", "-un", env=env)
    assert who.returncode == 0 and who.stdout.strip() == "dev", who.stderr
    pushed = proj.devbox("vm", "dir-push", str(proj.root / "bootc"), "work/bootc", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert "Containerfile" in proj.devbox("vm", "ssh", "ls", "work/bootc", env=env).stdout.split()
    git_pushed = proj.devbox("vm", "git-push", "main", env=env)
    assert git_pushed.returncode == 0, git_pushed.stderr + git_pushed.stdout
    repo = f"repos/{proj.root.name}"
    commit = "git add vm.txt && git -c user.name=Dev -c user.email=dev@example.com commit -qm vm"
    made = proj.devbox("vm", "ssh", "sh", "-c", f"cd {repo} && git checkout -q -b fromvm main && echo vm > vm.txt && "
                       + commit, env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    pulled = proj.devbox("vm", "git-pull", "fromvm", env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert git(proj.root, "show", "vm/fromvm:vm.txt").strip() == "vm"  # the round trip came back

    # the host's sshd is the only way in: stopped, ssh to the VM fails; restarted, it works
    vm_host.sshd.stop()
    try:
        cut = proj.devbox("vm", "ssh", "true", env=env, timeout=120)
        assert cut.returncode != 0 and "\nTraceback" not in cut.stderr
    finally:
        vm_host.sshd.start()
    wait_until(lambda: proj.devbox("vm", "ssh", "true", env=env).returncode == 0, 30, "ssh through the host")

    status = json.loads(proj.devbox("vm", "status", "--json", env=env).stdout)
    assert status["fresh"] is True and status["vm"]["ip"] == ip and status["host"] == "h1", status
    again = proj.devbox("vm", "up", env=env, timeout=600)  # no --host: where it is
    assert again.returncode == 0 and f"{domain} is up to date" in again.stdout, again.stderr
    assert uuid_of(domain) == before
    moved = proj.devbox("vm", "up", "--host", "local", env=env)
    assert moved.returncode == ExitCode.REFUSED and "lives on h1" in moved.stderr, moved.stderr
    assert uuid_of(domain) == before

    down = proj.devbox("vm", "down", "--yes", env=env, timeout=600)
    assert down.returncode == 0, down.stderr
    assert virsh("dominfo", domain).returncode != 0
    assert f"{domain}-" not in virsh("vol-list", "default").stdout
    assert not (proj.root / ".build" / "terraform" / "host").exists()  # the next VM is made here
    # no command left its ssh to the host's libvirt running
    key = str(proj.root / ".build" / "ssh" / "id_ed25519")
    left = [c for c in cmdlines() if key in c and "libvirt.sock" in c]
    assert not left, left
