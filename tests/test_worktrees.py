"""Worktrees and branch names with real git (no podman needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devbox.core import git as gitmod
from devbox.core.errors import BadName, ExitCode, Refused
from devbox.core.events import Reporter, null_sink

from conftest import git


def repo(tmp: Path) -> Path:
    root = tmp / "proj"
    (root / "bootc").mkdir(parents=True)
    (root / "bootc" / "Containerfile").write_text("FROM scratch\n")
    (root / "devbox.toml").write_text("")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "dev@example.com")
    git(root, "config", "user.name", "Dev")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_")}
    env["DEVBOX_REPO"] = str(root)
    env["DEVBOX_PODMAN_URL"] = f"unix://{root}/no-podman.sock"  # git-only commands must not need podman
    return subprocess.run(
        [sys.executable, "-m", "devbox.cli", *args],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


BAD_NAMES = [
    "",
    "-x",
    "--force",
    "a..b",
    "../x",
    "../../etc",
    "/abs",
    "a/",
    "a//b",
    "with space",
    "tab\there",
    "nl\nx",
    "bell\x07",
    "del\x7f",
    "x@{1}",
    "@",
    "a~1",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[b",
    "back\\slash",
    "x.lock",
    "end.",
    ".hidden",
    "a/.b",
    "HEAD",
    "x" * 201,
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:20] for n in BAD_NAMES])
def test_bad_branch_names_rejected_nothing_created(tmp_path: Path, name: str) -> None:
    root = repo(tmp_path)
    branches = git(root, "branch", "--list")
    for args in (("worktree", "add", "--", name), ("start-work", "--detach", "--", name)):
        res = cli(root, *args)
        assert res.returncode == ExitCode.BAD_NAME, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("devbox: invalid branch name"), res.stderr
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "proj.worktrees").exists()
    assert git(root, "branch", "--list") == branches
    assert len(gitmod.list_worktrees(root)) == 1
    assert not (root / ".build").exists()


@pytest.mark.parametrize("ref", ["-x", "--output=/tmp/pwn", "a b", "nope"])
def test_bad_from_ref_rejected(tmp_path: Path, ref: str) -> None:
    root = repo(tmp_path)
    res = cli(root, "worktree", "add", "feat", f"--from={ref}")
    assert res.returncode in (ExitCode.BAD_NAME, ExitCode.NOT_FOUND), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert len(gitmod.list_worktrees(root)) == 1
    assert "feat" not in git(root, "branch", "--list")


@pytest.mark.parametrize("ref", ["/etc", "../", "/", "nosuchbranch", str(Path.home())])
def test_remove_rejects_paths_that_are_not_worktrees(tmp_path: Path, ref: str) -> None:
    root = repo(tmp_path)
    res = cli(root, "worktree", "remove", "--force", ref)
    assert res.returncode == ExitCode.NOT_FOUND, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert root.exists() and (root / ".git").exists()


def test_add_new_existing_remote_and_from(tmp_path: Path) -> None:
    root = repo(tmp_path)
    # a remote with a branch that is not local yet
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(root), str(origin))
    git(root, "remote", "add", "origin", str(origin))
    git(root, "branch", "remote-only")
    git(root, "push", "-q", "origin", "remote-only")
    git(root, "branch", "-D", "remote-only")
    git(root, "fetch", "-q", "origin")
    git(root, "branch", "existing")

    res = cli(root, "worktree", "add", "feature/new")
    assert res.returncode == 0, res.stderr
    new = tmp_path / "proj.worktrees" / "feature" / "new"
    assert res.stdout.strip().splitlines()[-1] == str(new)
    assert (new / "devbox.toml").exists()

    assert cli(root, "worktree", "add", "existing").returncode == 0
    assert cli(root, "worktree", "add", "remote-only").returncode == 0
    upstream = git(tmp_path / "proj.worktrees" / "remote-only", "rev-parse", "--abbrev-ref", "@{upstream}")
    assert upstream.strip() == "origin/remote-only"

    git(root, "commit", "-q", "--allow-empty", "-m", "second")
    res = cli(root, "worktree", "add", "from-first", "--from", "HEAD~1")
    assert res.returncode == 0, res.stderr
    head = git(tmp_path / "proj.worktrees" / "from-first", "rev-parse", "HEAD").strip()
    assert head == git(root, "rev-parse", "HEAD~1").strip()

    # reuse: a second add is a no-op that answers the same path
    again = cli(root, "worktree", "add", "feature/new")
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == str(new)
    assert len(gitmod.list_worktrees(root)) == 5


def test_list_shows_dirty_and_ahead_behind(tmp_path: Path) -> None:
    root = repo(tmp_path)
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(root), str(origin))
    git(root, "remote", "add", "origin", str(origin))
    git(root, "fetch", "-q", "origin")
    git(root, "branch", "--set-upstream-to=origin/main", "main")
    git(root, "commit", "-q", "--allow-empty", "-m", "ahead")
    assert cli(root, "worktree", "add", "side").returncode == 0
    (tmp_path / "proj.worktrees" / "side" / "new.txt").write_text("x")
    res = cli(root, "worktree", "list", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["branch"]: r for r in json.loads(res.stdout)}
    assert rows["main"]["main"] and rows["main"]["ahead"] == 1 and rows["main"]["behind"] == 0
    assert rows["side"]["dirty"] is True and rows["side"]["ahead"] is None
    assert rows["main"]["dirty"] is False
    assert rows["side"]["container"] is None


def test_remove_refuses_dirty_and_unique_commits_keeps_branch(tmp_path: Path) -> None:
    root = repo(tmp_path)
    wt_root = tmp_path / "proj.worktrees"
    assert cli(root, "worktree", "add", "work").returncode == 0
    wt = wt_root / "work"
    (wt / "f.txt").write_text("draft")
    res = cli(root, "worktree", "remove", "work")
    assert res.returncode == ExitCode.REFUSED and "1 uncommitted file(s): f.txt" in res.stderr
    git(wt, "add", "f.txt")
    git(wt, "commit", "-qm", "only here")
    res = cli(root, "worktree", "remove", "work", "--delete-branch")  # deleting the branch would lose it
    assert res.returncode == ExitCode.REFUSED and "1 commit(s) of the branch on no other branch" in res.stderr
    assert wt.exists() and "work" in git(root, "branch", "--list")
    res = cli(root, "worktree", "remove", str(wt))  # the branch keeps the commit: nothing lost
    assert res.returncode == 0, res.stderr
    assert not wt.exists()
    assert "work" in git(root, "branch", "--list")  # the branch (and its commit) survive

    assert cli(root, "worktree", "add", "merged").returncode == 0
    assert cli(root, "worktree", "remove", "merged", "--delete-branch").returncode == 0
    assert "merged" not in git(root, "branch", "--list")


def test_main_checkout_is_never_removed(tmp_path: Path) -> None:
    root = repo(tmp_path)
    with pytest.raises(Refused):
        gitmod.remove_worktree(root, gitmod.list_worktrees(root)[0], force=True, report=Reporter(null_sink, "test"))
    res = cli(root, "worktree", "remove", "--force", str(root))
    assert res.returncode == ExitCode.REFUSED and "main checkout" in res.stderr
    assert (root / ".git").is_dir()


def test_worktree_path_stays_inside(tmp_path: Path) -> None:
    assert gitmod.worktree_path(tmp_path, "a/b") == (tmp_path / "a" / "b").resolve()
    with pytest.raises(BadName):
        gitmod.worktree_path(tmp_path, "../escape")


def test_full_disk_leaves_no_half_worktree(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    root = repo(tmp_path)
    (root / "big.bin").write_bytes(os.urandom(512 * 1024))
    git(root, "add", "big.bin")
    git(root, "commit", "-qm", "big")
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(full)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        env_res = subprocess.run(
            [sys.executable, "-m", "devbox.cli", "worktree", "add", "feature/x"],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_")},
                "DEVBOX_REPO": str(root),
                "DEVBOX_PATHS_WORKTREES": str(full / "wt"),
            },
            capture_output=True,
            text=True,
        )
        assert env_res.returncode == ExitCode.DISK_FULL, env_res.stderr
        assert len(env_res.stderr.strip().splitlines()) == 1 and "free disk space" in env_res.stderr
        assert list(full.iterdir()) == []  # nothing half-written
        assert len(gitmod.list_worktrees(root)) == 1
        assert "feature/x" not in git(root, "branch", "--list")
    finally:
        subprocess.run(["umount", str(full)], check=True)


@pytest.mark.parametrize("where", ["wt:colon", "wt,comma"])
def test_unmountable_worktree_dir_rejected_before_anything(tmp_path: Path, where: str) -> None:
    root = repo(tmp_path)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_")},
        "DEVBOX_REPO": str(root),
        "DEVBOX_PATHS_WORKTREES": str(tmp_path / where),
    }
    res = subprocess.run(
        [sys.executable, "-m", "devbox.cli", "start-work", "--detach", "ok-branch"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == ExitCode.BAD_NAME and "cannot mount" in res.stderr
    assert not (tmp_path / where).exists()
    assert "ok-branch" not in git(root, "branch", "--list")


def test_run_from_inside_a_worktree_acts_on_the_main_repo(tmp_path: Path) -> None:
    root = repo(tmp_path)
    assert cli(root, "worktree", "add", "inner").returncode == 0
    inner = tmp_path / "proj.worktrees" / "inner"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_")}
    env["DEVBOX_PODMAN_URL"] = f"unix://{root}/no-podman.sock"
    res = subprocess.run(
        [sys.executable, "-m", "devbox.cli", "worktree", "list", "--json"],
        env=env,
        cwd=inner / "bootc",
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert rows[0]["path"] == str(root.resolve()) and rows[0]["main"] is True
    assert not (inner / ".build").exists()


def test_detached_head_commit_counts_as_work(tmp_path: Path) -> None:
    root = repo(tmp_path)
    assert cli(root, "worktree", "add", "det").returncode == 0
    wt = tmp_path / "proj.worktrees" / "det"
    git(wt, "checkout", "-q", "--detach")
    git(wt, "commit", "-q", "--allow-empty", "-m", "only on the detached HEAD")
    head = git(wt, "rev-parse", "HEAD").strip()
    git(root, "branch", "-D", "det")  # nothing but the worktree's HEAD holds the commit now
    res = cli(root, "worktree", "remove", str(wt))
    assert res.returncode == ExitCode.REFUSED, res.stderr
    assert "1 commit(s) of the detached HEAD on no other branch" in res.stderr
    assert wt.exists() and git(root, "cat-file", "-t", head).strip() == "commit"
    assert cli(root, "worktree", "remove", str(wt), "--force").returncode == 0
    assert not wt.exists()


def test_worktree_deleted_by_hand_is_listed_as_missing(tmp_path: Path) -> None:
    import shutil

    root = repo(tmp_path)
    for b in ("gone", "kept"):
        assert cli(root, "worktree", "add", b).returncode == 0
    shutil.rmtree(tmp_path / "proj.worktrees" / "gone")
    for args in (("worktree", "list", "--json"), ("status", "--json")):
        res = cli(root, *args)
        assert res.returncode == 0, (args, res.stderr)
        data = json.loads(res.stdout)
        rows = {r["branch"]: r for r in (data if isinstance(data, list) else data["worktrees"])}
        assert rows["gone"]["missing"] is True and rows["kept"]["missing"] is False
    plain = cli(root, "worktree", "list")
    assert plain.returncode == 0 and "MISSING" in plain.stdout and "git worktree prune" in plain.stdout
    res = cli(root, "start-work", "gone", "--detach")
    assert res.returncode != 0 and "git worktree prune" in res.stderr and "--recreate" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = cli(root, "worktree", "remove", "gone")
    assert res.returncode == 0, res.stderr
    assert "gone" not in git(root, "worktree", "list")
    assert "gone" in git(root, "branch", "--list")


def test_status_cheap_git_state_with_many_worktrees(tmp_path: Path) -> None:
    root = repo(tmp_path)
    for i in range(30):
        git(root, "worktree", "add", "-q", "-b", f"w{i}", str(tmp_path / "wts" / f"w{i}"))
    (tmp_path / "wts" / "w7" / "new file.txt").write_text("x")
    (tmp_path / "wts" / "w9" / "devbox.toml").write_text("changed")
    res = cli(root, "worktree", "list", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["branch"]: r for r in json.loads(res.stdout)}
    assert len(rows) == 31
    assert rows["w7"]["untracked"] == 1 and rows["w7"]["files"] == ["new file.txt"]
    assert rows["w9"]["changed"] == 1 and rows["w9"]["files"] == ["devbox.toml"]
    assert sum(r["dirty"] for r in rows.values()) == 2


def test_full_disk_under_the_lock_file_is_disk_full_not_internal(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    root = repo(tmp_path)
    build = tmp_path / "build"
    build.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=64", "tmpfs", str(build)]).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        (build / "locks").mkdir()
        fd = os.open(build / "filler", os.O_WRONLY | os.O_CREAT)  # fill every block
        try:
            while os.write(fd, b"x" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_")},
            "DEVBOX_REPO": str(root),
            "DEVBOX_PATHS_BUILD": str(build),
        }
        res = subprocess.run(
            [sys.executable, "-m", "devbox.cli", "worktree", "add", "filled"], env=env, capture_output=True, text=True
        )
        assert "internal error" not in res.stderr and "Traceback" not in res.stderr
        assert res.returncode in (0, ExitCode.DISK_FULL), res.stderr
    finally:
        subprocess.run(["umount", str(build)], check=True)


TRICKY_NAMES = [
    "feature/login",
    "a",
    "x.y",
    "a/b/c",
    "ünïcödé",
    "a-b_c.d",
    "v1.0",
    "a@b",
    "a.lock.b",
    "foo./bar",
    "@@",
    "",
    "-x",
    "a b",
    "a\tb",
    "a~b",
    "a^b",
    "a:b",
    "a?b",
    "a*b",
    "a[b",
    "a\\b",
    "a..b",
    "a@{b",
    "@",
    "/a",
    "a/",
    "a//b",
    ".a",
    "a/.b",
    "a.",
    "a.lock",
    "a.lock/b",
    "HEAD",
    "a\x7fb",
    "a\x01b",
    "refs/heads/x",
    "x/.lock",
]


@pytest.mark.parametrize("name", TRICKY_NAMES)
def test_branch_names_are_judged_as_git_judges_them(name: str, tmp_path: Path) -> None:
    """Issue 14 item 18: the core's check (no process) agrees with git check-ref-format
    (outside a repository, where ``--branch`` does not expand ``@``). devbox is stricter in
    one place, on purpose: "@" alone (git's shorthand for HEAD) is refused."""
    from devbox.core.git import check_branch_name

    by_git = (
        subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True, cwd=tmp_path).returncode == 0
        and name != "@"
    )
    try:
        check_branch_name(name)
        ours = True
    except BadName:
        ours = False
    assert ours == by_git, (name, ours, by_git)


def test_config_writes_from_many_runs_at_once_all_land(tmp_path: Path) -> None:
    """Ten start-works at once each record their branch's base in .git/config; git refuses a
    write while another holds the file's lock, so devbox waits its turn (a bench found it)."""
    import subprocess as sp
    from concurrent.futures import ThreadPoolExecutor

    from devbox.core import git as gitcore

    repo = tmp_path / "r"
    sp.run(["git", "init", "-q", str(repo)], check=True)
    keys = [f"branch.b{i}.devboxbase" for i in range(40)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(lambda k: gitcore.config_set(repo, k, "main"), keys))
    found = sp.run(["git", "-C", str(repo), "config", "--get-regexp", r"devboxbase$"], capture_output=True, text=True)
    assert sorted(found.stdout.split()[::2]) == sorted(keys)


def test_a_worktree_being_made_by_another_run_is_waited_for(tmp_path: Path) -> None:
    """`git worktree add` keeps a "locked" file in the new worktree's admin directory while it
    works; a `git worktree list` of another run that reads it as it comes or goes fails
    ("failed to read .../locked"). Ten start-works at once met that; devbox looks again.
    Made deterministic here: an admin directory whose "locked" cannot be read, finished
    (removed) a moment later by another thread."""
    import shutil as sh
    import subprocess as sp
    import threading as th

    from devbox.core import git as gitcore

    repo = tmp_path / "r"
    sp.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    sp.run(["git", "-C", str(repo), "-c", "user.name=T", "-c", "user.email=t@x", "commit", "-q", "--allow-empty",
            "-m", "i"], check=True)  # fmt: skip
    admin = repo / ".git" / "worktrees" / "busy"
    (admin / "locked").mkdir(parents=True)  # read as a file: "Is a directory"
    (admin / "HEAD").write_text("ref: refs/heads/main\n")
    (admin / "commondir").write_text("../..\n")
    (admin / "gitdir").write_text(f"{tmp_path / 'busy' / '.git'}\n")
    assert sp.run(["git", "-C", str(repo), "worktree", "list"], capture_output=True).returncode != 0
    th.Timer(0.3, lambda: sh.rmtree(admin)).start()
    listed = gitcore.list_worktrees(repo)
    assert [w.branch for w in listed] == ["main"]


def test_ten_worktree_adds_at_once_all_succeed(tmp_path: Path) -> None:
    """Ten runs adding worktrees at once (what ten start-works do first): each waits its turn
    for the add, and every one is made, its base recorded."""
    from concurrent.futures import ThreadPoolExecutor

    root = repo(tmp_path)
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda i: cli(root, "worktree", "add", f"many-{i}"), range(10)))
    assert [r.returncode for r in results] == [0] * 10, [r.stderr for r in results if r.returncode]
    listed = git(root, "worktree", "list", "--porcelain")
    assert all(f"branch refs/heads/many-{i}\n" in listed for i in range(10))
    bases = git(root, "config", "--get-regexp", r"devboxbase$")
    assert len(bases.splitlines()) == 10


def test_a_worktree_add_that_meets_another_add_half_way_is_made_once(tmp_path: Path) -> None:
    """Someone's own `git worktree add` writing its admin entry at the moment devbox adds one
    (devbox's lock orders only devbox's adds): git reads the half-written commondir and dies
    after `-b` made the branch. devbox takes the branch back and adds again, once the other
    entry is whole. Made deterministic: an entry with an empty commondir (as git leaves it
    mid-write), removed a moment later by another thread."""
    import shutil as sh
    import threading as th

    from devbox.core.events import LogLine

    root = repo(tmp_path)
    admin = root / ".git" / "worktrees" / "theirs"
    admin.mkdir(parents=True)
    (admin / "locked").write_text("initializing")  # as git writes it first: prune keeps the entry
    (admin / "gitdir").write_text(f"{tmp_path / 'theirs' / '.git'}\n")
    (admin / "commondir").write_text("")
    probe = subprocess.run(["git", "-C", str(root), "worktree", "list"], capture_output=True, text=True)
    assert "failed to read" in probe.stderr  # what git says while the other entry is half-written
    th.Timer(0.5, lambda: sh.rmtree(admin)).start()
    lines: list[str] = []
    report = Reporter(lambda e: lines.append(e.text) if isinstance(e, LogLine) else None, "worktree-add")
    added = gitmod.add_worktree(root, "mine", tmp_path / "wt" / "mine", report, th.Event())
    assert added.created_branch and added.worktree.path == tmp_path / "wt" / "mine"
    assert any("adding again" in line for line in lines)  # the race was met, not missed
    assert git(root, "branch", "--list", "mine").count("mine") == 1
    assert (tmp_path / "wt" / "mine" / "bootc" / "Containerfile").is_file()


def test_the_dashboards_state_cache_asks_git_only_where_something_may_have_changed(tmp_path: Path) -> None:
    """issue 33 (an idle dashboard's CPU): the poller's StateCache reuses a worktree's git
    state until its HEAD moves, it is wanted (the selected row, an agent whose hooks just
    wrote) or its answer is older than max_age; forget() makes every worktree asked again."""
    from devbox.core.ops.worktrees import StateCache

    root = repo(tmp_path)
    for b in ("a", "b"):
        assert cli(root, "worktree", "add", b).returncode == 0
    wts = {w.branch: w for w in gitmod.list_worktrees(root)}
    a, b = tmp_path / "proj.worktrees" / "a", tmp_path / "proj.worktrees" / "b"
    cache = StateCache(max_age=3600)

    def states() -> dict[str | None, gitmod.WorktreeState]:
        listed = gitmod.list_worktrees(root)
        return {w.branch: s for w, s in zip(listed, cache.states(listed, None), strict=True)}

    assert not states()["a"].dirty and len(cache.known) == len(wts)
    (a / "edit.txt").write_text("an edit no hook reported\n")
    (b / "edit.txt").write_text("another\n")
    assert not states()["a"].dirty  # not asked again: nothing said it may have changed
    cache.want(["a"])
    got = states()
    assert got["a"].dirty and not got["b"].dirty  # only the wanted one was asked
    git(b, "add", "edit.txt")
    git(b, "commit", "-qm", "b commits")  # its HEAD moved: asked again
    assert states()["b"].dirty is False and states()["b"].ahead is None
    (b / "more.txt").write_text("x\n")
    aged = StateCache(max_age=0.0)  # an answer of any age is too old: every worktree asked
    listed = gitmod.list_worktrees(root)
    assert {w.branch: s.dirty for w, s in zip(listed, aged.states(listed, None), strict=True)}["b"] is True
    cache.forget()
    assert states()["b"].dirty is True
