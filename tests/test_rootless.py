"""Container mode under rootless podman, as an unprivileged user (the common case on a laptop).

Runs when the suite runs as root and DEVBOX_TEST_ROOTLESS_USER names a user with subuids
(.ci/run makes one). The user gets its own podman API socket and storage; devbox runs
from a copy of app/ with the system Python (the headless core needs no third-party
package). Proves --userns=keep-id: files made inside belong to that user on the host.
"""

from __future__ import annotations

import importlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox.core.containers import LABEL_REPO, volume_names
from devbox.core.errors import ExitCode
from devbox.core.image import LABEL_CHECKOUT

from conftest import BASE_IMAGE, ROOT, make_project, stop_group
from rootfs import import_base, make_rootfs

pytestmark = pytest.mark.podman
SYSTEM_PYTHON = "/usr/bin/python3"
# what the headless core imports besides the standard library (podman-py and its transport)
RUNTIME_DEPENDENCIES = ("podman", "requests", "urllib3", "idna", "charset_normalizer", "certifi", "pathspec")


class AsUser:
    def __init__(self, name: str, tmp: Path) -> None:
        pw = pwd.getpwnam(name)
        self.name = name
        self.uid, self.gid, self.home = pw.pw_uid, pw.pw_gid, pw.pw_dir
        self.runtime = Path(f"/run/user/{self.uid}")
        self.runtime.mkdir(parents=True, exist_ok=True)
        os.chown(self.runtime, self.uid, self.gid)
        self.runtime.chmod(0o700)
        conf = tmp / "containers.conf"  # runc and ulimits only: storage is the user's own default
        conf.write_text(
            '[engine]\nruntime = "runc"\n[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        )
        conf.chmod(0o644)
        self.env = {
            "HOME": self.home,
            "USER": name,
            "LOGNAME": name,
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "XDG_RUNTIME_DIR": str(self.runtime),
            "CONTAINERS_CONF": str(conf),
            "PYTHONPATH": f"{tmp / 'app'}:{tmp / 'site'}",
        }

    def argv(self, *args: str) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *args]

    def run(self, *args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            env={**self.env, **env},
            cwd=cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )


@pytest.fixture
def rootless(podman_service: str) -> Iterator[tuple[AsUser, Path]]:
    name = os.environ.get("DEVBOX_TEST_ROOTLESS_USER")
    if os.getuid() != 0 or not name:
        pytest.skip("set DEVBOX_TEST_ROOTLESS_USER (and run as root) to test rootless podman")
    if os.stat("/dev/net/tun").st_mode & 0o006 != 0o006:
        # rootless networking (slirp4netns, also used by RUN steps) opens /dev/net/tun as the user;
        # distributions ship it 0666, these sandboxes 0600 (.ci/run sets 0666)
        pytest.skip("/dev/net/tun is not usable by unprivileged users (chmod 0666 /dev/net/tun)")
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{SYSTEM_PYTHON} is needed to run devbox as the unprivileged user")
    tmp = Path(tempfile.mkdtemp(prefix="devbox-rootless-"))
    tmp.chmod(0o755)
    shutil.copytree(ROOT / "app", tmp / "app", ignore=shutil.ignore_patterns("__pycache__"))
    for module in RUNTIME_DEPENDENCIES:  # the venv lives under /root, which the user cannot enter
        src = Path(importlib.import_module(module).__file__ or "").parent
        shutil.copytree(src, tmp / "site" / module, ignore=shutil.ignore_patterns("__pycache__"))
    user = AsUser(name, tmp)
    # this run's own socket: the user's default one may be another run's (two runs at once)
    sock = user.runtime / f"devbox-rootless-{tmp.name}.sock"
    user.env["DEVBOX_PODMAN_URL"] = f"unix://{sock}"
    service = subprocess.Popen(
        user.argv("podman", "system", "service", "--time=0", f"unix://{sock}"),
        env=user.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its copy in the user namespace is stopped with it (stop_group)
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert time.monotonic() < deadline, "rootless podman service did not start"
            time.sleep(0.1)
        make_rootfs(tmp / "base" / "rootfs")
        import_base("podman", tmp / "base" / "rootfs", "localhost/devbox-rootless-scratch")  # build the tar as root
        tar = tmp / "base" / "rootfs.tar"
        tar.chmod(0o644)
        res = user.run("podman", "import", "--change", "CMD /bin/sh", str(tar), BASE_IMAGE)
        assert res.returncode == 0, res.stderr
        for d in (tmp / "base",):
            shutil.rmtree(d)
        subprocess.run(["podman", "rmi", "-f", "localhost/devbox-rootless-scratch"], capture_output=True)
        yield user, tmp
    finally:
        remove_what_it_made(user, tmp)
        stop_group(service)
        sock.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)


def remove_what_it_made(user: AsUser, tmp: Path) -> None:
    """The containers, volumes and images of this fixture's projects (all under ``tmp``) and
    its base image: the account's other containers and images are another run's (a run
    beside this one, or the host tests' environments) and stay."""
    ps = json.loads(user.run("podman", "ps", "-a", "--format", "json").stdout or "[]")
    names = [c["Names"][0] for c in ps if str((c.get("Labels") or {}).get(LABEL_REPO, "")).startswith(f"{tmp}/")]
    if names:
        user.run("podman", "rm", "-f", "-t", "0", *names)
        user.run("podman", "volume", "rm", "-f", *(v for n in names for v in volume_names(n)))
    images = json.loads(user.run("podman", "images", "--format", "json").stdout or "[]")
    built = [i["Id"] for i in images if str((i.get("Labels") or {}).get(LABEL_CHECKOUT, "")).startswith(f"{tmp}/")]
    user.run("podman", "rmi", "-f", *built, BASE_IMAGE)


def test_rootless_start_work_maps_the_user(rootless: tuple[AsUser, Path]) -> None:
    user, tmp = rootless
    proj = make_project(tmp)
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(tmp)], check=True)
    devbox = (SYSTEM_PYTHON, "-m", "devbox.cli")
    res = user.run(*devbox, "start-work", "rootless", "--detach", cwd=proj.root, DEVBOX_REPO=str(proj.root))
    assert res.returncode == 0, res.stdout + res.stderr
    name = res.stdout.strip().splitlines()[-1]
    # keep-id: the user's UID inside is the user's UID outside (uid 0 of the rootless user
    # namespace). podman 4.3 reports UsernsMode "private" for it, so look at the map itself.
    uid_map = user.run("podman", "exec", name, "cat", "/proc/self/uid_map")
    assert [str(user.uid), "0", "1"] in [line.split() for line in uid_map.stdout.splitlines()], uid_map.stdout
    res = user.run(
        *devbox,
        "container",
        "exec",
        "rootless",
        "--",
        "sh",
        "-c",
        "id -u; id -g; touch made-rootless; grep NoNewPrivs /proc/self/status",
        cwd=proj.root,
        DEVBOX_REPO=str(proj.root),
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split("\n")
    assert lines[:2] == [str(user.uid), str(user.gid)]
    assert "1" in lines[2]
    made = tmp / "proj.worktrees" / "rootless" / "made-rootless"
    assert (made.stat().st_uid, made.stat().st_gid) == (user.uid, user.gid)


def test_rootless_disk_build_names_the_rootful_way(rootless: tuple[AsUser, Path]) -> None:
    """bootc-image-builder needs root's storage: a rootless user gets the exact command."""
    user, tmp = rootless
    proj = make_project(tmp)
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(tmp)], check=True)
    devbox = (SYSTEM_PYTHON, "-m", "devbox.cli")
    res = user.run(*devbox, "disk", "build", cwd=proj.root, DEVBOX_REPO=str(proj.root))
    assert res.returncode == ExitCode.NOT_AVAILABLE, res.stdout + res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "must run as root" in last and f"podman image scp {user.name}@localhost::" in last
    assert not (proj.root / ".build" / "disk.qcow2").exists()


def test_rootless_egress_allow_is_enforced_by_the_users_podman(rootless: tuple[AsUser, Path]) -> None:
    """The proxy and the internal network work in rootless podman too (its networks live in
    the user's rootless network namespace): no route out, a refusal logged."""
    user, tmp = rootless
    proj = make_project(tmp, "egress")
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(tmp)], check=True)
    devbox = (SYSTEM_PYTHON, "-m", "devbox.cli")
    env = {"DEVBOX_REPO": str(proj.root)}
    res = user.run(*devbox, "start-work", "boxed", "--detach", "--egress", "allow", "--allow", "allowed.test",
                   cwd=proj.root, **env)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    script = 'ip route | grep -c default; curl -s -m 5 -o /dev/null -w "%{http_code}\\n" http://denied.test/'
    res = user.run(*devbox, "container", "exec", "boxed", "--", "sh", "-c", script, cwd=proj.root, **env)
    assert res.stdout.split() == ["0", "403"], res.stdout + res.stderr
    log = user.run(*devbox, "net", "log", "boxed", "--json", cwd=proj.root, **env)
    assert log.returncode == 0, log.stderr
    assert [(c["host"], c["refused"]) for c in json.loads(log.stdout)["connections"]] == [("denied.test", True)]
    rm = user.run(*devbox, "container", "rm", "boxed", "--force", cwd=proj.root, **env)
    assert rm.returncode == 0 and "network" in rm.stdout + rm.stderr, rm.stdout + rm.stderr
