"""``vm up`` when nothing changed (image, disk and VM all fresh) vs ``terraform plan
-detailed-exitcode`` alone on the same module, state and variables.

Run: .venv/bin/python bench/vm_up.py [--rounds N]
Needs podman (its API socket), libvirtd at qemu:///system with the ``default`` network and
pool, terraform, and the Go toolchain the first time (the libvirt provider is built into
the clone's ``.cache/``, as the tests do). Builds a throwaway project, a builder stand-in
(blank disk) and one small TCG VM, then alternates the two commands and prints medians and
their ratio. Target: ratio <= 1.3. The VM, its volumes and the images are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from _project import ROOT, bench_project

from tfmirror import cli_config, provider_mirror

from rootfs import add_binaries, import_base, make_rootfs


class Hung(Exception):
    pass


def timed(argv: list[str], env: dict[str, str], cwd: Path | None = None, ok: tuple[int, ...] = (0,)) -> float:
    """Milliseconds; a run over 5 minutes is killed with its process group (the provider
    too) and reported, so one hung terraform cannot hold CI."""
    t = time.perf_counter()
    child = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        rc = child.wait(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        raise Hung(f"{' '.join(argv[:2])} did not finish in 300 s") from None
    if rc not in ok:
        sys.exit(f"{argv[0]} exited {rc}")
    return (time.perf_counter() - t) * 1000


def builder_image(podman: str, tmp: Path, tag: str) -> None:
    root = tmp / "bib-rootfs"
    make_rootfs(root)
    add_binaries(root, ("/usr/bin/qemu-img",))
    shutil.copy2(ROOT / "tests" / "fixture_builder" / "bib.sh", root / "bin" / "bootc-image-builder")
    import_base(podman, root, f"{tag}-base")
    ctx = tmp / "bib-ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(f'FROM {tag}-base\nENTRYPOINT ["/bin/bootc-image-builder"]\n')
    subprocess.run([podman, "build", "-q", "-t", tag, str(ctx)], check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    name = f"bench{uuid.uuid4().hex[:6]}"
    tag = f"localhost/devbox-bench-bib-{name}:1"
    with bench_project("vm-up") as (podman, proj, tmp):
        tmp.chmod(0o755)
        shutil.copytree(ROOT / "terraform", proj.root / "terraform", ignore=shutil.ignore_patterns(".terraform*"))
        builder_image(podman, tmp, tag)
        with (proj.root / "devbox.toml").open("a") as fh:
            fh.write(
                f'builder = "{tag}"\n[disk]\nsize_gib = 1\n[vm]\nname = "{name}"\nuser = "dev"\nmemory_mib = 128\n'
                'vcpus = 1\ndomain_type = "qemu"\ncpu_mode = ""\nwait_for_lease = false\nqemu_agent = false\n'
            )
        env = {**proj.env, "TF_CLI_CONFIG_FILE": str(cli_config(provider_mirror(), tmp / "terraformrc"))}
        devbox = [str(Path(sys.executable).with_name("devbox")), "vm", "up"]
        state = proj.root / ".build" / "terraform"
        plan = [
            # the same plan devbox runs (-parallelism=1: core/terraform.py says why)
            "terraform", "plan", "-detailed-exitcode", "-input=false", "-no-color", "-lock-timeout=60s",
            "-parallelism=1",
            f"-state={state / 'terraform.tfstate'}", f"-out={state / 'bench.tfplan'}",
            f"-var-file={state / 'vars.tfvars.json'}",
        ]  # fmt: skip
        tf_env = {**env, "TF_DATA_DIR": str(state / ".terraform"), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
        base, ours = [], []
        try:
            first = subprocess.run(devbox, env=env, capture_output=True, text=True, timeout=1200)
            if first.returncode != 0:
                sys.exit(f"vm up failed: {(first.stdout + first.stderr).strip().splitlines()[-1]}")
            timed(plan, tf_env, cwd=proj.root / "terraform")  # warm both once
            timed(devbox, env)
            if os.environ.get("BENCH_PROFILE"):
                subprocess.run([sys.executable, "-m", "cProfile", "-s", "cumtime", "-m", "devbox.cli", "vm", "up"],
                               env=env, cwd=proj.root)  # fmt: skip
            for _ in range(args.rounds):
                base.append(timed(plan, tf_env, cwd=proj.root / "terraform"))
                ours.append(timed(devbox, env))
        except Hung as exc:
            print(f"could not measure: {exc} (MISSED; see README, VM mode: a hung provider)")
            return
        finally:
            down = [str(Path(sys.executable).with_name("devbox")), "vm", "down", "--yes"]
            subprocess.run(down, env=env, capture_output=True, timeout=600)
            subprocess.run([podman, "rmi", "-f", tag, f"{tag}-base"], capture_output=True)
    b, o = statistics.median(base), statistics.median(ours)
    print(f"rounds: {args.rounds} (medians, interleaved)")
    print(f"baseline `terraform plan -detailed-exitcode`: {b:7.1f} ms")
    print(f"no-op `vm up` (image, disk, VM all fresh):    {o:7.1f} ms")
    print(f"ratio vm up / terraform plan:                 {o / b:7.2f}   target <= 1.3: "
          f"{'OK' if o / b <= 1.3 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
