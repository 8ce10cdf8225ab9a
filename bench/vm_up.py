"""``vm up`` when nothing changed (image, disk and VM all fresh) vs ``terraform plan
-detailed-exitcode`` alone on the same module, state and variables.

Run: .venv/bin/python bench/vm_up.py [--rounds N]
Needs podman (its API socket), libvirtd at qemu:///system with the ``default`` network and
pool, terraform, and the Go toolchain the first time (the libvirt provider is built into
the clone's ``.cache/``, as the tests do). Builds a throwaway project, the builder stand-in
whose disks boot (tests/bootdisk.py) and one small TCG VM, then alternates the two commands
and prints medians and their ratio (target: <= 1.3). Then the image changes twice: once
followed with ``vm.on_image_change = "upgrade"`` (in place: the image into the VM,
bootc's stand-in, a real reboot), once with ``"replace"`` (the builder, terraform, a new
VM), each timed. The VM, its volumes and the images are removed at the end.
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

import bootdisk
from tfmirror import cli_config, provider_mirror


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


def follow_image_change(devbox: list[str], env: dict[str, str], proj_root: Path, how: str, n: int) -> float:
    """The image changes (built first, untimed: both paths need it), then ``vm up`` with
    ``vm.on_image_change = how`` until the VM answers: milliseconds."""
    cf = proj_root / "bootc" / "Containerfile"
    cf.write_text(cf.read_text() + f"\n# bench change {n}\n")
    subprocess.run([devbox[0], "image", "build"], env=env, capture_output=True, check=True, timeout=600)
    took = timed(devbox, {**env, "DEVBOX_VM_ON_IMAGE_CHANGE": how})
    for _ in range(60):  # until ssh answers (the upgrade's vm up waits for it; the replace's for the lease)
        if subprocess.run([devbox[0], "vm", "ssh", "true"], env=env, capture_output=True, timeout=60).returncode == 0:
            break
        time.sleep(1)
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    name = f"bench{uuid.uuid4().hex[:6]}"
    tag = f"localhost/devbox-bench-bib-{name}:1"
    with bench_project("vm-up") as (podman, proj, tmp):
        tmp.chmod(0o755)
        shutil.copytree(ROOT / "terraform", proj.root / "terraform", ignore=shutil.ignore_patterns(".terraform*"))
        bootdisk.builder_image(podman, tmp / "bib", tag)  # its disks boot: the upgrade path needs a live VM
        with (proj.root / "devbox.toml").open("a") as fh:
            fh.write(
                f'builder = "{tag}"\n[disk]\nsize_gib = 1\n[vm]\nname = "{name}"\nuser = "dev"\nmemory_mib = 256\n'
                'vcpus = 1\ndomain_type = "qemu"\ncpu_mode = ""\nqemu_agent = false\n'
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
            upgrade = follow_image_change(devbox, env, proj.root, "upgrade", 1)
            replace = follow_image_change(devbox, env, proj.root, "replace", 2)
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
    print("the VM follows an image change (the TCG test guest; the image built first, untimed):")
    print(f"  replace (builder stand-in, terraform apply, a new VM): {replace:8.1f} ms")
    print(f"  upgrade (image into the VM, bootc switch, reboot):    {upgrade:8.1f} ms")
    print(f"  ratio upgrade / replace:                              {upgrade / replace:8.2f}   (here the builder is a "
          "stand-in taking about a second; Fedora's bootc-image-builder takes minutes)")  # fmt: skip
    print(f"  upgrade within a minute (the VM follows in seconds):  {upgrade / 1000:8.1f} s   target <= 60 s: "
          f"{'OK' if upgrade <= 60_000 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
