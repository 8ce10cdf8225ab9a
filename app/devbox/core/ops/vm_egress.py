"""The VM's egress (``[vm] egress``): enforced on the host, where nothing in the guest reaches.

- ``allow``: a libvirt network filter on the VM's interface lets out ARP, DHCP and TCP to
  one port on the host, where devbox's proxy (squid, in a container on the host's network,
  listening on the libvirt network's address only) lets through the names on the list and
  refuses the rest, as for containers; ssh into the VM stays open (devbox reaches it so).
- ``none``: the same filter without the proxy: the VM reaches nothing.
- ``open``: no filter, no proxy (libvirt's network as before).

What holds against root in the VM (an agent there may run ``sudo``): the filter lives in
the host's netfilter tables on the VM's tap device, applied by libvirtd; the guest can
change its addresses, routes, firewall and proxy settings and still sends nothing but
ARP, DHCP and TCP to the proxy's port (its MAC is pinned too: ``no-mac-spoofing``). What
does not hold: the guest's root can talk to the proxy like any process there (the list
is the VM's, not one agent's), and it can reach the VM's own services.

The proxy's port is chosen free on the host once and recorded in ``.build/egress/vm.json``
with the policy, so the filter and the agents' environment agree across runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
from dataclasses import dataclass

from devbox.core import egress, libvirt
from devbox.core.egress import Policy
from devbox.core.errors import NotAvailable, ToolMissing
from devbox.core.events import Reporter
from devbox.core.ops.egress import PATH, PROXY_LOG_SIZE, START, NetLog, connections, host_addresses, refused, wait_proxy
from devbox.core.podman_records import CreateSpec
from devbox.core.session import Devbox

RECORD = "vm.json"
LABEL_CONF = "devbox.egress-conf"  # the proxy's configuration's digest: the same one is kept


@dataclass(frozen=True)
class VmEgress:
    mode: str
    address: str = ""  # the proxy's, on the libvirt network ("" without one)
    port: int = 0

    def env(self) -> dict[str, str]:
        """What tells the VM's agents to go through the proxy ({} without one)."""
        return egress.proxy_env(self.address, self.port) if self.mode == "allow" and self.address else {}


def names(domain: str) -> tuple[str, str]:
    """The filter's and the proxy container's names for ``domain``."""
    return f"devbox-egress-{domain}", f"{domain}-egress"


def recorded(session: Devbox) -> VmEgress:
    try:
        data = json.loads((session.settings.build_dir / "egress" / RECORD).read_text())
        return VmEgress(str(data["mode"]), str(data.get("address", "")), int(data.get("port", 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return VmEgress("open")


def _write(session: Devbox, state: VmEgress, policy: Policy) -> None:
    path = session.settings.build_path("egress", RECORD)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    data = {"mode": state.mode, "address": state.address, "port": state.port, **policy.as_json()}
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def policy(session: Devbox) -> Policy:
    """The VM's policy: ``[vm] egress`` and ``allow``, with every environment's ``[container] allow``."""
    vm = session.settings.vm.egress
    return Policy(vm.mode, tuple(dict.fromkeys((*vm.allow, *session.settings.egress.allow))))


def filter_for(session: Devbox, domain: str) -> str:
    """The filter a new VM is born with (terraform's ``network_filter``); "" for open."""
    return "" if policy(session).mode == "open" else names(domain)[0]


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def apply(session: Devbox, domain: str, report: Reporter, cancel: threading.Event) -> VmEgress:
    """The VM ``domain``'s filter and proxy as ``[vm] egress`` says (each run: idempotent)."""
    s = session.settings
    uri = session.libvirt_uri
    want = policy(session)
    filter_name, proxy = names(domain)
    podman = session.podman
    if want.mode == "open":
        changed = libvirt.set_filter(uri, domain, filter_name, None)
        if podman.container(proxy) is not None:
            podman.remove(proxy, force=True)
            changed = True
        state = VmEgress("open")
        if changed:
            report.log(f"egress: open (the filter and proxy of {domain} removed)")
        _write(session, state, want)
        return state
    if shutil.which("xsltproc") is None:  # terraform's libvirt provider applies the filter's xslt with it
        raise ToolMissing("xsltproc is missing: a new VM is born with its network filter through it",
                          "sudo dnf install libxslt (Debian/Ubuntu: sudo apt-get install xsltproc)")  # fmt: skip
    if "+ssh" in uri:
        raise NotAvailable(f"[vm] egress = {want.mode!r} is enforced on this machine only, and the VM is on another",
                           'set [vm] egress = "open" for it, or run the VM here')  # fmt: skip
    gateway = libvirt.network_gateway(uri, s.vm.network)
    if not gateway:
        raise NotAvailable(f"libvirt network {s.vm.network!r} has no IPv4 address for a proxy to listen on",
                           "see `virsh net-dumpxml " + s.vm.network + "`")  # fmt: skip
    state = VmEgress(want.mode)
    if want.mode == "allow":
        before = recorded(session)
        port = before.port if before.address == gateway and before.port else _free_port(gateway)
        state = VmEgress("allow", gateway, port)
        conf = egress.squid_conf(want, refused=[*refused(podman, s, host_addresses()), f"{gateway}/32"],
                                 dns=s.egress_dns, listen=f"{gateway}:{port}")  # fmt: skip
        digest = hashlib.sha256(conf.encode()).hexdigest()[:16]
        rec = podman.container(proxy)
        if rec is None or rec.state != "running" or rec.labels.get(LABEL_CONF) != digest:
            if rec is not None:
                podman.remove(proxy, force=True)  # its rules were another run's
            image = podman.image(s.image)
            if image is None:
                raise NotAvailable(f"the image {s.image} is not here for the VM's proxy", "./devbox image build")
            podman.create(CreateSpec(
                name=proxy, image=image.id, command=(), entrypoint=("/bin/sh", "-c", START),
                labels={"devbox.egress-for": domain, LABEL_CONF: digest},
                env={"DEVBOX_EGRESS_CONF": conf, "PATH": PATH}, mounts=(), workdir="/tmp", hostname="devbox-egress",
                user="65534:65534", cap_add=(), network="host", memory=256 << 20, pids=128,
                log_size=PROXY_LOG_SIZE,
                tmpfs=(("/tmp", "1777", 64 << 20), ("/run", "755", 1 << 20)),
            ))  # fmt: skip
            podman.start(proxy)
            wait_proxy(podman, domain, cancel)
    elif podman.container(proxy) is not None:
        podman.remove(proxy, force=True)
    proxy_at = (state.address, state.port) if want.mode == "allow" else None
    libvirt.set_filter(uri, domain, filter_name, egress.nwfilter_xml(filter_name, proxy=proxy_at))
    _write(session, state, want)
    where = f" through http://{state.address}:{state.port}" if proxy_at else ""
    report.log(f"egress: {want.describe()}{where} (filter {filter_name}, enforced by libvirtd on the host)")
    return state


def remove(session: Devbox, domain: str) -> list[str]:
    """The VM's proxy and filter, after the VM is gone; what went."""
    filter_name, proxy = names(domain)
    gone = []
    if session.podman.container(proxy) is not None:
        session.podman.remove(proxy, force=True)
        gone.append(f"container {proxy}")
    libvirt.set_filter(session.libvirt_uri, domain, filter_name, None)
    (session.settings.build_dir / "egress" / RECORD).unlink(missing_ok=True)
    return gone


def vm_net_log(session: Devbox) -> NetLog:
    """Every request the VM's proxy answered or refused, oldest first (``net log --vm``)."""
    from devbox.core.ops.vm import domain_name  # (it imports this module)

    domain = domain_name(session)
    conns = connections(session.podman, domain)
    fence = recorded(session)
    want = policy(session) if fence.mode != "open" else Policy("open")
    return NetLog("(the VM)", names(domain)[1], want, conns, egress.tally(conns))
