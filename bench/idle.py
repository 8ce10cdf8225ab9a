"""What an idle dashboard costs: CPU of ``devbox-tui`` and of the podman service while
nobody touches it, with N agents (default 12) in their environments.

Run: .venv/bin/python bench/idle.py [--agents N] [--seconds S]
N real worktrees and N running containers (each with a tmux server and its state tmpfs,
its agent done, as devbox's own are); the real ``devbox-tui`` runs in tmux at 160x45 on
the fleet view (the Preview tab on show, as it starts). It measures, over S seconds, the
CPU time (user + system, its tools included) of the dashboard and of the podman service
as a share of one core, twice: in use (a key every 2 s: the quick poll, the Preview of the
row that moves) and then left alone. Baselines measured in the same run: the dashboard in
use, and a bare Textual app of the same size showing a table of N rows (the floor of being
on screen at all). Targets: idle under half of in use and under 5% of a core; the podman
service under 2% while the dashboard idles. Everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from _project import ROOT, bench_project

from devbox.core.containers import AGENT_STATE_MOUNT, LABEL_BRANCH, LABEL_REPO, LABEL_WORKTREE

from conftest import BASE_IMAGE, Project

HOOK = ROOT / "bootc" / "agent-hook.sh"
BARE_APP = """
from textual.app import App
from textual.widgets import DataTable, Footer, Header
class Bare(App):
    def compose(self):
        yield Header()
        yield DataTable()
        yield Footer()
    def on_mount(self):
        t = self.query_one(DataTable)
        t.add_columns("branch", "agent", "env", "changes", "CPU", "mem", "last message")
        for i in range(int(__import__("sys").argv[1])):
            t.add_row(f"a{i:02d}", "done 3m", "running", "+1 -0 1f", "0%", "1M", "turn finished")
Bare().run()
"""


def cpu_seconds(pid: int) -> float:
    """User + system time of ``pid`` and of the children it has waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def podman_service_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "podman system service"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def measure(
    argv: list[str], env: dict[str, str], cwd: Path, warmup: float, seconds: float, *, keys: bool = False
) -> tuple[float, float]:
    """(share of a core the program used, the podman service's) over ``seconds``; ``keys``:
    a key every 2 s meanwhile (Down, Up: someone reading the fleet)."""
    socket = f"devbox-bench-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    subprocess.run([*tmux, "new-session", "-d", "-s", "idle", "-x", "160", "-y", "45", *argv], env=env, cwd=cwd,
                   check=True)  # fmt: skip
    try:
        pane_pid = int(subprocess.run([*tmux, "display-message", "-p", "-t", "idle", "#{pane_pid}"],
                                      capture_output=True, text=True, check=True).stdout)  # fmt: skip
        time.sleep(warmup)
        services = podman_service_pids()
        app0, svc0, t0 = cpu_seconds(pane_pid), sum(cpu_seconds(p) for p in services), time.monotonic()
        end = time.monotonic() + seconds
        while keys and time.monotonic() < end:
            for key in ("Down", "Up"):
                subprocess.run([*tmux, "send-keys", "-t", "idle", key], check=True)
                time.sleep(1.0)
        time.sleep(max(0.0, end - time.monotonic()))
        app1, svc1, t1 = cpu_seconds(pane_pid), sum(cpu_seconds(p) for p in services), time.monotonic()
        screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", "idle"], capture_output=True, text=True).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
    if "Traceback" in screen:
        raise SystemExit(f"{argv[0]} failed:\n{screen}")
    return (app1 - app0) / (t1 - t0), (svc1 - svc0) / (t1 - t0)


def make_fleet(podman: str, proj: Project, scratch: Path, agents: int) -> None:
    """``agents`` worktrees with a commit each, and their running containers, each agent done."""
    labels = ["--label", f"{LABEL_REPO}={proj.root}", "--label", "devbox.bench=idle"]
    for i in range(agents):
        branch = f"a{i:02d}"
        wt = scratch / "wts" / branch
        subprocess.run(["git", "-C", str(proj.root), "worktree", "add", "-q", "-b", branch, str(wt)], check=True)
        (wt / f"{branch}.txt").write_text("work\n")
        subprocess.run(["git", "-C", str(wt), "add", "-A"], check=True)
        subprocess.run(["git", "-C", str(wt), "commit", "-qm", f"{branch} works"], check=True)
        name = f"devbox-bench-{branch}-{os.getpid()}"
        subprocess.run([podman, "run", "-d", "--name", name, *labels, "--label", f"{LABEL_BRANCH}={branch}",
                        "--label", f"{LABEL_WORKTREE}={wt}", "--tmpfs", f"{AGENT_STATE_MOUNT}:size=16m",
                        BASE_IMAGE, "sh", "-c", "tmux -u new-session -d -s devbox-agent sleep 2147483647; "
                        "exec sleep 2147483647"], check=True, capture_output=True)  # fmt: skip
        pid = subprocess.run([podman, "inspect", "--format", "{{.State.Pid}}", name], check=True,
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
        state = Path(f"/proc/{pid}/root{AGENT_STATE_MOUNT}")
        for payload in ({"hook_event_name": "UserPromptSubmit", "prompt": "go"}, {"hook_event_name": "Stop"}):
            subprocess.run(["sh", str(HOOK)], input=json.dumps(payload).encode(), check=True,
                           env={**os.environ, "DEVBOX_AGENT_STATE": str(state)})  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    tui = shutil.which("devbox-tui", path=str(Path(sys.executable).parent))
    if tui is None:
        sys.exit("devbox-tui is not installed in this environment (pip install -e .)")
    idle_after = 30.0  # devbox/tui/app.py IDLE_AFTER: the dashboard slows its poll after this
    with bench_project("idle") as (podman, proj, scratch):
        make_fleet(podman, proj, scratch, args.agents)
        env = {**proj.env, "DEVBOX_REPO": str(proj.root), "TERM": "xterm-256color"}
        bare, _ = measure([sys.executable, "-c", BARE_APP, str(args.agents)], env, proj.root, 3, args.seconds)
        used, used_svc = measure([tui], env, proj.root, 8, args.seconds, keys=True)
        idle, idle_svc = measure([tui], env, proj.root, idle_after + 5, args.seconds)
    print(f"{args.agents} agents, {args.seconds:.0f} s each (shares of one core; CPU of the process and its tools)")
    print(f"floor: a bare Textual app with a {args.agents}-row table:  {bare * 100:6.1f}%")
    print(
        f"baseline: devbox-tui in use (a key every 2 s):   {used * 100:6.1f}%   podman service: {used_svc * 100:.1f}%"
    )
    print(f"devbox-tui left alone (after {idle_after:.0f} s):            {idle * 100:6.1f}%   podman service: "
          f"{idle_svc * 100:.1f}%")  # fmt: skip
    ratio = idle / used if used else 0.0
    verdict = "OK" if ratio < 0.5 else "MISSED"
    print(f"ratio idle / in use:                             {ratio:6.2f}   target < 0.5: {verdict}")
    print(f"idle under 5% of a core:                                  {'OK' if idle < 0.05 else 'MISSED'}")
    print(f"podman service under 2% while idle:                       {'OK' if idle_svc < 0.02 else 'MISSED'}")


if __name__ == "__main__":
    main()
