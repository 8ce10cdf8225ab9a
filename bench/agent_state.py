"""How fast an agent's state reaches the fleet: from the hook's write to the row's repaint.

Run: .venv/bin/python bench/agent_state.py [--agents N] [--rounds R]
N environments (real containers, running ``sleep``, each with its state directory: a
tmpfs at /run/devbox-agent, read through the container's root, as devbox's own are);
each round the image's real hook script (bootc/agent-hook.sh) writes one event for one of
them (a permission prompt, then a new prompt, alternately), and the time until the fleet
table of the live dashboard (headless, Pilot) shows the new state is measured.
Prints the median and worst latency (targets: median <= 250 ms, worst <= 1 s, with 20
agents) against the baseline measured in the same run: what the dashboard's status poll
alone would give (half its 2 s period plus one full refresh of git and podman).
Everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from _project import ROOT, bench_project

from devbox.core import ops
from devbox.core.containers import AGENT_STATE_MOUNT, LABEL_BRANCH, LABEL_REPO
from devbox.core.session import Devbox
from devbox.tui.app import POLL, make_app
from devbox.tui.fleet import FleetTable

from conftest import BASE_IMAGE

HOOK = ROOT / "bootc" / "agent-hook.sh"
ASK = {"hook_event_name": "Notification", "notification_type": "permission_prompt", "message": "may I?"}
WORK = {"hook_event_name": "UserPromptSubmit", "prompt": "go on"}


def hook(state_dir: Path, payload: dict[str, str]) -> None:
    subprocess.run(["sh", str(HOOK)], input=json.dumps(payload).encode(), check=True,
                   env={**os.environ, "DEVBOX_AGENT_STATE": str(state_dir)})  # fmt: skip


async def latencies(session: Devbox, branches: list[str], dirs: dict[str, Path], rounds: int) -> list[float]:
    app = make_app(session)
    out: list[float] = []
    async with app.run_test(size=(160, 45)) as pilot:
        deadline = time.monotonic() + 120
        while app.last_update is None or len(app.last_update.status.agents.value or ()) < len(branches):
            if time.monotonic() > deadline:
                st = app.last_update.status if app.last_update else None
                raise SystemExit(f"the dashboard never listed the agents: {st and st.problems()}, "
                                 f"{len(st.agents.value or ()) if st else 0} listed")  # fmt: skip
            await pilot.pause(0.05)
        assert app.view == "fleet"  # where devbox-tui starts
        table = app.query_one(FleetTable)
        for i in range(rounds):
            branch = branches[i % len(branches)]
            want = "needs you" if (i // len(branches)) % 2 == 0 else "working"
            await asyncio.to_thread(hook, dirs[branch], ASK if want == "needs you" else WORK)
            t0 = time.perf_counter()
            while want not in table._shown.get(branch, ["", ""])[1]:
                assert time.perf_counter() - t0 < 10, f"{branch} never showed {want}"
                await pilot.pause(0.005)
            out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    with bench_project("agents") as (podman, proj, _scratch):
        branches = [f"a{i:02d}" for i in range(args.agents)]
        labels = ["--label", f"{LABEL_REPO}={proj.root}", "--label", "devbox.bench=agents"]
        with Devbox.open(proj.root, env=proj.env) as session:
            dirs = {}
            for b in branches:
                name = f"devbox-bench-{b}-{os.getpid()}"
                subprocess.run([podman, "run", "-d", "--name", name, *labels, "--label", f"{LABEL_BRANCH}={b}",
                                "--tmpfs", f"{AGENT_STATE_MOUNT}:size=16m", BASE_IMAGE, "sh", "-c",
                                # a tmux server, as an agent's session has: the fleet reads a
                                # container without one as exited
                                "tmux -u new-session -d sleep 2147483647; exec sleep 2147483647"],
                               check=True, capture_output=True)  # fmt: skip
                pid = subprocess.run([podman, "inspect", "--format", "{{.State.Pid}}", name], check=True,
                                     capture_output=True, text=True).stdout.strip()  # fmt: skip
                dirs[b] = Path(f"/proc/{pid}/root{AGENT_STATE_MOUNT}")
                hook(dirs[b], WORK)
            t0 = time.perf_counter()
            for _ in range(3):
                ops.status(session)
            full = (time.perf_counter() - t0) * 1000 / 3
            got = asyncio.run(latencies(session, branches, dirs, args.rounds))
    median, worst = statistics.median(got), max(got)
    # without the state-file poll a write would wait for the status poll: half its period on
    # average, plus one full refresh
    base = POLL * 1000 / 2 + full
    print(f"rounds: {args.rounds}; {args.agents} agents (a hook write each round, the fleet view on show)")
    print(f"one full status refresh (git, podman):           {full:7.1f} ms")
    print(f"baseline: the status poll alone (POLL/2 + refresh): {base:7.1f} ms")
    print(f"hook write -> fleet row, median:                  {median:7.1f} ms   target <= 250 ms: "
          f"{'OK' if median <= 250 else 'MISSED'}")  # fmt: skip
    print(f"hook write -> fleet row, worst:                   {worst:7.1f} ms   target <= 1000 ms: "
          f"{'OK' if worst <= 1000 else 'MISSED'}")  # fmt: skip
    print(f"ratio median / status-poll baseline:              {median / base:7.2f}")


if __name__ == "__main__":
    main()
