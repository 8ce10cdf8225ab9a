"""``vm-dir-push.sh`` of a 2,000-file tree vs a raw ``rsync -a -e ssh`` of the same tree,
both into fresh directories over the same sshd.

Run: .venv/bin/python bench/transfer.py [--rounds N]
Needs sshd and rsync. Starts its own sshd on 127.0.0.1 (tests/sshd.py: its own host key
and config, the user running the bench as the "VM user"), makes the tree, then alternates
the two commands (each into a directory removed before the round) and prints medians and
their ratio. Target: ratio <= 1.2. It runs ``.venv/bin/devbox vm dir-push``: the shim in
front of it (``./vm-dir-push.sh``) acts on its own checkout, not on the bench's throwaway
project, and adds a bash start and one ``cmp`` (a few ms). Everything it made is removed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import _project  # noqa: F401  (puts tests/ on sys.path)

from sshd import HOME, USER, vm_project_over_ssh


def timed(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1000


def make_tree(root: Path, files: int = 2000) -> None:
    for i in range(files):
        d = root / f"pkg{i % 40:02d}" / f"mod{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i:04d}.py").write_text(f"# file {i}\n" + "x = 1\n" * (i % 50))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, vm_project_over_ssh(Path(tmp)) as (proj, sshd):
        tree = Path(tmp) / "tree"
        make_tree(tree)
        ours_dir, raw_dir = f"bench-ours-{uuid.uuid4().hex[:6]}", f"bench-raw-{uuid.uuid4().hex[:6]}"
        key = proj.root / ".build" / "ssh" / "id_ed25519"
        known = Path(tmp) / "known_hosts"
        ssh = (
            f"ssh -i {key} -p {sshd.port} -o IdentitiesOnly=yes -o BatchMode=yes "
            f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=accept-new"
        )
        raw = ["rsync", "-a", "-e", ssh, f"{tree}/", f"{USER}@127.0.0.1:{raw_dir}/"]
        devbox = [str(Path(sys.executable).with_name("devbox")), "vm", "dir-push", str(tree), ours_dir]
        base, ours = [], []
        try:
            for _ in range(args.rounds):
                shutil.rmtree(HOME / raw_dir, ignore_errors=True)
                shutil.rmtree(HOME / ours_dir, ignore_errors=True)
                base.append(timed(raw))
                ours.append(timed(devbox, env=proj.env, cwd=proj.root))
            pushed = sum(1 for p in (HOME / ours_dir).rglob("*.py"))
            assert pushed == 2000, pushed
        finally:
            shutil.rmtree(HOME / raw_dir, ignore_errors=True)
            shutil.rmtree(HOME / ours_dir, ignore_errors=True)
    b, o = statistics.median(base), statistics.median(ours)
    print(f"rounds: {args.rounds} (medians, interleaved; 2,000 files into a fresh directory each time)")
    print(f"baseline `rsync -a -e ssh`:  {b:7.1f} ms")
    print(f"`vm-dir-push.sh`:            {o:7.1f} ms")
    print(f"ratio dir-push / rsync:      {o / b:7.2f}   target <= 1.2: {'OK' if o / b <= 1.2 else 'MISSED'}")


if __name__ == "__main__":
    main()
