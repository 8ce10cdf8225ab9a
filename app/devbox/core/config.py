"""Settings: devbox.toml at the repo root, overridden by DEVBOX_<SECTION>_<KEY>.

Validated on load: an unknown key, a wrong type or a missing directory is a one-line
ConfigError naming the key and where it came from. Unknown DEVBOX_* environment variables
are ignored on purpose: Jetify's Nix tool of the same name exports its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devbox.core import agent_config, egress, host_config
from devbox.core.agent_config import AgentSpec
from devbox.core.egress import Policy
from devbox.core.errors import ConfigError
from devbox.core.host_config import HostSpec
from devbox.core.repo_root import CONFIG_NAME

# section -> key -> default. The default's type is the key's type: str, int, bool or
# list[str].
Value = str | int | bool | list[str]
DEFAULTS: dict[str, dict[str, Value]] = {
    "paths": {
        "bootc": "bootc",
        "terraform": "terraform",
        "build": ".build",
        "worktrees": "../{repo}.worktrees",
    },
    "image": {
        "name": "",  # empty: localhost/devbox-<repo>-<hash of its path>:latest, unique per checkout
        "base": "",  # a shared devbox image bootc/Containerfile builds FROM, passed as DEVBOX_BASE
        "builder": "quay.io/centos-bootc/bootc-image-builder:latest",
    },
    "podman": {
        "url": "",
        "autostart": False,  # start a podman API service for this run when none answers
        "timeout": 30,  # seconds for one API call (a ping gives up after 3)
    },
    # an environment's share of the machine: memory ("8g", "512m"; "" = half the machine's,
    # "none" = no limit), cpus ("1.5"; "" = all but one, "none" = no limit), pids (0 = no limit)
    "container": {
        "shell": "/bin/bash",
        "network": "",
        "memory": "",
        "cpus": "",
        "pids": 4096,
        # where an environment may connect (core/egress.py): "open" (podman's network,
        # as a person's start-work shell has it), "allow" (only the names in allow,
        # through devbox's proxy) or "none"; agents have their own (agents.NAME.egress).
        # allow: names every environment may reach ("pypi.org", "*.example.com",
        # "host:8443"); egress_dns: the resolvers the proxy asks ([]: the machine's)
        "egress": "open",
        "allow": [""],
        "egress_dns": [""],
    },
    "libvirt": {"uri": "qemu:///system"},
    # run on an agent's move into needs you / done / error, with branch, state and message
    # as its last three arguments (never through a shell); empty: none
    "notify": {"command": [""]},
    # after `devbox push BRANCH`: a command opening a pull request, {branch} and {remote}
    # substituted (an argument list, never a shell), e.g. ["gh", "pr", "create", "--head",
    # "{branch}", "--fill"]; empty: none
    "merge": {"pr_command": [""]},
    # the Compare view's check, run inside each environment of a task (`devbox compare TASK
    # --check`) as an argument list in the worktree, e.g. ["python", "-m", "pytest", "-q"];
    # empty: none. check_timeout: seconds before a check is stopped
    "review": {"check_command": [""], "check_timeout": 1800},
    "disk": {
        "size_gib": 64,  # the VM disk's minimum size
        "rootfs": "ext4",  # required for Fedora images
    },
    "vm": {
        "name": "",  # empty: <repo>-<hash6 of its path>; the domain is devbox-<name>
        "user": "",  # empty: your login name
        "memory_mib": 8192,
        "vcpus": 4,
        "domain_type": "kvm",  # qemu (TCG) only where KVM cannot run the guest
        "cpu_mode": "host-passthrough",  # nested virtualisation; "" = the hypervisor's default
        "network": "default",
        "pool": "default",
        "wait_for_lease": True,
        "qemu_agent": True,
        "ssh": "",  # user@host[:port] to reach instead of the VM's own address (tests, tunnels)
        "ssh_timeout": 10,  # seconds to connect
        # when only the image changed and the VM runs: "replace" makes a new disk and VM (the
        # original chain); "upgrade" updates the VM in place (bootc switch/upgrade, /var kept)
        "on_image_change": "replace",
        # where the VM may connect (core/egress.py): "open" (libvirt's network, as before),
        # "allow" (only the names in allow and [container] allow, through devbox's proxy on
        # the host) or "none"; enforced on the host by a libvirt network filter
        "egress": "open",
        "allow": [""],
    },
    # devbox-tui: action id -> key(s); the actions and their default keys are declared in
    # devbox/tui/commands.py (the dashboard warns about an id it does not know)
    "keys": {},
}

TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list of strings"}


@dataclass(frozen=True)
class VmSettings:
    """[vm]: the VM terraform makes from the disk (devbox-<name> in libvirt)."""

    name: str = "devbox"
    user: str = ""  # "" = the host user's login name (filled in by the session)
    memory_mib: int = 8192
    vcpus: int = 4
    domain_type: str = "kvm"
    cpu_mode: str = "host-passthrough"
    network: str = "default"
    pool: str = "default"
    wait_for_lease: bool = True
    qemu_agent: bool = True
    ssh: str = ""
    ssh_timeout: int = 10
    on_image_change: str = "replace"
    egress: Policy = field(default_factory=lambda: Policy("open"))


@dataclass(frozen=True)
class Limits:
    """An environment's share of the machine (``[container] memory, cpus, pids``): 0 = none."""

    memory: int = 0  # bytes
    cpus: float = 0.0
    pids: int = 0

    def label(self) -> str:
        return f"memory={self.memory},cpus={self.cpus:g},pids={self.pids}"

    @classmethod
    def from_label(cls, text: str) -> Limits | None:
        try:
            fields = dict(part.split("=", 1) for part in text.split(","))
            return cls(int(fields["memory"]), float(fields["cpus"]), int(fields["pids"]))
        except (KeyError, ValueError):
            return None

    def describe(self) -> str:
        mem = f"{self.memory / (1 << 30):.3g} GiB" if self.memory else "no memory limit"
        cpus = f"{self.cpus:g} CPU(s)" if self.cpus else "all CPUs"
        pids = f"{self.pids} processes" if self.pids else "no process limit"
        return f"{mem}, {cpus}, {pids}"


@dataclass(frozen=True)
class Settings:
    repo: Path  # the main repository (never a linked worktree)
    bootc_dir: Path
    terraform_dir: Path
    build_dir: Path
    worktrees_dir: Path
    image: str
    builder_image: str
    podman_url: str  # "" = auto-detect
    podman_autostart: bool
    podman_timeout: int
    shell: str
    network: str
    libvirt_uri: str
    disk_size_gib: int = 64
    disk_rootfs: str = "ext4"
    keys: Mapping[str, str] = field(default_factory=dict)
    vm: VmSettings = field(default_factory=VmSettings)
    notify_command: tuple[str, ...] = ()
    pr_command: tuple[str, ...] = ()
    check_command: tuple[str, ...] = ()
    check_timeout: int = 1800
    image_base: str = ""  # [image] base: the build argument DEVBOX_BASE
    agents: Mapping[str, AgentSpec] = field(default_factory=lambda: dict(agent_config.BUILT_IN))
    hosts: Mapping[str, HostSpec] = field(default_factory=dict)  # [hosts.NAME]; "local" is implicit
    limits: Limits = field(default_factory=lambda: Limits())
    egress: Policy = field(default_factory=lambda: Policy("open"))  # [container] egress, allow
    egress_dns: tuple[str, ...] = ()

    @property
    def repo_name(self) -> str:
        return self.repo.name

    def build_path(self, *parts: str) -> Path:
        """A path under .build/, which is made on first use and ignores itself in git."""
        if not self.build_dir.is_dir():
            with contextlib.suppress(OSError):  # the caller's own write reports a real problem
                self.build_dir.mkdir(parents=True, exist_ok=True)
                (self.build_dir / ".gitignore").write_text("# made by devbox: artifacts, caches, locks\n*\n")
        return self.build_dir.joinpath(*parts)


def env_name(section: str, key: str) -> str:
    return f"DEVBOX_{section.upper()}_{key.upper()}"


def _read_file(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except PermissionError:
        raise ConfigError(f"cannot read {path}: permission denied", f"chmod u+r {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", "check the file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", "fix the syntax") from None


def _typed(value: object, default: Value, origin: str, key: str) -> Value:
    """``value`` from the file, checked against the type of ``default``."""
    kind = type(default)
    ok = (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
        if kind is list
        else (isinstance(value, kind) and not (kind is int and isinstance(value, bool)))
    )
    if not ok:
        example = {str: f'{key} = "{value}"', int: f"{key} = 30", bool: f"{key} = true", list: f'{key} = ["a", "b"]'}
        raise ConfigError(
            f"{origin} must be {TYPE_NAMES[kind]}, not {type(value).__name__}", f"write it as {example[kind]}"
        )
    return value  # type: ignore[return-value]


def _from_env(raw: str, default: Value, name: str) -> Value:
    """An environment variable's text as the key's type."""
    if isinstance(default, bool):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{name}={raw!r} must be true or false", f"e.g. {name}=true")
    if isinstance(default, int):
        try:
            return int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}={raw!r} must be an integer", f"e.g. {name}=30") from None
    if isinstance(default, list):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def _merge(path: Path, data: Mapping[str, object], env: Mapping[str, str]) -> dict[str, dict[str, Value]]:
    values: dict[str, dict[str, Value]] = {section: dict(keys) for section, keys in DEFAULTS.items()}
    for section, table in data.items():
        if section not in DEFAULTS:
            raise ConfigError(
                f"{path}: unknown section [{section}]",
                f"known sections: {', '.join(DEFAULTS)}",
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} must be a table", f"write it as [{section}]")
        for key, value in table.items():
            if section == "keys":  # open: any action id, a string of Textual key names
                values[section][key] = _typed(value, "", f"{path}: keys.{key}", key)
                continue
            if key not in DEFAULTS[section]:
                raise ConfigError(
                    f"{path}: unknown key {section}.{key}",
                    f"known keys in [{section}]: {', '.join(DEFAULTS[section])}",
                )
            values[section][key] = _typed(value, DEFAULTS[section][key], f"{path}: {section}.{key}", key)
    for section, keys in DEFAULTS.items():
        for key, default in keys.items():
            name = env_name(section, key)
            if name in env:
                values[section][key] = _from_env(env[name], default, name)
    return values


def _dir(root: Path, raw: str, repo: str, origin: str, *, must_exist: bool) -> Path:
    path = Path(raw.replace("{repo}", repo)).expanduser()
    path = (root / path) if not path.is_absolute() else path
    path = Path(os.path.normpath(path))
    if must_exist and not path.is_dir():
        raise ConfigError(f"{origin}: directory {path} does not exist", "create it or fix the path")
    return path


def default_image_name(repo: Path) -> str:
    """``localhost/devbox-<repo>-<hash6>:latest``: two checkouts never share (and fight over) a tag."""
    slug = re.sub(r"[^a-z0-9_.-]+", "-", repo.name.lower()).strip("-._")[:40] or "repo"
    return f"localhost/devbox-{slug}-{hashlib.sha256(str(repo).encode()).hexdigest()[:6]}:latest"


def load(repo: Path, env: Mapping[str, str] | None = None) -> Settings:
    """Load settings for the main repository ``repo``."""
    env = os.environ if env is None else env
    repo = repo.resolve()
    path = repo / CONFIG_NAME
    data = dict(_read_file(path))
    agents = agent_config.parse(data.pop("agents", None), path)  # [agents.NAME] tables: their own rules
    hosts = host_config.parse(data.pop("hosts", None), path)  # [hosts.NAME] too
    values = _merge(path, data, env)

    def origin(section: str, key: str) -> str:
        name = env_name(section, key)
        return name if name in env else f"{path.name} {section}.{key}"

    def text(section: str, key: str) -> str:
        return str(values[section][key])

    p = values["paths"]
    image = text("image", "name").strip() or default_image_name(repo)
    if any(c.isspace() for c in image) or image.startswith("-"):
        raise ConfigError(
            f"{origin('image', 'name')}: image name {image!r} is not valid", "e.g. localhost/devbox:latest"
        )
    base = text("image", "base").strip()
    if any(c.isspace() for c in base) or base.startswith("-"):
        raise ConfigError(f"{origin('image', 'base')}: {base!r} is not an image reference",
                          "e.g. registry.example.com/team/devbox:43")  # fmt: skip
    url = text("podman", "url").strip()
    if url and not url.startswith(("unix://", "tcp://")):
        raise ConfigError(
            f"{origin('podman', 'url')}: {url!r} is not a podman URL",
            "use unix:///path/to/podman.sock (or leave it empty to auto-detect)",
        )
    timeout = values["podman"]["timeout"]
    assert isinstance(timeout, int)
    if timeout <= 0:
        raise ConfigError(f"{origin('podman', 'timeout')}: must be a positive number of seconds", "e.g. 30")
    return Settings(
        repo=repo,
        bootc_dir=_dir(repo, str(p["bootc"]), repo.name, origin("paths", "bootc"), must_exist=True),
        terraform_dir=_dir(repo, str(p["terraform"]), repo.name, origin("paths", "terraform"), must_exist=False),
        build_dir=_dir(repo, str(p["build"]), repo.name, origin("paths", "build"), must_exist=False),
        worktrees_dir=_dir(repo, str(p["worktrees"]), repo.name, origin("paths", "worktrees"), must_exist=False),
        image=image,
        builder_image=text("image", "builder"),
        image_base=base,
        podman_url=url,
        podman_autostart=bool(values["podman"]["autostart"]),
        podman_timeout=timeout,
        shell=text("container", "shell"),
        network=text("container", "network"),
        limits=_limits(values["container"], origin),
        egress=_egress(values["container"], origin),
        egress_dns=_addresses(values["container"]["egress_dns"], origin("container", "egress_dns")),
        libvirt_uri=text("libvirt", "uri"),
        notify_command=tuple(str(x) for x in values["notify"]["command"] if str(x)),  # type: ignore[union-attr]
        pr_command=tuple(str(x) for x in values["merge"]["pr_command"] if str(x)),  # type: ignore[union-attr]
        check_command=tuple(str(x) for x in values["review"]["check_command"] if str(x)),  # type: ignore[union-attr]
        check_timeout=_positive(values["review"]["check_timeout"], origin("review", "check_timeout")),
        keys={k: str(v) for k, v in values["keys"].items()},
        disk_size_gib=_positive(values["disk"]["size_gib"], origin("disk", "size_gib")),
        disk_rootfs=_choice(text("disk", "rootfs"), ("ext4", "xfs", "btrfs"), origin("disk", "rootfs")),
        vm=_vm(values["vm"], repo, origin),
        agents=agents,
        hosts=hosts,
    )


NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,47}$")
# a host name or IPv4 address, or an IPv6 address in brackets; the port, if any, digits only
SSH_RE = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9_.-]*)@)?(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9_.-]+))"
    r"(?::(?P<port>\d{1,5}))?$"
)


def _vm(v: Mapping[str, Value], repo: Path, origin: Callable[[str, str], str]) -> VmSettings:
    slug = re.sub(r"[^a-z0-9_.-]+", "-", repo.name.lower()).strip("-._")[:40] or "repo"
    name = str(v["name"]).strip() or f"{slug}-{hashlib.sha256(str(repo).encode()).hexdigest()[:6]}"
    if not NAME_RE.match(name):
        raise ConfigError(
            f"{origin('vm', 'name')}: {name!r} is not a VM name", "use a-z, 0-9, '-', '_', '.' (e.g. work)"
        )
    user = str(v["user"]).strip()
    if user and not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", user):
        raise ConfigError(f"{origin('vm', 'user')}: {user!r} is not a user name", "e.g. dev (or leave it empty)")
    ssh = str(v["ssh"]).strip()
    m = SSH_RE.match(ssh)
    if ssh and (ssh.startswith("-") or m is None or not 0 < int(m.group("port") or 22) < 65536):
        raise ConfigError(f"{origin('vm', 'ssh')}: {ssh!r} is not user@host[:port]", "e.g. dev@127.0.0.1:2222")
    return VmSettings(
        name=name,
        user=user,
        memory_mib=_positive(v["memory_mib"], origin("vm", "memory_mib")),
        vcpus=_positive(v["vcpus"], origin("vm", "vcpus")),
        domain_type=_choice(str(v["domain_type"]), ("kvm", "qemu"), origin("vm", "domain_type")),
        cpu_mode=_choice(
            str(v["cpu_mode"]), ("host-passthrough", "host-model", "maximum", ""), origin("vm", "cpu_mode")
        ),
        network=str(v["network"]),
        pool=str(v["pool"]),
        wait_for_lease=bool(v["wait_for_lease"]),
        qemu_agent=bool(v["qemu_agent"]),
        ssh=ssh,
        ssh_timeout=_positive(v["ssh_timeout"], origin("vm", "ssh_timeout")),
        on_image_change=_choice(str(v["on_image_change"]), ("replace", "upgrade"), origin("vm", "on_image_change")),
        egress=_egress(v, origin, "vm"),
    )


def _egress(v: Mapping[str, Value], origin: Callable[[str, str], str], section: str = "container") -> Policy:
    mode = str(v["egress"]).strip()
    if mode not in egress.MODES:
        raise ConfigError(f"{origin(section, 'egress')}: {mode!r} is not one of {', '.join(egress.MODES)}",
                          'e.g. egress = "allow"')  # fmt: skip
    entries = [str(e) for e in v["allow"] if str(e).strip()]  # type: ignore[union-attr]
    try:
        return Policy(mode, egress.parse_rules(entries))
    except egress.PolicyError as exc:
        raise ConfigError(f"{origin(section, 'allow')}: {exc}", 'e.g. allow = ["pypi.org"]') from None


def _addresses(raw: Value, where: str) -> tuple[str, ...]:
    import ipaddress

    found = []
    for item in raw if isinstance(raw, list) else ():
        if not str(item).strip():
            continue
        try:
            found.append(str(ipaddress.ip_address(str(item).strip())))
        except ValueError:
            raise ConfigError(f"{where}: {item!r} is not an IP address", 'e.g. egress_dns = ["10.0.0.53"]') from None
    return tuple(found)


SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.I)


def machine() -> tuple[int, int]:
    """This machine's memory (bytes) and CPUs."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 0
    return memory, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _limits(v: Mapping[str, Value], origin: Callable[[str, str], str]) -> Limits:
    """[container] memory, cpus, pids; the defaults leave the machine room for the others:
    half its memory, all its CPUs but one, 4096 processes (a fork bomb stops there)."""
    total_mem, total_cpus = machine()
    mem_text = str(v["memory"]).strip().lower()
    if mem_text == "":
        memory = (total_mem // 2) & ~((1 << 20) - 1)
    elif mem_text == "none":
        memory = 0
    else:
        m = SIZE_RE.match(mem_text)
        if m is None:
            raise ConfigError(f"{origin('container', 'memory')}: {mem_text!r} is not a size", 'e.g. "8g" or "512m"')
        memory = int(float(m.group(1)) * (1 << (10 * " kmgt".index(m.group(2).lower() or " "))))
        if memory < 64 << 20:
            raise ConfigError(f"{origin('container', 'memory')}: {mem_text!r} is below 64 MiB", 'e.g. "4g"')
    cpu_text = str(v["cpus"]).strip().lower()
    if cpu_text == "":
        cpus = float(max(1, total_cpus - 1))
    elif cpu_text == "none":
        cpus = 0.0
    else:
        try:
            cpus = float(cpu_text)
        except ValueError:
            cpus = -1.0
        if not 0.01 <= cpus <= 1024:
            raise ConfigError(f"{origin('container', 'cpus')}: {cpu_text!r} is not a number of CPUs", 'e.g. "2"')
    pids = v["pids"]
    if not isinstance(pids, int) or isinstance(pids, bool) or pids < 0 or 0 < pids < 32:
        raise ConfigError(f"{origin('container', 'pids')}: must be 0 (no limit) or at least 32", "e.g. 4096")
    return Limits(memory, cpus, pids)


def _choice(value: str, allowed: tuple[str, ...], origin: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{origin}: {value!r} is not one of {', '.join(allowed)}", f"use {allowed[0]}")
    return value


def _positive(value: object, origin: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{origin}: must be a positive integer", "e.g. 64")
    return value
