"""issue 27: a hostile agent stays inside. Every vector is planted from inside a real
container as the agent's user (through git's own paths, so the test means the same on any
layout), then every host-side devbox command and the user's own plain git run: a marker
on the host proves that nothing planted ran there."""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox.core.errors import ExitCode

from conftest import Project, git, make_project

pytestmark = pytest.mark.podman

VECTORS = {  # git config keys whose value git runs (each pointing at the planted script)
    "core.fsmonitor": "{run} fsmonitor",
    "core.hooksPath": "{hooks}",
    "core.pager": "{run} pager",
    "pager.log": "{run} pager-log",
    "pager.diff": "{run} pager-diff",
    "diff.external": "{run} diff-external",
    "diff.evil.command": "{run} diff-driver",
    "diff.evil.textconv": "{run} textconv",
    "merge.evil.driver": "{run} merge-driver %O %A %B",
    "filter.evil.clean": "{run} clean",
    "filter.evil.smudge": "{run} smudge",
    "filter.evil.process": "{run} filter-process",
    "core.sshCommand": "{run} ssh",
    "credential.helper": "!{run} credential",
    "gpg.program": "{run} gpg",
    "commit.gpgSign": "true",
    "core.editor": "{run} editor",
    "sequence.editor": "{run} sequence-editor",
    "core.askPass": "{run} askpass",
    "uploadpack.packObjectsHook": "{run} pack-objects-hook",
    "include.path": "{planted}/included.cfg",
    "includeIf.gitdir:/.path": "{planted}/included.cfg",
    "extensions.worktreeConfig": "true",
    "alias.status": "!{run} alias",
}
HOOKS = ("post-checkout", "reference-transaction", "pre-commit", "post-commit", "post-merge", "pre-rebase",
         "post-rewrite", "pre-push", "pre-auto-gc", "post-index-change", "fsmonitor-watchman",
         "prepare-commit-msg")  # fmt: skip


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True)


def inside(proj: Project, branch: str, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in the branch's container as the agent's user (devbox's own way in)."""
    return proj.devbox("container", "exec", branch, "--", "sh", "-c", script)


def cleanup(proj: Project) -> None:
    for cid in podman("ps", "-aq", "--filter", f"label=devbox.repo={proj.root}").stdout.split():
        name = podman("inspect", "--format", "{{.Name}}", cid).stdout.strip()
        podman("rm", "-f", "-t", "0", cid)
        podman("volume", "rm", "-f", f"{name}-var", f"{name}-etc")
    podman("rmi", "-f", proj.image)


@pytest.fixture(scope="module")
def two(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Project, Path]]:
    """A project with two environments, ``evil`` and ``other``; the marker directory."""
    tmp = tmp_path_factory.mktemp("hostile")
    proj = make_project(tmp)
    (proj.root / "README.md").write_text("# the project\n")
    git(proj.root, "add", "README.md")
    git(proj.root, "commit", "-qm", "readme")
    res = proj.devbox("start-work", "evil", "other", "--detach")
    assert res.returncode == 0, res.stderr
    markers = tmp / "markers"  # on the host only: a planted script that runs inside cannot reach it
    markers.mkdir()
    yield proj, markers
    cleanup(proj)


def plant(proj: Project, markers: Path) -> None:
    """Every vector, from inside ``evil``, as the agent's user."""
    wt = proj.root.parent / "proj.worktrees" / "evil"
    planted = wt / ".planted"
    script = f'#!/bin/sh\necho "$0 $*" >>{shlex.quote(str(markers))}/ran 2>/dev/null\nexit 0\n'
    hooks = planted / "hooks"
    values = {k: v.format(run=planted / "run", hooks=hooks, planted=planted) for k, v in VECTORS.items()}
    config = [f"git config --local {shlex.quote(k)} {shlex.quote(v)}" for k, v in values.items()]
    steps = [
        f"mkdir -p {hooks}",
        f"printf %s {shlex.quote(script)} >{planted}/run && chmod +x {planted}/run",
        *(f"cp {planted}/run {hooks}/{h}" for h in HOOKS),
        f"printf '[core]\\n\\tfsmonitor = {planted}/run included\\n' >{planted}/included.cfg",
        'gd=$(git rev-parse --git-common-dir) && mkdir -p "$gd/hooks" "$gd/info"'
        + "".join(f' && cp {planted}/run "$gd/hooks/{h}"' for h in HOOKS),
        f"printf '[core]\\n\\tfsmonitor = {planted}/run worktree-config\\n'"
        ' >"$(git rev-parse --git-dir)/config.worktree"',
        # committed first (the drivers are named below): every tree of the branch names them
        "printf '* filter=evil diff=evil merge=evil\\n' >.gitattributes && echo planted >planted.txt"
        " && git add -A && git commit -q --no-verify -m plant",
        "printf '* filter=evil diff=evil\\n' >\"$(git rev-parse --git-common-dir)/info/attributes\"",
        *config,
    ]
    for step in steps:
        res = inside(proj, "evil", step)
        assert res.returncode == 0, (step, res.stdout, res.stderr)
    # the shared repository at its host path: what a write there reaches is the container's own
    # scratch space at most (here /tmp, a tmpfs inside), never the host's file
    repo = proj.root
    targets = [repo / ".git" / "config", repo / ".git" / "hooks" / "post-checkout", repo / "devbox.toml",
               repo / ".git" / "info" / "attributes", repo / ".build" / "agents" / "x"]  # fmt: skip
    before = {t: t.read_bytes() if t.exists() else None for t in targets}
    for target in targets:
        inside(proj, "evil", f"mkdir -p {target.parent}; echo '[core] fsmonitor={planted}/run' >>{target}")
    assert {t: t.read_bytes() if t.exists() else None for t in targets} == before


def test_nothing_planted_inside_runs_on_the_host(two: tuple[Project, Path]) -> None:
    proj, markers = two
    plant(proj, markers)
    repo = proj.root
    evil_wt = repo.parent / "proj.worktrees" / "evil"
    # the plant runs inside when the agent's own git uses it: that is its sandbox, not the host
    assert inside(proj, "evil", "git status >/dev/null 2>&1; true").returncode == 0
    assert not (markers / "ran").exists()
    devbox_commands = [
        ["status"], ["status", "--json"], ["worktree", "list"], ["agents"], ["container", "list"],
        ["diff", "evil"], ["diff", "evil", "--stat"], ["conflicts"], ["fetch", "evil"],
        ["worktree", "add", "fresh-one"], ["start-work", "fresh-two", "--detach"],
        ["merge", "evil", "--strategy", "squash", "--yes"],
        ["merge", "evil", "--strategy", "rebase", "--yes"], ["merge", "evil", "--yes"],
        ["worktree", "remove", "fresh-one"],
    ]  # fmt: skip
    for argv in devbox_commands:
        res = proj.devbox(*argv)
        assert res.returncode in (0, ExitCode.REFUSED, ExitCode.NOT_FOUND), (argv, res.stderr)
        assert "Traceback" not in res.stderr, argv
    assert "planted.txt" in git(repo, "log", "--name-only", "--format=", "-3", "evil")  # the commit came through
    user_git = [
        (repo, ["status"]), (repo, ["log", "-p", "-3"]), (repo, ["diff", "HEAD~1"]),
        (repo, ["log", "-p", "evil"]), (repo, ["show", "evil"]), (repo, ["checkout", "-q", "-b", "user-branch"]),
        (repo, ["commit", "-q", "--allow-empty", "-m", "user's own"]), (repo, ["checkout", "-q", "main"]),
        (evil_wt, ["status"]), (evil_wt, ["log", "-p", "-2"]), (evil_wt, ["diff", "HEAD~1"]),
        (evil_wt, ["checkout", "-q", "--", "."]), (evil_wt, ["commit", "-q", "--allow-empty", "-m", "user in wt"]),
        (evil_wt, ["pull", "-q", "--no-rebase", str(repo), "main"]),
    ]  # fmt: skip
    for cwd, argv in user_git:
        res = subprocess.run(["git", *argv], cwd=cwd, capture_output=True, text=True, timeout=60,
                             env={**proj.env, "GIT_EDITOR": "true", "GIT_PAGER": "cat"})  # fmt: skip
        assert res.returncode == 0, (cwd, argv, res.stderr)
    assert not (markers / "ran").exists(), (markers / "ran").read_text()


def refs(repo: Path) -> dict[str, str]:
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split() for line in out.splitlines())


def test_other_work_is_out_of_reach(two: tuple[Project, Path]) -> None:
    proj, _ = two
    repo = proj.root
    other_wt = repo.parent / "proj.worktrees" / "other"
    assert inside(proj, "other", "echo 1 >o.txt && git add o.txt && git commit -qm 'other 1'").returncode == 0
    assert proj.devbox("status").returncode == 0
    first_other = git(repo, "rev-parse", "other").strip()
    before = {k: v for k, v in refs(repo).items() if "/evil" not in k}
    files = {p: (repo / p).read_bytes() for p in ("devbox.toml", "README.md")}
    admin = sorted(p.name for p in (repo / ".git" / "worktrees").iterdir())
    attempts = [
        "git update-ref -d refs/heads/other",
        "git branch -D other",
        f"git update-ref refs/heads/main {first_other}",
        "git tag -f v1 && git update-ref -d refs/tags/v1",
        "git reflog expire --expire=now --all && git gc --prune=now --quiet",
        "git repack -a -d -q && git prune --expire=now",
        f"rm -rf {repo}/.git/worktrees/other",
        f"echo hacked >{repo}/devbox.toml",
        f"echo hacked >{repo}/README.md",
        f"rm -f {repo}/.git/objects/*/*",
        f"echo x >{other_wt}/stolen.txt",
    ]
    for script in attempts:
        inside(proj, "evil", script)  # each may succeed inside its own git directory: the host is what counts
    assert proj.devbox("status").returncode == 0
    after = {k: v for k, v in refs(repo).items() if "/evil" not in k}
    assert after == before
    assert {p: (repo / p).read_bytes() for p in files} == files
    assert sorted(p.name for p in (repo / ".git" / "worktrees").iterdir()) == admin
    assert not (other_wt / "stolen.txt").exists()
    git(repo, "fsck", "--connectivity-only", "--no-dangling")  # nothing the host's refs need is gone
    # the other environment keeps working, and its commits reach the host
    assert inside(proj, "other", "echo 2 >>o.txt && git commit -qam 'other 2'").returncode == 0
    assert proj.devbox("status").returncode == 0
    assert git(repo, "log", "-1", "--format=%s", "other").strip() == "other 2"


def test_an_environment_may_rewrite_its_own_branch_and_the_host_keeps_the_old_commit(
    two: tuple[Project, Path],
) -> None:
    proj, _ = two
    repo = proj.root
    assert inside(proj, "other", "echo keep >k.txt && git add k.txt && git commit -qm keep").returncode == 0
    assert proj.devbox("status").returncode == 0
    kept = git(repo, "rev-parse", "other").strip()
    assert (
        inside(proj, "other", "git reset -q --hard HEAD~1 && git commit -q --allow-empty -m rewritten").returncode == 0
    )
    assert proj.devbox("status").returncode == 0
    assert git(repo, "log", "-1", "--format=%s", "other").strip() == "rewritten"
    assert kept in git(repo, "reflog", "--format=%H", "refs/heads/other").split()
    assert git(repo, "cat-file", "-t", kept).strip() == "commit"  # undo: git branch -f other <kept>


def test_the_state_directory_is_bounded(two: tuple[Project, Path]) -> None:
    proj, _ = two
    agents = proj.root / ".build" / "agents"
    res = inside(proj, "other", "dd if=/dev/zero of=/run/devbox-agent/big bs=1M count=2048 2>&1")
    assert res.returncode != 0 and "No space left" in res.stdout + res.stderr, res.stdout
    size = int(inside(proj, "other", "du -sk /run/devbox-agent | cut -f1").stdout.strip())
    assert size <= 16 * 1024 + 64
    held = sum(p.stat().st_size for p in agents.rglob("*") if p.is_file()) if agents.exists() else 0
    assert held < 1 << 20  # the host's disk holds none of it
    listed = proj.devbox("agents", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {r["branch"] for r in json.loads(listed.stdout)} >= {"other", "evil"}
    assert inside(proj, "other", "rm -f /run/devbox-agent/big").returncode == 0


def pids_current(name: str) -> int:
    """The container's process count, read on the host from its cgroup (v1 or v2)."""
    pid = podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for base in ([f"/sys/fs/cgroup/pids{path}"] if "pids" in controllers.split(",") else []) + (
                [f"/sys/fs/cgroup{path}"] if controllers == "" else []):  # fmt: skip
            if Path(base, "pids.current").exists():
                return int(Path(base, "pids.current").read_text())
    raise AssertionError(f"no pids cgroup for {name}")


def cgroup_value(proj: Project, branch: str, v1: str, v2: str) -> str:
    res = inside(proj, branch, f"cat /sys/fs/cgroup/{v1} 2>/dev/null || cat /sys/fs/cgroup/{v2}")
    return res.stdout.strip()


def test_a_fork_bomb_and_a_memory_hog_stay_inside_their_limits(two: tuple[Project, Path]) -> None:
    proj, _ = two
    env = {**proj.env, "DEVBOX_CONTAINER_PIDS": "64", "DEVBOX_CONTAINER_MEMORY": "128m", "DEVBOX_CONTAINER_CPUS": "0.5"}
    res = proj.devbox("start-work", "hog", "--detach", env=env)
    assert res.returncode == 0, res.stderr
    name = res.stdout.strip().splitlines()[-1]
    try:
        info = json.loads(podman("inspect", name).stdout)[0]["HostConfig"]
        assert info["PidsLimit"] == 64 and info["Memory"] == 128 << 20, info
        assert info["CpuQuota"] == 50_000 and info["CpuPeriod"] == 100_000
        assert cgroup_value(proj, "hog", "pids/pids.max", "pids.max") == "64"
        listed = {c["branch"]: c for c in json.loads(proj.devbox("container", "list", "--json").stdout)}
        assert listed["hog"]["limits"] == {"memory": 128 << 20, "cpus": 0.5, "pids": 64}
        # a memory hog is killed inside its limit; the environment and its neighbours go on
        hog = inside(proj, "hog", "x=$(head -c 400000000 /dev/zero | tr '\\0' a); echo ${#x}")
        assert hog.returncode != 0 and "400000000" not in hog.stdout
        assert inside(proj, "hog", "echo alive").stdout.strip() == "alive"
        # a fork bomb meets the process limit; the other environment and devbox answer meanwhile
        # (bash, as an agent's shell would be: busybox sh's bomb collapses when a fork fails)
        bomb = subprocess.Popen([*proj.devbox_argv(), "container", "exec", "hog", "--", "bash", "-c",
                                 "b() { b | b & }; b; sleep 20"], cwd=proj.root, env=proj.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            seen = []
            for _ in range(60):  # the bomb fills the limit, forks fail, shells die and fork again
                with contextlib.suppress(OSError, ValueError):
                    seen.append(pids_current(name))
                time.sleep(0.05)
            assert 32 <= max(seen) <= 64, (seen, bomb.poll())  # it was there, and held at the limit
            for _ in range(3):
                assert inside(proj, "other", "echo alive").stdout.strip() == "alive"
                assert proj.devbox("agents").returncode == 0
        finally:
            bomb.kill()
            bomb.wait()
        # --recreate applies changed limits (the home is kept)
        podman("stop", "-t", "0", name)
        again = proj.devbox("start-work", "hog", "--recreate", "--detach", env={**env, "DEVBOX_CONTAINER_PIDS": "128"})
        assert again.returncode == 0, again.stderr
        assert json.loads(podman("inspect", name).stdout)[0]["HostConfig"]["PidsLimit"] == 128
    finally:
        podman("rm", "-f", "-t", "0", name)
        podman("volume", "rm", "-f", f"{name}-var", f"{name}-etc")


def test_a_ref_that_points_outside_never_brings_another_repository_to_the_host(
    two: tuple[Project, Path], tmp_path: Path
) -> None:
    """The agent aims its branch (a symlink, packed-refs) and its alternates at another
    repository of the user's on the host: nothing of it reaches the host's repository, the
    failed fetch is not tried again at every look, and removing the worktree names it."""
    proj, _ = two
    secret_repo = tmp_path / "secret"
    git(tmp_path, "init", "-q", str(secret_repo))
    git(secret_repo, "-c", "user.name=s", "-c", "user.email=s@s", "commit", "-q", "--allow-empty", "-m", "SECRET")
    secret = git(secret_repo, "rev-parse", "HEAD").strip()
    assert proj.devbox("start-work", "leak", "--detach").returncode == 0
    plant = (f"cd $(git rev-parse --git-dir) && rm -f refs/heads/leak && ln -s {secret_repo}/.git/refs/heads/main"
             f" refs/heads/leak && echo {secret_repo}/.git/objects >objects/info/alternates"
             f" && printf '{secret} refs/heads/leak\\n' >packed-refs && mkfifo info/fifo")  # fmt: skip
    assert inside(proj, "leak", plant).returncode == 0
    fetched = proj.devbox("fetch", "leak")
    assert fetched.returncode != 0 and "could not bring leak's commits" in fetched.stderr
    assert len(fetched.stderr.strip().splitlines()) == 1 and "Traceback" not in fetched.stderr
    assert subprocess.run(["git", "cat-file", "-e", secret], cwd=proj.root).returncode != 0
    (failed,) = (proj.root / ".build" / "gitdirs").glob("*-leak-*/failed")  # the commit whose fetch failed
    stamp = failed.stat().st_mtime_ns
    time.sleep(0.05)  # (a rewrite would have a later mtime)
    for _ in range(2):
        assert proj.devbox("status").returncode == 0
    assert failed.stat().st_mtime_ns == stamp  # not fetched again at every look
    refused = proj.devbox("worktree", "remove", "leak")
    assert refused.returncode == ExitCode.REFUSED and "not on the host yet" in refused.stderr
    assert subprocess.run(["git", "cat-file", "-e", secret], cwd=proj.root).returncode != 0
