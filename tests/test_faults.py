"""Container mode under faults and misuse (issue: loses nothing, breaks nothing): real
podman, real git, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devbox.core.errors import ExitCode

from conftest import BASE_IMAGE, ROOT, Project, git, make_project

pytestmark = pytest.mark.podman


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True)


def procs_matching(text: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out if int(p) != os.getpid()]


def wait_for(pred: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def start_build(project: Project, marker: str) -> subprocess.Popen[str]:
    """devbox image build with a RUN step that sleeps (``marker`` names the sleep)."""
    cf = project.bootc / "Containerfile"
    cf.write_text(cf.read_text().replace("CMD [", f'RUN echo "long step" && sleep {marker}\nCMD ['))
    proc = subprocess.Popen(
        [sys.executable, "-m", "devbox.cli", "image", "build"],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "long step" in line and "RUN" not in line:
            break
    return proc


def test_interrupted_build_stops_its_run_step_and_spares_other_builds(project: Project, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "Containerfile").write_text(f"FROM {BASE_IMAGE}\nRUN echo other-start && sleep 8 && echo other-done\n")
    plain = subprocess.Popen(
        ["podman", "build", "--no-cache", "-t", "localhost/devbox-test-other:1", str(other)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ours = start_build(project, "61")
        wait_for(lambda: procs_matching("sleep 61"), 30)  # the RUN step runs: interrupt it now
        ours.send_signal(signal.SIGINT)
        _, err = ours.communicate(timeout=60)
        assert ours.returncode == ExitCode.INTERRUPTED and "interrupted" in err
        wait_for(lambda: not procs_matching("sleep 61"), 15)  # the RUN step did not outlive the build
        out, _ = plain.communicate(timeout=120)
        assert plain.returncode == 0, out  # the other build kept its working container
        assert "other-done" in out
        leftovers = podman("ps", "--all", "--external", "--format", "{{.Names}}").stdout
        assert "working-container" not in leftovers
    finally:
        if plain.poll() is None:
            plain.kill()
        podman("rmi", "-f", "localhost/devbox-test-other:1")


def test_killed_devbox_build_is_found_and_stopped_by_the_next_run(project: Project) -> None:
    original = (project.bootc / "Containerfile").read_text()
    ours = start_build(project, "62")
    ours.send_signal(signal.SIGKILL)  # no chance to clean up
    ours.wait(10)
    assert procs_matching("sleep 62"), "podman build (in its own session) survives its parent"
    (project.bootc / "Containerfile").write_text(original)
    res = project.devbox("image", "build")
    assert res.returncode == 0, res.stderr
    assert "left running by an earlier devbox run" in res.stdout
    wait_for(lambda: not procs_matching("sleep 62"), 15)
    assert not procs_matching("podman build --tag " + project.image)


def test_interrupt_while_waiting_for_ready_leaves_nothing_running(project: Project) -> None:
    ep = project.bootc / "entrypoint.sh"
    ep.write_text(ep.read_text().replace("set -eu\n", "set -eu\nsleep 40\n", 1))
    assert project.devbox("image", "build").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "devbox.cli", "start-work", "slow", "--detach"],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    flt = ["ps", "-aq", "--filter", "label=devbox.branch=slow"]
    wait_for(lambda: podman(*flt).stdout.strip(), 60)
    # the state meant: the container runs its (slow) entrypoint, devbox waits for its ready line
    wait_for(lambda: podman("ps", "-q", "--filter", "label=devbox.branch=slow", "--filter", "status=running")
             .stdout.strip() and procs_matching("sleep 40"), 60)  # fmt: skip
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "removed container" in err.strip().splitlines()[-1]
    assert podman(*flt).stdout.strip() == ""
    assert "-slow-" not in podman("volume", "ls", "--format", "{{.Name}}").stdout


def test_two_clones_do_not_share_an_image(base_image: str, tmp_path: Path) -> None:
    a = make_project(tmp_path, "a")
    b = make_project(tmp_path, "b")
    shared = "localhost/devbox-test-shared:1"
    for p in (a, b):
        (p.root / "devbox.toml").write_text("")  # the default name: unique per checkout
    try:
        names = {json.loads(p.devbox("image", "status", "--json").stdout)["name"] for p in (a, b)}
        assert len(names) == 2
        for p in (a, b):  # and with one name forced on both, the reason says why
            (p.root / "devbox.toml").write_text(f'[image]\nname = "{shared}"\n')
        b.bootc.joinpath("build-id").write_text(a.bootc.joinpath("build-id").read_text())
        assert a.devbox("image", "build").returncode == 0
        status = json.loads(b.devbox("image", "status", "--json").stdout)
        assert status["fresh"] is False
        assert status["reasons"][0] == f"built from another checkout ({a.root})"
    finally:
        for n in (*names, shared):
            podman("rmi", "-f", n)


def test_two_fresh_clones_of_this_repository_have_their_own_image_names(tmp_path: Path) -> None:
    """Issue 14 item 2: the committed devbox.toml leaves the image name to the per-checkout
    default (two clones of devbox itself do not rebuild each other's image)."""
    names = []
    for clone in ("one", "two"):
        dest = tmp_path / clone / "devbox"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_") or k == "DEVBOX_PODMAN_URL"}
        res = subprocess.run([sys.executable, "-m", "devbox.cli", "--repo", str(dest), "image", "status", "--json"],
                             capture_output=True, text=True, env=env, cwd=dest, timeout=120)  # fmt: skip
        assert res.returncode == 0, res.stderr
        names.append(json.loads(res.stdout)["name"])
    assert names[0] != names[1] and all(n.startswith("localhost/devbox-devbox-") for n in names), names


def test_unpullable_base_fails_before_any_worktree(project: Project) -> None:
    cf = project.bootc / "Containerfile"
    cf.write_text(cf.read_text().replace(BASE_IMAGE, "localhost/devbox-no-such-base:1"))
    res = project.devbox("start-work", "nobase", "--detach")
    assert res.returncode == ExitCode.BUILD_FAILED, res.stderr
    assert "localhost/devbox-no-such-base:1" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "nobase" not in git(project.root, "branch", "--list")
    assert not (project.root.parent / "proj.worktrees").exists()


def test_editor_files_and_ignore_files_do_not_make_the_image_stale(project: Project) -> None:
    (project.bootc / ".containerignore").write_text("notes/\n")
    assert project.devbox("image", "build").returncode == 0
    (project.bootc / ".Containerfile.swp").write_text("vim swap")
    (project.bootc / "homedir" / "draft.txt~").write_text("backup")
    (project.bootc / "notes").mkdir()
    (project.bootc / "notes" / "todo.md").write_text("ignored by podman")
    status = json.loads(project.devbox("image", "status", "--json").stdout)
    assert status["fresh"] is True, status
    (project.bootc / "homedir" / "new.txt").write_text("copied by podman")
    status = json.loads(project.devbox("image", "status", "--json").stdout)
    assert status["reasons"] == ["bootc/homedir/new.txt added"]
    res = project.devbox("image", "build")
    assert res.returncode == 0, res.stderr
    inside = podman("run", "--rm", "--entrypoint", "ls", project.image, "-a", "/etc/skel")
    assert "new.txt" in inside.stdout and "draft.txt~" not in inside.stdout


def test_base_image_update_is_a_reason_and_pull_rebuilds(project: Project, tmp_path: Path) -> None:
    own_base = f"localhost/devbox-test-ownbase-{os.getpid()}:1"
    assert podman("tag", BASE_IMAGE, own_base).returncode == 0
    cf = project.bootc / "Containerfile"
    cf.write_text(cf.read_text().replace(BASE_IMAGE, own_base))
    try:
        assert project.devbox("image", "build").returncode == 0
        newer = tmp_path / "newer"
        newer.mkdir()
        (newer / "Containerfile").write_text(f"FROM {own_base}\nRUN echo newer > /etc/base-version\n")
        assert podman("build", "-q", "-t", own_base, str(newer)).returncode == 0
        status = json.loads(project.devbox("image", "status", "--json").stdout)
        assert status["reasons"] == [f"base image {own_base} updated"]
        res = project.devbox("image", "build", "--pull")
        assert res.returncode == 0, res.stderr
        assert f"base image {own_base} updated" in res.stdout  # the reason the rebuild gives
        assert json.loads(project.devbox("image", "status", "--json").stdout)["fresh"] is True
    finally:
        podman("rmi", "-f", own_base)


def test_bad_builds_say_one_line(project: Project, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    (project.bootc / "link.txt").symlink_to(outside)
    cf = project.bootc / "Containerfile"
    original = cf.read_text()
    cf.write_text(original.replace("CMD [", "COPY link.txt /x\nCMD ["))
    res = project.devbox("image", "build")
    assert res.returncode == ExitCode.BUILD_FAILED
    last = res.stderr.strip().splitlines()[-1]
    assert "link.txt is a symlink to" in last and "outside the build context" in last and len(last) < 600
    (project.bootc / "link.txt").unlink()
    cf.write_text(original.replace("CMD [", "RUN head -c 1000000 /dev/zero | tr '\\\\0' y; echo; exit 3\nCMD ["))
    res = project.devbox("image", "build")
    assert res.returncode == ExitCode.BUILD_FAILED
    assert max(len(line) for line in res.stderr.splitlines()) < 1000  # the 1 MB line is cut
    assert max(len(line) for line in res.stdout.splitlines()) < 5000


def test_git_messages_in_order_and_long_branch_name(tmp_path: Path) -> None:
    from test_worktrees import cli, repo

    root = repo(tmp_path)
    res = cli(root, "worktree", "add", "ordered")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.index("Preparing worktree") < out.index("HEAD is now at")
    res = cli(root, "worktree", "add", "b" * 201)
    assert res.returncode == ExitCode.BAD_NAME and "201 characters long, more than 200: shorten it" in res.stderr
