"""devbox-tui: time to first paint, UI-thread stalls per refresh, memory after a log flood.

Run: .venv/bin/python bench/tui.py [--rows N] [--rounds R]
Needs podman and its API socket (the containers are real: ``podman create``, never
started). Prints, each against a baseline measured in the same run:
- first paint: ``devbox-tui`` headless, from process start until its first screen is
  drawn, vs ``python -c "import textual.app"``; target < 2x;
- refresh with N worktrees and N containers: the longest gap of a 10 ms probe timer on the
  UI thread while snapshots are applied (the UI thread never calls a tool); target < 50 ms;
- memory (RSS) after 200,000 log lines vs the idle app; target < 2x.
Everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

from _project import bench_project

from devbox.core.containers import LABEL_BRANCH, LABEL_REPO
from devbox.core.session import Devbox
from devbox.tui.app import make_app
from devbox.tui.logpane import LogPane

from conftest import BASE_IMAGE

FIRST_PAINT = """
import sys, time
t0 = float(sys.argv[1])
import devbox.tui
devbox.tui.hold_gc()  # what the devbox-tui command (devbox.tui.run) does first
from devbox.core.session import Devbox
from devbox.tui.app import make_app
app = make_app(Devbox.open(), watch=False)
def painted():
    print(f"{(time.time() - t0) * 1000:.1f}")
    app.exit()
app.call_after_refresh(painted)
app.run(headless=True)
"""


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def first_paint(env: dict[str, str], rounds: int) -> tuple[float, float]:
    def once(code: list[str]) -> float:
        t0 = time.time()
        out = subprocess.run([sys.executable, *code, str(t0)], env=env, capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else (time.time() - t0) * 1000

    base, ours = [], []
    for _ in range(rounds):
        t0 = time.time()
        subprocess.run([sys.executable, "-c", "import textual.app"], env=env, check=True)
        base.append((time.time() - t0) * 1000)
        ours.append(once(["-c", FIRST_PAINT]))
    return statistics.median(base), statistics.median(ours)


async def stalls_and_memory(session: Devbox, refreshes: int) -> tuple[float, float, float, float]:
    """The first snapshot fills the tables (2N rows added); later ones update them in place."""
    app = make_app(session, watch=False)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.pause(0.5)
        gaps: list[float] = []
        handled: list[float] = []
        per_round: list[float] = []
        last = [time.perf_counter()]

        def probe() -> None:
            now = time.perf_counter()
            gaps.append(now - last[0])
            last[0] = now

        app.set_interval(0.01, probe)
        for _ in range(refreshes):
            update = await asyncio.to_thread(app.snapshot)  # the tools run off the UI thread
            last[0] = time.perf_counter()
            gaps.clear()
            t = time.perf_counter()
            app.on_status_updated(update)  # the handler, timed on the UI thread itself
            handled.append((time.perf_counter() - t) * 1000)
            await pilot.pause(0.3)
            per_round.append(max(handled[-1], (max(gaps) - 0.01) * 1000 if gaps else 0.0))
        first, steady = per_round[0], max(per_round[1:] or [0.0])
        idle = rss_mb()
        pane = app.query_one(LogPane)
        pane.start("bench", "bench")
        for i in range(200_000):
            pane.note(f"log line {i} " + "x" * 60)
            if i % 20_000 == 0:
                await pilot.pause(0.05)
        await pilot.pause(0.5)
        flooded = rss_mb()
    return first, steady, idle, flooded


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with bench_project("tui") as (podman, proj, scratch):
        for i in range(args.rows):  # synthetic worktrees: real git, made the quick way
            path = scratch / "wts" / f"w{i}"
            subprocess.run(["git", "-C", str(proj.root), "worktree", "add", "-q", "-b", f"w{i}", str(path)], check=True)
        labels = ["--label", f"{LABEL_REPO}={proj.root}", "--label", "devbox.bench=tui"]
        for i in range(args.rows):
            subprocess.run(
                [podman, "create", *labels, "--label", f"{LABEL_BRANCH}=w{i}", BASE_IMAGE, "true"],
                check=True,
                capture_output=True,
            )
        env = {**proj.env, "DEVBOX_REPO": str(proj.root)}
        base, ours = first_paint(env, args.rounds)
        with Devbox.open(proj.root, env=proj.env) as session:
            first_fill, worst, idle, flooded = asyncio.run(stalls_and_memory(session, max(2, args.rounds)))
    print(f"rounds: {args.rounds} (medians); {args.rows} worktrees, {args.rows} containers")
    print(f"baseline `python -c 'import textual.app'`: {base:7.1f} ms")
    print(f"devbox-tui first paint:                   {ours:7.1f} ms")
    paint = "OK" if ours / base < 2 else "MISSED"
    print(f"ratio first paint / textual import:       {ours / base:7.2f}   target < 2: {paint}")
    print(f"UI-thread stall, first fill ({2 * args.rows} rows):  {first_fill:7.1f} ms (once, at start)")
    verdict = "OK" if worst < 50 else "MISSED"
    print(f"worst UI-thread stall per refresh:        {worst:7.1f} ms   target < 50 ms: {verdict}")
    print(f"memory idle / after 200,000 log lines:    {idle:7.1f} MB / {flooded:.1f} MB")
    ratio = flooded / idle
    print(f"ratio memory flooded / idle:              {ratio:7.2f}   target < 2: {'OK' if ratio < 2 else 'MISSED'}")


if __name__ == "__main__":
    main()
