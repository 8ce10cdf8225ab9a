"""Getting an agent's work back: ``diff`` (what a branch changed against its base,
committed and uncommitted apart), ``conflicts`` (which active branches would conflict,
from ``git merge-tree``, no checkout touched) and ``merge`` (merge, rebase or squash onto
the base; refused before anything moves when a checkout is dirty or a conflict is
predicted, and undone exactly on any failure or interrupt: core/git_merge.py).

A branch's base is the branch it was started from (recorded by ``start-work`` and
``agent start``), else the main checkout's branch; ``--base`` / ``--into`` override it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from devbox.core import branch_notes, git, git_merge
from devbox.core.errors import BadName, Cancelled, NotFound, Refused
from devbox.core.events import Reporter, Sink, Subject, null_sink
from devbox.core.git_merge import Commit, FileChange, Uncommitted
from devbox.core.ops.envsync import sync_branches
from devbox.core.session import Devbox

SHOWN_FILES = 8  # files named in a refusal


@dataclass(frozen=True)
class BranchDiff:
    branch: str
    base: str
    merge_base: str
    commits: tuple[Commit, ...]
    committed: tuple[FileChange, ...]
    uncommitted: Uncommitted  # in the branch's worktree (empty without one)
    worktree: str = ""
    landed: bool = False  # its commits change nothing on the base: they are there already
    worktree_missing: bool = False  # its worktree was deleted by hand: nothing uncommitted is known

    @property
    def nothing_to_land(self) -> bool:
        return (self.landed or not self.commits) and not self.uncommitted.any

    def to_json(self) -> dict[str, object]:
        return {
            "branch": self.branch, "base": self.base, "merge_base": self.merge_base, "worktree": self.worktree,
            "landed": self.landed, "worktree_missing": self.worktree_missing,
            "commits": [{"sha": c.sha, "subject": c.subject} for c in self.commits],
            "files": [{"path": f.path, "status": f.status, "added": f.added, "deleted": f.deleted, "old": f.old}
                      for f in self.committed],
            "uncommitted": {"staged": list(self.uncommitted.staged), "unstaged": list(self.uncommitted.unstaged),
                            "untracked": list(self.uncommitted.untracked)},
        }  # fmt: skip


@dataclass(frozen=True)
class Merged:
    branch: str
    base: str
    strategy: str
    before: str  # the base's commit before
    after: str  # and after
    commits: tuple[Commit, ...]  # what landed
    files: tuple[str, ...]
    committed_first: str = ""  # the commit --commit-all made, if any


def base_of(session: Devbox, branch: str, override: str | None = None) -> str:
    """``override``, else the recorded base, else the main checkout's branch."""
    repo = session.settings.repo
    base = override or branch_notes.recorded_base(repo, branch) or git.current_branch(repo)
    if not base:
        raise NotFound(f"no base branch for {branch!r}", "name one: --base BRANCH")
    if base == branch:
        raise BadName(f"{branch!r} is its own base", "name another: --base BRANCH")
    return base


def _commit(session: Devbox, ref: str) -> str:
    sha = git.rev(session.settings.repo, ref)
    if not sha:
        raise NotFound(f"no branch or commit {ref!r} in {session.settings.repo}", "see `git branch`")
    return sha


def diff_branch(session: Devbox, branch: str, *, base: str | None = None) -> BranchDiff:
    """What ``branch`` changed since it left its base: commits and files, and what its
    worktree holds uncommitted (staged, unstaged, untracked)."""
    repo = session.settings.repo
    git.check_branch_name(branch)
    sync_branches(session, [branch])  # its environment's new commits first
    head = _commit(session, f"refs/heads/{branch}")
    base_name = base_of(session, branch, base)
    base_head = _commit(session, base_name)
    mb = git_merge.merge_base(repo, base_head, head)
    wt = git.find_worktree(repo, branch)
    pending = git_merge.uncommitted(wt.path) if wt is not None and wt.path.is_dir() else Uncommitted()
    commits = git_merge.commits(repo, mb, head) if mb else ()
    landed = bool(commits) and git_merge.lands_nothing(repo, base_head, head)
    return BranchDiff(branch, base_name, mb, commits, git_merge.changes(repo, mb or head, head), pending,
                      str(wt.path) if wt else "", landed, wt is not None and not wt.path.is_dir())  # fmt: skip


def predict_merge(session: Devbox, branch: str, *, into: str | None = None) -> git_merge.Prediction:
    """Would ``branch`` merge into its base cleanly, and which files would conflict."""
    base = base_of(session, branch, into)
    sync_branches(session, [branch])
    head, base_head = _commit(session, f"refs/heads/{branch}"), _commit(session, f"refs/heads/{base}")
    return git_merge.predict(session.settings.repo, base_head, head)


def branch_patch(session: Devbox, d: BranchDiff) -> str:
    """The committed changes of ``d`` as one patch (``git diff merge-base..branch``)."""
    return git_merge.patch(session.settings.repo, d.merge_base, f"refs/heads/{d.branch}", "")


def _named(paths: tuple[str, ...]) -> str:
    more = len(paths) - SHOWN_FILES
    return ", ".join(paths[:SHOWN_FILES]) + (f" and {more} more" if more > 0 else "")


def merge(
    session: Devbox, branch: str, *, into: str | None = None, strategy: str = "merge", message: str | None = None,
    commit_all: str | None = None, sink: Sink = null_sink, cancel: threading.Event | None = None,
) -> Merged:  # fmt: skip
    """Land ``branch`` on its base. Refused, with nothing changed, when the base's checkout
    has uncommitted changes, when the branch's has and ``commit_all`` is not given, or
    when a conflict is predicted; undone exactly when anything fails or is interrupted."""
    cancel = cancel or threading.Event()
    if strategy not in git_merge.STRATEGIES:
        raise BadName(f"unknown strategy {strategy!r}", f"one of: {', '.join(git_merge.STRATEGIES)}")
    repo = session.settings.repo
    git.check_branch_name(branch)
    report = Reporter(sink, "merge", Subject("branch", branch))
    base = base_of(session, branch, into)
    report.step("start", f"checking {branch} → {base} ({strategy})")
    sync_branches(session, [branch], sink=sink, cancel=cancel)  # what its environment committed lands too
    head, base_head = _commit(session, f"refs/heads/{branch}"), _commit(session, f"refs/heads/{base}")
    trees = {w.branch: w for w in git.list_worktrees(repo) if w.branch and not w.prunable}
    base_wt, branch_wt = trees.get(base), trees.get(branch)
    if base_wt is not None:
        _refuse_dirty_base(base, base_wt.path)
    pending = git_merge.uncommitted(branch_wt.path) if branch_wt is not None else Uncommitted()
    if pending.any and commit_all is None:
        raise Refused(f"{branch} has uncommitted changes in {branch_wt.path if branch_wt else ''}: "
                      f"{_named(pending.names())}", "commit them, or pass --commit-all MESSAGE")  # fmt: skip
    if git.is_ancestor(repo, head, base_head) and not pending.any:
        raise Refused(f"{branch} has nothing {base} does not have", "nothing to merge")
    env = git.identity(repo)
    landing = git_merge.Landing(repo)
    committed = ""
    try:
        if pending.any and branch_wt is not None and commit_all is not None:
            report.step("start", f"committing {len(pending.names())} uncommitted file(s) in {branch_wt.path}")
            committed = git_merge.commit_all(branch_wt.path, commit_all or f"devbox: uncommitted work on {branch}", env)
            landing.done.append((f"refs/heads/{branch}", None, head, committed))  # undo: the branch back
            head = committed
        prediction = git_merge.predict(repo, base_head, head, cancel)
        if not prediction.clean:
            raise Refused(
                f"merging {branch} into {base} would conflict in {_named(prediction.conflicts)}",
                f"rebase {branch} onto {base} in its worktree and resolve them there, then merge again",
            )
        if prediction.tree == git_merge.tree_of(repo, base_head):  # (squashed or rebased there before)
            raise Refused(f"{branch} would change nothing on {base}: what it changed is there already",
                          "nothing to land; remove its worktree when you are done with it")  # fmt: skip
        mb = git_merge.merge_base(repo, base_head, head)
        landed = git_merge.commits(repo, mb, head)
        files = tuple(f.path for f in git_merge.changes(repo, mb, head))
        report.step("start", f"preparing the {strategy} ({len(landed)} commit(s), {len(files)} file(s))")
        if cancel.is_set():
            raise Cancelled("merge interrupted", "nothing changed: run it again")
        new_base, new_branch = _prepare(repo, strategy, base, branch, base_head, head, prediction.tree, landed,
                                        message, env, cancel)  # fmt: skip
        if new_branch != head:  # a rebase: the branch moves to its rebased commits too
            report.step("start", f"moving {branch} to {new_branch[:12]} (rebased)")
            landing.move(f"refs/heads/{branch}", branch_wt.path if branch_wt else None, head, new_branch, cancel)
        report.step("start", f"moving {base} to {new_base[:12]}")
        landing.move(f"refs/heads/{base}", base_wt.path if base_wt else None, base_head, new_base, cancel)
    except BaseException:
        landing.undo()  # newest first: the base, a rebased branch, then the --commit-all commit
        if committed and branch_wt is not None:  # its files uncommitted again (staged ones unstaged)
            git.reset_index(branch_wt.path)
        raise
    report.step("done", f"{branch} → {base} by {strategy}: {len(landed)} commit(s), {len(files)} file(s)")
    return Merged(branch, base, strategy, base_head, new_base, landed, files, committed)


def _refuse_dirty_base(base: str, path: Path) -> None:
    dirty = git_merge.uncommitted(path)
    if dirty.any:
        raise Refused(f"{base} has uncommitted changes in {path}: {_named(dirty.names())}",
                      f"commit or stash them there first (git -C {path} status)")  # fmt: skip


def base_blocker(session: Devbox, base: str) -> str:
    """Why a merge into ``base`` would be refused for its checkout's state now, or ""."""
    wt = git.find_worktree(session.settings.repo, base)
    try:
        if wt is not None and not wt.prunable:
            _refuse_dirty_base(base, wt.path)
    except Refused as exc:
        return exc.one_line()
    return ""


def _prepare(
    repo: Path, strategy: str, base: str, branch: str, base_head: str, head: str, tree: str,
    landed: tuple[Commit, ...], message: str | None, env: dict[str, str], cancel: threading.Event,
) -> tuple[str, str]:  # fmt: skip
    """The base's new commit (and the branch's, for a rebase): objects only."""
    if strategy == "merge":
        if git.is_ancestor(repo, base_head, head):
            return head, head  # a fast-forward, as `git merge` does
        msg = message or f"Merge branch '{branch}' into {base}"
        return git_merge.commit_tree(repo, tree, [base_head, head], msg, env), head
    if strategy == "squash":
        subjects = "\n".join(f"* {c.subject}" for c in landed)
        msg = message or f"{branch}: squashed {len(landed)} commit(s)\n\n{subjects}"
        return git_merge.commit_tree(repo, tree, [base_head], msg, env), head
    new = git_merge.rebased(repo, base_head, head, env, cancel)  # rebase: then the base fast-forwards
    return new, new


@dataclass(frozen=True)
class Pushed:
    branch: str
    remote: str
    pr_output: str = ""  # what merge.pr_command printed, if one is configured


def push_branch(
    session: Devbox, branch: str, *, remote: str | None = None, sink: Sink = null_sink,
    cancel: threading.Event | None = None,
) -> Pushed:  # fmt: skip
    """Push ``branch`` for review elsewhere (its upstream's remote, else ``origin``), then
    run ``merge.pr_command`` with {branch} and {remote} substituted, if one is set."""
    cancel = cancel or threading.Event()
    repo = session.settings.repo
    git.check_branch_name(branch)
    _commit(session, f"refs/heads/{branch}")
    report = Reporter(sink, "push", Subject("branch", branch))
    where = remote or git_merge.upstream_remote(repo, branch) or "origin"
    report.step("start", f"{branch} → {where}")
    git_merge.push(repo, where, branch, cancel)
    output = ""
    command = session.settings.pr_command
    if command:
        argv = [part.replace("{branch}", branch).replace("{remote}", where) for part in command]
        report.step("start", f"opening a pull request: {' '.join(argv)}")
        output = run_pr_command(argv, repo, cancel)
        for line in output.splitlines():
            report.log(line, source=argv[0], stream="stdout")
    report.step("done", f"{branch} pushed to {where}")
    return Pushed(branch, where, output)


def run_pr_command(argv: list[str], repo: Path, cancel: threading.Event) -> str:
    """``merge.pr_command`` (an argument list, never a shell); its failure is one line."""
    from devbox.core import proc
    from devbox.core.errors import ToolMissing

    try:
        res = proc.run(argv, tool=argv[0], cwd=repo, timeout=300, cancel=cancel)
    except ToolMissing:
        raise NotFound(f"merge.pr_command: {argv[0]} is not installed", "install it, or fix merge.pr_command "
                       "in devbox.toml") from None  # fmt: skip
    if not res.ok:
        raise Refused(f"merge.pr_command failed (exit {res.returncode}): {res.last_error()}",
                      "the branch is pushed; open the pull request by hand, or fix merge.pr_command")  # fmt: skip
    return res.stdout.strip()
