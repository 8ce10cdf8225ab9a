"""Shared fixtures: a real podman (runc + test containers.conf), a local stand-in for
fedora-bootc, and throwaway projects (git repo + devbox.toml + bootc/ of the same shape)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from rootfs import import_base, make_rootfs  # noqa: E402

BASE_IMAGE = "localhost/devbox-test-base:1"
CONTAINERS_CONF = """\
[engine]
runtime = "runc"
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
"""


def _socket_path() -> str:
    from devbox.core.podman_api import default_socket

    return default_socket().removeprefix("unix://")


def _ping(path: str) -> bool:
    from devbox.core.errors import DevboxError
    from devbox.core.podman_api import PodmanAPI

    try:
        PodmanAPI(f"unix://{path}", timeout=2).ping()
    except DevboxError:
        return False
    return True


@pytest.fixture(scope="session")
def podman_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The podman CLI path, with the test containers.conf and the API socket answering.

    CI starts the service (.ci/run); a developer's run starts one here if none answers.
    """
    exe = shutil.which("podman")
    if exe is None:
        pytest.skip("podman is not installed")
    if "CONTAINERS_CONF" not in os.environ:
        conf = tmp_path_factory.mktemp("podman") / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        os.environ["CONTAINERS_CONF"] = str(conf)
    sock = _socket_path()
    proc = None
    if not _ping(sock):
        Path(sock).parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [exe, "system", "service", "--time=0", f"unix://{sock}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not _ping(sock):
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"podman system service did not answer on {sock}")
            time.sleep(0.1)
    yield exe
    if proc is not None:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def base_image(podman_service: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("base") / "rootfs"
    make_rootfs(root)
    import_base(podman_service, root, BASE_IMAGE)
    return BASE_IMAGE


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


class Project:
    """A throwaway devbox project: a git repo whose bootc/ builds from the local base."""

    def __init__(self, root: Path, image: str) -> None:
        self.root = root
        self.image = image
        self.bootc = root / "bootc"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_")}
        env["DEVBOX_REPO"] = str(self.root)
        return env

    def devbox(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run the real CLI in a subprocess, as a user would."""
        return subprocess.run(
            [sys.executable, "-m", "devbox.cli", *args],
            cwd=self.root,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def image_id(self) -> str | None:
        out = subprocess.run(
            ["podman", "image", "inspect", "--format", "{{.Id}}", self.image], capture_output=True, text=True
        )
        return out.stdout.strip() if out.returncode == 0 else None


def make_project(tmp: Path, name: str = "proj") -> Project:
    root = tmp / name
    bootc = root / "bootc"
    shutil.copytree(ROOT / "tests" / "fixture_bootc", bootc)
    shutil.copy2(ROOT / "bootc" / "entrypoint.sh", bootc / "entrypoint.sh")
    (bootc / "build-id").write_text(uuid.uuid4().hex + "\n")  # busts podman's layer cache per project
    cf = bootc / "Containerfile"
    cf.write_text(cf.read_text().replace("COPY homedir/", "COPY build-id /etc/devbox-build-id\nCOPY homedir/"))
    image = f"localhost/devbox-test-{uuid.uuid4().hex[:10]}:latest"
    (root / "devbox.toml").write_text(f'[image]\nname = "{image}"\n')
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "dev@example.com")
    git(root, "config", "user.name", "Dev")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return Project(root, image)


@pytest.fixture
def project(tmp_path: Path, base_image: str) -> Iterator[Project]:
    proj = make_project(tmp_path)
    yield proj
    subprocess.run(["podman", "rmi", "--force", proj.image], capture_output=True)


def run_in_pty(
    argv: list[str], env: dict[str, str], cwd: Path, send: bytes = b"", timeout: float = 120
) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal (as from an interactive shell); return (rc, output)."""
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True)
    os.close(slave)
    out = bytearray()
    sent = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
        if send and not sent and (b"$" in out or b"#" in out):  # a prompt: type the input
            os.write(master, send)
            sent = True
        if proc.poll() is not None and not ready:
            break
    os.close(master)
    rc = proc.wait(timeout=10)
    return rc, out.decode(errors="replace")
