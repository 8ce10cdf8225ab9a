"""``vm.on_image_change = "upgrade"``: the VM follows a new image in seconds, in place.

The original chain (image → disk → VM) makes a new disk with bootc-image-builder (minutes)
and a new VM that has lost everything written inside it. When the VM exists and runs and
only the image changed (terraform's own inputs did not), ``vm up`` instead takes the
``vm upgrade`` path: the image into the VM's storage over ssh, ``bootc switch``/``upgrade``,
a reboot; ``/var`` is kept and the domain stays the same. No disk is built: the disk is
made only when a new VM must be (a terraform input changed, the VM is not running, or
there is none).

What the VM runs after an upgrade is recorded in ``.build/terraform/upgraded.json`` (the
disk key the image would have, and the domain's UUID): the next ``vm up`` and ``vm status``
read it to know the VM is current, although its disk is older than the image.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from devbox.core import builder, image, libvirt, proc, terraform, transfer
from devbox.core.errors import Cancelled, DevboxError, ToolTimeout
from devbox.core.events import Reporter, Sink, Subject
from devbox.core.filesystem import read_json, write_json
from devbox.core.session import Devbox

if TYPE_CHECKING:
    from devbox.core.ops.vm import VmUp

ONLY_IMAGE = ("image rebuilt since the disk was made",)
BACK_TIMEOUT = 300.0  # seconds for the VM's ssh to answer again after the reboot
UPGRADE_REASON = "image rebuilt since the VM's disk: vm up upgrades the VM in place (/var kept)"


def _record(runner: terraform.Runner) -> dict[str, str]:
    rec = read_json(runner.dir / "upgraded.json")
    return rec if isinstance(rec, dict) else {}


def following(
    session: Devbox, runner: terraform.Runner, disk: builder.DiskStatus | None, vm: libvirt.Vm | None
) -> str | None:
    """What ``vm status`` says in upgrade mode: "" (the VM runs the current image), the
    reason ``vm up`` will upgrade it, or None (not this path: the chain's reasons apply)."""
    if session.settings.vm.on_image_change != "upgrade" or disk is None or vm is None or not vm.running:
        return None
    if vm.uuid not in runner.recorded()[0]:
        return None
    rec = _record(runner)
    if disk.key and rec.get("uuid") == vm.uuid and rec.get("key") == disk.key:
        return ""
    if disk.verdict.reasons == ONLY_IMAGE:
        return UPGRADE_REASON
    return None


def follow(session: Devbox, runner: terraform.Runner, sink: Sink, cancel: threading.Event) -> VmUp | None:
    """``vm up``'s upgrade path: the result when the VM was upgraded (or already runs the
    image), None when the chain must run (the reason is said)."""
    from devbox.core.ops.upgrade import vm_upgrade
    from devbox.core.ops.vm import VmUp, domain_name, input_changes

    s = session.settings
    name = domain_name(session)
    report = Reporter(sink, "vm-up")
    vm_report = report.about(Subject("vm", name))
    vm = libvirt.find_vm(session.libvirt_uri, name)
    if vm is None or not runner.has_state() or vm.uuid not in runner.recorded()[0]:
        return None  # no VM of terraform's yet: the chain makes one
    if not vm.running:
        vm_report.log(f"replacing, not upgrading: VM {vm.state} (vm.on_image_change = upgrade needs it running)")
        return None
    changes = input_changes(session, runner)
    if changes:
        vm_report.log(f"replacing, not upgrading: terraform's inputs changed ({'; '.join(changes)})")
        return None
    img = image.build(s, session.podman, report.about(Subject("image", s.image)), cancel)
    disk = builder.status(s, session.podman, session.user)
    if disk.verdict.fresh:
        return None  # the VM's disk is this image's: terraform decides (no change, as a rule)
    if disk.verdict.reasons != ONLY_IMAGE:
        vm_report.log(f"replacing, not upgrading: {'; '.join(disk.verdict.reasons)}")
        return None
    rec = _record(runner)
    if rec.get("uuid") == vm.uuid and rec.get("key") == disk.key:
        vm_report.step("skip", f"{name} is up to date (it runs {s.image}, upgraded in place)")
        return VmUp(name, vm.ip, False, ("upgraded in place before",), ())
    vm_report.step("start", "upgrading in place (vm.on_image_change = upgrade): the image changed, "
                   "terraform's inputs did not; /var is kept, no new disk")  # fmt: skip
    vm_upgrade(session, reboot=True, built=img, sink=sink, cancel=cancel)
    write_json(runner.dir / "upgraded.json", {"uuid": vm.uuid, "key": disk.key or "", "image": s.image})
    vm_report.log("waiting for the VM to answer again")
    ip = _back(session, cancel)
    vm_report.step("done", f"{name} upgraded in place and running at {ip}")
    return VmUp(name, ip, False, ("image changed: upgraded in place",), ())


def _back(session: Devbox, cancel: threading.Event) -> str:
    """The VM's address once its ssh answers after the reboot."""
    from devbox.core.ops.transfer import target

    deadline = time.monotonic() + BACK_TIMEOUT
    time.sleep(2)  # the reboot takes the old sshd down first
    said = ""
    while time.monotonic() < deadline:
        if cancel.is_set():
            raise Cancelled("interrupted while the VM rebooted", "./devbox vm status shows when it is back")
        try:
            t = target(session)
            res = proc.run(transfer.ssh_argv(t, ["true"], tty=False), tool="ssh", timeout=t.timeout + 10)
            if res.ok:
                return t.host
            said = res.last_error()
        except DevboxError as exc:
            said = exc.message
        time.sleep(1)
    raise ToolTimeout(f"the VM did not answer within {BACK_TIMEOUT:.0f} s of its reboot: {said}",
                      "see its console: virsh console; ./devbox vm status")  # fmt: skip
