"""The CLI's review commands: ``devbox diff`` (what a branch changed against its base),
``devbox merge`` (merge, rebase or squash it onto its base, after showing what lands) and
``devbox conflicts`` (the conflict radar).
They call core/ops/review.py like the dashboard does."""

from __future__ import annotations

import sys
from typing import Any

from devbox.cli_common import Context, print_json
from devbox.cli_vm import confirm
from devbox.core import ops
from devbox.core.errors import DevboxError, ExitCode, Refused


def _count(added: int | None, deleted: int | None) -> str:
    return "binary" if added is None else f"+{added} -{deleted}"


def cmd_diff(ctx: Context) -> int:
    a = ctx.args
    d = ops.diff_branch(ctx.session, a.branch, base=a.base)
    if a.json:
        print_json(d.to_json())
        return ExitCode.OK
    print(f"{d.branch} against {d.base} (since {d.merge_base[:12] or 'no common commit'})")
    landed = f" (landed: {d.base} has all of it already)" if d.landed else ""
    print(f"committed: {len(d.commits)} commit(s), {len(d.committed)} file(s){landed}")
    for c in d.commits:
        print(f"  {c.sha[:10]} {c.subject}")
    for f in d.committed:
        renamed = f" (from {f.old})" if f.old else ""
        print(f"  {f.status} {_count(f.added, f.deleted):>12}  {f.path}{renamed}")
    u = d.uncommitted
    if u.any:
        print(f"uncommitted in {d.worktree}:")
        for label, names in (("staged", u.staged), ("unstaged", u.unstaged), ("untracked", u.untracked)):
            for name in names:
                print(f"  {label:<9} {name}")
    elif d.worktree_missing:
        print(f"uncommitted in {d.worktree}: not known, the worktree is MISSING (deleted by hand)")
    elif d.worktree:
        print(f"uncommitted in {d.worktree}: nothing")
    if not a.stat and d.committed:
        sys.stdout.flush()
        sys.stdout.write(ops.branch_patch(ctx.session, d))
    return ExitCode.OK


def cmd_merge(ctx: Context) -> int:
    res = land(ctx)
    if res is None:
        return ExitCode.REFUSED
    offer_teardown(ctx, res.branch)
    return ExitCode.OK


def offer_teardown(ctx: Context, branch: str) -> None:
    """After a landing, as the dashboard does: the worktree's teardown, naming what it would
    lose, asked in a terminal (no is the default); with --yes or no terminal, only how."""
    try:
        wt = ops.find_worktree(ctx.session, branch)
    except DevboxError:
        return  # no worktree of its own (a branch landed from the main checkout's repository)
    if wt.is_main:
        return
    command = f"./devbox worktree remove --force {branch}"
    if ctx.args.yes or not (sys.stdin.isatty() and sys.stderr.isatty()):
        print(f"its worktree stays at {wt.path}; remove it when you are done: {command}")
        return
    found = ops.worktree_loss(ctx.session, wt)
    lines = found.loss.lines() or ["nothing uncommitted, unpushed or running"]
    lines += [f"(containers not checked: {found.unchecked})"] if found.unchecked else []
    if not confirm(f"Remove worktree {wt.path} and its container (the branch stays)?", lines):
        print(f"kept {wt.path}; later: {command}")
        return
    ctx.log_name = "worktree-remove"
    ops.remove_worktree(ctx.session, branch, force=True, sink=ctx.sink, cancel=ctx.cancel)
    ctx.renderer.close()


def land(ctx: Context) -> ops.Merged | None:
    """Show what lands, ask (unless --yes), merge; None when the user said no."""
    a = ctx.args
    plan = ops.diff_branch(ctx.session, a.branch, base=a.into)
    if plan.landed and not plan.uncommitted.any:  # (ops.merge refuses it too; no question first)
        raise Refused(f"{plan.branch} would change nothing on {plan.base}: what it changed is there already",
                      "nothing to land; remove its worktree when you are done with it")  # fmt: skip
    lines = [f"{a.strategy} {plan.branch} into {plan.base}: {len(plan.commits)} commit(s), "
             f"{len(plan.committed)} file(s)", *(f"  {c.sha[:10]} {c.subject}" for c in plan.commits),
             *(f"  {f.status} {f.path}" for f in plan.committed)]  # fmt: skip
    if plan.uncommitted.any and a.commit_all is not None:
        lines.append(f"  and first commits {len(plan.uncommitted.names())} uncommitted file(s): {a.commit_all!r}")
    if not a.yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise Refused(f"merging {plan.branch} into {plan.base} needs confirmation: {lines[0]}",
                          "run it in a terminal, or pass --yes")  # fmt: skip
        if not confirm(f"Land {plan.branch} on {plan.base}?", lines):
            print("nothing merged")
            return None
    ctx.log_name = "merge"
    res = ops.merge(ctx.session, a.branch, into=a.into, strategy=a.strategy, message=a.message,
                    commit_all=a.commit_all, sink=ctx.sink, cancel=ctx.cancel)  # fmt: skip
    ctx.renderer.close()
    first = f" (after committing its uncommitted work as {res.committed_first[:10]})" if res.committed_first else ""
    print(f"{res.branch} → {res.base} by {res.strategy}{first}: {res.before[:10]} → {res.after[:10]}, "
          f"{len(res.commits)} commit(s), {len(res.files)} file(s)")  # fmt: skip
    return res


def cmd_conflicts(ctx: Context) -> int:
    radar = ops.conflicts(ctx.session)
    if ctx.args.json:
        print_json(radar.to_json())
        return ExitCode.OK
    if not radar.clashes:
        print(f"no conflicts among {radar.pairs} pair(s) of active branches and their bases")
        return ExitCode.OK
    for c in radar.clashes:
        other = f"its base {c.b}" if c.with_base else c.b
        print(f"{c.a} conflicts with {other}: {', '.join(c.files)}")
    return ExitCode.OK


def cmd_push(ctx: Context) -> int:
    ctx.log_name = "push"
    res = ops.push_branch(ctx.session, ctx.args.branch, remote=ctx.args.remote, sink=ctx.sink, cancel=ctx.cancel)
    ctx.renderer.close()
    print(f"{res.branch} pushed to {res.remote}")
    if res.pr_output:
        print(res.pr_output)
    return ExitCode.OK


def register(sub: Any) -> None:
    p = sub.add_parser("push", help="push a branch for review elsewhere (then merge.pr_command, if set)")
    p.add_argument("branch")
    p.add_argument("--remote", metavar="NAME", help="default: the branch's upstream remote, else origin")
    p.set_defaults(handler=cmd_push)
    p = sub.add_parser("conflicts", help="which active branches would conflict (with each other, with their base)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_conflicts)
    p = sub.add_parser("diff", help="what a branch changed against its base (committed, then uncommitted)")
    p.add_argument("branch")
    p.add_argument("--base", metavar="REF", help="compare with REF (default: the branch it was started from)")
    p.add_argument("--stat", action="store_true", help="files and commits only, no patch")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_diff)
    p = sub.add_parser("merge", help="land a branch on its base: merge, rebase or squash (shows what lands first)")
    landing_options(p)
    p.set_defaults(handler=cmd_merge)


def landing_options(p: Any) -> None:
    """``merge`` and ``pick`` land a branch the same way."""
    p.add_argument("branch")
    p.add_argument("--into", metavar="BASE", help="default: the branch it was started from")
    p.add_argument("--strategy", choices=("merge", "rebase", "squash"), default="merge")
    p.add_argument("-m", "--message", help="the merge or squash commit's message")
    p.add_argument("--commit-all", metavar="MSG", help="commit the branch's uncommitted work first, as MSG")
    p.add_argument("--yes", action="store_true", help="do not ask")
