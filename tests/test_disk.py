"""VM mode's disk: the image as a qcow2 through a bootc-image-builder stand-in that honours
its command line, config and output layout (the real builder image cannot be pulled here)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox.core import ops
from devbox.core.errors import ExitCode
from devbox.core.events import Event, Progress, Step
from devbox.core.session import Devbox

from conftest import SESSION, Project
from rootfs import add_binaries, import_base, make_rootfs

pytestmark = pytest.mark.podman
BUILDER = f"localhost/devbox-test-bib-{SESSION}:1"


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True)


@pytest.fixture(scope="session")
def builder_images(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The stand-in builder, plus a slow and a failing variant (environment baked in)."""
    root = tmp_path_factory.mktemp("bib") / "rootfs"
    make_rootfs(root)
    add_binaries(root, ("/usr/bin/qemu-img",))
    shutil.copy2(Path(__file__).parent / "fixture_builder" / "bib.sh", root / "bin" / "bootc-image-builder")
    import_base("podman", root, f"{BUILDER}-base")
    tags = {"ok": BUILDER, "slow": f"{BUILDER}-slow", "fail": f"{BUILDER}-fail"}
    for kind, env in (("ok", ""), ("slow", "ENV FIXTURE_SLEEP=60\n"), ("fail", "ENV FIXTURE_FAIL=stage-3\n")):
        ctx = tmp_path_factory.mktemp(f"bib-{kind}")
        (ctx / "Containerfile").write_text(f'FROM {BUILDER}-base\n{env}ENTRYPOINT ["/bin/bootc-image-builder"]\n')
        res = podman("build", "-q", "-t", tags[kind], str(ctx))
        assert res.returncode == 0, res.stderr
    yield tags
    podman("rmi", "-f", *tags.values(), f"{BUILDER}-base")


def env_for(project: Project, builder: str, **extra: str) -> dict[str, str]:
    return {**project.env, "DEVBOX_IMAGE_BUILDER": builder, **extra}


def disk_status(project: Project, env: dict[str, str]) -> dict[str, object]:
    res = project.devbox("disk", "status", "--json", env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def test_disk_builds_once_and_rebuilds_when_its_inputs_change(project: Project, builder_images: dict[str, str]) -> None:
    env = env_for(project, builder_images["ok"])
    assert disk_status(project, env)["reasons"] == ["disk missing"]
    events: list[Event] = []
    with Devbox.open(project.root, env=env) as session:
        st = ops.build_disk(session, sink=events.append)
    assert st.verdict.fresh
    steps = [(e.subject.kind, e.state) for e in events if isinstance(e, Step)]
    assert steps == [("image", "start"), ("image", "done"), ("disk", "start"), ("disk", "done")]
    assert [e.done for e in events if isinstance(e, Progress)] == [1.0, 2.0, 3.0]  # `[n/m]` lines
    disk = project.root / ".build" / "disk.qcow2"
    info = json.loads(
        subprocess.run(["qemu-img", "info", "--output=json", str(disk)], capture_output=True, text=True).stdout
    )
    assert info["format"] == "qcow2" and disk.stat().st_uid == os.getuid()
    record = json.loads((project.root / ".build" / "disk.json").read_text())
    assert record["image_id"] == project.image_id() and len(record["key"]) == 64
    key = project.root / ".build" / "ssh" / "id_ed25519"
    assert key.stat().st_mode & 0o777 == 0o600 and key.with_suffix(".pub").read_text().startswith("ssh-ed25519 ")
    assert not list((project.root / ".build").glob("disk-build-*"))  # the work dir is gone

    again = project.devbox("disk", "build", env=env)
    assert again.returncode == 0 and "is up to date" in again.stdout

    (project.bootc / "homedir" / "added.txt").write_text("new\n")
    res = project.devbox("disk", "build", env=env)
    assert res.returncode == 0, res.stderr
    assert "bootc/homedir/added.txt added" in res.stdout and "image rebuilt since the disk was made" in res.stdout

    sized = env_for(project, builder_images["ok"], DEVBOX_DISK_SIZE_GIB="10")
    assert disk_status(project, sized)["reasons"] == ["disk size or rootfs changed"]


def test_failed_or_interrupted_builder_keeps_the_old_disk(project: Project, builder_images: dict[str, str]) -> None:
    ok = env_for(project, builder_images["ok"])
    assert project.devbox("disk", "build", env=ok).returncode == 0
    disk = project.root / ".build" / "disk.qcow2"
    before = disk.stat().st_ino

    failing = env_for(project, builder_images["fail"])
    res = project.devbox("disk", "build", "--force", env=failing)
    assert res.returncode == ExitCode.BUILD_FAILED
    assert "osbuild failed: stage-3" in res.stderr.strip().splitlines()[-1]
    assert disk.stat().st_ino == before

    slow = env_for(project, builder_images["slow"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "devbox.cli", "disk", "build", "--force"],
        cwd=project.root,
        env=slow,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Manifest generation" in line:
            break
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED and "disk build interrupted" in err
    assert time.monotonic() - started < 30
    assert podman("ps", "-aq", "--filter", "name=devbox-bib-").stdout.strip() == ""  # the builder is gone
    assert disk.stat().st_ino == before and not list((project.root / ".build").glob("disk-build-*"))


def test_a_killed_disk_build_is_cleaned_up_by_the_next_one(project: Project, builder_images: dict[str, str]) -> None:
    """Issue 14 item 6: devbox killed mid-build leaves its work directory (and its builder
    container); the next disk build removes them, saying so; a live run's are never touched."""
    ok = env_for(project, builder_images["ok"])
    assert project.devbox("disk", "build", env=ok).returncode == 0
    slow = env_for(project, builder_images["slow"])
    proc = subprocess.Popen([sys.executable, "-m", "devbox.cli", "disk", "build", "--force"], cwd=project.root,
                            env=slow, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "Manifest generation" in line:
            break
    proc.kill()  # no cleanup can run
    proc.wait(30)
    build_dir = project.root / ".build"
    left = list(build_dir.glob("disk-build-*"))
    assert left, "a killed build leaves its work directory"

    import fcntl

    with (build_dir / "locks" / "disk.lock").open("a") as held:  # a live run holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        from devbox.core import builder
        from devbox.core.events import Reporter, null_sink
        from devbox.core.session import Devbox

        with Devbox.open(project.root, env=ok) as session:
            assert builder.clean_leftovers(session.settings, session.podman, Reporter(null_sink, "t")) == ()
        assert all(d.exists() for d in left)
    res = project.devbox("disk", "build", env=ok)
    assert res.returncode == 0, res.stderr
    assert f"removed {left[0]}, left by a disk build that did not finish" in res.stdout
    assert not list(build_dir.glob("disk-build-*"))
    assert podman("ps", "-aq", "--filter", "name=devbox-bib-").stdout.strip() == ""  # its builder too


def test_switching_back_to_an_earlier_image_reuses_its_disk(project: Project, builder_images: dict[str, str]) -> None:
    """Image A, then B, then A again: the builder runs twice, not three times (the disk cache
    keys a disk by what the image was built from); the cache never holds more than 2."""
    env = env_for(project, builder_images["ok"])
    cache = project.root / ".build" / "disks"
    extra = project.bootc / "homedir" / "variant.txt"

    def build() -> str:
        res = project.devbox("disk", "build", env=env, timeout=600)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def ran(out: str) -> bool:
        return "Manifest generation" in out  # the stand-in builder's first step line

    assert ran(build())  # A
    extra.write_text("B\n")
    assert ran(build())  # B
    a_disk = list(cache.glob("*.qcow2"))
    assert len(a_disk) == 2
    extra.unlink()  # back to A: the image is rebuilt (a new ID), from the same bootc/
    out = build()
    assert not ran(out) and "reused" in out, out
    assert disk_status(project, env)["fresh"] is True
    extra.write_text("C\n")
    out = build()
    assert ran(out) and "dropped the oldest" in out  # C: B was used longest ago
    assert len(list(cache.glob("*.qcow2"))) == 2
