"""The libvirt adapter (libvirt-python): devbox's VMs as records, their addresses, the CPU
mode they really got, host checks, and the fallback teardown when terraform's state is lost.

terraform makes and replaces VMs; this module only reads them, except ``teardown``, which
removes exactly one devbox domain and the volumes named ``devbox-<name>-*`` in its pool:
nothing devbox did not create. A VM is devbox's when its description is ``devbox:<repo>``
(set by terraform/main.tf), so two checkouts on one host never see each other's VMs.

libvirt-python is the ``vm`` extra (an sdist that needs libvirt's headers): it is imported
on first use, and its absence is a one-line error naming the install command.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devbox.core.errors import DevboxError, NotAvailable, NotFound, VmFailed

DESCRIPTION_PREFIX = "devbox:"
INSTALL_REMEDY = "pip install 'devbox[vm]' (needs libvirt's headers: sudo dnf install libvirt-devel gcc python3-devel)"
STATES = {0: "no state", 1: "running", 2: "blocked", 3: "paused", 4: "shutting down", 5: "shut off", 6: "crashed",
          7: "suspended"}  # fmt: skip


class LibvirtFailed(VmFailed):
    pass


@dataclass(frozen=True)
class Vm:
    name: str
    uuid: str
    repo: str  # the checkout named in its description
    state: str  # "running", "shut off", ...
    vcpus: int
    memory_mib: int
    cpu_seconds: float
    started: float | None  # when its qemu process started (epoch), None when not running or unknown
    mac: str
    ip: str  # "" until it has a lease (or the guest agent answers)
    cpu_mode: str  # from the live XML: "host-passthrough", "" for the hypervisor's default
    domain_type: str  # kvm / qemu

    @property
    def running(self) -> bool:
        return self.state == "running"

    def uptime(self, now: float | None = None) -> float | None:
        return None if self.started is None else max(0.0, (now or time.time()) - self.started)

    def to_json(self) -> dict[str, object]:
        up = self.uptime()
        return {
            "name": self.name, "state": self.state, "ip": self.ip, "mac": self.mac, "vcpus": self.vcpus,
            "memory_mib": self.memory_mib, "cpu_seconds": round(self.cpu_seconds, 1),
            "uptime": None if up is None else round(up), "cpu_mode": self.cpu_mode, "domain_type": self.domain_type,
        }  # fmt: skip


def _module() -> Any:
    try:
        import libvirt
    except ImportError:
        raise NotAvailable("libvirt-python is not installed (VM mode needs it)", INSTALL_REMEDY) from None
    return libvirt


def _quiet(libvirt: Any) -> None:
    # libvirt prints every error to stderr by default as well as raising it: keep only the raise
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


@contextlib.contextmanager
def connect(uri: str, *, read_only: bool = False) -> Iterator[Any]:
    """A libvirt connection; its failures become one line with a fix."""
    libvirt = _module()
    _quiet(libvirt)
    try:
        conn = libvirt.openReadOnly(uri) if read_only else libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise _unreachable(uri, exc) from None
    try:
        yield conn
    except libvirt.libvirtError as exc:
        raise LibvirtFailed(f"libvirt ({uri}): {_text(exc)}", "see `virsh -c URI` for details") from None
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _text(exc: Any) -> str:
    msg = exc.get_error_message() if hasattr(exc, "get_error_message") else str(exc)
    return (msg or str(exc)).strip().splitlines()[0] if (msg or str(exc)).strip() else type(exc).__name__


def _unreachable(uri: str, exc: Any) -> DevboxError:
    text = _text(exc)
    if "ermission denied" in text or "authentication" in text.lower():
        return NotAvailable(
            f"libvirt at {uri} refused this user: {text}",
            "add yourself to the libvirt group (sudo usermod -aG libvirt $USER, then log in again)",
        )
    return NotAvailable(f"libvirtd is not reachable at {uri}: {text}", "start it: sudo systemctl enable --now libvirtd")


def _description(dom: Any, libvirt: Any) -> str:
    try:
        return str(dom.metadata(libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, None) or "")
    except libvirt.libvirtError:
        return ""


def _xml(dom: Any) -> ET.Element:
    return ET.fromstring(dom.XMLDesc(0))


def _mac(root: ET.Element) -> str:
    node = root.find("./devices/interface/mac")
    return "" if node is None else node.get("address", "")


def _cpu_mode(root: ET.Element) -> str:
    node = root.find("./cpu")
    return "" if node is None else node.get("mode", "custom")


def _address(dom: Any, libvirt: Any, mac: str, *, agent: bool = True) -> str:
    """The VM's IPv4 address: its DHCP lease on the libvirt network (matched by MAC: the
    network keeps a destroyed domain's lease), then the guest agent."""
    sources = [libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE]
    if agent:
        sources.append(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT)
    for source in sources:
        try:
            ifaces = dom.interfaceAddresses(source, 0) or {}
        except libvirt.libvirtError:
            continue  # no agent in the guest, or the network has no leases yet
        for iface in ifaces.values():
            if mac and (iface.get("hwaddr") or "").lower() != mac.lower():
                continue
            for addr in iface.get("addrs") or []:
                if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and not addr["addr"].startswith("127."):
                    return str(addr["addr"])
    return ""


def _started(name: str, uri: str) -> float | None:
    """When the VM's qemu process started, from libvirt's pid file (local system URI only)."""
    if not uri.startswith("qemu:///"):
        return None
    base = "/run/libvirt/qemu" if uri == "qemu:///system" else os.path.expanduser("~/.cache/libvirt/qemu/run")
    try:
        pid = int(Path(f"{base}/{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    from devbox.core.proc_table import started_at

    return started_at(pid)


def _record(dom: Any, libvirt: Any, uri: str, repo: str) -> Vm:
    state, _max_kib, mem_kib, vcpus, cpu_ns = dom.info()
    root = _xml(dom)
    mac = _mac(root)
    name = dom.name()
    running = state == libvirt.VIR_DOMAIN_RUNNING
    agent = root.find("./devices/channel/target[@name='org.qemu.guest_agent.0']") is not None
    return Vm(
        name=name,
        uuid=dom.UUIDString(),
        repo=repo,
        state=STATES.get(state, f"state {state}"),
        vcpus=int(vcpus),
        memory_mib=int(mem_kib) // 1024,
        cpu_seconds=cpu_ns / 1e9,
        started=_started(name, uri) if running else None,
        mac=mac,
        ip=_address(dom, libvirt, mac, agent=agent) if running else "",
        cpu_mode=_cpu_mode(root),
        domain_type=root.get("type", ""),
    )


def list_vms(uri: str, repo: str | None = None) -> tuple[Vm, ...]:
    """devbox's VMs (description ``devbox:<repo>``), this checkout's when ``repo`` is given."""
    libvirt = _module()
    with connect(uri, read_only=True) as conn:
        out = []
        for dom in conn.listAllDomains(0):
            desc = _description(dom, libvirt)
            if not desc.startswith(DESCRIPTION_PREFIX):
                continue
            owner = desc[len(DESCRIPTION_PREFIX) :]
            if repo is not None and owner != repo:
                continue
            try:
                out.append(_record(dom, libvirt, uri, owner))
            except libvirt.libvirtError:
                continue  # undefined between the listing and the look: it is gone
        return tuple(sorted(out, key=lambda v: v.name))


def find_vm(uri: str, name: str) -> Vm | None:
    libvirt = _module()
    with connect(uri, read_only=True) as conn:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            return None
        desc = _description(dom, libvirt)
        return _record(
            dom, libvirt, uri, desc[len(DESCRIPTION_PREFIX) :] if desc.startswith(DESCRIPTION_PREFIX) else ""
        )


def wait_for_address(uri: str, name: str, timeout: float, cancel: threading.Event) -> str:
    """Poll the lease (then the agent) until the VM has an address or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        vm = find_vm(uri, name)
        if vm is not None and vm.ip:
            return vm.ip
        if time.monotonic() >= deadline or cancel.wait(1.0):
            return ""


@dataclass(frozen=True)
class Teardown:
    domain: str  # "" when there was none
    volumes: tuple[str, ...]


def owned_volumes(uri: str, name: str, pool: str) -> tuple[str, ...]:
    """The volumes devbox made for VM ``name``: ``devbox-<name>-*`` in ``pool``."""
    libvirt = _module()
    prefix = f"devbox-{name}-"
    with connect(uri, read_only=True) as conn:
        try:
            p = conn.storagePoolLookupByName(pool)
        except libvirt.libvirtError:
            return ()
        return tuple(sorted(v for v in p.listVolumes() if v.startswith(prefix)))


def teardown(uri: str, name: str, repo: str, pool: str) -> Teardown:
    """Destroy and undefine ``devbox-<name>`` and delete its volumes, when terraform's state
    is lost. Refuses a domain of that name that is not devbox's for this checkout."""
    return remove(uri, name, repo, pool, domain=True, volumes=None)


def remove(uri: str, name: str, repo: str, pool: str, *, domain: bool, volumes: Iterable[str] | None) -> Teardown:
    """Remove ``devbox-<name>`` (when ``domain``; refused unless it is this checkout's) and
    the named volumes (``None``: every ``devbox-<name>-*``; only such names, never others)."""
    libvirt = _module()
    dom_name = f"devbox-{name}"
    removed = ""
    if domain:
        with connect(uri) as conn:
            try:
                dom = conn.lookupByName(dom_name)
            except libvirt.libvirtError:
                dom = None
            if dom is not None:
                owner = _description(dom, libvirt)
                if owner != DESCRIPTION_PREFIX + repo:
                    raise LibvirtFailed(
                        f"domain {dom_name} is not this checkout's VM (its description is {owner!r})",
                        "remove it yourself with virsh if it is yours, or set vm.name to another name",
                    )
                if dom.isActive():
                    with contextlib.suppress(libvirt.libvirtError):  # it may stop on its own meanwhile
                        dom.destroy()
                try:
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
                except libvirt.libvirtError:
                    dom.undefine()  # drivers without those flags (and domains without NVRAM)
                removed = dom_name
    gone = []
    wanted = None if volumes is None else set(volumes)
    with connect(uri) as conn:
        try:
            p = conn.storagePoolLookupByName(pool)
            p.refresh(0)
            names = [v for v in p.listVolumes() if v.startswith(f"{dom_name}-") and (wanted is None or v in wanted)]
        except libvirt.libvirtError:
            names = []
        # overlays before the base volume they are backed by
        for vol_name in sorted(names, key=lambda n: "-base-" in n):
            with contextlib.suppress(libvirt.libvirtError):
                p.storageVolLookupByName(vol_name).delete(0)
                gone.append(vol_name)
    return Teardown(removed, tuple(gone))


def drop_reservations(uri: str, network: str, name: str) -> tuple[str, ...]:
    """Remove the network's static DHCP entries named ``devbox-<name>``; the removed
    ``MAC=IP`` pairs.

    terraform-provider-libvirt 0.8.3 turns a ``wait_for_lease`` NIC's first lease into a
    static ``<host>`` entry of the network (live and persistent: libvirt/domain.go,
    ``updateOrAddHost``) and never removes it, not even when it destroys the domain. Every
    VM made reserved one more address for a MAC that no longer exists, until the network's
    range was full and new VMs never got a lease. The entry is not needed (dnsmasq keeps the
    lease itself), so devbox removes the ones named after this checkout's domain after each
    apply and destroy: only entries of that name, never another VM's.
    """
    libvirt = _module()
    wanted = f"devbox-{name}"
    dropped: list[str] = []
    with connect(uri) as conn:
        try:
            net = conn.networkLookupByName(network)
        except libvirt.libvirtError:
            return ()  # no such network: nothing reserved in it
        live = bool(net.isActive())
        for _, mac, ip in (e for e in _reservations(net, libvirt) if e[0] == wanted):
            xml = ET.tostring(ET.Element("host", {"mac": mac, "name": wanted, **({"ip": ip} if ip else {})}), "unicode")
            where = [libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG]
            if live:  # present in both, or in one of them only: each is deleted where it is
                where = [libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG | libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE, *where,
                         libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE]  # fmt: skip
            for flags in where:
                try:
                    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                               -1, xml, flags)  # fmt: skip
                except libvirt.libvirtError:
                    continue
                dropped.append(f"{mac}={ip}")
                break
    return tuple(dropped)


def _reservations(net: Any, libvirt: Any) -> list[tuple[str, str, str]]:
    """The network's static DHCP entries as (name, MAC, IP): the persistent definition's and
    the live ones (each once)."""
    seen: dict[str, tuple[str, str, str]] = {}
    for flags in (libvirt.VIR_NETWORK_XML_INACTIVE, 0):
        for host in ET.fromstring(net.XMLDesc(flags)).iterfind("./ip/dhcp/host"):
            if host.get("mac"):
                seen[host.get("mac", "").lower()] = (host.get("name", ""), host.get("mac", ""), host.get("ip", ""))
    return list(seen.values())


def stale_reservations(uri: str, network: str) -> tuple[tuple[str, str, str], ...]:
    """The network's static DHCP entries named like a devbox VM (``devbox-*``) whose domain no
    longer exists, as (name, MAC, IP): the ones the provider left before devbox removed them
    (drop_reservations). Read only."""
    libvirt = _module()
    with connect(uri, read_only=True) as conn:
        try:
            net = conn.networkLookupByName(network)
        except libvirt.libvirtError:
            return ()
        domains = {d.name() for d in conn.listAllDomains(0)}
        return tuple(e for e in _reservations(net, libvirt) if e[0].startswith("devbox-") and e[0] not in domains)


def require_vm(uri: str, name: str) -> Vm:
    vm = find_vm(uri, name)
    if vm is None:
        raise NotFound(f"VM {name} does not exist", "create it: ./vm-up.sh")
    return vm


# -- host checks (devbox doctor) ------------------------------------------------------------


def network_active(uri: str, network: str) -> bool | None:
    """True/False, or None when the network does not exist."""
    libvirt = _module()
    with connect(uri, read_only=True) as conn:
        try:
            return bool(conn.networkLookupByName(network).isActive())
        except libvirt.libvirtError:
            return None


def network_gateway(uri: str, network: str) -> str:
    """The network's IPv4 address on the host (its bridge's: the VM's gateway); "" when none."""
    libvirt = _module()
    with connect(uri, read_only=True) as conn:
        try:
            root = ET.fromstring(conn.networkLookupByName(network).XMLDesc(0))
        except libvirt.libvirtError:
            return ""
    for ip in root.findall("./ip"):
        if ip.get("family", "ipv4") == "ipv4" and ip.get("address"):
            return str(ip.get("address"))
    return ""


def set_filter(uri: str, domain: str, name: str, xml: str | None) -> bool:
    """Put the network filter ``name`` (defined from ``xml``) on the domain's interface, live
    and in its definition; ``xml`` None takes it off and undefines it. libvirtd enforces it
    in the host's own netfilter tables, on the VM's tap device: nothing inside the guest
    (its root included) can change it. Returns whether the interface changed."""
    libvirt = _module()
    with connect(uri) as conn:
        if xml is not None:
            try:  # a filter is redefined under its own UUID (libvirt refuses the name twice)
                known = conn.nwfilterLookupByName(name).UUIDString()
            except libvirt.libvirtError:
                known = ""
            root = ET.fromstring(xml)
            if known and root.find("uuid") is None:
                ET.SubElement(root, "uuid").text = known
            conn.nwfilterDefineXML(ET.tostring(root, encoding="unicode"))
        try:
            dom = conn.lookupByName(domain)
        except libvirt.libvirtError:
            dom = None
        changed = False
        if dom is not None:
            iface = _xml(dom).find("./devices/interface")
            if iface is not None:
                ref = iface.find("filterref")
                if xml is None and ref is not None:
                    iface.remove(ref)
                    changed = True
                elif xml is not None and (ref is None or ref.get("filter") != name):
                    if ref is not None:
                        iface.remove(ref)
                    ET.SubElement(iface, "filterref", {"filter": name})
                    changed = True
                if changed:
                    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
                    if dom.isActive():
                        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
                    dom.updateDeviceFlags(ET.tostring(iface, encoding="unicode"), flags)
        if xml is None:
            with contextlib.suppress(libvirt.libvirtError):  # (already gone)
                conn.nwfilterLookupByName(name).undefine()
        return changed


def has_filter(uri: str, domain: str) -> str:
    """The network filter on the domain's interface ("" when none, or no such domain)."""
    libvirt = _module()
    with connect(uri, read_only=True) as conn:
        try:
            iface = _xml(conn.lookupByName(domain)).find("./devices/interface/filterref")
        except libvirt.libvirtError:
            return ""
    return "" if iface is None else str(iface.get("filter", ""))


def pool_active(uri: str, pool: str) -> bool | None:
    libvirt = _module()
    with connect(uri, read_only=True) as conn:
        try:
            return bool(conn.storagePoolLookupByName(pool).isActive())
        except libvirt.libvirtError:
            return None


def hypervisor(uri: str) -> str:
    with connect(uri, read_only=True) as conn:
        version = conn.getVersion()
        return f"{conn.getType()} {version // 1000000}.{version // 1000 % 1000}.{version % 1000}"


# -- lifecycle events (the dashboard) -------------------------------------------------------

_loop_lock = threading.Lock()
_loop_started = False


def _ensure_event_loop(libvirt: Any) -> None:
    """libvirt's default event loop, run in one daemon thread per process."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


def watch(
    uri: str, on_change: Callable[[str, str], None], stop: threading.Event, ready: threading.Event | None = None
) -> None:
    """Call ``on_change(domain, event)`` for each lifecycle event of a devbox domain until
    ``stop`` is set (blocks; run it in a worker). ``ready`` is set once events are subscribed."""
    libvirt = _module()
    _ensure_event_loop(libvirt)
    names = {0: "defined", 1: "undefined", 2: "started", 3: "suspended", 4: "resumed", 5: "stopped", 6: "shutdown",
             7: "pmsuspended", 8: "crashed"}  # fmt: skip

    def callback(_conn: Any, dom: Any, event: int, _detail: int, _opaque: Any) -> None:
        if dom.name().startswith("devbox-"):
            on_change(dom.name(), names.get(event, str(event)))

    with connect(uri, read_only=True) as conn:
        cb = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, callback, None)
        if ready is not None:
            ready.set()
        try:
            while not stop.wait(0.5):
                if not conn.isAlive():
                    raise _unreachable(uri, RuntimeError("connection lost"))
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(cb)


def kvm_nested() -> str | None:
    """ "Y"/"N" from /sys/module/kvm_{intel,amd}/parameters/nested, None without KVM modules."""
    for vendor in ("intel", "amd"):
        with contextlib.suppress(OSError):
            value = Path(f"/sys/module/kvm_{vendor}/parameters/nested").read_text().strip()
            return "Y" if value in ("Y", "1") else "N"
    return None
