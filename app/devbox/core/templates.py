"""What ``devbox init`` writes into a project, from the installed devbox itself.

The default ``bootc/`` (Containerfile, entrypoint, home directory, sysusers, sudoers, the
agent hooks) and ``terraform/`` module travel inside the wheel as ``devbox/templates/``
(pyproject.toml's force-include); run from a source checkout, the checkout's own
``bootc/`` and ``terraform/`` are the templates. An installed devbox never reads the
repository it was built from. The rest (devbox.toml, the root shims, the thin project
Containerfile over a shared base) is generated here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from devbox.core import config, repo_root

SKIP = {"__pycache__", ".terraform", ".terraform.lock.hcl"}
#: files devbox itself relies on inside the image and the VM module: ``init --check`` compares them
RELIED_ON = ("bootc/entrypoint.sh", "bootc/agent-hook.sh", "bootc/managed-settings.json")


@dataclass(frozen=True)
class Template:
    path: str  # relative to the project's root
    data: bytes
    mode: int = 0o644


def root() -> Path:
    """Where ``bootc/`` and ``terraform/`` come from: the wheel's copy, else this checkout."""
    packaged = Path(str(resources.files("devbox"))) / "templates"
    if (packaged / "bootc").is_dir():
        return packaged
    return Path(__file__).resolve().parents[3]


def tree(name: str) -> list[Template]:
    """Every file of the template directory ``name`` (bootc or terraform), with its mode."""
    base = root() / name
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP)
        for f in sorted(filenames):
            if f in SKIP or f.endswith((".orig", ".pyc")):
                continue
            p = Path(dirpath) / f
            mode = 0o755 if os.access(p, os.X_OK) else 0o644
            found.append(Template(f"{name}/{p.relative_to(base).as_posix()}", p.read_bytes(), mode))
    return found


def thin_containerfile(base: str) -> Template:
    """A project's layer over a team's shared devbox image (``image.base``)."""
    text = f"""\
# This project's image: the team's shared devbox image (image.base in devbox.toml, now
# {base}) plus what this project needs. devbox passes image.base as DEVBOX_BASE, and a
# newer base image makes this one stale. The entrypoint and agent hooks come from the base.
ARG DEVBOX_BASE
FROM ${{DEVBOX_BASE}}

# Your project's packages, e.g.:
# RUN dnf -y install --setopt=install_weak_deps=False postgresql-devel && dnf clean all
"""
    return Template("bootc/Containerfile", text.encode())


HELP = {
    "paths.bootc": "the image's sources (Containerfile, entrypoint, homedir/)",
    "paths.terraform": "the VM's terraform module (devbox init --with-vm)",
    "paths.build": "artifacts, caches, locks and logs (ignored by git)",
    "paths.worktrees": "where start-work puts new worktrees",
    "image.name": "empty: localhost/devbox-<repo>-<hash of this checkout's path>",
    "image.base": "a team's shared devbox image bootc/Containerfile builds FROM (as DEVBOX_BASE)",
    "image.builder": "bootc-image-builder, for the VM's disk",
    "podman.url": "empty: your rootless socket, or the rootful one as root",
    "podman.autostart": "start a podman API service for the run when none answers",
    "podman.timeout": "seconds for one API call",
    "container.shell": "what start-work attaches with",
    "container.network": "empty: podman's default",
    "libvirt.uri": "the hypervisor the VM runs on",
    "notify.command": "run on an agent's move into needs you, done or error (argument list)",
    "merge.pr_command": 'after devbox push, e.g. ["gh", "pr", "create", "--head", "{branch}", "--fill"]',
    "review.check_command": 'devbox compare --check runs it in each copy, e.g. ["make", "test"]',
    "review.check_timeout": "seconds before a check is stopped",
    "disk.size_gib": "the VM disk's minimum size",
    "disk.rootfs": "ext4, xfs or btrfs",
    "vm.name": "empty: <repo>-<hash of its path>; the libvirt domain is devbox-<name>",
    "vm.user": "empty: your login name",
    "vm.domain_type": "qemu (TCG) only where KVM cannot run the guest",
    "vm.cpu_mode": "host-passthrough: nested virtualisation",
    "vm.ssh": "user@host[:port] to reach instead of the VM's own address",
    "vm.on_image_change": "upgrade: a running VM takes a new image in place (/var kept)",
}


def settings_file(base: str = "") -> Template:
    """devbox.toml with every key commented out at its default (``base`` set when given)."""
    lines = [
        "# devbox settings, written by `devbox init`. Every key is shown at its default,",
        "# commented out: uncomment what you change. DEVBOX_<SECTION>_<KEY> overrides any key",
        "# (e.g. DEVBOX_IMAGE_NAME). Relative paths are relative to this file; {repo} is the",
        "# repository's directory name. The README of devbox describes every key.",
    ]
    for section, keys in config.DEFAULTS.items():
        if section == "keys":
            lines += ["", "[keys]", '# stop = "k"   # devbox-tui: action id -> key (see the dashboard\'s key table)']
            continue
        lines += ["", f"[{section}]"]
        for key, default in keys.items():
            if section == "image" and key == "base" and base:
                lines.append(f"{'base = ' + _toml(base):<44}# {HELP['image.base']}")
                continue
            line = f"# {key} = {_toml(default)}"
            why = HELP.get(f"{section}.{key}")
            lines.append(f"{line:<44}# {why}" if why else line)
    lines += [
        "",
        "# [agents.claude]                # built in; define more as [agents.NAME]",
        '# command = ["start-claude"]',
        '# prompt = "arg"',
        '# env = ["ANTHROPIC_API_KEY"]',
        '# hooks = "claude"',
    ]
    return Template(repo_root.CONFIG_NAME, ("\n".join(lines) + "\n").encode())


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value if v != "") + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


COMMON = """\
#!/usr/bin/env bash
# Written by `devbox init`; sourced by the root shims. Finds this project (the main
# checkout, also from a linked worktree) and the installed devbox, then runs it.
DEVBOX_REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
if common=$(git -C "$DEVBOX_REPO" rev-parse --path-format=absolute --git-common-dir 2>/dev/null) &&
    [[ $common == */.git && -f ${common%/.git}/devbox.toml ]]; then
    DEVBOX_REPO=${common%/.git}
fi
export DEVBOX_REPO

devbox_exec() {
    # DEVBOX_BIN, else the devbox beside devbox-tui on PATH (another tool may be named
    # devbox, such as Jetify's Nix one; it has no devbox-tui)
    local program=$1 bin=${DEVBOX_BIN:-}
    shift
    if [[ -z $bin ]]; then
        bin=$(command -v devbox-tui || true)
        bin=${bin%-tui}
    fi
    if [[ -z $bin || ! -x $bin ]]; then
        echo "devbox: devbox is not installed (fix: pipx install devbox, or uv tool install devbox)" >&2
        exit 9
    fi
    if [[ $program == devbox-tui ]]; then
        exec "$bin-tui" "$@"
    fi
    exec "$bin" "$@"
}
"""

SHIMS = {
    "start-work": ("./start-work BRANCH [options]: a worktree for BRANCH and a devbox container on it",
                   "devbox start-work"),
    "devbox-tui": ("./devbox-tui [--read-only]: the devbox dashboard", "devbox-tui"),
}  # fmt: skip
VM_SHIMS = {
    "vm-up.sh": ("./vm-up.sh: the image, the disk and the VM, each only if stale", "devbox vm up"),
    "vm-down.sh": ("./vm-down.sh [--yes]: destroy the VM after naming what would be lost", "devbox vm down"),
    "vm-status.sh": ("./vm-status.sh: the VM and its freshness", "devbox vm status"),
    "vm-ssh.sh": ("./vm-ssh.sh [COMMAND]: ssh into the VM", "devbox vm ssh"),
    "vm-dir-push.sh": ("./vm-dir-push.sh [LOCAL [REMOTE]]: rsync a directory into the VM", "devbox vm dir-push"),
    "vm-dir-pull.sh": ("./vm-dir-pull.sh [REMOTE [LOCAL]]: rsync it back", "devbox vm dir-pull"),
    "vm-git-push.sh": ("./vm-git-push.sh [BRANCH]: a branch into the VM's repository", "devbox vm git-push"),
    "vm-git-pull.sh": ("./vm-git-pull.sh [BRANCH] [--ff]: a branch back from the VM", "devbox vm git-pull"),
}


def shims(with_vm: bool) -> list[Template]:
    out = [Template("devbox-common.sh", COMMON.encode(), 0o644)]
    for name, (doc, command) in {**SHIMS, **(VM_SHIMS if with_vm else {})}.items():
        program, *args = command.split()
        source = 'source "$(dirname -- "${BASH_SOURCE[0]}")/devbox-common.sh"'
        text = (f"#!/usr/bin/env bash\n# {doc} (written by `devbox init`).\nset -euo pipefail\n"
                f"# shellcheck source=devbox-common.sh\n{source}\n"
                f"devbox_exec {program} {' '.join(args)}{' ' if args else ''}\"$@\"\n")  # fmt: skip
        out.append(Template(name, text.encode(), 0o755))
    return out
