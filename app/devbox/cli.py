"""The headless face: ``devbox <command>``. Parses arguments, calls the core, renders.

Exit codes come from devbox.core.errors.ExitCode and nowhere else; no traceback reaches a
user (an unexpected exception prints one line and points at ``DEVBOX_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn

from devbox import __version__
from devbox.cli_common import Context, egress_flags, failures, print_json
from devbox.core import early_plan, labels, ops, plan_launch
from devbox.core.containers import Container
from devbox.core.errors import BadName, Cancelled, DevboxError, ExitCode
from devbox.render import PlainRenderer, Renderer, make_renderer


# commands -----------------------------------------------------------------------------
def cmd_image_build(ctx: Context) -> int:
    ops.build_image(ctx.session, force=ctx.args.force, pull=ctx.args.pull, sink=ctx.sink, cancel=ctx.cancel)
    return ExitCode.OK


def cmd_image_status(ctx: Context) -> int:
    st = ops.image_status(ctx.session)
    if ctx.args.json:
        print_json(st.to_json())
    else:
        print(st.line())
    return ExitCode.OK


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _exec(argv: list[str]) -> NoReturn:
    """Hand the terminal to podman (replaces this process)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def cmd_start_work(ctx: Context) -> int:
    a = ctx.args
    if len(a.branch) > 1:
        return _start_several(ctx)
    a.branch = a.branch[0]
    if a.host == "auto":
        a.host, why = ops.pick_host(ctx.session, cancel=ctx.cancel)
        sys.stderr.write(f"devbox: --host auto: {why}\n")
    if a.host and a.host != "local":
        return _start_on_host(ctx)
    policy = ops.choose_policy(ctx.session, mode=a.egress, allow=a.allow)
    res = ops.start_work(
        ctx.session, a.branch, from_ref=a.from_ref, recreate=a.recreate, sink=ctx.sink, cancel=ctx.cancel,
        policy=policy,
    )  # fmt: skip
    ctx.renderer.close()
    command = a.cmd or [ctx.settings.shell, "-l"]
    if a.detach or not _interactive():
        if a.cmd and not a.detach:
            return _exec(ops.attach_argv(ctx.session, res.container, command, tty=False))
        print(res.container.name)
        return ExitCode.OK
    return _exec(ops.attach_argv(ctx.session, res.container, command, tty=True))


def _start_several(ctx: Context) -> int:
    """``start-work A B C --detach``: every environment at once, a line each (its container's
    name, or why it did not start); the exit code is the first failure's."""
    a = ctx.args
    if not a.detach or a.cmd or a.host:
        raise BadName("several branches start detached, here, without --cmd",
                      "add --detach (then attach to one: ./start-work BRANCH)")  # fmt: skip
    policy = ops.choose_policy(ctx.session, mode=a.egress, allow=a.allow)
    res = ops.start_several(ctx.session, a.branch, from_ref=a.from_ref, recreate=a.recreate, sink=ctx.sink,
                            cancel=ctx.cancel, policies={b: policy for b in a.branch} if policy else None)  # fmt: skip
    ctx.renderer.close()
    for r in res.started:
        print(r.container.name)
    return failures(res.failed)


def _start_on_host(ctx: Context) -> int:
    a = ctx.args
    if a.recreate:
        raise BadName("--recreate is not there yet for --host", "remove it there first: devbox worktree remove BRANCH")
    policy = ops.choose_policy(ctx.session, mode=a.egress, allow=a.allow)
    res = ops.host_start_work(ctx.session, a.host, a.branch, from_ref=a.from_ref, sink=ctx.sink, cancel=ctx.cancel,
                              policy=policy)  # fmt: skip
    ctx.renderer.close()
    command = a.cmd or [ctx.settings.shell, "-l"]
    if a.detach or not _interactive():
        if a.cmd and not a.detach:
            return _exec(ops.host_attach_argv(ctx.session, res, command, tty=False))
        print(f"{res.container} on {res.host} ({res.worktree})")
        return ExitCode.OK
    return _exec(ops.host_attach_argv(ctx.session, res, command, tty=True))


def cmd_fetch(ctx: Context) -> int:
    res = ops.fetch(ctx.session, ctx.args.branch, ff=ctx.args.ff, sink=ctx.sink, cancel=ctx.cancel)
    ctx.renderer.close()
    if not res.host:  # a local environment: onto the branch itself
        print(f"{res.branch} at {res.after[:12]}: {res.commits} new commit(s) from its environment")
        return ExitCode.OK
    moved = f"; {res.branch} fast-forwarded" if res.forwarded else ""
    print(f"{res.ref} at {res.after[:12]}: {res.commits} commit(s) from {res.host} not on your {res.branch}{moved}")
    return ExitCode.OK


def cmd_status(ctx: Context) -> int:
    st = ops.status(ctx.session, cancel=ctx.cancel)
    if ctx.args.json:
        print_json(st.to_json())
        return ExitCode.OK
    img = st.image.value
    print(f"image      {img.line() if img else st.image.problem.one_line() if st.image.problem else ''}")
    _print_worktrees(st.worktrees.value or ())
    if st.worktrees.problem:
        print(f"  ({st.worktrees.problem.one_line()})")
    _print_containers(st.containers.value or (), st.image_id)
    if st.containers.problem:
        print(f"  ({st.containers.problem.one_line()})")
    return ExitCode.OK


def _print_worktrees(rows: Sequence[ops.WorktreeRow]) -> None:
    print("worktrees")
    for r in rows:
        s = r.state
        sync = "" if s.ahead is None else f" +{s.ahead}/-{s.behind}"
        cont = f"  [{r.container.name} {r.container.state}]" if r.container else ""
        hint = labels.worktree_hint(s)
        state = labels.worktree_state(s) + (f" ({hint})" if hint else "")
        print(f"  {r.worktree.label:<24} {state}{sync}  {r.worktree.path}{cont}")


def _print_containers(conts: Sequence[Container], current: str | None) -> None:
    print("containers" + ("" if conts else "  (none)"))
    for c in conts:
        stale = "  (older image: ./start-work --recreate)" if c.stale(current) else ""
        limits = c.limits.describe() if c.limits else "made without limits or its own git: ./start-work --recreate"
        print(f"  {c.name:<48} {c.state:<8} {c.branch}{stale}  [{limits}]")


def cmd_worktree_list(ctx: Context) -> int:
    listed = ops.list_worktrees(ctx.session, cancel=ctx.cancel)
    if listed.containers.problem:
        sys.stderr.write(f"devbox: containers not shown: {listed.containers.problem.one_line()}\n")
    if ctx.args.json:
        print_json([r.to_json() for r in listed.rows])
    else:
        _print_worktrees(listed.rows)
    return ExitCode.OK


def cmd_worktree_add(ctx: Context) -> int:
    wt = ops.add_worktree(ctx.session, ctx.args.branch, from_ref=ctx.args.from_ref, sink=ctx.sink, cancel=ctx.cancel)
    ctx.renderer.close()
    print(wt.path)
    return ExitCode.OK


def cmd_worktree_remove(ctx: Context) -> int:
    a = ctx.args
    if ops.host_of(ctx.session, a.ref):
        gone = ops.host_remove(ctx.session, a.ref, force=a.force, sink=ctx.sink, cancel=ctx.cancel)
        ctx.renderer.close()
        print("removed " + ", ".join(gone))
        return ExitCode.OK
    ops.remove_worktree(
        ctx.session, a.ref, force=a.force, delete_branch=a.delete_branch, sink=ctx.sink, cancel=ctx.cancel
    )
    return ExitCode.OK


def cmd_container_list(ctx: Context) -> int:
    listed = ops.list_containers(ctx.session)
    if ctx.args.json:
        print_json([c.to_json(listed.image_id) for c in listed.containers])
    else:
        _print_containers(listed.containers, listed.image_id)
    return ExitCode.OK


def cmd_container_stop(ctx: Context) -> int:
    ops.stop_container(ctx.session, ctx.args.ref, sink=ctx.sink, cancel=ctx.cancel)
    return ExitCode.OK


def cmd_container_rm(ctx: Context) -> int:
    removed = ops.remove_container(ctx.session, ctx.args.ref, force=ctx.args.force, sink=ctx.sink, cancel=ctx.cancel)
    ctx.renderer.close()
    print("removed " + ", ".join(removed.what))
    return ExitCode.OK


def cmd_container_exec(ctx: Context) -> int:
    c = ops.find_container(ctx.session, ctx.args.ref)
    command = ctx.args.command or [ctx.settings.shell, "-l"]
    if command and command[0] == "--":
        command = command[1:] or [ctx.settings.shell, "-l"]
    return _exec(ops.attach_argv(ctx.session, c, command, tty=_interactive()))


def cmd_disk_build(ctx: Context) -> int:
    ops.build_disk(ctx.session, force=ctx.args.force, sink=ctx.sink, cancel=ctx.cancel)
    return ExitCode.OK


def cmd_disk_status(ctx: Context) -> int:
    st = ops.disk_status(ctx.session)
    if ctx.args.json:
        print_json(st.to_json())
    else:
        print(f"{st.path}: " + ("fresh" if st.verdict.fresh else f"stale ({st.verdict.reason})"))
    return ExitCode.OK


# parser -------------------------------------------------------------------------------
Handler = Callable[[Context], int]


# the top-level commands each cli_* module registers (a test checks this against them): a
# command line builds only its own command's parser and imports only its module; the full
# parser (help, a mistyped command) is built when the command is none of these
OWN = ("image", "start-work", "fetch", "status", "worktree", "container", "disk")
ELSEWHERE = {
    "cli_vm": ("vm", "doctor"),
    "cli_agents": ("agent", "agents"),
    "cli_review": ("push", "conflicts", "diff", "merge"),
    "cli_compare": ("compare", "pick"),
    "cli_init": ("init",),
    "cli_hosts": ("host",),
    "cli_net": ("net",),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``'s command (all commands when ``argv`` is None or names none)."""
    parser = argparse.ArgumentParser(prog="devbox", description="Isolated dev environments from one bootc image.")
    parser.add_argument("--version", action="version", version=f"devbox {__version__}")
    parser.add_argument("--repo", help="project checkout (default: $DEVBOX_REPO or the nearest devbox.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show every log line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    word = _command(list(argv or ()))
    known = word in OWN or any(word in names for names in ELSEWHERE.values())
    if not known or word in OWN:
        _register_own(sub)
    for module, names in ELSEWHERE.items():
        if not known or word in names:
            importlib.import_module(f"devbox.{module}").register(sub)
    _globals_after_the_command(parser)
    return parser


def _command(argv: list[str]) -> str | None:
    """The command word of a command line (None when help is asked for before it)."""
    words = plan_launch.command_words(argv)[0]
    if not words:
        return None
    before = argv[: argv.index(words[0])]
    return None if "-h" in before or "--help" in before else words[0]


def _register_own(sub: Any) -> None:
    img = sub.add_parser("image", help="the bootc image").add_subparsers(dest="image_cmd", required=True)
    p = img.add_parser("build", help="build the image if bootc/ changed")
    p.add_argument("--force", action="store_true", help="rebuild without the layer cache (pulls a newer base too)")
    p.add_argument("--pull", action="store_true", help="pull newer base images, rebuild if one changed")
    p.set_defaults(handler=cmd_image_build)
    p = img.add_parser("status", help="is the image fresh, and if not, why")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_image_status)

    p = sub.add_parser("start-work", help="worktree + container for BRANCH, then attach")
    p.add_argument("branch", nargs="+", help="branch to work on (created from HEAD or --from if new); "
                   "several start at once with --detach")  # fmt: skip
    p.add_argument("--from", dest="from_ref", metavar="REF", help="start a new branch from REF")
    p.add_argument("--detach", action="store_true", help="leave the container running; print its name")
    p.add_argument("--recreate", action="store_true", help="replace the container (new image; /var kept)")
    p.add_argument(
        "--host",
        metavar="NAME",
        help="on another machine ([hosts.NAME]): the branch goes to a mirror "
        "there, the worktree and container are made there (devbox fetch brings commits back)",
    )
    p.add_argument("--cmd", nargs=argparse.REMAINDER, help="run this instead of a login shell (e.g. start-claude)")
    egress_flags(p, "[container] egress, open unless set")
    p.set_defaults(handler=cmd_start_work)
    p = sub.add_parser(
        "fetch", help="an environment's commits to this machine now (another host's: into refs/remotes/HOST/BRANCH)"
    )
    p.add_argument("branch")
    p.add_argument("--ff", action="store_true", help="then fast-forward BRANCH (a fast-forward only, clean worktree)")
    p.set_defaults(handler=cmd_fetch)

    p = sub.add_parser("status", help="image, worktrees and containers in one view")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)

    wt = sub.add_parser("worktree", help="git worktrees").add_subparsers(dest="wt_cmd", required=True)
    p = wt.add_parser("list", help="branch, path, dirty/clean, ahead/behind, container")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_worktree_list)
    p = wt.add_parser("add", help="create or reuse the worktree for BRANCH")
    p.add_argument("branch")
    p.add_argument("--from", dest="from_ref", metavar="REF")
    p.set_defaults(handler=cmd_worktree_add)
    p = wt.add_parser("remove", help="remove a worktree (refuses to lose work without --force)")
    p.add_argument("ref", metavar="BRANCH|PATH")
    p.add_argument("--force", action="store_true", help="also when dirty, unpushed or in use")
    p.add_argument("--delete-branch", action="store_true", help="delete the branch too")
    p.set_defaults(handler=cmd_worktree_remove)

    ct = sub.add_parser("container", help="devbox containers").add_subparsers(dest="ct_cmd", required=True)
    p = ct.add_parser("list", help="containers of this repo")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_container_list)
    p = ct.add_parser("stop", help="stop a container (by branch or name)")
    p.add_argument("ref", metavar="BRANCH|NAME")
    p.set_defaults(handler=cmd_container_stop)
    p = ct.add_parser("rm", help="remove a container and its /var and /etc volumes")
    p.add_argument("ref", metavar="BRANCH|NAME")
    p.add_argument("--force", action="store_true", help="also when running")
    p.set_defaults(handler=cmd_container_rm)
    p = ct.add_parser("exec", help="run a command (default: a login shell) in a container")
    p.add_argument("ref", metavar="BRANCH|NAME")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(handler=cmd_container_exec)

    dk = sub.add_parser("disk", help="the VM disk (qcow2 from the image)").add_subparsers(
        dest="disk_cmd", required=True
    )
    p = dk.add_parser("build", help="build the image, then the disk, each only if stale")
    p.add_argument("--force", action="store_true", help="build the disk even when it is fresh")
    p.set_defaults(handler=cmd_disk_build)
    p = dk.add_parser("status", help="is the disk fresh, and if not, why")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_disk_status)


def _globals_after_the_command(parser: argparse.ArgumentParser) -> None:
    """``--repo`` and ``-v`` also after the command (``./vm-up.sh -v`` is ``devbox vm up
    -v``): every command's parser takes them too, defaulting to what came before it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _globals_after_the_command(sub)
    if parser.get_default("handler") is not None:
        parser.add_argument("--repo", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _install_signals(cancel: threading.Event) -> None:
    """Ctrl-C, SIGTERM and SIGHUP (the terminal closed) all stop the operation the same
    way: ``cancel`` is set and the operation stops its tools and cleans up. After a hangup
    the terminal is gone (writing to it fails), so output goes to /dev/null from then on;
    the operation's log file under ``.build/logs/`` still records everything."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            _detach_from_terminal()
        if cancel.is_set() and signum == signal.SIGINT:  # a second Ctrl-C: stop waiting for a clean stop
            raise KeyboardInterrupt
        cancel.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


def _detach_from_terminal() -> None:
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    early_plan.prestart(argv)  # vm up's plan, when the entry point (devbox/entry.py) did not start it
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    # with --json, stdout is the document alone: what the operation reports goes to stderr
    json_out = getattr(args, "json", False)
    renderer: Renderer = PlainRenderer(out=sys.stderr) if json_out else make_renderer(verbose=args.verbose)
    ctx: Context | None = None
    try:
        ctx = Context(args, renderer, argv)
        _install_signals(ctx.cancel)
        handler: Handler = args.handler
        code = handler(ctx)
        if ctx.cancel.is_set():
            raise Cancelled()
        ctx.finish(f"devbox: done (exit {code})")
        return code
    except DevboxError as exc:
        _failed(ctx, renderer, exc)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _failed(ctx, renderer, Cancelled())
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:  # `devbox status --json | head`: the reader left; say nothing
        _silence_stdout()
        return 141  # 128 + SIGPIPE, as a Unix tool killed by the closed pipe
    except Exception as exc:  # a bug: one line, no traceback (unless asked)
        if os.environ.get("DEVBOX_DEBUG"):
            raise
        PlainRenderer().error(
            DevboxError(f"internal error: {type(exc).__name__}: {exc}", "rerun with DEVBOX_DEBUG=1 and report it")
        )
        return int(ExitCode.FAILURE)
    finally:
        early_plan.stop()  # a plan the command never took (it failed before) must not outlive it
        if ctx is not None:
            ctx.close()  # an ssh tunnel the session made must not outlive the command
        try:
            renderer.close()
        except BrokenPipeError:
            _silence_stdout()


def _failed(ctx: Context | None, renderer: Renderer, exc: DevboxError) -> None:
    """The one-line error, naming the operation's log file when there is one (and recorded in it)."""
    if ctx is not None:
        ctx.finish(f"devbox: {exc.one_line()} (exit {int(exc.exit_code)})")
    renderer.error(exc)  # names the log file (renderer.log_path) when the operation has one


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
