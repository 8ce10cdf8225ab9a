"""VM transfers against a real sshd (Debian openssh-server) started here on 127.0.0.1 at a
free port, with its own host key and config, reached through ``vm.ssh``: real ssh, rsync
and git over it. The "VM user" is the user running the tests, so the remote home is theirs:
each test works under its own directory there and removes it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox.core.errors import ExitCode
from sshd import HOME, Sshd, vm_project_over_ssh

from conftest import Project, git


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[tuple[Project, Sshd, Path]]:
    """A project whose "VM" is this sshd; the remote work area is a fresh dir in $HOME."""
    with vm_project_over_ssh(tmp_path) as (proj, sshd):
        area = HOME / f"devbox-test-{uuid.uuid4().hex[:8]}"
        yield proj, sshd, area
        shutil.rmtree(area, ignore_errors=True)


def devbox(proj: Project, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devbox.cli", *args], cwd=proj.root, env=proj.env, capture_output=True, text=True,
        timeout=300, input=stdin if stdin is not None else "",
    )  # fmt: skip


def make_tree(root: Path) -> None:
    (root / "dir with spaces").mkdir(parents=True)
    (root / "dir with spaces" / "ünïcödé 'q\"uote' *glob?.txt").write_text("hello\n")
    (root / "-leading-dash").write_text("dash\n")
    (root / "run.sh").write_text("#!/bin/sh\necho ok\n")
    (root / "run.sh").chmod(0o755)
    os.symlink("run.sh", root / "link")
    (root / "empty").mkdir()
    with (root / "big.bin").open("wb") as fh:
        fh.write(os.urandom(50 * 1024 * 1024))


def test_dir_round_trip_delta_and_delete(vm: tuple[Project, Sshd, Path], tmp_path: Path) -> None:
    proj, _, area = vm
    src = tmp_path / "src tree"
    make_tree(src)
    remote = f"{area.name}/work dir"
    first = devbox(proj, "vm", "dir-push", str(src), remote)
    assert first.returncode == 0, first.stderr
    there = HOME / remote
    assert (there / "dir with spaces" / "ünïcödé 'q\"uote' *glob?.txt").read_text() == "hello\n"
    assert os.readlink(there / "link") == "run.sh" and os.access(there / "run.sh", os.X_OK)
    assert (there / "empty").is_dir() and (there / "-leading-dash").exists()

    (there / "dir with spaces" / "ünïcödé 'q\"uote' *glob?.txt").write_text("changed in the VM\n")
    pulled = tmp_path / "pulled"
    back = devbox(proj, "vm", "dir-pull", remote, str(pulled))
    assert back.returncode == 0, back.stderr
    assert (pulled / "dir with spaces" / "ünïcödé 'q\"uote' *glob?.txt").read_text() == "changed in the VM\n"
    assert (pulled / "big.bin").stat().st_size == 50 * 1024 * 1024

    # the unchanged 50 MB file: under 1% of it travels the second time
    from devbox.core import ops
    from devbox.core.events import Event, Progress
    from devbox.core.session import Devbox

    (src / "big.bin").touch()  # a new mtime: rsync must look, and the delta algorithm finds it the same
    events: list[Event] = []
    with Devbox.open(proj.root, env=proj.env) as session:
        again = ops.dir_push(session, src, remote, sink=events.append)
    assert again.literal < 0.01 * 50 * 1024 * 1024 and again.bytes_sent < 0.01 * 50 * 1024 * 1024
    assert any(isinstance(e, Progress) and e.total == 100.0 for e in events)  # --info=progress2, as events

    (src / "-leading-dash").unlink()
    (there / "extra-in-vm").write_text("x")
    dry = devbox(proj, "vm", "dir-push", "--delete", "--dry-run", str(src), remote)
    assert dry.returncode == 0, dry.stderr
    listed = sorted({line.split(None, 1)[1] for line in dry.stdout.splitlines() if line.startswith("*deleting")})
    assert listed == ["-leading-dash", "extra-in-vm"] and (there / "extra-in-vm").exists()  # nothing yet
    real = devbox(proj, "vm", "dir-push", "--delete", str(src), remote)
    assert real.returncode == 0, real.stderr
    assert not (there / "extra-in-vm").exists() and not (there / "-leading-dash").exists()
    assert (there / "run.sh").exists() and (there / "empty").is_dir()  # only what the dry run listed


def test_pull_refuses_to_clobber_uncommitted_work(vm: tuple[Project, Sshd, Path]) -> None:
    proj, _, area = vm
    (area / "docs").mkdir(parents=True)
    (area / "docs" / "README.md").write_text("from the VM\n")
    local = proj.root / "docs"
    local.mkdir()
    (local / "README.md").write_text("committed\n")
    git(proj.root, "add", "docs")
    git(proj.root, "commit", "-qm", "docs")
    (local / "README.md").write_text("my uncommitted edit\n")
    res = devbox(proj, "vm", "dir-pull", f"{area.name}/docs", str(local))
    assert res.returncode == ExitCode.REFUSED and "README.md" in res.stderr and "--force" in res.stderr
    assert (local / "README.md").read_text() == "my uncommitted edit\n"
    forced = devbox(proj, "vm", "dir-pull", "--force", f"{area.name}/docs", str(local))
    assert forced.returncode == 0 and (local / "README.md").read_text() == "from the VM\n"


def test_git_push_and_pull_a_branch(vm: tuple[Project, Sshd, Path]) -> None:
    proj, _, _ = vm
    git(proj.root, "checkout", "-q", "-b", "feature")
    for i in range(3):
        (proj.root / f"f{i}.txt").write_text(f"{i}\n")
        git(proj.root, "add", f"f{i}.txt")
        git(proj.root, "commit", "-qm", f"commit {i}")
    pushed = devbox(proj, "vm", "git-push", "feature")
    assert pushed.returncode == 0, pushed.stderr
    assert "5 commit(s)" in pushed.stdout  # the first push carries the whole branch (init, address, 3)
    remote = HOME / "repos" / proj.root.name
    subprocess.run(["git", "-C", str(remote), "checkout", "-q", "feature"], check=True)
    (remote / "from-vm.txt").write_text("vm\n")
    subprocess.run(["git", "-C", str(remote), "add", "from-vm.txt"], check=True)
    subprocess.run(["git", "-C", str(remote), "-c", "user.name=vm", "-c", "user.email=vm@x", "commit", "-qm", "vm"],
                   check=True)  # fmt: skip
    local_before = git(proj.root, "rev-parse", "feature")
    pulled = devbox(proj, "vm", "git-pull", "feature")
    assert pulled.returncode == 0, pulled.stderr
    assert "1 commit(s), 1 file(s)" in pulled.stdout
    assert git(proj.root, "rev-parse", "feature") == local_before  # the local branch did not move
    (proj.root / "f0.txt").write_text("dirty\n")
    refused = devbox(proj, "vm", "git-pull", "--ff", "feature")
    assert refused.returncode == ExitCode.REFUSED and git(proj.root, "rev-parse", "feature") == local_before
    git(proj.root, "checkout", "-q", "--", "f0.txt")
    ff = devbox(proj, "vm", "git-pull", "--ff", "feature")
    assert ff.returncode == 0, ff.stderr + git(proj.root, "status", "--porcelain")
    assert git(proj.root, "rev-parse", "feature") == git(proj.root, "rev-parse", "vm/feature")
    assert (proj.root / "from-vm.txt").exists()


def test_changed_host_key_is_refused_with_the_fix(vm: tuple[Project, Sshd, Path]) -> None:
    proj, sshd, _ = vm
    first = devbox(proj, "vm", "ssh", "echo", "hi there")
    assert first.returncode == 0 and first.stdout == "hi there\n"
    assert "127.0.0.1" in (proj.root / ".build" / "ssh" / "known_hosts").read_text()
    code = devbox(proj, "vm", "ssh", "sh", "-c", "exit 7")
    assert code.returncode == 7  # the remote exit code comes back
    piped = devbox(proj, "vm", "ssh", "wc", "-c", stdin="12345")
    assert piped.stdout.strip() == "5"  # stdin passes through
    sshd.stop()
    sshd.start(new_host_key=True)
    res = devbox(proj, "vm", "ssh", "true")
    assert res.returncode == ExitCode.REFUSED, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert "host key" in last and "ssh-keygen -R" in last


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["vm", "dir-push", "/nonexistent/dir"], ExitCode.NOT_FOUND, "does not exist"),
        (["vm", "dir-pull", "/etc"], ExitCode.REFUSED, "outside the VM user's home"),
        (["vm", "dir-pull", "../../etc"], ExitCode.REFUSED, "climbs out"),
        (["vm", "git-push", "no-such-branch"], ExitCode.NOT_FOUND, "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    vm: tuple[Project, Sshd, Path], args: list[str], code: int, said: str
) -> None:
    proj, _, _ = vm
    before = sorted(p.name for p in proj.root.iterdir())
    res = devbox(proj, *args)
    assert res.returncode == code, res.stderr
    assert said in res.stderr.strip().splitlines()[-1] and "Traceback" not in res.stderr
    assert sorted(p.name for p in proj.root.iterdir()) == before


def test_unreachable_vm_and_missing_key(vm: tuple[Project, Sshd, Path]) -> None:
    proj, sshd, _ = vm
    sshd.stop()
    res = devbox(proj, "vm", "ssh", "true")
    assert res.returncode == ExitCode.NOT_AVAILABLE and "cannot reach" in res.stderr
    (proj.root / ".build" / "ssh" / "id_ed25519").unlink()
    res = devbox(proj, "vm", "dir-push", str(proj.root / "bootc"))
    assert res.returncode == ExitCode.NOT_FOUND and "SSH key" in res.stderr


BOOTC_STAND_IN = """#!/bin/sh
# stands in for bootc (not installable here): records its arguments, answers `status`
echo "$*" >>"$(dirname "$0")/../bootc.log"
case "$1" in
status) echo '{"status": {"booted": {"image": {"image": {"image": "quay.io/fedora/fedora-bootc:43"}}}}}' ;;
esac
"""


def test_vm_upgrade_loads_the_image_into_the_vm_then_switches(tmp_path: Path, base_image: str) -> None:
    """The ssh and podman side of ``vm upgrade`` against the sshd: the image is streamed
    into the "VM"'s own podman storage (separate from the session's) with ``podman load``,
    then ``bootc switch --transport containers-storage`` is asked for (bootc itself is a
    stand-in that records its arguments: fedora-bootc cannot be run here)."""
    with vm_project_over_ssh(tmp_path) as (proj, sshd):
        vm_root = tmp_path / "vm"
        (vm_root / "bin").mkdir(parents=True)
        (vm_root / "bin" / "bootc").write_text(BOOTC_STAND_IN)
        (vm_root / "bin" / "bootc").chmod(0o755)
        (vm_root / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{vm_root}/graph"\nrunroot = "{vm_root}/run"\n'
        )
        sshd.env = {
            "PATH": f"{vm_root}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "CONTAINERS_STORAGE_CONF": str(vm_root / "storage.conf"),
            "CONTAINERS_CONF": os.environ["CONTAINERS_CONF"],
        }
        sshd.stop()
        sshd.start()
        try:
            res = devbox(proj, "vm", "upgrade", "--no-reboot")
            assert res.returncode == 0, res.stderr + res.stdout
            assert f"{proj.image} " in res.stdout and "staged with bootc switch" in res.stdout
            inside = devbox(proj, "vm", "ssh", "podman", "image", "exists", proj.image)
            assert inside.returncode == 0  # loaded into the VM's own storage
            assert (
                subprocess.run(
                    ["podman", "image", "exists", proj.image],
                    env={**os.environ, "CONTAINERS_STORAGE_CONF": str(vm_root / "storage.conf")},
                ).returncode
                == 0
            )
            log = (vm_root / "bootc.log").read_text().splitlines()
            assert log == ["status --format=json", f"switch --transport containers-storage {proj.image}"]
        finally:
            devbox(proj, "vm", "ssh", "podman", "rmi", "-f", proj.image)
            subprocess.run(["podman", "rmi", "-f", proj.image], capture_output=True)


def test_pull_after_push_keeps_local_commits_branch_reflog_and_owner(vm: tuple[Project, Sshd, Path]) -> None:
    """Issue 14 item 7: push a checkout, commit locally, pull it back: the VM's (older)
    .git never lands on the local one, and the files keep the local owner."""
    proj, _, area = vm
    remote = f"{area.name}/sp"
    pushed = devbox(proj, "vm", "dir-push", ".", remote)
    assert pushed.returncode == 0, pushed.stderr
    assert not (HOME / remote / ".git").exists() and not (HOME / remote / ".build").exists()
    (proj.root / "later.txt").write_text("committed after the push\n")
    git(proj.root, "add", "later.txt")
    git(proj.root, "commit", "-qm", "after the push")
    head, reflog = git(proj.root, "rev-parse", "HEAD"), git(proj.root, "reflog", "--format=%H")
    (HOME / remote / "from-vm.txt").write_text("vm\n")
    os.chown(HOME / remote / "from-vm.txt", 12345, 12345)  # the VM user's UID, which is nobody here
    refused = devbox(proj, "vm", "dir-pull", remote, ".")
    assert refused.returncode == ExitCode.REFUSED and "--into-checkout" in refused.stderr
    pulled = devbox(proj, "vm", "dir-pull", "--into-checkout", remote, ".")
    assert pulled.returncode == 0, pulled.stderr
    assert git(proj.root, "rev-parse", "HEAD") == head and git(proj.root, "reflog", "--format=%H") == reflog
    assert git(proj.root, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    st = (proj.root / "from-vm.txt").stat()
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert git(proj.root, "status", "--porcelain").strip() == "?? from-vm.txt"


@pytest.mark.parametrize("name", ["new\nline.txt", "caf\u00e9.txt"])
def test_dirty_check_compares_names_as_bytes(vm: tuple[Project, Sshd, Path], tmp_path: Path, name: str) -> None:
    """Issue 14 item 8: a committed, locally modified file whose name rsync escapes (a
    newline; UTF-8 under LC_ALL=C) is not overwritten without --force."""
    proj, _, area = vm
    local = tmp_path / "co"
    subprocess.run(["git", "init", "-q", str(local)], check=True)
    (local / name).write_text("committed\n")
    git(local, "add", "-A")
    git(local, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "c")
    (local / name).write_text("my uncommitted edit\n")
    (area / "d").mkdir(parents=True)
    (area / "d" / name).write_text("from the VM\n")
    env = {**proj.env, "LC_ALL": "C"}
    res = subprocess.run(
        [sys.executable, "-m", "devbox.cli", "vm", "dir-pull", "--into-checkout", f"{area.name}/d", str(local)],
        cwd=proj.root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == ExitCode.REFUSED, res.stderr
    assert (local / name).read_text() == "my uncommitted edit\n"


def test_dry_run_lists_each_change_once_and_counts_agree(vm: tuple[Project, Sshd, Path], tmp_path: Path) -> None:
    """Issue 14 items 5 and 15: piped, a dry run prints each change once, in rsync's order,
    and one summary; a real --delete counts what it deleted."""
    proj, _, area = vm
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for n in ("a.txt", "b.txt", "sub/c.txt"):
        (src / n).write_text(n)
    remote = f"{area.name}/t"
    assert devbox(proj, "vm", "dir-push", str(src), remote).returncode == 0
    (src / "a.txt").write_text("changed")
    (HOME / remote / "gone1").write_text("x")
    (HOME / remote / "gone2").write_text("x")
    dry = devbox(proj, "vm", "dir-push", "--delete", "--dry-run", str(src), remote)
    assert dry.returncode == 0, dry.stderr
    items = [ln for ln in dry.stdout.splitlines() if (ln[:1] in "<>*ch." and ln[1:2] in "fdLDS") or ln[:2] == "*d"]
    names = [ln[12:] for ln in items]
    # each change once (a list, not a set), in rsync's order: deletions first, then the file
    changed = [n for n in names if n != "./"]  # the directory's own mtime: listed when it differs
    assert sorted(changed[:2]) == ["gone1", "gone2"] and changed[2:] == ["a.txt"], dry.stdout
    summaries = [ln for ln in dry.stdout.splitlines() if ln.startswith("would change")]
    assert summaries == [summaries[0]] and "1 item(s)" in summaries[0] and "2 deleted" in summaries[0], dry.stdout
    real = devbox(proj, "vm", "dir-push", "--delete", str(src), remote)
    assert real.returncode == 0 and "2 deleted" in real.stdout.splitlines()[-1], real.stdout
    assert not (HOME / remote / "gone1").exists()


def test_push_sends_what_git_tracks_never_build_or_the_key(vm: tuple[Project, Sshd, Path]) -> None:
    """Issue 14 item 13: .gitignore respected, .build/ (the project key) and .git never sent."""
    proj, _, area = vm
    (proj.root / ".gitignore").write_text("*.log\n")
    (proj.root / "debug.log").write_text("noise\n")
    remote = f"{area.name}/p"
    res = devbox(proj, "vm", "dir-push", ".", remote)
    assert res.returncode == 0, res.stderr
    there = HOME / remote
    assert (there / "devbox.toml").exists() and (there / ".gitignore").exists()
    assert not (there / "debug.log").exists() and not (there / ".build").exists() and not (there / ".git").exists()
    key = devbox(proj, "vm", "dir-push", ".build", f"{area.name}/k")
    assert key.returncode == ExitCode.REFUSED and "build directory" in key.stderr


def test_transfer_messages_name_the_cause(vm: tuple[Project, Sshd, Path], tmp_path: Path) -> None:
    """Issue 14 item 16: a file given to dir-push, a ~/ remote path, a refused git push."""
    proj, sshd, area = vm
    f = tmp_path / "file.txt"
    f.write_text("x")
    res = devbox(proj, "vm", "dir-push", str(f))
    assert res.returncode == ExitCode.REFUSED and "is a file, not a directory" in res.stderr
    src = tmp_path / "t"
    src.mkdir()
    (src / "x").write_text("x")
    tilde = devbox(proj, "vm", "dir-push", str(src), f"~/{area.name}/tilde")
    assert tilde.returncode == 0, tilde.stderr
    assert (area / "tilde" / "x").exists() and not (HOME / "~").exists()
    assert devbox(proj, "vm", "git-push", "main").returncode == 0
    vm_repo = HOME / "repos" / proj.root.name
    subprocess.run(["git", "-C", str(vm_repo), "checkout", "-q", "main"], check=True)
    (vm_repo / "devbox.toml").write_text("edited in the VM\n")
    (proj.root / "new.txt").write_text("n")
    git(proj.root, "add", "new.txt")
    git(proj.root, "commit", "-qm", "n")
    refused = devbox(proj, "vm", "git-push", "main")
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode != 0 and "uncommitted changes" in last and "failed to push" not in last, last
    missing = devbox(proj, "vm", "git-pull", "no-such-branch")
    assert "couldn't find remote ref" in missing.stderr.strip().splitlines()[-1]
    sshd.stop()
    down = devbox(proj, "vm", "dir-push", str(src), f"{area.name}/t2")
    assert down.returncode == ExitCode.NOT_AVAILABLE and "Connection refused" in down.stderr.strip().splitlines()[-1]


def test_vm_upgrade_without_a_vm_builds_nothing(tmp_path: Path, base_image: str) -> None:
    """Issue 14 item 16: `vm upgrade` with no VM says so before any image build."""
    from conftest import make_project

    proj = make_project(tmp_path, f"proj-{uuid.uuid4().hex[:6]}")
    with (proj.root / "devbox.toml").open("a") as fh:
        fh.write(f'[vm]\nname = "none{uuid.uuid4().hex[:8]}"\n')
    key = proj.root / ".build" / "ssh" / "id_ed25519"
    key.parent.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    res = devbox(proj, "vm", "upgrade")
    assert res.returncode == ExitCode.NOT_FOUND and "does not exist" in res.stderr.strip().splitlines()[-1]
    assert "building" not in res.stdout and proj.image_id() is None


def test_a_new_branch_push_counts_only_what_the_vm_lacked(vm: tuple[Project, Sshd, Path]) -> None:
    """Issue 14 item 15: a new branch on top of a pushed one carries only its own commit."""
    proj, _, _ = vm
    assert devbox(proj, "vm", "git-push", "main").returncode == 0
    git(proj.root, "checkout", "-q", "-b", "topic")
    (proj.root / "t.txt").write_text("t\n")
    git(proj.root, "add", "t.txt")
    git(proj.root, "commit", "-qm", "topic")
    res = devbox(proj, "vm", "git-push", "topic")
    assert res.returncode == 0, res.stderr
    assert "1 commit(s), 1 file(s)" in res.stdout, res.stdout
