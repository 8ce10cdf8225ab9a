"""``vm.on_image_change = "upgrade"`` (issue 19) on the TCG test guest: only the image
changed → the VM is upgraded in place (the same domain UUID, ``/var`` kept, no disk built,
bootc's stand-in asked to switch, a real reboot into the staged image); terraform's inputs
changed → replaced; the VM not running → replaced; each saying why."""

from __future__ import annotations

import json

from devbox.core.errors import ExitCode
from test_vm import VmProject, bootable_builder, env_of, uuid_of, virsh, vm_project, wait_until  # noqa: F401


def change_image(vm: VmProject, n: int) -> None:
    cf = vm.root / "bootc" / "Containerfile"
    cf.write_text(cf.read_text() + f"\n# change {n}\n")


def test_upgrade_in_place_when_only_the_image_changed_else_replace(vm_project: VmProject) -> None:  # noqa: F811
    vm = vm_project
    env = env_of(vm, DEVBOX_VM_ON_IMAGE_CHANGE="upgrade")
    bad = vm.devbox("vm", "status", env=env_of(vm, DEVBOX_VM_ON_IMAGE_CHANGE="sometimes"))
    assert bad.returncode == ExitCode.CONFIG and "replace" in bad.stderr and "upgrade" in bad.stderr

    first = vm.devbox("vm", "up", env=env, timeout=900)
    assert first.returncode == 0, first.stderr
    uuid = uuid_of(vm.domain)
    # the lease comes a moment before the guest's sshd listens
    wait_until(lambda: vm.devbox("vm", "ssh", "true", env=env).returncode == 0, 60, "the guest's sshd")
    marker = vm.devbox("vm", "ssh", "sh", "-c", "echo kept > /var/marker", env=env)
    assert marker.returncode == 0, marker.stderr
    disk_record = (vm.root / ".build" / "disk.json").read_text()

    change_image(vm, 1)
    assert vm.devbox("image", "build", env=env).returncode == 0
    status = json.loads(vm.devbox("vm", "status", "--json", env=env).stdout)  # what vm up will do, and why
    up = vm.devbox("vm", "up", env=env, timeout=900)
    assert up.returncode == 0, up.stderr + up.stdout[-3000:]
    assert "upgrading in place (vm.on_image_change = upgrade)" in up.stdout, up.stdout[-3000:]
    assert "upgraded in place and running at" in up.stdout
    assert up.stdout.count("is up to date") == 1  # the image is checked once, not again by the upgrade
    assert uuid_of(vm.domain) == uuid  # the same VM
    assert (vm.root / ".build" / "disk.json").read_text() == disk_record  # no disk was built
    assert "bootc-image-builder" not in up.stdout and "applying" not in up.stdout
    inside = vm.devbox("vm", "ssh", "sh", "-c", "cat /var/marker /var/lib/standin/bootc/calls "
                       "/var/lib/standin/bootc/booted", env=env).stdout.splitlines()  # fmt: skip
    assert inside[0] == "kept", inside  # /var survived the reboot
    assert f"switch --transport containers-storage {vm.image}" in inside  # bootc was asked to switch
    assert inside[-1] == vm.image  # and the VM rebooted into it (the stand-in's boot-time finalisation)
    after = json.loads(vm.devbox("vm", "status", "--json", env=env).stdout)
    assert after["fresh"] is True, after
    assert not status["fresh"] and any("upgrades the VM in place" in r for r in status["reasons"]), status

    again = vm.devbox("vm", "up", env=env, timeout=600)
    assert again.returncode == 0 and "is up to date (it runs" in again.stdout, again.stderr + again.stdout
    assert uuid_of(vm.domain) == uuid

    # terraform's inputs changed too: a new VM, and it says why
    change_image(vm, 2)
    bigger = {**env, "DEVBOX_VM_MEMORY_MIB": "288"}
    replaced = vm.devbox("vm", "up", env=bigger, timeout=900)
    assert replaced.returncode == 0, replaced.stderr + replaced.stdout[-3000:]
    assert "replacing, not upgrading: terraform's inputs changed (vm.memory_mib changed (256 → 288))" in replaced.stdout
    assert uuid_of(vm.domain) != uuid
    uuid = uuid_of(vm.domain)

    # the VM is not running: replaced, saying so
    assert virsh("destroy", vm.domain).returncode == 0
    change_image(vm, 3)
    stopped = vm.devbox("vm", "up", env=bigger, timeout=900)
    assert stopped.returncode == 0, stopped.stderr + stopped.stdout[-3000:]
    assert "replacing, not upgrading: VM shut off" in stopped.stdout, stopped.stdout[-3000:]
    assert uuid_of(vm.domain) != uuid
