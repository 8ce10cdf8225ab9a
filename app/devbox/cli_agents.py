"""The CLI's agent commands: ``devbox agent start|attach|send|stop`` and ``devbox agents``.
They call the fleet operations (core/ops/fleet.py) like the dashboard will."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from devbox.cli_common import Context, egress_flags, failures, print_json
from devbox.core import git, labels, notify, ops
from devbox.core.errors import BadName, ExitCode, NotFound


def _prompt(args: argparse.Namespace) -> str | None:
    if args.prompt_file == "-" or args.prompt == "-":
        return sys.stdin.read().strip() or None
    if args.prompt_file:
        try:
            return Path(args.prompt_file).read_text().strip() or None
        except OSError as exc:
            raise NotFound(f"cannot read {args.prompt_file}: {exc.strerror}", "give a readable file") from None
    return str(args.prompt) if args.prompt else None


def cmd_agent_start(ctx: Context) -> int:
    a = ctx.args
    prompt = _prompt(a)
    agents = a.agent or ["claude"]
    if a.count is not None:
        return _start_copies(ctx, prompt, agents)
    if len(agents) > 1:
        raise BadName("several --agent for one agent", "give one, or --count N with one per copy")
    branch = a.branch or (ops.branch_from_prompt(prompt) if prompt else None)
    if branch is None:
        raise BadName("no branch and no prompt to name one after", "give BRANCH, or --prompt TEXT")
    git.check_branch_name(branch)
    ctx.log_name = "agent-start"
    if a.host == "auto":
        a.host, why = ops.pick_host(ctx.session, cancel=ctx.cancel)
        sys.stderr.write(f"devbox: --host auto: {why}\n")
    if a.host and a.host != "local":
        if a.vm:
            raise BadName("--vm and --host name two places", "give one")
        res = ops.host_agent_start(ctx.session, a.host, branch, prompt=prompt, agent=agents[0], from_ref=a.from_ref,
                                   egress=a.egress, allow=a.allow, sink=ctx.sink, cancel=ctx.cancel)  # fmt: skip
        ctx.renderer.close()
        print(f"{res.agent} started on {res.branch} ({res.container} on {a.host}); attach: devbox agent attach "
              f"{res.branch}")  # fmt: skip
        return ExitCode.OK
    if a.vm:
        if a.allow:
            raise BadName("--allow names what one environment reaches; the VM's list is its own",
                          "set [vm] allow in devbox.toml, then ./vm-up.sh")  # fmt: skip
        res = ops.vm_agent_start(ctx.session, branch, prompt=prompt, agent=agents[0], from_ref=a.from_ref,
                                 egress=a.egress, sink=ctx.sink, cancel=ctx.cancel)  # fmt: skip
    else:
        res = ops.agent_start(ctx.session, branch, prompt=prompt, agent=agents[0], from_ref=a.from_ref,
                              egress=a.egress, allow=a.allow, sink=ctx.sink, cancel=ctx.cancel)  # fmt: skip
    ctx.renderer.close()
    vm = "--vm " if a.vm else ""
    print(f"{res.agent} started on {res.branch} ({res.container}); attach: devbox agent attach {vm}{res.branch}")
    return ExitCode.OK


def _start_copies(ctx: Context, prompt: str | None, agents: list[str]) -> int:
    a = ctx.args
    if a.vm:
        raise BadName("--count runs each copy in a container of its own", "drop --vm (one VM holds one checkout)")
    task = a.branch or (ops.branch_from_prompt(prompt) if prompt else None)
    if task is None:
        raise BadName("no task name and no prompt to name one after", "give TASK, or --prompt TEXT")
    ctx.log_name = "agent-start"
    res = ops.start_task(ctx.session, task, count=a.count, prompt=prompt, agents=agents, from_ref=a.from_ref,
                         egress=a.egress, allow=a.allow, sink=ctx.sink, cancel=ctx.cancel)  # fmt: skip
    ctx.renderer.close()
    for s in res.started:
        print(f"{s.agent} started on {s.branch} ({s.container})")
    print(f"{len(res.started)} copies of {task} from {res.base or res.base_commit[:12]}; "
          f"side by side: devbox compare {task}")  # fmt: skip
    return failures(res.failed)


def _on_host(ctx: Context) -> bool:
    return not ctx.args.vm and bool(ops.host_of(ctx.session, ctx.args.branch))


def cmd_agent_attach(ctx: Context) -> int:
    attach = ops.vm_agent_attach_argv if ctx.args.vm else ops.agent_attach_argv
    if _on_host(ctx):
        attach = ops.host_agent_attach_argv
    nested = bool(os.environ.get("TMUX"))  # inside the user's tmux: its prefix key comes first
    argv = attach(ctx.session, ctx.args.branch, nested=nested)
    if nested:
        sys.stderr.write(ops.attach_hint(nested) + "\n")
    sys.stdout.flush()
    os.execv(argv[0], argv)  # the terminal is tmux's until its detach key


def cmd_agent_send(ctx: Context) -> int:
    send = ops.vm_agent_send if ctx.args.vm else (ops.host_agent_send if _on_host(ctx) else ops.agent_send)
    text = " ".join(ctx.args.text)
    send(ctx.session, ctx.args.branch, text)
    print(f"sent to the agent on {ctx.args.branch}: {text[:60]}{'…' if len(text) > 60 else ''} (then Enter)")
    return ExitCode.OK


def cmd_agent_stop(ctx: Context) -> int:
    stop = ops.vm_agent_stop if ctx.args.vm else (ops.host_agent_stop if _on_host(ctx) else ops.agent_stop)
    stop(ctx.session, ctx.args.branch, sink=ctx.sink)
    return ExitCode.OK


def cmd_agents(ctx: Context) -> int:
    if ctx.args.watch:
        return _watch(ctx)
    rows = ops.list_agents(ctx.session)
    if ctx.args.json:
        print_json([r.to_json() for r in rows])
        return ExitCode.OK
    if not rows:
        print("no environments (devbox agent start BRANCH --prompt TEXT)")
        return ExitCode.OK
    now = time.time()
    print(f"{'BRANCH':<28} {'STATE':<10} {'FOR':>7}  {'ENV':<8} {'EGRESS':<7} MESSAGE")
    for r in rows:
        s = r.agent
        age = labels.duration(now - s.since) if s.since else "-"
        why = s.message or s.problem
        where = r.container_state + (f"@{r.host}" if r.host else "")
        fence = r.egress.mode if r.egress else "-"
        if r.egress and r.egress.refused:  # (devbox net log BRANCH: each one)
            why = f"{r.egress.badge()}; {why}" if why else r.egress.badge()
        print(f"{r.branch:<28} {s.state:<10} {age:>7}  {where:<8} {fence:<7} {why}")
    return ExitCode.OK


def _watch(ctx: Context) -> int:
    """Each transition as a line, and the same notifications as the dashboard, headless."""
    watcher = notify.Watcher()
    command = ctx.settings.notify_command
    in_tmux = bool(os.environ.get("TMUX"))
    tty = sys.stdout.isatty()
    while not ctx.cancel.is_set():
        moves = watcher.update(ops.list_agents(ctx.session))
        for m in moves:
            print(
                f"{time.strftime('%H:%M:%S')} {m.branch}: {m.before} -> {m.after}"
                + (f" ({m.message})" if m.message else ""),
                flush=True,
            )
        for m in watcher.alerts(moves):
            if tty:
                sys.stdout.write(notify.terminal_sequence(m, in_tmux=in_tmux))
                sys.stdout.flush()
            failed = notify.run_command(command, m)
            if failed:
                sys.stderr.write(f"devbox: {failed}\n")
        ctx.cancel.wait(POLL)
    return ExitCode.OK


POLL = 0.5  # seconds between looks at the state directories (a read of small files each)


def register(sub: Any) -> None:
    ag = sub.add_parser("agent", help="coding agents in their environments").add_subparsers(
        dest="agent_cmd", required=True
    )
    p = ag.add_parser("start", help="worktree + container, then the agent in tmux inside it (detached)")
    p.add_argument(
        "branch",
        nargs="?",
        metavar="BRANCH|TASK",
        help="default: agent/<words of the prompt>; with --count, the task: branches TASK-1..N",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument("--prompt", help="the task ('-': read it from stdin)")
    how.add_argument("--prompt-file", metavar="F", help="the task from a file ('-': stdin)")
    p.add_argument(
        "--agent",
        action="append",
        metavar="NAME",
        help="which [agents.NAME] (default: claude); with --count, once for all or once per copy",
    )
    p.add_argument("--count", type=int, metavar="N", help="N agents on one task, each its own branch and container")
    p.add_argument("--from", dest="from_ref", metavar="REF", help="a new branch starts at REF")
    p.add_argument("--vm", action="store_true", help="in the VM, over ssh (the branch is pushed there first)")
    p.add_argument("--host", metavar="NAME", help="in an environment on another host ([hosts.NAME], or auto)")
    egress_flags(p, "the agent's, allow: its own endpoints and [container] allow")
    p.set_defaults(handler=cmd_agent_start)
    p = ag.add_parser("attach", help="the agent's terminal (tmux; its detach key brings you back)")
    p.add_argument("branch")
    p.add_argument("--vm", action="store_true", help="the agent in the VM")
    p.set_defaults(handler=cmd_agent_attach)
    p = ag.add_parser("send", help="type TEXT (then Enter) into the agent")
    p.add_argument("branch")
    p.add_argument("text", nargs="+")
    p.add_argument("--vm", action="store_true", help="the agent in the VM")
    p.set_defaults(handler=cmd_agent_send)
    p = ag.add_parser("stop", help="end the agent (the worktree and container stay)")
    p.add_argument("branch")
    p.add_argument("--vm", action="store_true", help="the agent in the VM")
    p.set_defaults(handler=cmd_agent_stop)
    p = sub.add_parser("agents", help="every environment and its agent's state, most urgent first")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", action="store_true", help="print each change and notify (notify.command) until Ctrl-C")
    p.set_defaults(handler=cmd_agents)
