"""``devbox vm upgrade``: the design's "atomic updates via bootc upgrade", without a
registry. The image (rebuilt first if stale) is streamed from podman (podman-py's
``save``) into ``podman load`` in the VM over ssh, then ``bootc switch --transport
containers-storage`` (first time) or ``bootc upgrade`` stages it as the next deployment,
and the VM reboots into it. ``/var`` (homes, containers) is kept by bootc; ``/etc`` is
merged. A failed step leaves the running deployment as it was: bootc only switches on
reboot.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from devbox.core import image, proc, transfer
from devbox.core.errors import NotAvailable
from devbox.core.events import Reporter, Sink, Subject, null_sink
from devbox.core.ops.transfer import target
from devbox.core.session import Devbox

PROBE = "command -v podman >/dev/null || echo 'missing podman'; command -v bootc >/dev/null || echo 'missing bootc'"


@dataclass(frozen=True)
class Upgraded:
    image: str
    image_id: str
    bytes_sent: int
    command: str  # "switch" or "upgrade"
    rebooted: bool


def _sudo(t: transfer.Target, argv: list[str]) -> list[str]:
    return argv if t.user == "root" else ["sudo", "-n", *argv]


def vm_upgrade(
    session: Devbox, *, reboot: bool = True, built: image.ImageStatus | None = None, sink: Sink = null_sink,
    cancel: threading.Event | None = None,
) -> Upgraded:  # fmt: skip
    """``built``: the image the caller just built or checked (``vm up``'s upgrade path)."""
    cancel = cancel or threading.Event()
    s = session.settings
    report = Reporter(sink, "vm-upgrade")
    t = target(session)  # the VM exists, runs and has an address: before any image build
    img = built or image.build(s, session.podman, report.about(Subject("image", s.image)), cancel)
    assert img.info is not None
    vm_report = report.about(Subject("vm", t.alias))

    def remote(argv: list[str], what: str, timeout: float = 600) -> proc.Completed:
        return transfer.run_remote(t, argv, what, timeout=timeout, cancel=cancel)

    missing = [w.split()[1] for w in remote(["sh", "-c", PROBE], "checking for podman and bootc").stdout.split("\n")
               if w.startswith("missing ")]  # fmt: skip
    if missing:
        raise NotAvailable(
            f"the VM has no {' and no '.join(missing)}: it was not made from a bootc image",
            "remake it from this checkout's image: ./vm-down.sh, then ./vm-up.sh",
        )
    vm_report.step("start", f"copying {s.image} {img.info.short_id} into the VM")
    sent = [0]

    def progress(n: int) -> None:
        if n >> 24 != sent[0] >> 24:  # every 16 MiB
            vm_report.progress(f"{n >> 20} MiB sent")
        sent[0] = n

    done = transfer.feed_remote(t, _sudo(t, ["podman", "load"]), session.podman.save(s.image), "podman load", cancel,
                                progress)  # fmt: skip
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip():
            vm_report.log(line.strip(), source="podman")
    status = remote(_sudo(t, ["bootc", "status", "--format=json"]), "bootc status")
    booted = _booted_image(status.stdout)
    command = "upgrade" if booted == s.image else "switch"
    argv = ["bootc", "upgrade"] if command == "upgrade" else [
        "bootc", "switch", "--transport", "containers-storage", s.image]  # fmt: skip
    vm_report.log(f"bootc {command}: the image becomes the next deployment (/var kept)")
    remote(_sudo(t, argv), f"bootc {command}", timeout=1800)
    if reboot:
        vm_report.log("rebooting into it")
        remote_reboot = _sudo(t, ["systemctl", "reboot"])
        transfer.run_remote(t, remote_reboot, "reboot", timeout=60, cancel=cancel, disconnects=True)
    vm_report.step(
        "done", f"{s.image} {img.info.short_id} staged" + (", rebooting" if reboot else " (reboot to use it)")
    )
    return Upgraded(s.image, img.info.id, sent[0], command, reboot)


def _booted_image(status_json: str) -> str:
    """The image the VM booted from, from ``bootc status --format=json``."""
    try:
        data = json.loads(status_json)
    except ValueError:
        return ""
    booted = ((data.get("status") or {}).get("booted") or {}).get("image") or {}
    return str((booted.get("image") or {}).get("image") or "")
