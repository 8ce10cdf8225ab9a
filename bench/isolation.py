"""What one runaway environment costs the others: the fleet's stall while a fork bomb and a
memory hog run in a neighbour, bounded by its limits (``container.pids``, ``memory``,
``cpus``, at their defaults).

Run: .venv/bin/python bench/isolation.py [--seconds S]
Two environments (real containers, made by ``start-work``): ``quiet`` and ``wild``. For S
seconds, this process does what the dashboard's process does between paints, a 10 ms
timer and a fleet poll (``ops.agent_rows``) every 100 ms, and records how late each
timer fired and how long each poll took; once with ``wild`` idle (the baseline, measured
in the same run), once while ``wild`` runs ``b() { b | b & }; b`` in bash, once while it
runs a memory hog. Prints the worst stall (target: under 50 ms) and the ratios against the
baseline, and whether ``quiet`` answered an exec meanwhile. Everything it made is removed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import threading
import time

from _project import bench_project

from devbox.core import containers, ops
from devbox.core.session import Devbox

WILD = {
    "fork bomb": "b() { b | b & }; b; sleep 600",
    "memory hog": "while :; do x=a; while :; do x=$x$x; done; done",  # doubles until killed at the limit
}


HOG_MEMORY = "2g"  # wild's memory (the other limits at their defaults): a hog meets it soon


def measure(session: Devbox, seconds: float) -> tuple[float, float, float]:
    """(worst timer lateness, median poll, worst poll) in ms over ``seconds``."""
    conts = tuple(containers.list_containers(session.settings, session.podman))
    late: list[float] = []
    polls: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.1):
            t = time.perf_counter()
            ops.agent_rows(session, conts)
            polls.append((time.perf_counter() - t) * 1000)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        time.sleep(0.01)
        late.append((time.perf_counter() - t - 0.01) * 1000)
    stop.set()
    poller.join()
    return max(late), statistics.median(polls), max(polls)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    with bench_project("isolation") as (podman, proj, _scratch):
        try:
            for branch, env in (("quiet", {}), ("wild", {"DEVBOX_CONTAINER_MEMORY": HOG_MEMORY})):
                res = proj.devbox("start-work", branch, "--detach", env={**proj.env, **env})
                if res.returncode != 0:
                    raise SystemExit(f"start-work {branch} failed: {res.stderr.strip()}")
            with Devbox.open(proj.root, env=proj.env) as session:
                wild = next(c for c in containers.list_containers(session.settings, session.podman)
                            if c.branch == "wild")  # fmt: skip
                print(f"wild's limits: {wild.limits.describe() if wild.limits else 'none'}")
                base = measure(session, args.seconds)
                print(f"baseline (wild idle):  worst timer lateness {base[0]:6.1f} ms, "
                      f"poll median {base[1]:6.1f} ms, worst {base[2]:6.1f} ms")  # fmt: skip
                for what, script in WILD.items():
                    load = subprocess.Popen([*proj.devbox_argv(), "container", "exec", "wild", "--", "bash", "-c",
                                             script], cwd=proj.root, env=proj.env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                    time.sleep(2)  # (it reaches its limit)
                    got = measure(session, args.seconds)
                    t = time.perf_counter()
                    alive = proj.devbox("container", "exec", "quiet", "--", "echo", "alive").stdout.strip()
                    exec_ms = (time.perf_counter() - t) * 1000
                    stall = max(got[0], got[2])
                    verdict = "OK" if stall < 50 else "over"
                    print(f"{what:<11} in wild:  worst timer lateness {got[0]:6.1f} ms, poll median {got[1]:6.1f} ms, "
                          f"worst {got[2]:6.1f} ms; worst stall {stall:6.1f} ms (target < 50 ms: {verdict}); "
                          f"ratios {got[0] / max(base[0], 0.1):5.2f} (timer), {got[1] / base[1]:5.2f} (poll); "
                          f"quiet answered {alive!r} in {exec_ms:.0f} ms")  # fmt: skip
                    load.kill()
                    load.wait()
                    subprocess.run([podman, "restart", "-t", "0", wild.name], capture_output=True)
        finally:
            ids = subprocess.run([podman, "ps", "-aq", "--filter", f"label=devbox.repo={proj.root}"],
                                 capture_output=True, text=True).stdout.split()  # fmt: skip
            for cid in ids:
                name = subprocess.run([podman, "inspect", "--format", "{{.Name}}", cid], capture_output=True,
                                      text=True).stdout.strip()  # fmt: skip
                subprocess.run([podman, "rm", "-f", "-t", "0", cid], capture_output=True)
                subprocess.run([podman, "volume", "rm", "-f", f"{name}-var", f"{name}-etc"], capture_output=True)


if __name__ == "__main__":
    main()
