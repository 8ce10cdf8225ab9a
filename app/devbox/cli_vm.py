"""The CLI's VM-mode commands: ``devbox vm up|down|status``, ``devbox doctor`` (and the
transfers, which ride on the VM). Split from cli.py to keep each module one screenful of
concerns; the parser and ``main`` stay in cli.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from devbox.cli_common import Context, print_json
from devbox.core import labels, ops
from devbox.core.errors import ExitCode, Refused


def cmd_vm_up(ctx: Context) -> int:
    res = ops.vm_up(ctx.session, force_disk=ctx.args.force_disk, host=ctx.args.host, sink=ctx.sink, cancel=ctx.cancel)
    ctx.renderer.close()
    where = res.ip or "no address yet (./devbox vm status shows it once the VM has a lease)"
    print(f"{res.domain}: {where}")
    return ExitCode.OK


def confirm(question: str, lines: list[str]) -> bool:
    """Ask on the terminal; never when there is none (the caller refuses instead)."""
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_vm_down(ctx: Context) -> int:
    loss = ops.vm_loss(ctx.session)
    if loss.empty:
        print(f"no VM to remove ({ops.domain_name(ctx.session)} does not exist)")
        return ExitCode.OK
    lines = ["This removes:", *(f"  {line}" for line in loss.lines())]
    if not ctx.args.yes:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise Refused(
                f"removing {loss.domain or 'the VM volumes'} needs confirmation: " + "; ".join(loss.lines()),
                "run ./vm-down.sh in a terminal, or pass --yes",
            )
        if not confirm(f"Remove {loss.domain or 'them'}?", lines):
            print("kept: nothing removed")
            return ExitCode.REFUSED
    res = ops.vm_down(ctx.session, sink=ctx.sink, cancel=ctx.cancel)
    ctx.renderer.close()
    print(f"removed {res.domain or 'nothing'}" + (f" and {len(res.volumes)} volume(s)" if res.volumes else ""))
    return ExitCode.OK


def cmd_vm_status(ctx: Context) -> int:
    st = ops.vm_status(ctx.session)
    if ctx.args.json:
        print_json(st.to_json())
        return ExitCode.OK
    disk = st.disk.value
    if st.disk.problem:
        print(f"disk  {st.disk.problem.one_line()}")
    elif disk is not None:
        print(f"disk  {disk.path}: " + ("fresh" if disk.verdict.fresh else f"stale ({disk.verdict.reason})"))
    vm = st.vm.value
    if st.vm.problem:
        print(f"vm    {st.vm.problem.one_line()}")
    elif vm is None:
        print(f"vm    {st.domain}: not created")
    else:
        where = f" on {st.host}" if st.host else ""
        print(
            f"vm    {vm.name}{where}: {vm.state}, {vm.ip or 'no address'}, {vm.vcpus} vCPU, {vm.memory_mib} MiB, "
            f"up {labels.duration(vm.uptime())}, CPU {vm.cpu_seconds:.0f}s, cpu mode {vm.cpu_mode or 'default'}"
        )
    print("      " + ("fresh" if st.verdict.fresh else f"stale ({'; '.join(st.verdict.reasons)})"))
    return ExitCode.OK


def cmd_doctor(ctx: Context) -> int:
    return print_checks(ops.doctor(ctx.session), ctx.args.json)


def print_checks(checks: tuple[ops.Check, ...], as_json: bool) -> int:
    """``doctor`` and ``host check``: one line per check with its fix; exit 13 if one failed."""
    if as_json:
        print_json([{"check": c.name, "level": c.level, "found": c.found, "fix": c.fix} for c in checks])
    else:
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
        for c in checks:
            print(f"{mark[c.level]}  {c.name}: {c.found}" + (f" (fix: {c.fix})" if c.fix and c.level != "ok" else ""))
    return ExitCode.NOT_AVAILABLE if any(c.level == "fail" for c in checks) else ExitCode.OK


def cmd_vm_upgrade(ctx: Context) -> int:
    res = ops.vm_upgrade(ctx.session, reboot=not ctx.args.no_reboot, sink=ctx.sink, cancel=ctx.cancel)
    ctx.renderer.close()
    then = "the VM is rebooting into it" if res.rebooted else "reboot the VM to use it (./vm-ssh.sh sudo reboot)"
    print(f"{res.image} {res.image_id[:12]} staged with bootc {res.command}; {then}")
    return ExitCode.OK


def cmd_vm_ssh(ctx: Context) -> int:
    command = list(ctx.args.command or [])
    if command[:1] == ["--"]:
        command = command[1:]
    tty = sys.stdin.isatty() and sys.stdout.isatty() and not command
    return ops.vm_ssh(ctx.session, command, tty=tty)


def _synced(ctx: Context, res: Any) -> int:
    """The summary the core computed; a dry run's list only when the renderer has not shown
    it already (a terminal without -v keeps log lines in the live tail only)."""
    ctx.renderer.close()
    if res.dry_run and not ctx.renderer.shows_log:
        for line in res.changes:
            print(line)
    print(res.summary())
    return ExitCode.OK


def cmd_dir_push(ctx: Context) -> int:
    a = ctx.args
    res = ops.dir_push(
        ctx.session, Path(a.local), a.remote, delete=a.delete, dry_run=a.dry_run,
        allow_outside_home=a.allow_outside_home, include_git=a.include_git, include_ignored=a.include_ignored,
        sink=ctx.sink, cancel=ctx.cancel,
    )  # fmt: skip
    return _synced(ctx, res)


def cmd_dir_pull(ctx: Context) -> int:
    a = ctx.args
    res = ops.dir_pull(
        ctx.session, a.remote, Path(a.local) if a.local else None, delete=a.delete, dry_run=a.dry_run,
        force=a.force, allow_outside_home=a.allow_outside_home, include_git=a.include_git,
        into_checkout=a.into_checkout, sink=ctx.sink, cancel=ctx.cancel,
    )  # fmt: skip
    return _synced(ctx, res)


def _moved(ctx: Context, m: Any, ref: str) -> int:
    ctx.renderer.close()
    print(f"{ref}: {m.before[:12] or '(new)'} -> {m.after[:12]}, {m.commits} commit(s), {len(m.files)} file(s)"
          + ("; fast-forwarded" if m.fast_forwarded else ""))  # fmt: skip
    return ExitCode.OK


def cmd_git_push(ctx: Context) -> int:
    m = ops.git_push(ctx.session, ctx.args.branch, sink=ctx.sink, cancel=ctx.cancel)
    return _moved(ctx, m, f"vm:{m.branch}")


def cmd_git_pull(ctx: Context) -> int:
    m = ops.git_pull(ctx.session, ctx.args.branch, ff=ctx.args.ff, sink=ctx.sink, cancel=ctx.cancel)
    return _moved(ctx, m, f"vm/{m.branch}")


def register(sub: Any) -> None:
    """Add ``vm`` and ``doctor`` to the top-level subparsers."""
    vm = sub.add_parser("vm", help="VM mode: the image as a KVM VM").add_subparsers(dest="vm_cmd", required=True)
    p = vm.add_parser("up", help="image, disk and VM, each only if stale (says why)")
    p.add_argument("--force-disk", action="store_true", help="rebuild the disk even when it is fresh")
    p.add_argument("--host", metavar="NAME", help="make the VM on this [hosts.NAME] (or local); default: where it is")
    p.set_defaults(handler=cmd_vm_up)
    p = vm.add_parser("down", help="destroy the VM and its volumes (asks first, naming what is lost)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.set_defaults(handler=cmd_vm_down)
    p = vm.add_parser("status", help="the disk and the VM: state, address, freshness with reasons")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_vm_status)
    p = vm.add_parser("upgrade", help="the image into the running VM: bootc switch/upgrade, then reboot (/var kept)")
    p.add_argument("--no-reboot", action="store_true", help="stage it only; it boots at the next reboot")
    p.set_defaults(handler=cmd_vm_upgrade)
    p = vm.add_parser("ssh", help="a shell in the VM, or one command (its exit code passed through)")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(handler=cmd_vm_ssh)
    for verb, helptext in (("push", "copy LOCAL_DIR into the VM (rsync)"), ("pull", "copy REMOTE_DIR out of the VM")):
        p = vm.add_parser(f"dir-{verb}", help=helptext)
        if verb == "push":
            p.add_argument("local", metavar="LOCAL_DIR")
            p.add_argument("remote", metavar="REMOTE_DIR", nargs="?", help="default: LOCAL_DIR's name, in the home")
            p.add_argument("--include-ignored", action="store_true", help="also what .gitignore leaves out")
        else:
            p.add_argument("remote", metavar="REMOTE_DIR")
            p.add_argument("local", metavar="LOCAL_DIR", nargs="?", help="default: REMOTE_DIR's name, here")
            p.add_argument("--force", action="store_true", help="also overwrite files with uncommitted changes")
            p.add_argument("--into-checkout", action="store_true", help="LOCAL_DIR may be a git checkout's root")
        p.add_argument("--include-git", action="store_true", help="also .git directories (never by default)")
        p.add_argument("--delete", action="store_true", help="delete what the source lacks (listed first)")
        p.add_argument("--dry-run", "-n", action="store_true", help="show what would change; change nothing")
        p.add_argument("--allow-outside-home", action="store_true", help="allow a VM path outside the home")
        p.set_defaults(handler=cmd_dir_push if verb == "push" else cmd_dir_pull)
    p = vm.add_parser("git-push", help="push BRANCH (default: the current one) to ~/repos/<repo> in the VM")
    p.add_argument("branch", nargs="?")
    p.set_defaults(handler=cmd_git_push)
    p = vm.add_parser("git-pull", help="fetch BRANCH from the VM into vm/BRANCH (never moves yours without --ff)")
    p.add_argument("branch", nargs="?")
    p.add_argument("--ff", action="store_true", help="fast-forward the local branch when that is a fast-forward")
    p.set_defaults(handler=cmd_git_pull)
    p = sub.add_parser("doctor", help="check this host for VM mode, with a fix for each problem")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_doctor)
