"""VM mode's operations: the chain image → disk (qcow2) → VM (terraform on libvirt), each
step redone only when something upstream changed and saying why; the VM's status, what
tearing it down would lose, and the teardown itself.

terraform owns the VM's lifecycle; libvirt (read-only) answers what is running, with which
CPU mode and address. When terraform's state is lost, teardown falls back to libvirt and
removes only the domain and volumes devbox named (``devbox-<name>-*``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devbox.core import builder, early_plan, hosts, image, libvirt, terraform, transfer
from devbox.core.errors import DevboxError, NotFound, Refused, ToolTimeout
from devbox.core.events import Reporter, Sink, Subject, null_sink
from devbox.core.filesystem import read_json
from devbox.core.freshness import Verdict
from devbox.core.locks import hold
from devbox.core.ops import vm_egress
from devbox.core.ops.views import Section
from devbox.core.ops.vm_follow import follow, following
from devbox.core.ops.vm_host import place
from devbox.core.session import Devbox


def disk_status(session: Devbox) -> builder.DiskStatus:
    """Fresh or stale, and why ("disk missing", "image rebuilt since the disk was made")."""
    return builder.status(session.settings, session.podman, session.user)


def build_disk(
    session: Devbox, *, force: bool = False, sink: Sink = null_sink, cancel: threading.Event | None = None
) -> builder.DiskStatus:
    """The image if stale, then the disk if stale (or ``force``): each step says why."""
    cancel = cancel or threading.Event()
    s = session.settings
    report = Reporter(sink, "disk-build")
    session.podman.expect([s.builder_image])  # the image check's question asks for it too
    image.build(s, session.podman, report.about(Subject("image", s.image)), cancel)
    return builder.build(
        s, session.podman, session.user, report.about(Subject("disk", str(builder.disk_path(s)))), cancel, force=force
    )


def domain_name(session: Devbox) -> str:
    return f"devbox-{session.settings.vm.name}"


# the module's variables that come straight from a setting (vm status names the setting)
SETTING_OF = {
    "libvirt_uri": "libvirt.uri", "pool": "vm.pool", "network": "vm.network", "user": "vm.user",
    "memory_mib": "vm.memory_mib", "vcpus": "vm.vcpus", "disk_size_bytes": "disk.size_gib",
    "domain_type": "vm.domain_type", "cpu_mode": "vm.cpu_mode", "qemu_agent": "vm.qemu_agent",
}  # fmt: skip


def variables(session: Devbox, disk: builder.DiskStatus) -> dict[str, Any]:
    """The module's variables (terraform/variables.tf) from the settings and the disk."""
    s = session.settings
    key = (disk.record or {}).get("key") or disk.key
    if not key or not disk.path.exists():
        raise NotFound("there is no disk to boot yet", "build it: ./devbox disk build (or ./vm-up.sh)")
    pub = transfer.project_key(s).with_suffix(".pub").read_text().strip()
    return {
        "name": s.vm.name,
        "repo": str(s.repo),
        "disk_path": str(disk.path),
        "disk_key": key,
        "ssh_public_key": pub,
        "wait_for_lease": s.vm.wait_for_lease,
        **setting_variables(session),
    }


def terraform_uri(session: Devbox) -> str:
    """libvirt as terraform's provider reaches it: ``libvirt.uri``, or the VM's host's."""
    spec = session.vm_host
    return session.settings.libvirt_uri if spec is None else hosts.terraform_uri(session.settings, spec)


def setting_variables(session: Devbox) -> dict[str, Any]:
    s, v = session.settings, session.settings.vm
    return {
        "libvirt_uri": terraform_uri(session),
        "pool": v.pool,
        "network": v.network,
        "user": v.user or session.user.name,
        "memory_mib": v.memory_mib,
        "vcpus": v.vcpus,
        "disk_size_bytes": s.disk_size_gib * 1024**3,
        "domain_type": v.domain_type,
        "cpu_mode": v.cpu_mode,
        "qemu_agent": v.qemu_agent,
        "network_filter": vm_egress.filter_for(session, domain_name(session)),
    }


@dataclass(frozen=True)
class VmUp:
    domain: str
    ip: str
    applied: bool  # terraform changed something
    reasons: tuple[str, ...]  # why it did (or why nothing was needed)
    warnings: tuple[str, ...]  # e.g. the CPU mode libvirt really gave the VM
    egress: str = "open"  # [vm] egress as enforced now (core/ops/vm_egress.py)


def vm_up(
    session: Devbox, *, force_disk: bool = False, host: str | None = None, sink: Sink = null_sink,
    cancel: threading.Event | None = None,
) -> VmUp:  # fmt: skip
    """Image, disk and VM, each only when stale (each step's event says why it ran or not);
    on ``host`` (a ``[hosts.NAME]``, or ``local``) when given, else where the VM already is."""
    cancel = cancel or threading.Event()
    s = session.settings
    report = Reporter(sink, "vm-up")
    vm_report = report.about(Subject("vm", domain_name(session)))
    with hold(s.build_path("locks", "vm.lock"), "a VM operation", cancel=cancel,
              on_wait=lambda: vm_report.log("waiting for another devbox VM operation to finish")):  # fmt: skip
        runner = terraform.Runner(s)
        # what the VM step needs, checked before minutes of image and disk builds
        runner.check_ready()
        place(session, runner, host, vm_report)
        # the plan first: its wait overlaps libvirt's answer and the image and disk checks
        # (the entry point's, started before devbox's imports, else one started now)
        early = early_plan.take(runner) or (None if force_disk else _plan_early(session, runner))
        try:
            libvirt.hypervisor(session.libvirt_uri)  # libvirtd answers (else one line with the fix)
            if s.vm.on_image_change == "upgrade" and not force_disk and not runner.interrupted():
                upgraded = follow(session, runner, sink, cancel)
                if upgraded is not None:
                    if early is not None:
                        early.stop()
                    return upgraded
            disk = build_disk(session, force=force_disk, sink=sink, cancel=cancel)
        except BaseException:
            if early is not None:
                early.stop()  # its terraform must not outlive this run
            raise
        before: libvirt.Vm | None = None
        try:
            # its filter defined and its proxy listening before terraform boots a VM that needs them
            vm_egress.apply(session, domain_name(session), vm_report, cancel)
            _recover_interrupted(session, runner, vm_report)
            before = libvirt.find_vm(session.libvirt_uri, domain_name(session))
            wanted = variables(session, disk)
            plan = early.answer(runner, wanted) if early is not None else None
            if early is not None:
                used = "its answer is used" if plan is not None else f"not used: {early.unused or 'it gave no plan'}"
                vm_report.log(f"terraform plan {early.origin}: {used}")
            if plan is None:
                runner.init(vm_report)
                plan = runner.plan(wanted, vm_report, cancel)
            if plan.changes and before is not None and before.uuid not in runner.recorded()[0]:
                raise Refused(
                    f"{before.name} exists in libvirt but terraform's state does not record it "
                    "(the state was lost or restored from elsewhere)",
                    "./vm-down.sh removes it (naming what is lost inside it), then ./vm-up.sh makes it anew",
                )
            if not plan.changes:
                reasons: tuple[str, ...] = ("terraform plans no changes",)
                vm_report.step("skip", f"{domain_name(session)} is up to date ({reasons[0]})")
            else:
                reasons = plan.reasons
                vm_report.step("start", f"applying: {'; '.join(reasons)}")
                try:
                    runner.apply(plan, vm_report, cancel)
                finally:  # a failed or stopped apply may have made the entry too
                    _drop_reservations(session, vm_report)
            out = runner.output()
            after = libvirt.require_vm(session.libvirt_uri, str(out.get("name") or domain_name(session)))
            if before is None or before.uuid != after.uuid:
                _forget_host_key(session)  # a new VM has a new host key
            ip = str(out.get("ip") or after.ip)
            if not ip and after.running and s.vm.wait_for_lease:
                ip = libvirt.wait_for_address(session.libvirt_uri, after.name, 120, cancel)
            fenced = vm_egress.apply(session, after.name, vm_report, cancel)  # a VM made before: in place
            warnings = _check_cpu(session, after)
            for w in warnings:
                vm_report.log(f"WARNING: {w}", stream="stderr")
            if plan.changes:
                vm_report.step("done", f"{after.name} {after.state}" + (f" at {ip}" if ip else " (no address yet)"))
            return VmUp(after.name, ip, plan.changes, reasons, warnings, fenced.mode)
        except BaseException as exc:
            if isinstance(exc, DevboxError):
                vm_report.step("fail", exc.message)
            _forget_key_if_remade(session, before)
            raise
        finally:
            if early is not None:
                early.stop()


def _recover_interrupted(session: Devbox, runner: terraform.Runner, report: Reporter) -> None:
    """After an apply that was stopped before terraform ended (a closed terminal, a kill),
    the domain or volumes it made may be missing from the state: every later apply would
    fail with "already exists". Those, and only those (this checkout's, named
    ``devbox-<name>-*``, absent from the state), are removed, saying so, and made again."""
    if not runner.interrupted():
        return
    s = session.settings
    domains, volumes = runner.recorded()
    vm = libvirt.find_vm(session.libvirt_uri, domain_name(session))
    stray_domain = vm is not None and vm.uuid not in domains
    stray_volumes = [v for v in libvirt.owned_volumes(session.libvirt_uri, s.vm.name, s.vm.pool) if v not in volumes]
    if stray_domain or stray_volumes:
        what = ", ".join(([domain_name(session)] if stray_domain else []) + stray_volumes)
        report.log(f"an interrupted vm up made {what} without recording it in terraform's state: replacing it")
        libvirt.remove(session.libvirt_uri, s.vm.name, str(s.repo), s.vm.pool, domain=stray_domain,
                       volumes=stray_volumes)  # fmt: skip
    # nothing of it is outside the state now: the marker has done its job. (A stopped apply
    # whose terraform still finished what it was making left nothing stray; its plan is then
    # a no-op, and the marker must not keep `vm status` saying "stopped during apply".)
    runner.applying.unlink(missing_ok=True)


def _drop_reservations(session: Devbox, report: Reporter) -> None:
    """The static DHCP entries the provider leaves in the network (libvirt.drop_reservations):
    removed after every apply and destroy; a failure to remove them is said, never fatal."""
    s = session.settings
    try:
        dropped = libvirt.drop_reservations(session.libvirt_uri, s.vm.network, s.vm.name)
    except DevboxError as exc:
        report.log(f"WARNING: could not remove {domain_name(session)}'s static DHCP entries from network "
                   f"{s.vm.network}: {exc.message}", stream="stderr")  # fmt: skip
        return
    if dropped:
        report.log(f"removed the static DHCP entries terraform-provider-libvirt left for {domain_name(session)} "
                   f"in network {s.vm.network}: {', '.join(dropped)}")  # fmt: skip


def _forget_key_if_remade(session: Devbox, before: libvirt.Vm | None) -> None:
    """A failed or interrupted run that got as far as a new domain: its host key is new too."""
    try:
        now = libvirt.find_vm(session.libvirt_uri, domain_name(session))
    except DevboxError:
        return
    if now is not None and (before is None or before.uuid != now.uuid):
        _forget_host_key(session)


def _plan_early(session: Devbox, runner: terraform.Runner) -> early_plan.EarlyPlan | None:
    """``terraform plan`` started with the disk already recorded, while the image and disk
    are checked: when both are fresh (the no-op ``vm up``) its answer is the one needed and
    the two waits overlap; when the disk changes, the plan is thrown away and made again."""
    s = session.settings
    rec = read_json(builder.record_path(s))
    if not isinstance(rec, dict) or not rec.get("key") or not builder.disk_path(s).exists():
        return None
    try:
        recorded = builder.DiskStatus(builder.disk_path(s), rec, rec["key"], Verdict(True))
        return early_plan.EarlyPlan(runner, variables(session, recorded), "started beside the image and disk checks")
    except DevboxError:
        return None


def _check_cpu(session: Devbox, vm: libvirt.Vm) -> tuple[str, ...]:
    """What the domain XML says the VM really got, against what VM mode exists for."""
    want = session.settings.vm.cpu_mode
    out = []
    if want and vm.cpu_mode != want:
        out.append(
            f"{vm.name} has CPU mode {vm.cpu_mode or 'default'!r}, not {want!r}: no nested virtualisation "
            "(check the provider version: terraform/versions.tf pins dmacvicar/libvirt 0.8.3)"
        )
    if session.settings.vm.domain_type == "kvm" and libvirt.kvm_nested() == "N":
        out.append("nested virtualisation is off on this host (see `./devbox doctor` for the fix)")
    return tuple(out)


def _forget_host_key(session: Devbox) -> None:
    """The VM's recorded host key (the hosts' keys in the same file stay)."""
    known = session.settings.build_path("ssh", "known_hosts")
    if not known.exists():
        return
    kept = [line for line in known.read_text().splitlines() if line.split()[:1] != [domain_name(session)]]
    if kept:
        known.write_text("".join(f"{line}\n" for line in kept))
    else:
        known.unlink()


@dataclass(frozen=True)
class VmLoss:
    """What ``vm_down`` would destroy; empty when there is no VM."""

    domain: str = ""
    state: str = ""
    ip: str = ""
    volumes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.domain or self.volumes)

    def lines(self) -> list[str]:
        out = []
        if self.domain:
            where = f" at {self.ip}" if self.ip else ""
            out.append(f"VM {self.domain} ({self.state}{where}) and everything written inside it since it was made")
            out.append("  (/var: home directories, containers and images; /etc changes; packages layered with dnf)")
        if self.volumes:
            out.append(f"volumes: {', '.join(self.volumes)}")
        return out


def vm_loss(session: Devbox) -> VmLoss:
    s = session.settings
    vm = libvirt.find_vm(session.libvirt_uri, domain_name(session))
    vols = tuple(v for v in libvirt.owned_volumes(session.libvirt_uri, s.vm.name, s.vm.pool) if "-base-" not in v)
    if vm is None:
        return VmLoss(volumes=vols)
    return VmLoss(vm.name, vm.state, vm.ip, vols)


@dataclass(frozen=True)
class VmDown:
    domain: str  # "" when there was no VM
    volumes: tuple[str, ...]
    via: str  # "terraform", "libvirt" (state lost) or "" (nothing to do)


def vm_down(session: Devbox, *, sink: Sink = null_sink, cancel: threading.Event | None = None) -> VmDown:
    """Destroy the VM and its volumes (terraform; libvirt when terraform's state is lost)."""
    cancel = cancel or threading.Event()
    s = session.settings
    report = Reporter(sink, "vm-down").about(Subject("vm", domain_name(session)))
    with hold(s.build_path("locks", "vm.lock"), "a VM operation", cancel=cancel,
              on_wait=lambda: report.log("waiting for another devbox VM operation to finish")):  # fmt: skip
        runner = terraform.Runner(s)
        before = vm_loss(session)
        existed = set(libvirt.owned_volumes(session.libvirt_uri, s.vm.name, s.vm.pool))  # the base volume too
        try:
            if runner.has_state():
                recorded = read_json(runner.vars)
                if not isinstance(recorded, dict):
                    raise DevboxError(
                        f"{runner.vars} is missing: terraform cannot destroy without the VM's variables",
                        "run ./vm-up.sh once (it writes them), then ./vm-down.sh",
                    )
                report.step("start", f"terraform destroy {before.domain or 'of the recorded state'}")
                runner.init(report)
                try:
                    runner.destroy(recorded, report, cancel)
                    via = "terraform"
                except ToolTimeout:  # a hung provider: what it would remove is named devbox-<name>-*
                    report.log(f"terraform destroy hung twice for {terraform.DESTROY_TIMEOUT:.0f} s (stopped): "
                               "removing the VM through libvirt instead", stream="stderr")  # fmt: skip
                    via = "libvirt"
            elif before.empty:
                report.step("skip", "no VM to remove")
                return VmDown("", (), "")
            else:
                report.step("start", "terraform has no state for this VM: removing it through libvirt")
                via = "libvirt"
            # leftovers either way: a lost state, or volumes terraform never recorded
            gone = libvirt.teardown(session.libvirt_uri, s.vm.name, str(s.repo), s.vm.pool)
            _drop_reservations(session, report)
            terraform.clear(s)
            from devbox.core.ops.fleet_vm import RECORD  # (ssh and transfer: imported when needed)

            s.build_path(RECORD).unlink(missing_ok=True)  # the VM's agents went with it
            with contextlib.suppress(DevboxError):  # its proxy and filter (podman down: the next vm up renews)
                for what in vm_egress.remove(session, domain_name(session)):
                    report.log(f"removed {what}")
            with contextlib.suppress(DevboxError):  # podman down: the next disk build cleans up
                builder.clean_leftovers(s, session.podman, report)
            _forget_host_key(session)
            hosts.vm_record(s).unlink(missing_ok=True)  # the next VM is made here unless --host says
            # what is gone now, counted from libvirt: terraform's destroy and the leftovers alike
            volumes = tuple(sorted(existed - set(libvirt.owned_volumes(session.libvirt_uri, s.vm.name, s.vm.pool))))
            report.step("done", f"removed {before.domain or gone.domain or 'the VM'} and {len(volumes)} volume(s)")
            return VmDown(before.domain or gone.domain, volumes, via)
        except BaseException as exc:
            if isinstance(exc, DevboxError):
                report.step("fail", exc.message)
            raise


@dataclass(frozen=True)
class VmStatus:
    domain: str
    disk: Section[builder.DiskStatus]
    vm: Section[libvirt.Vm | None]
    verdict: Verdict  # is the VM what vm_up would make now? (no terraform run: from its records)
    host: str = ""  # the [hosts.NAME] the VM lives on; "" for this machine

    def to_json(self) -> dict[str, Any]:
        vm = self.vm.value
        return {
            "schema": 1,
            "domain": self.domain,
            "host": self.host or "local",
            "disk": self.disk.value.to_json() if self.disk.value else None,
            "vm": None if vm is None else vm.to_json(),
            "fresh": self.verdict.fresh,
            "reasons": list(self.verdict.reasons),
            "errors": {k: p.to_json() for k, p in (("disk", self.disk.problem), ("vm", self.vm.problem)) if p},
        }


def vm_status(session: Devbox) -> VmStatus:
    """The disk's and the VM's freshness with reasons, and what libvirt says of the VM."""
    name = domain_name(session)
    disk = Section.fetch(lambda: disk_status(session))
    vm = Section.fetch(lambda: libvirt.find_vm(session.libvirt_uri, name))
    verdict = _vm_verdict(session, disk.value, vm)
    if disk.problem is not None:  # unknown is not fresh
        verdict = Verdict(False, (*verdict.reasons, f"the disk could not be checked: {disk.problem.message}"))
    spec = session.vm_host
    return VmStatus(name, disk, vm, verdict, spec.name if spec else "")


def _vm_verdict(session: Devbox, disk: builder.DiskStatus | None, vm: Section[libvirt.Vm | None]) -> Verdict:
    runner = terraform.Runner(session.settings)
    state = read_json(runner.state)
    outputs = (state or {}).get("outputs") or {} if isinstance(state, dict) else {}
    made = runner.has_state()
    reasons: list[str] = []
    if vm.problem is not None:  # unknown is not fresh
        reasons.append(f"the VM could not be checked: {vm.problem.message}")
    if vm.problem is None and vm.value is None:
        reasons.append("VM missing" if made else "VM not created")
    if not made and vm.value is not None:
        reasons.append("terraform state lost (./vm-down.sh removes the VM through libvirt)")
    if made:
        key = (outputs.get("disk_key") or {}).get("value")
        follows = following(session, runner, disk, vm.value)
        if follows is not None:
            reasons += [follows] if follows else []
        elif disk is not None and not disk.verdict.fresh:
            reasons.append(f"disk stale: {disk.verdict.reason}")
        elif disk is not None and disk.record and key != disk.record.get("key"):
            reasons.append("disk rebuilt since the VM was made")
        reasons += input_changes(session, runner)
        if vm.value is not None and vm.value.uuid not in runner.recorded()[0]:
            reasons.append("terraform's state does not record this VM (./vm-up.sh says what to do)")
    if vm.value is not None and not vm.value.running:
        reasons.append(f"VM {vm.value.state}")
    if runner.interrupted():
        reasons.append("an earlier vm up was stopped during apply (./vm-up.sh finishes it)")
    return Verdict(not reasons, tuple(reasons))


def input_changes(session: Devbox, runner: terraform.Runner) -> list[str]:
    """What changed in terraform's own inputs since the last apply, besides the disk: the
    module, or a setting that is one of its variables."""
    reasons = []
    applied = read_json(runner.dir / "applied.json")
    if isinstance(applied, dict) and applied.get("module") != runner.module_digest():
        reasons.append(f"{runner.module.name}/ changed")
    was = applied.get("variables") if isinstance(applied, dict) else None
    if isinstance(was, dict):
        for var, value in setting_variables(session).items():
            if var in was and was[var] != value:
                reasons.append(f"{SETTING_OF[var]} changed ({_shown(var, was[var])} → {_shown(var, value)})")
    return reasons


def _shown(var: str, value: Any) -> str:
    return f"{value // 1024**3} GiB" if var == "disk_size_bytes" and isinstance(value, int) else repr(value)


@dataclass(frozen=True)
class VmOverview:
    """The dashboard's view: this checkout's VMs and whether its VM is what vm_up would make."""

    vms: Section[tuple[libvirt.Vm, ...]]
    verdict: Verdict
    host: str = ""  # the [hosts.NAME] the VM lives on; "" for this machine


def vm_overview(
    session: Devbox, disk: builder.DiskStatus | None, vms: Section[tuple[libvirt.Vm, ...]] | None = None
) -> VmOverview:
    s = session.settings
    vms = vms if vms is not None else Section.fetch(lambda: libvirt.list_vms(session.libvirt_uri, str(s.repo)))
    mine: Section[libvirt.Vm | None] = Section(
        next((v for v in vms.value or () if v.name == domain_name(session)), None), vms.problem
    )
    spec = session.vm_host
    return VmOverview(vms, _vm_verdict(session, disk, mine), spec.name if spec else "")


def list_vms(session: Devbox) -> tuple[libvirt.Vm, ...]:
    """This checkout's VMs. Quiet (empty) while VM mode is unused: a container-only user
    without libvirt is not told about it on every ``status``."""
    s = session.settings
    try:
        return libvirt.list_vms(session.libvirt_uri, str(s.repo))
    except DevboxError:
        if terraform.Runner(s).has_state():
            raise
        return ()


def watch_vms(session: Devbox, on_change: Callable[[str, str], None], stop: threading.Event) -> None:
    """Call ``on_change(domain, event)`` on each lifecycle event of a devbox VM (blocks until
    ``stop``; the dashboard redraws its VM pane at once instead of at the next poll)."""
    libvirt.watch(session.libvirt_uri, on_change, stop)
