"""The ssh adapter for other hosts (``[hosts.NAME]``): how devbox reaches a host (its own ssh
options: the project key, its own known_hosts, BatchMode, a bounded connect time, never the
user's ssh config) and what one round trip learns about it (podman, git, CPUs, memory,
disk, the podman socket, devbox's containers there).

A host that does not answer within its ``timeout`` is down: the caller gets a
``HostDown`` with the fix, never a hang (ssh's ConnectTimeout, ServerAlive and a process
deadline bound every call).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from devbox.core import proc, transfer
from devbox.core.config import Settings
from devbox.core.errors import ConfigError, DevboxError, NotAvailable
from devbox.core.host_config import LOCAL, HostSpec

if TYPE_CHECKING:  # processes start in core/proc.py only; this is the handle's type
    import subprocess


class HostDown(NotAvailable):
    """The host did not answer over ssh, or refused devbox's key."""


@dataclass(frozen=True)
class Facts:
    uid: int
    gid: int
    home: str
    cpus: int
    mem_available: int  # bytes
    disk_free: int  # bytes free where devbox keeps its files there
    git: str  # "git version 2.39.5", or "" when missing
    podman: str  # podman's version, or "" when missing
    socket: str  # the podman service socket's path there
    socket_up: bool
    environments: int  # devbox containers there (any repository)
    root: str  # where this repository's mirror and worktrees live there


def target(settings: Settings, spec: HostSpec) -> transfer.Target:
    key = transfer.project_key(settings) if not spec.identity else settings.repo / spec.identity
    return transfer.Target(spec.user, spec.address, spec.port, key, settings.build_path("ssh", "known_hosts"),
                           f"{spec.address}:{spec.port}", spec.timeout)  # fmt: skip


def run(
    settings: Settings, spec: HostSpec, argv: list[str], *, timeout: float | None = None,
    cancel: threading.Event | None = None, input: bytes | None = None, errors: str = "replace",
) -> proc.Completed:  # fmt: skip
    """``argv`` on the host (each word quoted for its shell); ``HostDown`` when ssh itself
    failed (exit 255), the command's own result otherwise."""
    t = target(settings, spec)
    res = proc.run(transfer.ssh_argv(t, argv, tty=False), tool="ssh", timeout=timeout or spec.timeout + 30,
                   cancel=cancel, input=input, errors=errors)  # fmt: skip
    if res.returncode == 255:
        raise down(spec, res.last_error())
    return res


def down(spec: HostSpec, said: str) -> HostDown:
    text = said.lower()
    login = f"-p {spec.port} {spec.user}@{spec.address}"
    if "permission denied" in text:
        fix = f"authorise devbox's key there: ssh-copy-id -i .build/ssh/id_ed25519.pub {login}"
    elif "host key" in text and ("changed" in text or "verification failed" in text):
        known = f"'[{spec.address}]:{spec.port}' -f .build/ssh/known_hosts"
        fix = f"if {spec.address} was reinstalled, forget its old key: ssh-keygen -R {known}"
    else:
        fix = f"is {spec.address} up and sshd listening on port {spec.port}? (ssh {login})"
    return HostDown(f"host {spec.name} ({spec.ssh}) is down: {said or 'no answer'}", fix)


def root_of(settings: Settings, spec: HostSpec) -> str:
    """Where this repository lives on the host, as the remote shell reads it ("~" expanded there)."""
    root = spec.root or f"devbox/{settings.repo_name}"
    return root if root.startswith(("/", "~")) else f"~/{root}"


PROBE = r"""
root=$1; case $root in "~"*) root=$HOME${root#"~"};; esac
sock=$2; [ -n "$sock" ] || sock=${XDG_RUNTIME_DIR:-/run/user/$(id -u)}/podman/podman.sock
echo "uid=$(id -u)"; echo "gid=$(id -g)"; echo "home=$HOME"; echo "root=$root"; echo "socket=$sock"
echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
echo "mem_kib=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)"
d=$root; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "disk_kib=$(df -Pk "$d" | awk 'NR == 2 {print $4}')"
echo "git=$(git --version 2>/dev/null)"
echo "podman=$(podman version --format '{{.Client.Version}}' 2>/dev/null)"
if [ -S "$sock" ]; then echo "socket_up=1"; else echo "socket_up=0"; fi
echo "environments=$(podman ps -a --filter label=devbox.repo --format '{{.Names}}' 2>/dev/null | wc -l)"
"""


_KNOWN: dict[tuple[str, HostSpec], Facts] = {}  # (repo, host) -> the last probe's answer


def known(settings: Settings, spec: HostSpec) -> Facts:
    """The host's facts that do not change (user ID, home, devbox's root there): the last
    probe's, probed once if there is none. For every call that only needs where and as
    whom (the Preview's capture each second, send, stop, attach), not a second ssh."""
    got = _KNOWN.get((str(settings.repo), spec))
    return got if got is not None else probe(settings, spec)


def probe(settings: Settings, spec: HostSpec, cancel: threading.Event | None = None) -> Facts:
    """One ssh round trip: what devbox needs to know about the host."""
    sock = spec.podman.removeprefix("unix://")
    res = run(settings, spec, ["sh", "-c", PROBE, "probe", root_of(settings, spec), sock], cancel=cancel)
    if not res.ok:
        raise DevboxError(f"host {spec.name}: the probe failed: {res.last_error()}", "is sh there a POSIX shell?")
    got = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)

    def number(key: str) -> int:
        try:
            return int(got.get(key, "0").strip() or 0)
        except ValueError:
            return 0

    mem, disk = number("mem_kib") * 1024, number("disk_kib") * 1024
    facts = Facts(number("uid"), number("gid"), got.get("home", ""), number("cpus"), mem, disk,
                 got.get("git", "").strip(), got.get("podman", "").strip(), got.get("socket", ""),
                 got.get("socket_up") == "1", number("environments"), got.get("root", ""))  # fmt: skip
    _KNOWN[(str(settings.repo), spec)] = facts
    return facts


class Tunnel:
    """A unix socket on the host (its podman service, its libvirtd), forwarded to a local one
    by ssh: podman-py, the podman CLI and libvirt then talk to it as to a local service.
    devbox's own ssh options, not podman-py's ssh transport (which turns host key checking
    off) nor libvirt's (which reads the user's ssh config and known_hosts)."""

    def __init__(self, settings: Settings, spec: HostSpec, remote_socket: str, name: str = "podman.sock") -> None:
        self.settings, self.spec, self.remote = settings, spec, remote_socket
        self.dir = Path(tempfile.mkdtemp(prefix="devbox-tunnel-"))  # short: a socket path has ~100 bytes
        self.local = self.dir / name
        self.child: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.poll() is None

    def __enter__(self) -> str:
        t = target(self.settings, self.spec)
        # not -N: the remote end waits for EOF on ssh's stdin, a pipe devbox holds (proc.start
        # tied), so the forward ends with devbox even when devbox is killed or its terminal closes
        argv = ["ssh", *transfer.ssh_options(t), "-T", "-o", "ExitOnForwardFailure=yes",
                "-o", "StreamLocalBindUnlink=yes", "-L", f"{self.local}:{self.remote}", t.login,
                "--", "exec cat >/dev/null"]  # fmt: skip
        self.child = proc.start(argv, tool="ssh", tied=True)
        deadline = time.monotonic() + self.spec.timeout + 5
        while not self.local.exists():
            if self.child.poll() is not None or time.monotonic() > deadline:
                child = self.child
                self.__exit__(None, None, None)  # stopped first: its stderr then ends
                said = child.stderr.read().decode(errors="replace").strip() if child.stderr else ""
                raise down(self.spec, said.splitlines()[-1] if said else "")
            time.sleep(0.05)
        return f"unix://{self.local}"

    def __exit__(self, *exc: object) -> None:
        if self.child is not None:
            proc.stop(self.child)
            self.child = None
        shutil.rmtree(self.dir, ignore_errors=True)


# VM mode on a host (``vm up --host NAME``): terraform's provider speaks to the host's
# libvirtd over its own ssh client (qemu+ssh://, golang.org/x/crypto/ssh), devbox's libvirt
# calls through a Tunnel to the same socket. Both open a direct-streamlocal channel to
# libvirtd's socket there, so the host needs no nc or virt-ssh-helper, only sshd's default
# AllowStreamLocalForwarding and a user allowed on that socket (group libvirt).
LIBVIRT_SOCKET = "/var/run/libvirt/libvirt-sock"


def libvirt_socket(spec: HostSpec) -> str:
    """libvirtd's socket on the host: the URI's ``socket=``, else the system daemon's."""
    return (parse_qs(urlsplit(spec.libvirt_uri).query).get("socket") or [LIBVIRT_SOCKET])[0]


def terraform_uri(settings: Settings, spec: HostSpec) -> str:
    """The host's libvirt URI for terraform-provider-libvirt 0.8.3: devbox's key and a
    known_hosts file it can read. Its parameter is ``knownhosts`` (libvirt's own is
    ``known_hosts``: libvirt/uri/ssh.go in the provider reads only the former), and it
    checks entries as ``[host]:port``, which ssh's HostKeyAlias entries are not: the file is
    written from devbox's own (terraform_known_hosts)."""
    parts = urlsplit(spec.libvirt_uri)
    query = dict(parse_qsl(parts.query))
    query.setdefault("keyfile", str(target(settings, spec).key))
    query.setdefault("knownhosts", str(settings.build_path("ssh", "known_hosts.terraform")))
    query.setdefault("sshauth", "privkey")
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def terraform_known_hosts(settings: Settings, spec: HostSpec) -> Path:
    """The host's key as terraform's provider reads it, from the one devbox's ssh recorded
    (at first contact, ``accept-new``; one ssh round trip now when it has none yet)."""
    t = target(settings, spec)
    if not _recorded_keys(t):
        res = run(settings, spec, ["true"])
        if not res.ok:
            raise DevboxError(f"host {spec.name}: ssh works but `true` failed there", "is its login shell POSIX?")
    keys = _recorded_keys(t)
    name = f"[{spec.address}]:{spec.port}" if spec.port != 22 else spec.address
    out = settings.build_path("ssh", "known_hosts.terraform")
    out.write_text("".join(f"{name} {key}\n" for key in keys))
    return out


def _recorded_keys(t: transfer.Target) -> list[str]:
    if not t.known_hosts.exists():
        return []
    lines = (line.split(None, 1) for line in t.known_hosts.read_text().splitlines())
    return [parts[1] for parts in lines if len(parts) == 2 and parts[0] == t.alias]


def vm_record(settings: Settings) -> Path:
    """Which host this checkout's VM lives on (absent: this machine)."""
    return settings.build_path("terraform", "host")


def vm_host(settings: Settings) -> HostSpec | None:
    """The host this checkout's VM lives on, or None for this machine."""
    try:
        name = vm_record(settings).read_text().strip()
    except FileNotFoundError:
        return None
    if not name or name == LOCAL:
        return None
    spec = settings.hosts.get(name)
    if spec is None:
        raise ConfigError(f"this checkout's VM was made on host {name}, which devbox.toml no longer names",
                          f"add [hosts.{name}] back to devbox.toml (./vm-down.sh then removes the VM)")  # fmt: skip
    return spec
