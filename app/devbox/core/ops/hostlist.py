"""``devbox host list`` and ``devbox host check NAME``: the machines devbox can use (this one,
``local``, and each ``[hosts.NAME]``), each asked on its own and all at once, so a host that
is down shows as down, with the fix, within its ssh timeout and never slows the others."""

from __future__ import annotations

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from devbox.core import containers, hosts
from devbox.core.errors import DevboxError, NotFound
from devbox.core.host_config import LOCAL, HostSpec
from devbox.core.ops.hostcheck import Check
from devbox.core.session import Devbox

MIN_DISK = 10 * 2**30  # bytes free under the host's root: below this, host check warns


@dataclass(frozen=True)
class HostRow:
    name: str
    ssh: str  # "" for local
    up: bool
    podman: str = ""
    cpus: int = 0
    mem_available: int = 0
    environments: int = 0
    problem: str = ""
    fix: str = ""

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "ssh": self.ssh or None, "up": self.up, "podman": self.podman or None,
                "cpus": self.cpus, "mem_available": self.mem_available, "environments": self.environments,
                "problem": self.problem or None, "fix": self.fix or None}  # fmt: skip


def _local(session: Devbox) -> HostRow:
    mem = 0
    try:
        with open("/proc/meminfo") as fh:
            mem = next((int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:")), 0)
    except OSError:
        pass
    try:
        version = str(session.podman.info().get("version", {}).get("Version", ""))
        envs = len(containers.list_containers(session.settings, session.podman))
    except DevboxError as exc:
        return HostRow(LOCAL, "", False, "", os.cpu_count() or 0, mem, 0, exc.message, exc.remedy)
    return HostRow(LOCAL, "", True, version, os.cpu_count() or 0, mem, envs)


def _remote(session: Devbox, spec: HostSpec, cancel: threading.Event | None) -> HostRow:
    try:
        f = hosts.probe(session.settings, spec, cancel)
    except DevboxError as exc:
        return HostRow(spec.name, spec.ssh, False, problem=exc.message, fix=exc.remedy)
    problem, fix = "", ""
    if not f.podman:
        problem, fix = "podman is not installed there", "install podman there (e.g. sudo dnf install podman)"
    elif not f.socket_up:
        problem, fix = f"no podman service at {f.socket}", "systemctl --user enable --now podman.socket (there)"
    return HostRow(spec.name, spec.ssh, True, f.podman, f.cpus, f.mem_available, f.environments, problem, fix)


def host_list(session: Devbox, *, cancel: threading.Event | None = None) -> tuple[HostRow, ...]:
    """``local`` first, then each configured host, asked in parallel."""
    specs = list(session.settings.hosts.values())
    with ThreadPoolExecutor(max_workers=len(specs) + 1, thread_name_prefix="host") as pool:
        local = pool.submit(_local, session)
        remote = [pool.submit(_remote, session, s, cancel) for s in specs]
        return (local.result(), *(r.result() for r in remote))


def spec_of(session: Devbox, name: str) -> HostSpec:
    spec = session.settings.hosts.get(name)
    if spec is None:
        known = ", ".join(["local", *sorted(session.settings.hosts)])
        raise NotFound(f"no host named {name!r}", f"known hosts: {known} (define more as [hosts.NAME] in devbox.toml)")
    return spec


def host_check(session: Devbox, name: str, *, cancel: threading.Event | None = None) -> tuple[Check, ...]:
    """What devbox needs of host ``name``, each with what was found and the fix."""
    spec = spec_of(session, name)
    checks = [Check("ssh client", "ok", shutil.which("ssh") or "")] if shutil.which("ssh") else [
        Check("ssh client", "fail", "no ssh here", "install openssh-client")]  # fmt: skip
    try:
        f = hosts.probe(session.settings, spec, cancel)
    except DevboxError as exc:
        return (*checks, Check(f"ssh {spec.ssh}", "fail", exc.message, exc.remedy))
    checks.append(Check(f"ssh {spec.ssh}", "ok", f"uid {f.uid}, home {f.home}"))
    there = "there (e.g. sudo dnf install {})"
    checks.append(Check("podman", "ok", f.podman) if f.podman else
                  Check("podman", "fail", "not installed", "install podman " + there.format("podman")))  # fmt: skip
    service_fix = 'systemctl --user enable --now podman.socket (there), or set podman = "unix:///PATH"'
    checks.append(Check("podman service", "ok", f.socket) if f.socket_up else
                  Check("podman service", "fail", f"no socket at {f.socket}", service_fix))  # fmt: skip
    checks.append(Check("git", "ok", f.git) if f.git else
                  Check("git", "fail", "not installed", "install git " + there.format("git")))  # fmt: skip
    roomy = f.disk_free >= MIN_DISK
    checks.append(Check(f"disk under {f.root}", "ok" if roomy else "warn", f"{f.disk_free / 2**30:.1f} GiB free",
                        "" if roomy else "free some space there (images and worktrees need it)"))  # fmt: skip
    return tuple(checks)


def pick_host(session: Devbox, *, cancel: threading.Event | None = None) -> tuple[str, str]:
    """``--host auto``: the reachable host (``local`` included) with the most memory
    available, and why; no queue, no scheduler."""
    rows = [r for r in host_list(session, cancel=cancel) if r.up and not r.problem]
    if not rows:
        raise NotFound("no host is reachable with a podman service", "see `devbox host list`")
    best = max(rows, key=lambda r: r.mem_available)
    others = ", ".join(f"{r.name} {r.mem_available / 2**30:.1f} GiB" for r in rows if r is not best)
    why = f"{best.name} has the most memory available ({best.mem_available / 2**30:.1f} GiB" + (
        f"; {others})" if others else ")")  # fmt: skip
    return best.name, why
