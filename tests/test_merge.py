"""Getting the work back (issue 16) with real git: ``devbox merge`` by merge, rebase and
squash gives the tree plain git gives, on 20 seeded random pairs of branches (edits,
renames, deletes, binary files, modes); ``git merge-tree``'s conflict prediction matches
what ``git merge`` really does; refusals change nothing; SIGINT at the moment each step
starts leaves base and branch exactly as they were."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devbox.core import config, ops
from devbox.core.errors import Cancelled, GitError, Refused
from devbox.core.events import Step
from devbox.core.session import Devbox


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "T",
           "GIT_COMMITTER_EMAIL": "t@x", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00", "GIT_COMMITTER_DATE":
           "2026-01-01T00:00:00"}  # fmt: skip
    return subprocess.run(["git", "-C", str(cwd), *args], check=check, capture_output=True, text=True, env=env)


def make_repo(root: Path, rng: random.Random) -> Path:
    repo = root / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "T")
    git(repo, "config", "user.email", "t@x")
    (repo / "devbox.toml").write_text("")
    (repo / "bootc").mkdir()
    (repo / "bootc" / "Containerfile").write_text("FROM scratch\n")
    for i in range(8):
        (repo / f"f{i}.txt").write_text("".join(f"line {j} of f{i}\n" for j in range(30)))
    (repo / "bin.dat").write_bytes(bytes(rng.randrange(256) for _ in range(512)))
    (repo / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


def edit(repo: Path, rng: random.Random, tag: str, n: int) -> None:
    """``n`` random changes, one commit each: edit lines, add, delete, rename, binary, mode."""
    for k in range(n):
        files = sorted(p.name for p in repo.iterdir() if p.is_file() and p.name != "devbox.toml")
        kind = rng.choice(["edit", "edit", "add", "delete", "rename", "binary", "mode"])
        target = repo / rng.choice(files)
        if kind == "edit" and target.suffix == ".txt":
            lines = target.read_text().splitlines(keepends=True)
            at = rng.randrange(len(lines) or 1)
            lines[at : at + 1] = [f"{tag} edit {k}\n"]
            target.write_text("".join(lines))
        elif kind == "add":
            (repo / f"{tag}-new{k}.txt").write_text(f"new from {tag} {k}\n")
        elif kind == "delete" and len(files) > 4:
            target.unlink()
        elif kind == "rename" and target.suffix == ".txt":
            target.rename(repo / f"{tag}-renamed{k}-{target.name}")
        elif kind == "binary":
            (repo / "bin.dat").write_bytes(bytes(rng.randrange(256) for _ in range(512)))
        elif kind == "mode":
            target.chmod(target.stat().st_mode ^ 0o111)
        else:
            (repo / f"{tag}-extra{k}.txt").write_text("x\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"{tag} {kind} {k}", "--allow-empty")


def snapshot(*trees: Path) -> str:
    """Refs, index and every file (bytes and mode) of each checkout, as one digest."""
    h = hashlib.sha256()
    for tree in trees:
        h.update(git(tree, "for-each-ref", "--format=%(refname) %(objectname)").stdout.encode())
        h.update(git(tree, "ls-files", "-s").stdout.encode())
        h.update(git(tree, "status", "--porcelain=v1", "--untracked-files=all").stdout.encode())
        for p in sorted(tree.rglob("*")):
            if ".git" in p.relative_to(tree).parts or not p.is_file():
                continue
            h.update(f"{p.relative_to(tree)} {p.stat().st_mode}".encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def session_for(repo: Path) -> Devbox:
    return Devbox(config.load(repo, env={}))


def plain_git(scratch: Path, repo: Path, branch: str, strategy: str) -> tuple[bool, str]:
    """What plain git does in a clone: (merged cleanly, main's tree)."""
    subprocess.run(["git", "clone", "-q", str(repo), str(scratch)], check=True)
    git(scratch, "config", "user.name", "T")
    git(scratch, "config", "user.email", "t@x")
    git(scratch, "branch", "-q", branch, f"origin/{branch}")
    if strategy == "rebase":
        if git(scratch, "rebase", "-q", "main", branch, check=False).returncode != 0:
            return False, ""
        git(scratch, "checkout", "-q", "main")
        git(scratch, "merge", "-q", "--ff-only", branch)
    elif strategy == "squash":
        if git(scratch, "merge", "-q", "--squash", branch, check=False).returncode != 0:
            return False, ""
        git(scratch, "commit", "-qm", "squash", "--allow-empty")
    elif git(scratch, "merge", "-q", "--no-edit", branch, check=False).returncode != 0:
        return False, ""
    return True, git(scratch, "rev-parse", "main^{tree}").stdout.strip()


@pytest.mark.parametrize("seed", range(20))
def test_merge_rebase_squash_match_plain_git_and_the_prediction(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    repo = make_repo(tmp_path, rng)
    git(repo, "branch", "-q", "agent")
    git(repo, "checkout", "-q", "agent")
    edit(repo, rng, "agent", rng.randint(1, 5))
    git(repo, "checkout", "-q", "main")
    edit(repo, rng, "main", rng.randint(0, 3))
    strategy = ("merge", "rebase", "squash")[seed % 3]
    with session_for(repo) as session:
        predicted = ops.predict_merge(session, "agent", into="main")
        clean, tree = plain_git(tmp_path / "plain", repo, "agent", "merge")
        assert predicted.clean == clean, (seed, predicted.conflicts)  # merge-tree agrees with git merge
        if not clean:
            before = snapshot(repo)
            with pytest.raises(Refused, match="would conflict"):
                ops.merge(session, "agent", into="main", strategy=strategy)
            assert snapshot(repo) == before
            return
        ok, expected = plain_git(tmp_path / f"plain-{strategy}", repo, "agent", strategy)
        if not ok:  # a rebase can stop where a merge does not (a commit replayed alone conflicts)
            before = snapshot(repo)
            with pytest.raises(GitError, match="rebase"):
                ops.merge(session, "agent", into="main", strategy=strategy)
            assert snapshot(repo) == before
            return
        res = ops.merge(session, "agent", into="main", strategy=strategy)
    assert git(repo, "rev-parse", "main^{tree}").stdout.strip() == expected
    if strategy != "rebase":
        assert expected == tree  # merge and squash land the merged tree
    assert git(repo, "status", "--porcelain").stdout == ""  # the main checkout moved with its branch
    assert res.after == git(repo, "rev-parse", "main").stdout.strip()
    if strategy == "squash":
        assert git(repo, "rev-list", "--count", f"{res.before}..main").stdout.strip() == "1"
        body = git(repo, "log", "-1", "--format=%B", "main").stdout
        assert all(c.subject in body for c in res.commits)  # the squashed commits' subjects


def conflicted(tmp_path: Path) -> tuple[Path, Path]:
    """main and a worktree of "agent", which edits f1.txt."""
    repo = make_repo(tmp_path, random.Random(1))
    wt = tmp_path / "agent-wt"
    git(repo, "worktree", "add", "-q", "-b", "agent", str(wt))
    (wt / "f1.txt").write_text("agent's\n")
    git(wt, "commit", "-qam", "agent edits f1")
    return repo, wt


def test_refusals_change_nothing(tmp_path: Path) -> None:
    repo, wt = conflicted(tmp_path)
    with session_for(repo) as session:
        (repo / "f2.txt").write_text("dirty base\n")  # the base's checkout is dirty
        before = snapshot(repo, wt)
        with pytest.raises(Refused, match=r"main has uncommitted changes .*f2\.txt"):
            ops.merge(session, "agent", into="main")
        assert snapshot(repo, wt) == before
        git(repo, "checkout", "-q", "--", "f2.txt")

        (wt / "f3.txt").write_text("dirty branch\n")  # the branch's worktree is dirty
        (wt / "untracked.txt").write_text("new\n")
        before = snapshot(repo, wt)
        with pytest.raises(Refused, match=r"agent has uncommitted changes .*f3\.txt") as refused:
            ops.merge(session, "agent", into="main")
        assert "--commit-all" in refused.value.remedy
        assert snapshot(repo, wt) == before

        (repo / "f1.txt").write_text("main's\n")  # a predicted conflict on f1.txt
        git(repo, "commit", "-qam", "main edits f1")
        before = snapshot(repo, wt)
        with pytest.raises(Refused, match=r"would conflict in f1\.txt"):
            ops.merge(session, "agent", into="main", commit_all="wip")
        assert snapshot(repo, wt) == before  # the --commit-all commit is undone too


def test_commit_all_then_merge(tmp_path: Path) -> None:
    repo, wt = conflicted(tmp_path)
    (wt / "f3.txt").write_text("more\n")
    (wt / "new.txt").write_text("new\n")
    with session_for(repo) as session:
        res = ops.merge(session, "agent", into="main", strategy="squash", commit_all="the rest")
    assert res.committed_first and (repo / "new.txt").read_text() == "new\n"
    assert git(wt, "status", "--porcelain").stdout == ""


@pytest.mark.parametrize("how_landed", ["squash", "cherry-pick"])
def test_a_landed_branch_has_nothing_to_land(tmp_path: Path, how_landed: str) -> None:
    """Landed is content, not ancestry: after a squash (or a cherry-pick someone did by hand),
    the branch's commits are not on main, yet merging it again would change nothing. It
    reads as landed and a second landing is refused; it used to put an empty commit on main."""
    repo, wt = conflicted(tmp_path)
    (repo / "f5.txt").write_text("main moves on\n")
    git(repo, "commit", "-qam", "main moves")
    with session_for(repo) as session:
        if how_landed == "squash":
            assert ops.merge(session, "agent", into="main", strategy="squash").commits
        else:  # by hand: a new commit on main, the same content
            git(repo, "cherry-pick", "agent")
        (repo / "f6.txt").write_text("and on\n")
        git(repo, "commit", "-qam", "main moves again")
        d = ops.diff_branch(session, "agent", base="main")
        assert d.commits and d.landed and d.nothing_to_land and d.to_json()["landed"] is True
        before = snapshot(repo, wt)
        for how in ("merge", "rebase", "squash"):
            with pytest.raises(Refused, match="would change nothing on main") as refused:
                ops.merge(session, "agent", into="main", strategy=how)
            assert refused.value.remedy.startswith("nothing to land")
        assert snapshot(repo, wt) == before
        act = git_activity(wt)
        assert (act.files, act.insertions, act.deletions) == (0, 0, 0)  # the fleet's +/- column
        (wt / "f7.txt").write_text("more\n")  # one more change: there is something to land again
        git(wt, "add", "f7.txt")
        git(wt, "commit", "-qm", "more")
        assert not ops.diff_branch(session, "agent", base="main").landed
        assert git_activity(wt).files == 1
    env = {**os.environ, "DEVBOX_REPO": str(repo)}
    git(wt, "reset", "-q", "--hard", "HEAD~1")
    cli = subprocess.run([sys.executable, "-m", "devbox.cli", "merge", "agent", "--into", "main", "--yes"], cwd=repo,
                         env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)  # fmt: skip
    assert cli.returncode != 0 and "would change nothing on main" in cli.stderr and "Traceback" not in cli.stderr


def git_activity(wt: Path) -> object:
    from devbox.core import git as devbox_git

    tree = next(w for w in devbox_git.list_worktrees(wt) if w.path == wt.resolve())
    return devbox_git.activity(tree, "main")


STEPS = [
    (strategy, step)
    for strategy in ("merge", "rebase", "squash")
    for step in ("checking", "committing", "preparing", "moving main")
] + [("rebase", "moving agent")]


@pytest.mark.parametrize(("strategy", "step"), STEPS)
def test_sigint_at_each_step_leaves_base_and_branch_as_they_were(tmp_path: Path, strategy: str, step: str) -> None:
    repo, wt = conflicted(tmp_path)
    (repo / "f5.txt").write_text("main moves on\n")  # a real merge, not a fast-forward
    git(repo, "commit", "-qam", "main moves")
    (wt / "f6.txt").write_text("uncommitted\n")  # so that --commit-all has a step
    before = snapshot(repo, wt)

    def sink(event: object) -> None:  # SIGINT the moment the step starts, as Ctrl-C would
        if isinstance(event, Step) and event.state == "start" and event.detail.startswith(step):
            os.kill(os.getpid(), signal.SIGINT)

    with session_for(repo) as session, pytest.raises((KeyboardInterrupt, Cancelled)):
        ops.merge(session, "agent", into="main", strategy=strategy, commit_all="wip", sink=sink)
    assert snapshot(repo, wt) == before
    assert git(repo, "worktree", "list", "--porcelain").stdout.count("worktree ") == 2  # no rebase leftovers


def test_cli_diff_and_merge(tmp_path: Path) -> None:
    repo, wt = conflicted(tmp_path)
    (wt / "f3.txt").write_text("wip\n")
    env = {**os.environ, "DEVBOX_REPO": str(repo)}

    def devbox(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "devbox.cli", *args], cwd=repo, env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)  # fmt: skip

    d = devbox("diff", "agent", "--base", "main")
    assert d.returncode == 0, d.stderr
    assert "agent edits f1" in d.stdout and "f1.txt" in d.stdout and "unstaged  f3.txt" in d.stdout
    assert "+agent's" in d.stdout  # the patch
    refused = devbox("merge", "agent", "--into", "main")
    assert refused.returncode != 0 and "--yes" in refused.stderr  # no terminal: confirmation needed
    done = devbox("merge", "agent", "--into", "main", "--yes", "--commit-all", "wip")
    assert done.returncode == 0, done.stderr
    assert "after committing" in done.stdout and (repo / "f3.txt").read_text() == "wip\n"
    assert f"its worktree stays at {wt}; remove it when you are done: ./devbox worktree remove --force agent" in (
        done.stdout
    )  # --yes: the teardown is not asked, only said


def test_cli_merge_offers_the_teardown_in_a_terminal(tmp_path: Path) -> None:
    """issue 33: the dashboard offers the worktree's teardown after a merge and the CLI did
    not. In a terminal it asks, naming what would be lost; yes removes the worktree, the
    branch stays."""
    import pty
    import select
    import time

    repo, wt = conflicted(tmp_path)
    env = {**os.environ, "DEVBOX_REPO": str(repo), "DEVBOX_PODMAN_URL": f"unix://{tmp_path}/no-podman.sock",
           "DEVBOX_PODMAN_AUTOSTART": "0"}  # fmt: skip
    main, sub = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "devbox.cli", "merge", "agent", "--into", "main"], cwd=repo,
                            env=env, stdin=sub, stdout=sub, stderr=sub, start_new_session=True)  # fmt: skip
    os.close(sub)
    out, answered = bytearray(), 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([main], [], [], 0.1)[0]:
            try:
                out += os.read(main, 65536)
            except OSError:
                break
        if out.count(b"[y/N]") > answered:  # the merge's question, then the teardown's
            answered += 1
            os.write(main, b"y\n")
    proc.wait(timeout=30)
    os.close(main)
    text = out.decode(errors="replace")
    assert proc.returncode == 0 and answered == 2, text
    assert f"Remove worktree {wt} and its container (the branch stays)?" in text
    assert not wt.exists() and git(repo, "rev-parse", "--verify", "-q", "agent").returncode == 0


def test_push_for_review_then_the_pr_command(tmp_path: Path) -> None:
    """``devbox push``: the branch reaches the remote, then merge.pr_command runs as an
    argument list with {branch} and {remote} substituted, its output shown; a failing
    command is one line and the push stays."""
    repo, _wt = conflicted(tmp_path)
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    git(repo, "remote", "add", "origin", str(remote))
    marker = tmp_path / "pr.txt"
    with (repo / "devbox.toml").open("a") as fh:
        fh.write(f'[merge]\npr_command = ["sh", "-c", "echo \\"PR for $1 on $2; $3\\" | tee {marker}", "x", '
                 '"{branch}", "{remote}", "a; rm -rf / (never a shell)"]\n')  # fmt: skip
    env = {**os.environ, "DEVBOX_REPO": str(repo)}
    out = subprocess.run([sys.executable, "-m", "devbox.cli", "push", "agent"], cwd=repo, env=env, capture_output=True,
                         text=True, stdin=subprocess.DEVNULL)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert git(remote, "rev-parse", "agent").stdout == git(repo, "rev-parse", "agent").stdout
    assert "PR for agent on origin; a; rm -rf / (never a shell)" in out.stdout
    assert marker.read_text().strip() == "PR for agent on origin; a; rm -rf / (never a shell)"
    text = (repo / "devbox.toml").read_text().replace('"sh", "-c"', '"sh", "-c", "exit 3;"')
    (repo / "devbox.toml").write_text(text)
    failed = subprocess.run([sys.executable, "-m", "devbox.cli", "push", "agent"], cwd=repo, env=env,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)  # fmt: skip
    assert failed.returncode != 0 and "merge.pr_command failed" in failed.stderr and "Traceback" not in failed.stderr
