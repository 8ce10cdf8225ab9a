"""The CLI's side of several agents on one task: ``devbox compare TASK`` (the copies side by
side, ``--check`` runs review.check_command in each first) and ``devbox pick BRANCH``
(land one copy like ``devbox merge``, then tear the other copies down, naming what each
would lose). They call core/ops/tasks.py like the dashboard's Compare view does."""

from __future__ import annotations

import sys
from typing import Any

from devbox.cli_common import Context, print_json
from devbox.cli_review import land, landing_options
from devbox.cli_vm import confirm
from devbox.core import ops
from devbox.core.errors import ExitCode, NotFound, Refused

WIDEST = 34  # a column's width at most


def cmd_compare(ctx: Context) -> int:
    a = ctx.args
    if a.check:
        ctx.log_name = "check"
        ops.run_checks(ctx.session, a.task, sink=ctx.sink, cancel=ctx.cancel)
        ctx.renderer.close()
    cmp = ops.compare(ctx.session, a.task)
    if a.json:
        print_json(cmp.to_json())
        return ExitCode.OK
    copies = "1 copy" if len(cmp.candidates) == 1 else f"{len(cmp.candidates)} copies"
    print(f"{cmp.task}: {copies} from {cmp.base}")
    print(table(cmp))
    for c in cmp.candidates:
        print(f"\n{c.branch}: {len(c.commits)} commit(s)")
        for commit in c.commits:
            print(f"  {commit.sha[:10]} {commit.subject}")
        if c.check is not None and c.check.tail:
            print("  check output (last lines):")
            for line in c.check.tail[-5:]:
                print(f"    {line}")
    if not cmp.check_command:
        print('\nno check configured (review.check_command in devbox.toml, e.g. ["make", "test"])')
    best = next((c for c in cmp.candidates if c.check is not None and c.check.passed and not c.check.stale),
                cmp.candidates[0])  # fmt: skip
    print(f"\npick one: devbox pick {best.branch} (merges it, then offers to remove the others)")
    return ExitCode.OK


def rows(cmp: ops.Comparison) -> list[tuple[str, list[str]]]:
    """The comparison as (label, one cell per copy) rows: the CLI's table."""
    cs = cmp.candidates

    def check(c: ops.Candidate) -> str:
        return c.check.label() if c.check is not None else ("not run" if cmp.check_command else "-")

    return [
        ("", [c.branch for c in cs]),
        ("agent", [f"{c.agent or '-'} ({c.agent_state})" for c in cs]),
        ("container", [c.container_state for c in cs]),
        ("commits", [str(len(c.commits)) for c in cs]),
        ("files", [f"{c.files} (+{c.added} -{c.deleted}" + (f", {c.binary} binary)" if c.binary else ")") for c in cs]),
        ("uncommitted", [str(len(c.uncommitted)) if c.uncommitted else "-" for c in cs]),
        ("conflicts", [", ".join(c.conflicts) if c.conflicts else "none" for c in cs]),
        ("check", [check(c) for c in cs]),
    ]


def table(cmp: ops.Comparison) -> str:
    grid = rows(cmp)
    label_w = max(len(label) for label, _ in grid)
    widths = [min(WIDEST, max(len(cells[i]) for _, cells in grid)) for i in range(len(cmp.candidates))]
    lines = []
    for label, cells in grid:
        shown = [
            (cell if len(cell) <= w else cell[: w - 1] + "…").ljust(w) for cell, w in zip(cells, widths, strict=True)
        ]
        lines.append(f"{label:<{label_w}}  " + "  ".join(shown).rstrip())
    return "\n".join(lines)


def cmd_pick(ctx: Context) -> int:
    a = ctx.args
    task = ops.task_of(ctx.session, a.branch)
    if not task:
        raise NotFound(f"{a.branch} is not a copy of a task", f"land it with: devbox merge {a.branch}")
    if land(ctx) is None:
        return ExitCode.REFUSED
    plans = ops.discard_plan(ctx.session, task, a.branch)
    if not plans:
        return ExitCode.OK
    lines = [f"the other copies of {task} would lose:"]
    for p in plans:
        lines += [f"  {p.branch}:", *(f"    {x}" for x in p.losses)]
    names = [p.branch for p in plans]
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    if not a.discard_others and (a.yes or not interactive):
        print("\n".join(lines))
        print(f"kept them; remove them with: devbox pick {a.branch} --discard-others, or devbox worktree remove "
              f"--force --delete-branch BRANCH")  # fmt: skip
        return ExitCode.OK
    if not a.yes:
        if not interactive:
            raise Refused(f"removing {', '.join(names)} needs confirmation", "run it in a terminal, or pass --yes")
        if not confirm(f"Remove {', '.join(names)}?", lines):
            print(f"kept {', '.join(names)}")
            return ExitCode.OK
    else:
        print("\n".join(lines))
    ctx.log_name = "discard"
    gone = ops.discard(ctx.session, names, sink=ctx.sink, cancel=ctx.cancel)
    ctx.renderer.close()
    print("removed " + ", ".join(gone.what))
    return ExitCode.OK


def register(sub: Any) -> None:
    p = sub.add_parser("compare", help="the copies of a task side by side (agent start TASK --count N)")
    p.add_argument("task")
    p.add_argument("--check", action="store_true", help="first run review.check_command in each copy's environment")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_compare)
    p = sub.add_parser("pick", help="land one copy of a task on its base, then offer to remove the others")
    landing_options(p)
    p.add_argument("--discard-others", action="store_true", help="then remove the other copies (asked unless --yes)")
    p.set_defaults(handler=cmd_pick)
