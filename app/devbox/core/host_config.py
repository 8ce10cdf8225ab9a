"""Other machines devbox can use: ``[hosts.NAME]`` tables in devbox.toml. The local machine
is the host ``local`` and needs no table; everything works with no ``[hosts]`` at all.

    [hosts.big]
    ssh = "dev@big.example.com:22"   # user@host[:port]; devbox's own ssh options and known_hosts
    podman = ""                      # the podman service on that host: unix:///path; empty: the
                                     # user's rootless socket there (/run/user/<uid>/podman/podman.sock)
    libvirt = ""                     # empty: qemu+ssh://user@host/system
    root = ""                        # where devbox keeps this repository's mirror and worktrees
                                     # there; empty: ~/devbox/<repo>; relative: under the home
    identity = ""                    # the ssh key; empty: the project key (.build/ssh/id_ed25519)
    timeout = 10                     # seconds to connect (a host that does not answer is down)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devbox.core.errors import ConfigError

HOST_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
LOCAL = "local"
KEYS = ("ssh", "podman", "libvirt", "root", "identity", "timeout")
# a host name or IPv4 address, or an IPv6 address in brackets; the port, if any, digits only
SSH_RE = re.compile(
    r"^(?P<user>[A-Za-z0-9_][A-Za-z0-9_.-]*)@(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9_.-]+))"
    r"(?::(?P<port>\d{1,5}))?$"
)
SAFE_PATH = re.compile(r"^[A-Za-z0-9_./~-]+$")  # a remote path goes through the remote shell: no specials


@dataclass(frozen=True)
class HostSpec:
    name: str
    ssh: str
    podman: str = ""
    libvirt: str = ""
    root: str = ""
    identity: str = ""
    timeout: int = 10

    @property
    def user(self) -> str:
        m = SSH_RE.match(self.ssh)
        return m.group("user") if m else ""

    @property
    def address(self) -> str:
        m = SSH_RE.match(self.ssh)
        return (m.group("ip6") or m.group("name")) if m else ""

    @property
    def port(self) -> int:
        m = SSH_RE.match(self.ssh)
        return int(m.group("port")) if m and m.group("port") else 22

    @property
    def libvirt_uri(self) -> str:
        return self.libvirt or f"qemu+ssh://{self.user}@{self.address}:{self.port}/system"


def parse(raw: object, path: Path) -> dict[str, HostSpec]:
    """The hosts in devbox.toml (one line per error, naming the key and the fix)."""
    if raw in (None, {}):
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: hosts must be tables", 'write them as [hosts.NAME] with ssh = "user@host"')
    hosts = {}
    for name, table in raw.items():
        where = f"{path.name} hosts.{name}"
        if not HOST_NAME.match(str(name)) or name == LOCAL:
            raise ConfigError(f"{where}: {name!r} is not a host name", "use a-z, 0-9, '-', '_' (not 'local')")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table", f'write it as [hosts.{name}] with ssh = "user@host"')
        unknown = sorted(set(table) - set(KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]}", f"known keys: {', '.join(KEYS)}")
        ssh = table.get("ssh")
        m = SSH_RE.match(ssh) if isinstance(ssh, str) else None
        if m is None or not 0 < int(m["port"] or 22) < 65536:
            raise ConfigError(f"{where}.ssh must be user@host[:port]", 'e.g. ssh = "dev@big.example.com"')
        texts = {}
        for key in ("podman", "libvirt", "root", "identity"):
            value = table.get(key, "")
            if not isinstance(value, str):
                raise ConfigError(f"{where}.{key} must be a string", f'e.g. {key} = ""')
            texts[key] = value.strip()
        if texts["podman"] and not (texts["podman"].startswith("unix:///") and SAFE_PATH.match(texts["podman"][7:])):
            raise ConfigError(f"{where}.podman must be unix:///PATH (a socket on that host)",
                              "e.g. unix:///run/user/1000/podman/podman.sock, or leave it empty")  # fmt: skip
        if texts["root"] and not SAFE_PATH.match(texts["root"]):
            raise ConfigError(f"{where}.root: {texts['root']!r} is not a plain path",
                              "use letters, digits, '/', '.', '_', '-', '~' (e.g. devbox)")  # fmt: skip
        if texts["libvirt"] and not texts["libvirt"].startswith("qemu+ssh://"):
            raise ConfigError(f"{where}.libvirt must be a qemu+ssh:// URI", "e.g. qemu+ssh://dev@big/system")
        timeout = table.get("timeout", 10)
        if not isinstance(timeout, int) or isinstance(timeout, bool) or not 0 < timeout <= 300:
            raise ConfigError(f"{where}.timeout must be seconds (1 to 300)", "e.g. timeout = 10")
        hosts[str(name)] = HostSpec(str(name), str(ssh), texts["podman"], texts["libvirt"], texts["root"],
                                    texts["identity"], timeout)  # fmt: skip
    return hosts
