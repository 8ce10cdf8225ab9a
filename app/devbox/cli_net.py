"""The CLI's egress commands: ``devbox net log|allow|deny BRANCH``: what an environment's
proxy answered and refused, and its allow list changed while it runs (core/ops/egress.py)."""

from __future__ import annotations

from typing import Any

from devbox.cli_common import Context, print_json
from devbox.core import ops
from devbox.core.errors import BadName, ExitCode

LOG_SCHEMA = 1  # net log --json: {"schema", "branch", "container", "policy", "refused", "connections"}


def cmd_net_log(ctx: Context) -> int:
    a = ctx.args
    if a.vm == bool(a.branch):
        raise BadName("net log takes BRANCH, or --vm for the VM's", "e.g. devbox net log my-branch")
    if a.follow and (a.vm or a.json):
        raise BadName("--follow is for an environment's log, as text", "devbox net log BRANCH --follow")
    log = ops.vm_net_log(ctx.session) if a.vm else ops.net_log(ctx.session, a.branch)
    if a.json:
        print_json({"schema": LOG_SCHEMA, "branch": log.branch, "container": log.container,
                    "policy": log.policy.as_json(), "refused": log.tally.refused,
                    "connections": [c.as_json() for c in log.connections]})  # fmt: skip
        return ExitCode.OK
    shown = [c for c in log.connections if c.refused or not a.refused]
    print(f"{log.branch}: egress {log.policy.describe()}; {log.tally.refused} refused of {log.tally.seen}")
    for c in shown:
        print(c.line())
    if a.follow:
        last = max((c.time for c in log.connections), default=0.0)
        for c in ops.follow_net_log(ctx.session, a.branch, ctx.cancel, after=last):
            if c.refused or not a.refused:
                print(c.line(), flush=True)
    return ExitCode.OK


def _change(ctx: Context, widen: bool) -> int:
    a = ctx.args
    ctx.log_name = "net-allow" if widen else "net-deny"
    change = ops.net_allow if widen else ops.net_deny
    res = change(ctx.session, a.branch, a.host, sink=ctx.sink)
    ctx.renderer.close()
    verb = "allowed" if widen else "no longer allowed"
    said = ", ".join(res.changed) or "nothing new"
    print(f"{res.branch}: {said} {verb}; egress {res.policy.describe()}")
    return ExitCode.OK


def cmd_net_allow(ctx: Context) -> int:
    return _change(ctx, True)


def cmd_net_deny(ctx: Context) -> int:
    return _change(ctx, False)


def register(sub: Any) -> None:
    net = sub.add_parser(
        "net", help="where an environment may connect: its proxy's log, its allow list"
    ).add_subparsers(dest="net_cmd", required=True)
    p = net.add_parser("log", help="what BRANCH's proxy answered and refused (egress = allow)")
    p.add_argument("branch", nargs="?")
    p.add_argument("--vm", action="store_true", help="the VM's proxy ([vm] egress = allow) instead")
    p.add_argument("--follow", action="store_true", help="then each request as it comes, until Ctrl-C")
    p.add_argument("--refused", action="store_true", help="only the refused ones")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_net_log)
    for name, handler, what in (("allow", cmd_net_allow, "widen"), ("deny", cmd_net_deny, "narrow")):
        p = net.add_parser(name, help=f"{what} BRANCH's allow list while it runs (kept across --recreate)")
        p.add_argument("branch")
        p.add_argument("host", nargs="+", help="pypi.org, *.example.com, host:8443")
        p.set_defaults(handler=handler)
