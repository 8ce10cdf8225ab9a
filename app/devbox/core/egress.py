"""Where an environment may connect: its egress policy, and the proxy configuration that
enforces it.

An environment's network is one of three (``egress``):

- ``open``: podman's network as before (``container.network``): whatever the host reaches;
- ``allow``: an internal podman network of its own with no route out, and on it a proxy
  (squid, from the environment's own image, in a container of its own) that is the only
  way out. The proxy matches the names the client asks for (``CONNECT`` target, the HTTP
  request's host), resolves them itself, and refuses IP literals, names not on the list,
  and names that resolve to the host, loopback, link-local (cloud metadata) or devbox's
  own networks; every request it answers or refuses is one line of its log;
- ``none``: loopback only.

Why squid and not a hand-written proxy or a firewall: it is the proxy distributions ship
and keep, it matches names before it resolves them, logs in a format devbox chooses, and
reloads its rules in place (``squid -k reconfigure``), so ``net allow`` widens a running
environment without touching its agent. An nftables set of addresses would be resolved
once and match addresses, not names.

This module is the policy and squid's words for it (rendering and log parsing); the
containers and networks are made in ``ops/egress.py`` through the podman adapter.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("open", "allow", "none")
PROXY_PORT = 3128
WEB_PORTS = (80, 443)  # a name without a port: the web's two
LOG_MARK = "devbox-egress"  # the first word of each line the proxy logs for devbox
# what an allowed name must never lead to: loopback, "this network", link-local (cloud
# metadata at 169.254.169.254), carrier-grade NAT (tailnets), IPv6 loopback, link-local
# and unique-local; the proxy's own networks and the host's addresses are added per proxy
ALWAYS_REFUSED = (
    "127.0.0.0/8",
    "0.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1",
    "fe80::/10",
    "fc00::/7",
)
LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")


class PolicyError(ValueError):
    """An entry or mode that is not a policy (the message says which and why)."""


@dataclass(frozen=True, order=True)
class Rule:
    """One ``allow`` entry: ``host``, ``*.domain`` (its subdomains) or either with ``:port``."""

    host: str
    wildcard: bool = False
    port: int = 0  # 0: ports 80 and 443

    @classmethod
    def parse(cls, text: str) -> Rule:
        raw = text.strip().lower().rstrip(".")
        host, _, port_text = raw.partition(":") if raw.count(":") == 1 else (raw, "", "")
        port = 0
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise PolicyError(f"{text!r}: the port must be a number from 1 to 65535")
            port = int(port_text)
        wildcard = host.startswith("*.")
        name = host[2:] if wildcard else host
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            pass
        else:
            raise PolicyError(f"{text!r} is an address: the policy names hosts (addresses are refused but in open)")
        labels = name.split(".")
        if not name or len(name) > 253 or not all(LABEL.match(label) for label in labels):
            raise PolicyError(f"{text!r} is not a host name (e.g. pypi.org, *.githubusercontent.com, host:8443)")
        if wildcard and len(labels) < 2:
            raise PolicyError(f"{text!r}: a wildcard needs a domain under it (e.g. *.example.com)")
        return cls(name, wildcard, port)

    def text(self) -> str:
        return ("*." if self.wildcard else "") + self.host + (f":{self.port}" if self.port else "")

    def matches(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        name_ok = host.endswith("." + self.host) if self.wildcard else host == self.host
        return name_ok and (port == self.port if self.port else port in WEB_PORTS)


def parse_rules(entries: Iterable[str]) -> tuple[Rule, ...]:
    """Entries as rules, each once, in the order given."""
    return tuple(dict.fromkeys(Rule.parse(e) for e in entries))


@dataclass(frozen=True)
class Policy:
    mode: str = "open"
    allow: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PolicyError(f"egress {self.mode!r} is not one of {', '.join(MODES)}")

    def widened(self, entries: Sequence[str]) -> Policy:
        return Policy(self.mode, tuple(dict.fromkeys((*self.allow, *parse_rules(entries)))))

    def narrowed(self, entries: Sequence[str]) -> Policy:
        gone = set(parse_rules(entries))
        return Policy(self.mode, tuple(r for r in self.allow if r not in gone))

    def allows(self, host: str, port: int) -> bool:
        """What the proxy would let through by name (the address checks are the proxy's)."""
        if self.mode == "open":
            return True
        return self.mode == "allow" and any(r.matches(host, port) for r in self.allow)

    def describe(self) -> str:
        if self.mode != "allow":
            return self.mode
        return f"allow {', '.join(r.text() for r in self.allow) or '(nothing)'}"

    def as_json(self) -> dict[str, object]:
        return {"mode": self.mode, "allow": [r.text() for r in self.allow]}

    @classmethod
    def from_json(cls, data: object) -> Policy | None:
        if not isinstance(data, dict) or not isinstance(data.get("allow", []), list):
            return None
        try:
            return cls(str(data.get("mode", "")), parse_rules(str(e) for e in data.get("allow", [])))
        except PolicyError:
            return None


def choose(*, mode: str, allow: Sequence[str], base: Policy, extra: Sequence[str] = ()) -> Policy:
    """A start's policy: ``mode`` ("" keeps ``base``'s), ``base``'s list, then ``allow``
    (``--allow``) and ``extra`` (every environment's ``[container] allow``)."""
    return Policy(mode or base.mode, tuple(dict.fromkeys((*base.allow, *parse_rules(allow), *parse_rules(extra)))))


@dataclass(frozen=True)
class Wiring:
    """What an environment's create spec takes from its policy (``ops/egress.py`` makes it)."""

    policy: Policy
    network: str = ""  # open: container.network; none: "none"
    networks: Mapping[str, str] = field(default_factory=dict)  # allow: its own network
    dns: tuple[str, ...] = ()
    sysctls: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    made: tuple[str, ...] = ()  # what was made for it, as said to the user


# the record of an environment's policy, kept on the host where the environment cannot write
def record_path(build: Path, container: str) -> Path:
    return build / "egress" / f"{container}.json"


def read_record(build: Path, container: str) -> Policy | None:
    try:
        return Policy.from_json(json.loads(record_path(build, container).read_text()))
    except (OSError, ValueError):
        return None


def write_record(build: Path, container: str, policy: Policy) -> None:
    """Written whole or not at all (a temporary file renamed over the record)."""
    path = record_path(build, container)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(policy.as_json(), indent=1) + "\n")
    os.replace(tmp, path)


def drop_record(build: Path, container: str) -> None:
    record_path(build, container).unlink(missing_ok=True)


# squid's words --------------------------------------------------------------------------
def _regex(rule: Rule) -> str:
    return r"\." + re.escape(rule.host).replace(r"\-", "-") + "$"


def squid_conf(policy: Policy, *, refused: Sequence[str], dns: Sequence[str] = (), listen: str = "") -> str:
    """squid.conf for ``policy``: names matched before anything is resolved, addresses in
    ``refused`` (and ALWAYS_REFUSED) never connected to, nothing cached, every request one
    line on standard output."""
    lines = [
        f"logformat devbox {LOG_MARK} %ts.%03tu %Ss %>Hs %rm %>rd %>rP %>a",
        f"http_port {listen or PROXY_PORT}",
        "visible_hostname devbox-egress",
        "pid_filename /tmp/squid.pid",
        "coredump_dir /tmp",
        "access_log stdio:/dev/stdout devbox",
        "cache_log stdio:/dev/stderr",
        "logfile_rotate 0",
        "cache deny all",
        "cache_mem 0 MB",
        "netdb_filename none",
        "pinger_enable off",
        "icp_port 0",
        "htcp_port 0",
        "forwarded_for delete",
        "via off",
        "shutdown_lifetime 1 seconds",
        "max_filedescriptors 1024",
    ]
    if dns:
        lines.append("dns_nameservers " + " ".join(dns))
    lines += [
        # an address asked for directly (IPv4, or IPv6 in brackets) is refused whatever the list
        r"acl devbox_literal dstdom_regex -n ^[0-9.]+$ ^\[?[0-9a-f.]*:[0-9a-f:.]*\]?$",
        "acl devbox_refused dst " + " ".join((*ALWAYS_REFUSED, *refused)),
        "http_access deny devbox_literal",
    ]
    for i, rule in enumerate(policy.allow if policy.mode == "allow" else ()):
        kind = "dstdom_regex -n -i" if rule.wildcard else "dstdomain -n"
        target = _regex(rule) if rule.wildcard else rule.host
        ports = str(rule.port) if rule.port else " ".join(map(str, WEB_PORTS))
        lines += [f"acl devbox_r{i} {kind} {target}", f"acl devbox_p{i} port {ports}",
                  f"http_access allow devbox_r{i} devbox_p{i} !devbox_refused"]  # fmt: skip
    lines.append("http_access deny all")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Connection:
    """One request the proxy answered or refused."""

    time: float
    refused: bool
    method: str
    host: str
    port: int
    status: int
    result: str  # squid's word: TCP_TUNNEL, TCP_MISS, TCP_DENIED, ...

    def line(self) -> str:
        import time as _time

        when = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(self.time))
        verdict = "refused" if self.refused else "allowed"
        return f"{when}  {verdict:<7}  {self.method:<7} {self.host}:{self.port}  ({self.result}/{self.status})"

    def as_json(self) -> dict[str, object]:
        return {"time": self.time, "refused": self.refused, "method": self.method, "host": self.host,
                "port": self.port, "status": self.status, "result": self.result}  # fmt: skip


HOST_TEXT = re.compile(r"^[A-Za-z0-9_.:\[\]-]{1,255}$")


def parse_line(line: str) -> Connection | None:
    """A proxy log line as a connection; None for anything else (squid's own messages).
    The fields are squid's, from requests the environment made: each is checked for its
    shape, so nothing the agent sent reaches a screen as anything but a host and a port."""
    parts = line.strip().split(" ")
    if len(parts) != 8 or parts[0] != LOG_MARK:
        return None
    _, ts, result, status, method, host, port, _client = parts
    try:
        when, code, port_no = float(ts), int(status), int(port) if port != "-" else 0
    except ValueError:
        return None
    if not HOST_TEXT.match(host) or not method.isalpha() or not re.match(r"^[A-Z_]+(/[A-Z_]+)?$", result):
        return None
    # refused: by the policy (TCP_DENIED, 403), or a request squid would not even read
    # (NONE_NONE/400: nothing was connected to)
    refused = result.startswith(("TCP_DENIED", "NONE")) or code == 403
    return Connection(when, refused, method, host, port_no, code, result)


@dataclass(frozen=True)
class Tally:
    """An environment's refusals so far (its proxy's log): the count and the last one."""

    refused: int = 0
    last: Connection | None = None
    seen: int = 0  # requests of any verdict

    def summary(self) -> str:
        if not self.refused or self.last is None:
            return ""
        return f"blocked {self.refused} (last {self.last.host}:{self.last.port})"


@dataclass(frozen=True)
class EgressView:
    """An environment's egress as a row shows it: its policy and its refusals so far."""

    mode: str
    allow: tuple[str, ...] = ()
    refused: int = 0
    last: str = ""  # host:port of the last refusal

    def badge(self) -> str:
        """``blocked N`` with the last destination, for a fleet row ("" when none)."""
        return f"blocked {self.refused} ({self.last})" if self.refused else ""

    def to_json(self) -> dict[str, object]:
        return {"mode": self.mode, "allow": list(self.allow), "refused": self.refused, "last_refused": self.last}


def tally(connections: Iterable[Connection]) -> Tally:
    refused, last, seen = 0, None, 0
    for c in connections:
        seen += 1
        if c.refused:
            refused, last = refused + 1, c
    return Tally(refused, last, seen)


def host_addresses(ip_json: str) -> tuple[str, ...]:
    """The machine's own addresses from ``ip -j addr`` (what the proxy must never connect to:
    its services), as single-address networks."""
    try:
        data = json.loads(ip_json)
    except ValueError:
        return ()
    found: list[str] = []
    for link in data if isinstance(data, list) else ():
        for a in link.get("addr_info", []) if isinstance(link, dict) else ():
            local = a.get("local") if isinstance(a, dict) else None
            if isinstance(local, str):
                try:
                    found.append(str(ipaddress.ip_address(local)))
                except ValueError:
                    continue
    return tuple(dict.fromkeys(found))


def proxy_address(subnet: str) -> str:
    """The proxy's fixed address on an environment's network: the subnet's last host (the
    environment's own address is handed out from the first), known before either starts."""
    net = ipaddress.ip_network(subnet, strict=False)
    return str(net.broadcast_address - 1)


def nwfilter_xml(name: str, *, proxy: tuple[str, int] | None) -> str:
    """The libvirt network filter for a VM: ARP and DHCP, ssh into it (devbox reaches it so),
    TCP to its proxy on the host when ``proxy`` (address, port), and nothing else, IPv6
    included. libvirt keeps the state of the TCP it lets through, so replies pass."""
    out = (f"  <rule action='accept' direction='out' priority='100'><tcp dstipaddr='{proxy[0]}' "
           f"dstportstart='{proxy[1]}'/></rule>\n") if proxy else ""  # fmt: skip
    return (
        f"<filter name='{name}' chain='root'>\n"
        "  <filterref filter='no-mac-spoofing'/>\n"
        "  <filterref filter='allow-arp'/>\n"
        "  <filterref filter='allow-dhcp'/>\n"
        # (the drop below is netfilter's, after the bridge's: DHCP is let through there too)
        "  <rule action='accept' direction='out' priority='100'><udp srcportstart='68' dstportstart='67'/></rule>\n"
        "  <rule action='accept' direction='in' priority='100'><udp srcportstart='67' dstportstart='68'/></rule>\n"
        f"{out}"
        "  <rule action='accept' direction='in' priority='100'><tcp dstportstart='22'/></rule>\n"
        "  <rule action='drop' direction='inout' priority='500'><all/></rule>\n"
        "  <rule action='drop' direction='inout' priority='500'><all-ipv6/></rule>\n"
        "</filter>\n"
    )


def proxy_env(address: str, port: int = PROXY_PORT) -> dict[str, str]:
    """What tells the environment's tools to go through the proxy (curl, git, pip and npm
    read these; Claude Code documents HTTPS_PROXY)."""
    url = f"http://{address}:{port}"
    keep = "localhost,127.0.0.1,::1"
    return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
            "NO_PROXY": keep, "no_proxy": keep, "DEVBOX_EGRESS": "allow"}  # fmt: skip
