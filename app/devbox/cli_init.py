"""``devbox init`` (set devbox up in any git repository) and ``devbox init --check`` (does
the repository's copy of what devbox relies on match the installed templates). No session:
the repository has no devbox.toml yet; ``ops.init_project`` does the work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devbox.cli_common import Context
from devbox.core import ops
from devbox.core.errors import ExitCode

DIFFERS = 1  # `init --check`: like diff(1), 1 says the files differ


def cmd_init(ctx: Context) -> int:
    a = ctx.args
    start = Path(a.repo).expanduser() if a.repo else Path.cwd()
    if a.check:
        res = ops.check_templates(start)
        for p in res.differs:
            print(f"differs from the installed template: {p}")
        for p in res.missing:
            print(f"missing (devbox relies on it): {p}")
        if res.note:
            print(res.note)
        if res.ok:
            print(f"{len(res.same)} file(s) devbox relies on match the installed templates")
            return ExitCode.OK
        print("to take the installed ones: devbox init --force (your versions stay as FILE.orig)")
        return DIFFERS
    done = ops.init_project(start, with_vm=a.with_vm, force=a.force, base=a.base or "", sink=ctx.renderer,
                                 cancel=ctx.cancel)  # fmt: skip
    ctx.renderer.close()
    if not done.written and not done.replaced:
        print(f"devbox is set up in {done.root} already: nothing changed")
        return ExitCode.OK
    for p in done.written:
        print(f"wrote {p}")
    for p in done.replaced:
        print(f"replaced {p} (yours is {p}.orig)")
    print(f"next: commit them (git add -A && git commit -m 'devbox'), then {done.next_command}")
    return ExitCode.OK


def register(sub: Any) -> None:
    p = sub.add_parser("init", help="set devbox up in this git repository: devbox.toml, bootc/, the shims")
    p.add_argument("--with-vm", action="store_true", help="also terraform/ and the vm-*.sh shims (VM mode)")
    p.add_argument("--force", action="store_true", help="replace files that differ (each kept as FILE.orig)")
    p.add_argument("--base", metavar="IMAGE", help="build FROM a team's shared devbox image (image.base)")
    p.add_argument("--check", action="store_true", help="compare the entrypoint, hooks and terraform/ with "
                   "the installed templates")  # fmt: skip
    p.set_defaults(handler=cmd_init, sessionless=True)
