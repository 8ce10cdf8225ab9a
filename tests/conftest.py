"""Shared fixtures: this session's own real podman (runc, its own storage and API socket),
a local stand-in for fedora-bootc, and throwaway projects (git repo + devbox.toml + bootc/
of the same shape)."""

from __future__ import annotations

import contextlib
import os
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from rootfs import import_base, make_rootfs  # noqa: E402

# lock_type "file": the locks live under this session's tmp_dir. With the default "shm" every
# rootful podman on the machine shares one lock segment, and a runtime that starts with a
# fresh tmp_dir (each test session) frees every lock in it, the other runs' too: two
# objects then share a lock, and builds beside another run (or .ci/run's own service)
# hung at their first step.
CONTAINERS_CONF = """\
[engine]
runtime = "runc"
lock_type = "file"
tmp_dir = "{root}/tmp"
volume_path = "{root}/graph/volumes"
static_dir = "{root}/graph/libpod"
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[network]
network_config_dir = "{root}/net"
"""
STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{root}/graph"
runroot = "{root}/run"
"""
SESSION = uuid.uuid4().hex[:8]
BASE_IMAGE = f"localhost/devbox-test-base-{SESSION}:1"


def ping(url: str, timeout: float = 2.0) -> bool:
    from devbox.core.errors import DevboxError
    from devbox.core.podman import Podman

    try:
        Podman(url, timeout=timeout).check()
    except DevboxError:
        return False
    return True


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started with ``start_new_session=True`` and all of its group: rootless
    podman re-executes itself in a user namespace, and stopping only the first copy left the
    second serving, orphaned, after the tests."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    for _ in range(600):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class PodmanService:
    """This test session's own podman: its own storage, config and API socket, so two test
    runs on one machine (or a user's own containers) never see each other."""

    exe: str
    root: Path
    url: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "system", "service", "--time=0", self.url],
            stdout=(self.root / "service.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.root,  # conmon writes a file named "oom" into it when a memory limit kills
        )
        deadline = time.monotonic() + 30
        while not ping(self.url):
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"podman system service did not answer on {self.url}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


@pytest.fixture(scope="session")
def podman_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanService]:
    exe = shutil.which("podman")
    if exe is None:
        pytest.fail("podman is not installed (CI installs it: bash .ci/run)")
    root = Path(tempfile.mkdtemp(prefix=f"devbox-podman-{SESSION}-"))  # short: overlay mount options
    # its networks too: `podman system reset` at the end removes every network in the
    # configuration directory, which was the machine's (/etc/cni/net.d): another run's
    # environments, and yours, lost theirs
    for d in ("graph", "run", "tmp", "net"):
        (root / d).mkdir()
    (root / "containers.conf").write_text(CONTAINERS_CONF.format(root=root))
    (root / "storage.conf").write_text(STORAGE_CONF.format(root=root))
    saved = {k: os.environ.get(k) for k in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "DEVBOX_PODMAN_URL")}
    os.environ["CONTAINERS_CONF"] = str(root / "containers.conf")
    os.environ["CONTAINERS_STORAGE_CONF"] = str(root / "storage.conf")
    service = PodmanService(exe, root, f"unix://{root}/podman.sock")
    os.environ["DEVBOX_PODMAN_URL"] = service.url
    service.start()
    yield service
    service.stop()
    subprocess.run([exe, "system", "reset", "--force"], capture_output=True, timeout=300)
    shutil.rmtree(root, ignore_errors=True)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def base_image(podman_service: PodmanService, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("base") / "rootfs"
    make_rootfs(root)
    import_base(podman_service.exe, root, BASE_IMAGE)
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
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_") or k == "DEVBOX_PODMAN_URL"}
        env["DEVBOX_REPO"] = str(self.root)
        return env

    def devbox_argv(self) -> list[str]:
        return [sys.executable, "-m", "devbox.cli"]

    def devbox(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run the real CLI in a subprocess, as a user would."""
        return subprocess.run(
            [*self.devbox_argv(), *args],
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
    for name in ("entrypoint.sh", "agent-hook.sh", "managed-settings.json"):  # the real image's own files
        shutil.copy2(ROOT / "bootc" / name, bootc / name)
    (bootc / "build-id").write_text(uuid.uuid4().hex + "\n")  # busts podman's layer cache per project
    cf = bootc / "Containerfile"
    text = cf.read_text().replace("localhost/devbox-test-base:1", BASE_IMAGE)
    cf.write_text(text.replace("COPY homedir/", "COPY build-id /etc/devbox-build-id\nCOPY homedir/"))
    image = f"localhost/devbox-test-{uuid.uuid4().hex[:10]}:latest"
    (root / "devbox.toml").write_text(f'[image]\nname = "{image}"\n')
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "dev@example.com")
    git(root, "config", "user.name", "Dev")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return Project(root, image)


@pytest.fixture(scope="session")
def devbox_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """devbox's wheel, built once per session from this checkout (no network)."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(dist), str(ROOT)], check=True, capture_output=True)  # fmt: skip
    (wheel,) = dist.glob("devbox-*.whl")
    return wheel


@pytest.fixture(scope="session")
def installed_devbox(devbox_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv outside the checkout with devbox installed from the wheel (its
    dependencies from the package index, as pipx would); its bin/ directory."""
    venv = tmp_path_factory.mktemp("tool") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    res = subprocess.run([venv / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check", str(devbox_wheel)],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    if res.returncode != 0:
        pytest.fail(f"pip install of the wheel failed: {res.stderr[-2000:]}")
    return venv / "bin"


@pytest.fixture(scope="session")
def provider_mirror() -> Path:
    """dmacvicar/libvirt 0.8.3 in a filesystem mirror, built once per clone (tests/tfmirror.py)."""
    import tfmirror

    try:
        return tfmirror.provider_mirror()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def project(tmp_path: Path, base_image: str) -> Iterator[Project]:
    proj = make_project(tmp_path)
    yield proj
    subprocess.run(["podman", "rmi", "--force", proj.image], capture_output=True)


FIXTURE_PROMPT = b"devbox-fixture$ "  # tests/fixture_bootc/homedir/.profile


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
        if send and not sent and FIXTURE_PROMPT in out:  # the container shell's prompt: type the input
            os.write(master, send)
            sent = True
        if proc.poll() is not None and not ready:
            break
    os.close(master)
    rc = proc.wait(timeout=10)
    return rc, out.decode(errors="replace")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """DEVBOX_TEST_REVERSE=1 runs the suite backwards (.ci/run does, after a forward run):
    no test may depend on another having run first."""
    if os.environ.get("DEVBOX_TEST_REVERSE") == "1":
        items.reverse()


# the egress tests' outside world (tests/egress_world.py), a fixture for every module
from egress_world import world  # noqa: E402, F401
