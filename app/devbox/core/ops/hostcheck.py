"""``devbox doctor``: is this host ready for VM mode? One check per thing ``vm-up.sh``
needs, each with what was found and the fix. Checks never change the host."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from devbox.core import libvirt, terraform
from devbox.core.errors import DevboxError
from devbox.core.session import Devbox

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    found: str
    fix: str = ""


def _kvm() -> Check:
    if not os.path.exists("/dev/kvm"):
        return Check("/dev/kvm", "fail", "missing", "enable virtualisation in the firmware; load kvm_intel or kvm_amd")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Check("/dev/kvm", "warn", "not usable by this user (libvirtd's qemu may still use it)",
                     "sudo usermod -aG kvm $USER, then log in again")  # fmt: skip
    return Check("/dev/kvm", "ok", "present")


def _nested() -> Check:
    value = libvirt.kvm_nested()
    if value is None:
        return Check("nested virtualisation", "fail", "no kvm_intel/kvm_amd module loaded", "sudo modprobe kvm_intel")
    if value == "N":
        return Check("nested virtualisation", "fail", "off",
                     "echo 'options kvm_intel nested=1' | sudo tee /etc/modprobe.d/kvm-nested.conf, "
                     "then reload the module (or reboot)")  # fmt: skip
    return Check("nested virtualisation", "ok", "on")


def _libvirt(session: Devbox) -> list[Check]:
    s = session.settings
    try:
        found = libvirt.hypervisor(s.libvirt_uri)
    except DevboxError as exc:
        return [Check("libvirtd", "fail", exc.message, exc.remedy)]
    out = [Check("libvirtd", "ok", f"{s.libvirt_uri}: {found}")]
    net = libvirt.network_active(s.libvirt_uri, s.vm.network)
    if net is None:
        out.append(Check(f"network {s.vm.network}", "fail", "not defined",
                         "sudo virsh net-define /usr/share/libvirt/networks/default.xml"))  # fmt: skip
    elif not net:
        fix = f"sudo virsh net-start {s.vm.network} && sudo virsh net-autostart {s.vm.network}"
        out.append(Check(f"network {s.vm.network}", "fail", "inactive", fix))
    else:
        out.append(Check(f"network {s.vm.network}", "ok", "active"))
        out.append(_reserved(s.libvirt_uri, s.vm.network))
    pool = libvirt.pool_active(s.libvirt_uri, s.vm.pool)
    if pool is None:
        out.append(Check(f"storage pool {s.vm.pool}", "fail", "not defined",
                         f"sudo virsh pool-define-as {s.vm.pool} dir --target /var/lib/libvirt/images && "
                         f"sudo virsh pool-start {s.vm.pool} && sudo virsh pool-autostart {s.vm.pool}"))  # fmt: skip
    elif not pool:
        out.append(Check(f"storage pool {s.vm.pool}", "fail", "inactive", f"sudo virsh pool-start {s.vm.pool}"))
    else:
        out.append(Check(f"storage pool {s.vm.pool}", "ok", "active"))
    return out


def _reserved(uri: str, network: str) -> Check:
    """Addresses the network keeps for devbox VMs that are gone: the provider's static DHCP
    entries, left by devbox before it removed them (libvirt.drop_reservations). Enough of
    them and no new VM gets a lease."""
    name = f"network {network}: addresses"
    stale = libvirt.stale_reservations(uri, network)
    if not stale:
        return Check(name, "ok", "none kept for devbox VMs that no longer exist")
    macs = " ".join(mac for _, mac, _ in stale)
    return Check(name, "warn", f"{len(stale)} static DHCP entries kept for devbox VMs that no longer exist "
                 f"({', '.join(sorted({n for n, _, _ in stale})[:3])}{', ...' if len(stale) > 3 else ''}): "
                 "once the range is full, new VMs get no lease",
                 f"for m in {macs}; do sudo virsh net-update {network} delete ip-dhcp-host "
                 f"\"<host mac='$m'/>\" --live --config; done")  # fmt: skip


PROVIDER = ("registry.terraform.io", "dmacvicar", "libvirt", "0.8.3")
MIRROR_PATH = re.compile(r'filesystem_mirror\s*\{[^}]*?\bpath\s*=\s*"([^"]+)"', re.S)


def _terraform(session: Devbox) -> list[Check]:
    # one answer, the one `vm up` acts on: devbox runs `terraform`; OpenTofu alone is not enough
    exe = shutil.which("terraform")
    if exe is None:
        tofu = " (OpenTofu's `tofu` is there, but devbox runs terraform)" if shutil.which("tofu") else ""
        return [Check("terraform", "fail", f"not on PATH{tofu}", terraform.INSTALL_REMEDY)]
    ok, said = terraform.version()
    out = [Check("terraform", "ok" if ok else "fail", said, "")]
    return [*out, _provider(session)]


def _provider(session: Devbox) -> Check:
    """Installed for this checkout, or in a filesystem mirror the CLI config names (the mirror
    looked into, not only the config file's existence)."""
    name = "libvirt provider"
    runner = terraform.Runner(session.settings)
    if (runner.dir / ".terraform" / "providers" / Path(*PROVIDER)).is_dir():
        return Check(name, "ok", "installed (dmacvicar/libvirt 0.8.3)")
    config = os.environ.get("TF_CLI_CONFIG_FILE", "")
    if config:
        try:
            text = Path(config).read_text()
        except OSError:
            return Check(name, "fail", f"TF_CLI_CONFIG_FILE={config} cannot be read",
                         "point TF_CLI_CONFIG_FILE at a CLI config, or unset it")  # fmt: skip
        mirrors = [Path(m) for m in MIRROR_PATH.findall(text)]
        held = [m for m in mirrors if (m / Path(*PROVIDER[:3])).is_dir() and any(
            (m / Path(*PROVIDER[:3])).glob(f"*{PROVIDER[3]}*"))]  # fmt: skip
        if held:
            return Check(name, "ok", f"0.8.3 in the filesystem mirror {held[0]}")
        if mirrors:
            found = f"the mirror {mirrors[0]} ({config}) does not hold dmacvicar/libvirt 0.8.3"
            return Check(name, "fail", found, "fill it: terraform providers mirror DIR (on a host with access)")
    return Check(name, "warn", "not installed yet: the first ./vm-up.sh fetches it",
                 "needs registry.terraform.io, or a filesystem_mirror in TF_CLI_CONFIG_FILE")  # fmt: skip


def _builder(session: Devbox) -> Check:
    if os.geteuid() != 0:
        return Check("builder storage", "warn", "not root: bootc-image-builder runs rootful",
                     f"podman image scp $USER@localhost::{session.settings.image} root@localhost::, "
                     "then sudo -E ./vm-up.sh")  # fmt: skip
    graph = str((session.podman.info().get("store") or {}).get("graphRoot") or "")
    if not graph:
        return Check("builder storage", "warn", "podman did not say where its storage is", "podman info")
    return Check("builder storage", "ok", f"root: the builder is given podman's storage {graph}")


def _iso() -> Check:
    tool = shutil.which("mkisofs") or shutil.which("genisoimage") or shutil.which("xorrisofs")
    if tool is None:
        return Check("mkisofs", "fail", "neither mkisofs nor genisoimage (the provider's cloud-init disk needs one)",
                     "sudo dnf install genisoimage (Debian: apt install genisoimage)")  # fmt: skip
    return Check("mkisofs", "ok", tool)


def _selinux() -> Check:
    try:
        enforce = Path("/sys/fs/selinux/enforce").read_text().strip()
    except OSError:
        return Check("SELinux", "ok", "not enabled")
    if enforce == "1":
        return Check("SELinux", "ok", "enforcing (the builder runs with label=type:unconfined_t)")
    return Check("SELinux", "ok", "permissive")


def doctor(session: Devbox) -> tuple[Check, ...]:
    checks: list[Callable[[], Check | list[Check]]] = [
        _kvm, _nested, lambda: _libvirt(session), lambda: _terraform(session), lambda: _builder(session), _iso,
        _selinux,
    ]  # fmt: skip
    out: list[Check] = []
    for check in checks:
        try:
            got = check()
        except DevboxError as exc:
            got = Check(getattr(check, "__name__", "check").strip("_"), "fail", exc.message, exc.remedy)
        out.extend(got if isinstance(got, list) else [got])
    return tuple(out)
