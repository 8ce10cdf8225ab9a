"""The CLI's hosts: ``devbox host list`` (every machine devbox can use, each asked at once;
a host that is down says so with its fix) and ``devbox host check NAME`` (what devbox needs
there, like ``doctor``). They call core/ops/hostlist.py."""

from __future__ import annotations

from typing import Any

from devbox.cli_common import Context, print_json
from devbox.cli_vm import print_checks
from devbox.core import labels, ops
from devbox.core.errors import ExitCode


def cmd_host_list(ctx: Context) -> int:
    rows = ops.host_list(ctx.session, cancel=ctx.cancel)
    if ctx.args.json:
        print_json([r.to_json() for r in rows])
        return ExitCode.OK
    for r in rows:
        where = r.ssh or "this machine"
        if not r.up:
            print(f"{r.name:<12} down  {where}: {r.problem}" + (f" (fix: {r.fix})" if r.fix else ""))
            continue
        facts = f"podman {r.podman or '-'}, {r.cpus} CPUs, {labels.size(r.mem_available)} free, {r.environments} env(s)"
        print(f"{r.name:<12} up    {where}: {facts}" + (f"; {r.problem} (fix: {r.fix})" if r.problem else ""))
    return ExitCode.OK


def cmd_host_check(ctx: Context) -> int:
    return print_checks(ops.host_check(ctx.session, ctx.args.name, cancel=ctx.cancel), ctx.args.json)


def register(sub: Any) -> None:
    h = sub.add_parser("host", help="other machines ([hosts.NAME] in devbox.toml)").add_subparsers(
        dest="host_cmd", required=True
    )
    p = h.add_parser("list", help="every host: reachable?, podman, CPUs, free memory, devbox environments")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_host_list)
    p = h.add_parser("check", help="what devbox needs on host NAME (ssh, podman service, git, disk), with fixes")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_host_check)
