"""A real sshd (Debian openssh-server) on 127.0.0.1 at a free port, with its own host key
and config, standing in for the VM's sshd in the transfer and dashboard tests. The "VM user"
is the user running the tests."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Project, git, make_project

USER = pwd.getpwuid(os.getuid()).pw_name
HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sshd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.authorized = root / "authorized_keys"
        self.authorized.touch(mode=0o600)
        self.host_key = root / "host_ed25519"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}  # set in every session (sshd_config SetEnv): no spaces in values

    def start(self, *, new_host_key: bool = False) -> None:
        if new_host_key or not self.host_key.exists():
            self.host_key.unlink(missing_ok=True)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)], check=True)
        conf = self.root / "sshd_config"
        conf.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {self.authorized}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nPidFile {self.root / 'sshd.pid'}\n"
            "Subsystem sftp internal-sftp\n"
            + (f"SetEnv {' '.join(f'{k}={v}' for k, v in self.env.items())}\n" if self.env else "")
        )
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(conf)], stderr=subprocess.DEVNULL)
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        pytest.fail("sshd did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@contextlib.contextmanager
def vm_project_over_ssh(tmp_path: Path) -> Iterator[tuple[Project, Sshd]]:
    """A project whose ``vm.ssh`` is a fresh sshd holding the project key."""
    if not Path("/usr/sbin/sshd").exists() and shutil.which("sshd") is None:
        pytest.fail("sshd is not installed (.ci/run installs openssh-server)")
    proj = make_project(tmp_path, f"proj-{uuid.uuid4().hex[:6]}")  # ~/repos/<name> is shared by runs here
    sshd = Sshd(tmp_path)
    with (proj.root / "devbox.toml").open("a") as fh:
        fh.write(f'[vm]\nssh = "{USER}@127.0.0.1:{sshd.port}"\nname = "t{uuid.uuid4().hex[:8]}"\n')
    git(proj.root, "commit", "-qam", "the VM's address")
    key = proj.root / ".build" / "ssh" / "id_ed25519"
    key.parent.mkdir(parents=True)
    (proj.root / ".build" / ".gitignore").write_text("*\n")  # as devbox's own build_path() makes it
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    sshd.authorized.write_text(key.with_suffix(".pub").read_text())
    sshd.start()
    try:
        yield proj, sshd
    finally:
        sshd.stop()
        shutil.rmtree(HOME / "repos" / proj.root.name, ignore_errors=True)
