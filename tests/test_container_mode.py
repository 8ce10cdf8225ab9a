"""Container mode end to end: real git, real podman, the real entrypoint.sh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox.core.errors import ExitCode

from conftest import Project, git, make_project

pytestmark = pytest.mark.podman


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True)


def cleanup(proj: Project) -> None:
    ids = podman("ps", "-aq", "--filter", f"label=devbox.repo={proj.root}").stdout.split()
    for cid in ids:
        name = podman("inspect", "--format", "{{.Name}}", cid).stdout.strip()
        podman("rm", "-f", "-t", "0", cid)
        podman("volume", "rm", "-f", f"{name}-var", f"{name}-etc")
    podman("rmi", "-f", proj.image)


@pytest.fixture(scope="module")
def started(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Project, Path, str]]:
    """One project with branch feat/iso started (module-wide: a build and a start are slow)."""
    proj = make_project(tmp_path_factory.mktemp("cm"))
    hook = proj.root / ".git" / "hooks" / "pre-commit"
    hook.write_text(
        '#!/bin/sh\necho "hook ran in $(pwd)" > "$(git rev-parse --show-toplevel)/.hook-ran"\n'
        'if [ -e "$(git rev-parse --show-toplevel)/.block" ]; then echo "blocked by hook"; exit 1; fi\n'
    )
    hook.chmod(0o755)
    res = proj.devbox("start-work", "feat/iso", "--detach")
    assert res.returncode == 0, res.stderr
    name = res.stdout.strip().splitlines()[-1]
    yield proj, proj.root.parent / "proj.worktrees" / "feat" / "iso", name
    cleanup(proj)


def inside(
    proj: Project, ref: str, script: str, *, root: bool = False, name: str = ""
) -> subprocess.CompletedProcess[str]:
    if root:
        return podman("exec", "--user", "0", name, "sh", "-c", script)
    return proj.devbox("container", "exec", ref, "--", "sh", "-c", script)


def test_isolation_from_inside(started: tuple[Project, Path, str], tmp_path: Path) -> None:
    proj, wt, name = started
    marker = tmp_path / "host-secret"
    marker.write_text("secret")
    checks = {
        "read-only root": "! touch /usr/devbox-probe 2>/dev/null",
        "no host path": f"! test -e {marker}",
        "no podman socket": "! test -e /run/podman/podman.sock && ! test -e /var/run/podman/podman.sock",
        "no docker socket": "! test -e /var/run/docker.sock && ! test -e /run/docker.sock",
        "no new privs": "grep -q '^NoNewPrivs:[[:space:]]*1' /proc/self/status",
        # every process devbox starts gets the entrypoint's drop: no capabilities at all, even for a
        # host root user (exec used to keep the six entrypoint capabilities, CapEff 0x1cb)
        "no capabilities": "grep -q '^CapEff:[[:space:]]*0000000000000000' /proc/self/status"
        " && grep -q '^CapPrm:[[:space:]]*0000000000000000' /proc/self/status"
        " && grep -q '^CapBnd:[[:space:]]*0000000000000000' /proc/self/status",
        "uid is the host's": f'test "$(id -u)" = {os.getuid()} && test "$(id -g)" = {os.getgid()}',
        "cwd is the worktree": f'test "$(pwd)" = {wt}',
        # issue 27: the main checkout is not there, only its objects, read-only; the worktree's
        # .git names the environment's own git directory, which git uses
        "no main checkout": f"! test -e {proj.root}/devbox.toml && ! test -e {proj.root}/.git/config"
        f" && ! test -e {proj.root}/.git/hooks && ! test -e {proj.root}/.git/refs",
        "main objects read-only": f"test -d {proj.root}/.git/objects && ! touch {proj.root}/.git/objects/probe",
        "own git directory": f'test "$(git rev-parse --git-common-dir)" = {proj.root}/.build/gitdirs/{name}/git'
        " && ! echo x >.git",
        "state directory bounded": "grep -q ' /run/devbox-agent tmpfs .*size=16384k' /proc/mounts"
        f' && test "$(stat -c %u /run/devbox-agent)" = {os.getuid()}',
        "home seeded from skel": 'test -f "$HOME/.profile" && test "$HOME" != /',
        "no host home": "! test -e /root/.bashrc || true",
        # issue 14 item 1: the scratch directories are writable tmpfs (the root stays read-only)
        "/tmp and /var/tmp writable": "touch /tmp/a /var/tmp/a && test -k /tmp && test -k /var/tmp",
        "/tmp is a tmpfs": "grep -q ' /tmp tmpfs ' /proc/mounts && grep -q ' /var/tmp tmpfs ' /proc/mounts",
        "/run is a tmpfs": "grep -q ' /run tmpfs ' /proc/mounts",
        "exec from /tmp": "printf '#!/bin/sh\\nexit 0\\n' >/tmp/x.sh && chmod +x /tmp/x.sh && /tmp/x.sh",
    }
    for what, script in checks.items():
        res = inside(proj, "feat/iso", script)
        assert res.returncode == 0, (what, res.stdout, res.stderr)
    for path in ("/var/devbox-probe", "/etc/devbox-probe", "/run/devbox-probe", "/tmp/root-probe"):
        assert inside(proj, "", f"touch {path}", root=True, name=name).returncode == 0, path
    assert not (marker.parent / "devbox-probe").exists()
    info = json.loads(podman("inspect", name).stdout)[0]
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["HostConfig"]["Privileged"] is False
    assert not info["HostConfig"].get("Devices")
    assert info["HostConfig"]["NetworkMode"] != "host"
    mounts = {m["Destination"] for m in info["Mounts"]}
    assert {str(wt), f"{wt}/.git", f"{proj.root}/.git/objects", "/var", "/etc"} <= mounts
    assert str(proj.root) not in mounts and f"{proj.root}/.git" not in mounts
    assert not any(d.startswith(("/root", "/home")) or "podman.sock" in d for d in mounts)


def test_git_commit_inside_with_hook_is_seen_on_host(started: tuple[Project, Path, str]) -> None:
    proj, wt, _ = started
    res = inside(
        proj,
        "feat/iso",
        "echo hello > made-inside.txt && git add made-inside.txt && "
        "git commit -q -m 'from the container' && git status --porcelain",
    )
    assert res.returncode == 0, res.stderr
    made = wt / "made-inside.txt"
    assert made.stat().st_uid == os.getuid() and made.stat().st_gid == os.getgid()
    # the commit is in the environment's own git directory; the next look at the branch
    # (here `devbox status`, in the dashboard its poll) brings it to the host's branch
    assert git(proj.root, "log", "-1", "--format=%s", "feat/iso").strip() == "init"
    assert proj.devbox("status").returncode == 0
    assert git(proj.root, "log", "-1", "--format=%s", "feat/iso").strip() == "from the container"
    assert "made-inside" not in git(wt, "status", "--porcelain")  # the host's index of the worktree followed
    assert "devbox: from" in git(proj.root, "reflog", "-1", "refs/heads/feat/iso")
    assert f"hook ran in {wt}" in (wt / ".hook-ran").read_text()
    (wt / ".block").write_text("")
    blocked = inside(proj, "feat/iso", "touch b.txt && git add b.txt && git commit -q -m blocked")
    assert blocked.returncode != 0 and "blocked by hook" in blocked.stdout + blocked.stderr
    assert proj.devbox("status").returncode == 0
    assert git(proj.root, "log", "-1", "--format=%s", "feat/iso").strip() == "from the container"


def test_second_start_is_noop(started: tuple[Project, Path, str]) -> None:
    proj, _, name = started
    before = podman("inspect", "--format", "{{.Id}}", name).stdout.strip()
    images = podman("images", "-q").stdout
    res = proj.devbox("start-work", "feat/iso", "--detach")
    assert res.returncode == 0, res.stderr
    assert "is up to date" in res.stdout and "is running" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == name
    assert podman("inspect", "--format", "{{.Id}}", name).stdout.strip() == before
    assert podman("images", "-q").stdout == images
    mine = ["ps", "-aq", "--filter", f"label=devbox.repo={proj.root}", "--filter", "label=devbox.branch=feat/iso"]
    assert podman(*mine).stdout.split() == [before[:12]]  # other tests' branches may have containers too


def test_the_devbox_command_ends_with_its_output_and_log_whole(started: tuple[Project, Path, str]) -> None:
    """The installed ``devbox`` ends without the interpreter's shutdown (devbox/entry.py):
    what it printed and its operation's log are whole, and its exit code is the command's."""
    proj, _, name = started
    devbox = str(Path(sys.executable).with_name("devbox"))
    res = subprocess.run([devbox, "start-work", "feat/iso", "--detach"], cwd=proj.root, env=proj.env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0 and res.stdout.endswith(f"{name}\n"), res.stderr
    log = max((proj.root / ".build" / "logs").glob("*-start-work*.log"), key=lambda p: p.stat().st_mtime)
    assert log.read_text().endswith("devbox: done (exit 0)\n")
    listed = subprocess.run([devbox, "worktree", "list", "--json"], cwd=proj.root, env=proj.env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert listed.returncode == 0 and any(w["branch"] == "feat/iso" for w in json.loads(listed.stdout))
    gone = subprocess.run([devbox, "container", "stop", "no-such-branch"], cwd=proj.root, env=proj.env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert gone.returncode == ExitCode.NOT_FOUND and gone.stderr.startswith("devbox: no devbox container")


def test_concurrent_starts_make_one_container(started: tuple[Project, Path, str]) -> None:
    proj = started[0]
    results: list[subprocess.CompletedProcess[str]] = []

    def go() -> None:
        results.append(proj.devbox("start-work", "race", "--detach"))

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.returncode for r in results)
    assert codes[0] == 0 and set(codes) <= {0, ExitCode.BUSY}, [r.stderr for r in results]
    for r in results:
        if r.returncode == ExitCode.BUSY:
            assert "already in progress" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    race = podman("ps", "-aq", "--filter", f"label=devbox.repo={proj.root}", "--filter", "label=devbox.branch=race")
    assert len(race.stdout.split()) == 1
    assert git(proj.root, "worktree", "list").count("[race]") == 1


def test_several_branches_start_at_once_and_one_failing_stops_none_of_the_others(
    started: tuple[Project, Path, str],
) -> None:
    proj = started[0]
    blocked = proj.root.parent / "proj.worktrees" / "many-bad"
    blocked.mkdir(parents=True)
    (blocked / "mine.txt").write_text("not devbox's")
    res = proj.devbox("start-work", "many-1", "many-bad", "many-2", "many-1", "--detach")
    assert res.returncode == ExitCode.REFUSED, res.stderr
    assert res.stderr.strip().splitlines() == [  # the one that failed, and why (one line)
        f"devbox: many-bad: {blocked} already exists and is not a worktree of 'many-bad' "
        f"(fix: move it away or remove it: {blocked})"
    ]
    names = res.stdout.strip().splitlines()[-2:]  # each started one's container, in the order asked
    for branch, name in zip(("many-1", "many-2"), names, strict=True):
        state = podman("inspect", "--format", '{{.State.Status}} {{index .Config.Labels "devbox.branch"}}', name)
        assert state.stdout.split() == ["running", branch]
        assert f"[{branch}]" in git(proj.root, "worktree", "list")
    assert (blocked / "mine.txt").read_text() == "not devbox's"  # left as it was
    assert "[many-bad]" not in git(proj.root, "worktree", "list")
    assert podman("ps", "-aq", "--filter", "label=devbox.branch=many-bad").stdout.split() == []

    again = proj.devbox("start-work", "many-1", "many-2", "--detach")  # both running: a no-op each
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-2:] == names, again.stderr
    for what in (["many-3", "many-4"], ["many-3", "many-4", "--cmd", "true"]):  # detached only
        refused = proj.devbox("start-work", *what)
        assert refused.returncode == ExitCode.BAD_NAME and "add --detach" in refused.stderr
    assert "[many-3]" not in git(proj.root, "worktree", "list")


def test_lifecycle_stop_rm_exec(started: tuple[Project, Path, str]) -> None:
    proj = started[0]
    assert proj.devbox("start-work", "life", "--detach").returncode == 0
    listed = json.loads(proj.devbox("container", "list", "--json").stdout)
    life = next(c for c in listed if c["branch"] == "life")
    assert life["state"] == "running" and life["stale_image"] is False
    res = proj.devbox("container", "rm", "life")
    assert res.returncode == ExitCode.REFUSED and "is running" in res.stderr
    assert proj.devbox("container", "stop", "life").returncode == 0
    res = proj.devbox("container", "exec", "life", "--", "true")
    assert res.returncode == ExitCode.REFUSED and "not running" in res.stderr
    res = proj.devbox("start-work", "life", "--detach")  # restarts the stopped one
    assert res.returncode == 0 and "starting stopped" in res.stdout
    assert proj.devbox("container", "rm", "--force", "life").returncode == 0
    assert podman("container", "exists", life["name"]).returncode == 1
    assert podman("volume", "exists", f"{life['name']}-var").returncode == 1
    status = json.loads(proj.devbox("status", "--json").stdout)
    assert "life" not in [c["branch"] for c in status["containers"]]
    assert "life" in [w["branch"] for w in status["worktrees"]]


def test_stale_image_is_reported_then_recreate_keeps_var(started: tuple[Project, Path, str]) -> None:
    proj = started[0]
    assert proj.devbox("start-work", "upgrade", "--detach").returncode == 0
    assert proj.devbox("container", "exec", "upgrade", "--", "sh", "-c", 'echo kept > "$HOME/note"').returncode == 0
    (proj.bootc / "homedir" / ".newfile").write_text("new\n")
    old_image = json.loads(proj.devbox("image", "status", "--json").stdout)["id"]
    res = proj.devbox("start-work", "upgrade", "--detach")
    assert res.returncode == 0, res.stderr
    assert "bootc/homedir/.newfile added" in res.stdout
    assert f"previous image {old_image[:12]} kept: a container still uses it" in res.stdout
    assert podman("image", "exists", old_image).returncode == 0
    assert "made from an older image" in res.stdout
    status = json.loads(proj.devbox("status", "--json").stdout)
    assert next(c for c in status["containers"] if c["branch"] == "upgrade")["stale_image"] is True
    res = proj.devbox("start-work", "upgrade", "--detach", "--recreate")
    assert res.returncode == 0, res.stderr
    kept = proj.devbox("container", "exec", "upgrade", "--", "sh", "-c", 'cat "$HOME/note"')
    assert kept.stdout.strip() == "kept"
    status = json.loads(proj.devbox("status", "--json").stdout)
    assert next(c for c in status["containers"] if c["branch"] == "upgrade")["stale_image"] is False


def test_container_that_dies_at_start_is_reported(base_image: str, tmp_path: Path) -> None:
    proj = make_project(tmp_path)
    try:
        (proj.bootc / "entrypoint.sh").write_text("#!/bin/sh\necho 'entrypoint exploded' >&2\nexit 3\n")
        res = proj.devbox("start-work", "boom", "--detach")
        assert res.returncode == ExitCode.CONTAINER_FAILED, res.stderr
        assert "entrypoint exploded" in res.stderr.strip().splitlines()[-1]
        assert "Traceback" not in res.stderr
    finally:
        cleanup(proj)


def test_no_tty_without_detach_prints_name(started: tuple[Project, Path, str]) -> None:
    proj, _, name = started
    res = proj.devbox("start-work", "feat/iso")
    assert res.returncode == 0 and res.stdout.strip().splitlines()[-1] == name
    res = proj.devbox("start-work", "feat/iso", "--cmd", "sh", "-c", "echo via-cmd; id -u")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-2:] == ["via-cmd", str(os.getuid())]


def test_start_work_on_the_main_checkouts_branch_is_refused(started: tuple[Project, Path, str]) -> None:
    """issue 27: an environment on the main checkout would hand its agent devbox.toml, .build/
    and the repository itself; refused before anything is made, with the way out."""
    proj = started[0]
    res = proj.devbox("start-work", "main", "--cmd", "sh", "-c", "pwd")
    assert res.returncode == ExitCode.REFUSED, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert "main is checked out in the main checkout" in line
    assert "start one of its own: ./start-work work/main" in line
    listed = json.loads(proj.devbox("container", "list", "--json").stdout)
    assert not [c for c in listed if c["branch"] == "main"]
    assert not list((proj.root / ".build" / "gitdirs").glob("*-main-*"))


def test_failed_podman_run_leaves_nothing(started: tuple[Project, Path, str]) -> None:
    proj = started[0]
    env = {**proj.env, "DEVBOX_CONTAINER_NETWORK": "devbox-no-such-network"}
    res = proj.devbox("start-work", "badnet", "--detach", env=env)
    assert res.returncode == ExitCode.FAILURE, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("devbox: podman could not start") and "devbox-no-such-network" in last
    assert "Traceback" not in res.stderr
    assert podman("ps", "-aq", "--filter", "label=devbox.branch=badnet").stdout.strip() == ""
    assert "badnet-" not in podman("volume", "ls", "--format", "{{.Name}}").stdout


def test_terminal_start_work_attaches_a_login_shell(started: tuple[Project, Path, str]) -> None:
    from conftest import run_in_pty

    proj, wt, _ = started
    rc, out = run_in_pty(
        [sys.executable, "-m", "devbox.cli", "start-work", "feat/iso"],
        proj.env,
        proj.root,
        send=b'echo "MARK-$((6*7)) $(pwd) $(id -u)"; exit\n',
    )
    assert rc == 0, out
    assert f"MARK-42 {wt} {os.getuid()}" in out


def test_worktree_remove_names_everything_it_would_lose(started: tuple[Project, Path, str]) -> None:
    proj = started[0]
    assert proj.devbox("start-work", "doomed", "--detach").returncode == 0
    wt = proj.root.parent / "proj.worktrees" / "doomed"
    (wt / "unsaved.txt").write_text("work in progress")
    res = proj.devbox("worktree", "remove", "doomed")
    assert res.returncode == ExitCode.REFUSED, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert "1 uncommitted file(s): unsaved.txt" in line
    assert "running container devbox-proj-doomed-" in line and "home volume devbox-proj-doomed-" in line
    assert wt.exists() and podman("ps", "-q", "--filter", "label=devbox.branch=doomed").stdout.strip()
    res = proj.devbox("worktree", "remove", "doomed", "--force")
    assert res.returncode == 0, res.stderr
    assert "removed container devbox-proj-doomed-" in res.stdout and "-var" in res.stdout
    assert not wt.exists()
    assert podman("ps", "-aq", "--filter", "label=devbox.branch=doomed").stdout.strip() == ""
    assert "-doomed-" not in podman("volume", "ls", "--format", "{{.Name}}").stdout
