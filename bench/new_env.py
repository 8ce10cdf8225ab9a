"""A new environment: ``start-work NEW --detach`` against the same work done by hand.

Run: .venv/bin/python bench/new_env.py [--rounds R]
Needs podman and its API socket. The baseline, measured in the same run and interleaved:
``git worktree add -b``, the two volumes, ``podman run -d`` with the same isolation flags
(read-only root, the /var and /etc volumes, the worktree and repository mounts, the
tmpfs mounts, the entrypoint's capabilities) and a wait for the entrypoint's ready line
(polled as devbox polls it). Prints the medians and their ratio (target <= 1.3), where a
start-work's time goes (in-process, from its own step events: up to the worktree, the
image check, the container's create/start/ready, and podman-py's import measured apart),
the same start with ``--egress allow`` (its own network and egress proxy) against it,
and N at once (1, 5, 10 in parallel processes; target: ten <= 4x one on 2 cores), then ten
in one command (``start-work B1 .. B10 --detach``, ``ops.start_several``) against the same
target. Beside them, what bounds ten at once on this machine: the same work by hand, ten at
once against one, and the machine's busy CPU time while the one command ran (from
/proc/stat), over its cores: no scheduling finishes sooner than that.
Everything it made (worktrees, branches, containers, volumes, the image) is removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _project import bench_project

from devbox.core import ops
from devbox.core.containers import ENTRYPOINT_CAPS
from devbox.core.events import Step
from devbox.core.git import WORKTREE_RACE
from devbox.core.ops.containers import READY
from devbox.core.session import Devbox

LABEL = "devbox.bench=new-env"


def run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    return done.stdout


def git_raced(
    argv: list[str], env: dict[str, str], undo: Callable[[], object] = lambda: None, *, check: bool = True
) -> None:
    """Run git again while it meets git's own race: ten `git worktree add` at once, one reads
    another's half-written admin entry and dies ("failed to read .git/worktrees/X/commondir"),
    after ``-b`` made its branch (``undo`` takes it back); a person runs it again, as devbox's
    git adapter does."""
    for _ in range(100):
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode == 0 or not WORKTREE_RACE.search(done.stderr):
            break
        undo()
        time.sleep(0.05)
    if check and done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")


def add_by_hand(repo: Path, wt: Path, name: str, env: dict[str, str]) -> None:
    def undo() -> None:
        git_raced(["git", "-C", str(repo), "branch", "-q", "-D", name], env, check=False)  # made, or not
        shutil.rmtree(wt, ignore_errors=True)

    git_raced(["git", "-C", str(repo), "worktree", "add", "-q", "-b", name, str(wt)], env, undo)


def by_hand(podman: str, repo: Path, image_id: str, name: str, env: dict[str, str]) -> float:
    t = time.perf_counter()
    wt = repo.parent / "hand" / name
    add_by_hand(repo, wt, name, env)
    for vol in ("var", "etc"):
        run([podman, "volume", "create", f"{name}-{vol}"], env)
    caps = [f"--cap-add={c}" for c in ENTRYPOINT_CAPS]
    run([podman, "run", "-d", "--name", name, "--label", LABEL, "--read-only", "--user", "0:0", *caps,
         "--tmpfs", "/tmp:mode=1777", "--tmpfs", "/var/tmp:mode=1777", "--tmpfs", "/run:mode=755",
         "-v", f"{name}-var:/var", "-v", f"{name}-etc:/etc", "-v", f"{wt}:{wt}:z", "-v", f"{repo}:{repo}:z",
         "--env", f"DEVBOX_UID={os.getuid()}", "--env", f"DEVBOX_GID={os.getgid()}", "--env", "DEVBOX_USER=bench",
         "--env", f"DEVBOX_WORKDIR={wt}", "-w", str(wt), image_id, "sleep", "2147483647"], env)  # fmt: skip
    while READY not in run([podman, "logs", name], env):
        time.sleep(0.05)
    return (time.perf_counter() - t) * 1000


def ours(devbox: list[str], branch: str, env: dict[str, str], *extra: str) -> float:
    t = time.perf_counter()
    run([*devbox, "start-work", branch, "--detach", *extra], env)
    return (time.perf_counter() - t) * 1000


def split(repo: Path, branch: str) -> dict[str, float]:
    """Where one start-work's time goes, from its own step events (in this process)."""
    marks: list[tuple[float, Step]] = []
    t0 = time.perf_counter()
    with Devbox.open(repo) as session:
        ops.start_work(session, branch, sink=lambda e: marks.append((time.perf_counter(), e)) if isinstance(e, Step)
                       else None)  # fmt: skip
    end = time.perf_counter()

    def first(kind: str, state: str) -> float:
        return next((t for t, e in marks if e.subject.kind == kind and e.state == state), end)

    wt_done = first("worktree", "done")
    img_done = min(first("image", "skip"), first("image", "done"))  # fresh: "skip"; built: "done"
    ct_start = first("container", "start")
    return {"podman check, image status, worktree (git)": (wt_done - t0) * 1000,
            "image verdict reported": (img_done - wt_done) * 1000,
            "container create, start, ready": (end - ct_start) * 1000,
            "total in-process": (end - t0) * 1000}  # fmt: skip


def at_once(start: Callable[[str], object], prefix: str, n: int) -> float:
    """``start(name)`` for ``prefix-0`` .. ``prefix-(n-1)``, all at once; the wall time (ms)."""
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(lambda i: start(f"{prefix}-{i}"), range(n)))
    return (time.perf_counter() - t) * 1000


def busy_cpu() -> float:
    """Seconds of CPU time the whole machine has spent busy (not idle, not waiting on I/O)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def in_one(devbox: list[str], prefix: str, n: int, env: dict[str, str]) -> tuple[float, float]:
    """``start-work B1 .. Bn --detach``: one process starts them all. Returns its wall time
    and the machine's busy CPU time meanwhile (both ms)."""
    cpu, t = busy_cpu(), time.perf_counter()
    run([*devbox, "start-work", *(f"{prefix}-{i}" for i in range(n)), "--detach"], env)
    return (time.perf_counter() - t) * 1000, (busy_cpu() - cpu) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with bench_project("new-env") as (podman, proj, _):
        env = proj.env
        devbox = [str(Path(sys.executable).with_name("devbox"))]
        run([*devbox, "start-work", "warm", "--detach"], env)  # the image is built once, outside the timing
        image_id = proj.image_id()
        assert image_id
        made: list[str] = ["warm"]
        hand: list[float] = []
        mine: list[float] = []
        fenced: list[float] = []  # egress = allow: its own network and proxy
        imports: list[float] = []
        try:
            for i in range(args.rounds):
                hand.append(by_hand(podman, proj.root, image_id, f"hand-{i}", env))
                mine.append(ours(devbox, f"new-{i}", env))
                made.append(f"new-{i}")
                fenced.append(ours(devbox, f"fenced-{i}", env, "--egress", "allow", "--allow", "pypi.org"))
                made.append(f"fenced-{i}")
                t = time.perf_counter()
                subprocess.run([sys.executable, "-c", "import podman"], check=True)
                imports.append((time.perf_counter() - t) * 1000)
            parts = split(proj.root, "split-0")
            made.append("split-0")

            def start_mine(name: str) -> str:
                return run([*devbox, "start-work", name, "--detach"], env)

            def start_by_hand(name: str) -> float:
                return by_hand(podman, proj.root, image_id, name, env)

            # one: the median of three (a single start moved by ~10% between runs)
            ones = [at_once(start_mine, f"par1x{k}", 1) for k in range(3)]
            made += [f"par1x{k}-0" for k in range(3)]
            group = {1: statistics.median(ones)} | {n: at_once(start_mine, f"par{n}", n) for n in (5, 10)}
            made += [f"par{n}-{i}" for n in (5, 10) for i in range(n)]
            together, busy = in_one(devbox, "one10", 10, env)
            made += [f"one10-{i}" for i in range(10)]
            hand_one = statistics.median(at_once(start_by_hand, f"hone{k}", 1) for k in range(3))
            hand_ten = at_once(start_by_hand, "hten", 10)
        finally:
            for branch in made:
                subprocess.run([*devbox, "worktree", "remove", "--force", "--delete-branch", branch], env=env,
                               capture_output=True)  # fmt: skip
            names = run([podman, "ps", "-aq", "--filter", f"label={LABEL}"], env).split()
            if names:
                subprocess.run([podman, "rm", "-f", "-t", "0", "--volumes", *names], capture_output=True)
            hands = (
                [f"hand-{i}" for i in range(args.rounds)]
                + [f"hone{k}-0" for k in range(3)]
                + [f"hten-{i}" for i in range(10)]
            )
            for name in hands:
                for vol in ("var", "etc"):
                    subprocess.run([podman, "volume", "rm", "-f", f"{name}-{vol}"], capture_output=True)
    b, o = statistics.median(hand), statistics.median(mine)
    start = statistics.median(imports)
    print(f"rounds: {args.rounds} (medians, interleaved; a new branch each time)")
    print(f"baseline by hand (worktree, 2 volumes, podman run -d, ready line): {b:7.1f} ms")
    print(f"`start-work NEW --detach`:                                       {o:7.1f} ms")
    for what, ms in parts.items():
        print(f"  {what:<40} {ms:7.1f} ms")
    print(f"  python -c 'import podman' (podman-py, a process of its own):  {start:7.1f} ms")
    print(f"ratio start-work / by hand: {o / b:5.2f}   target <= 1.3: {'OK' if o / b <= 1.3 else 'MISSED'}")
    f = statistics.median(fenced)
    print(f"`start-work NEW --detach --egress allow` (its network and proxy): {f:7.1f} ms")
    print(f"ratio egress allow / open:  {f / o:5.2f}   target <= 1.1: {'OK' if f / o <= 1.1 else 'MISSED'}")
    one = group[1]
    for n, ms in group.items():
        print(f"{n:>2} at once: {ms:7.1f} ms ({ms / one:4.2f}x one){' (median of three)' if n == 1 else ''}")
    ten = group[10] / one
    print(f"ratio ten at once / one (ten processes):  {ten:5.2f}   target <= 4: {'OK' if ten <= 4 else 'MISSED'}")
    both = together / one
    print(f"10 in one `start-work B1 .. B10 --detach`: {together:7.1f} ms")
    print(f"ratio ten in one command / one:           {both:5.2f}   target <= 4: {'OK' if both <= 4 else 'MISSED'}")
    cores = os.cpu_count() or 1
    floor = busy / cores
    print(f"  what bounds it: the machine was busy {busy / 1000:.2f} s of CPU meanwhile (devbox, the podman service,")
    print(
        f"  runc, the containers' entrypoints, git); over {cores} cores that is {floor:.0f} ms at the least "
        f"({floor / one:4.2f}x one)"
    )
    print(
        f"  the same work by hand, ten at once: {hand_ten:7.1f} ms against one by hand {hand_one:7.1f} ms "
        f"({hand_ten / hand_one:4.2f}x)"
    )


if __name__ == "__main__":
    main()
