"""Containers: one per worktree, named and labelled so devbox can find it again.

The run flags are the isolation contract of container mode (see ``run_argv``): the
worktree and the main repository at their host paths, read-only root, per-container
volumes for /var and /etc, the host user's UID/GID, no-new-privileges, a minimal
capability set that the entrypoint drops entirely, and nothing else of the host.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devbox.core.config import Settings
from devbox.core.podman import Podman

LABEL_REPO = "devbox.repo"
LABEL_BRANCH = "devbox.branch"
LABEL_WORKTREE = "devbox.worktree"
LABEL_IMAGE = "devbox.image"

# The entrypoint needs these to create the user and its home, then drops them all.
ENTRYPOINT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "SETPCAP")
KEEPALIVE = ("sleep", "2147483647")  # the main process; shells come and go with `exec`


def _slug(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-._")
    return slug[:limit].rstrip("-._") or "x"


def container_name(settings: Settings, branch: str) -> str:
    """``devbox-<repo>-<branch>-<hash>``: readable, and distinct for branches that slug alike."""
    digest = hashlib.sha256(f"{settings.repo}\0{branch}".encode()).hexdigest()[:6]
    return f"devbox-{_slug(settings.repo_name, 24)}-{_slug(branch, 40)}-{digest}"


def volume_names(name: str) -> tuple[str, str]:
    return f"{name}-var", f"{name}-etc"


@dataclass(frozen=True)
class Container:
    name: str
    id: str
    state: str  # running, exited, created, ...
    branch: str
    worktree: str
    image_id: str

    @property
    def running(self) -> bool:
        return self.state == "running"

    def stale(self, current_image_id: str | None) -> bool:
        return bool(current_image_id) and self.image_id != current_image_id

    def to_json(self, current_image_id: str | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "state": self.state,
            "branch": self.branch,
            "worktree": self.worktree,
            "image_id": self.image_id,
            "stale_image": self.stale(current_image_id),
        }


def _from_list(row: dict[str, Any]) -> Container:
    labels = row.get("Labels") or {}
    names = row.get("Names") or [""]
    return Container(
        name=str(names[0]),
        id=str(row.get("Id", "")),
        state=str(row.get("State", "")).lower(),
        branch=labels.get(LABEL_BRANCH, ""),
        worktree=labels.get(LABEL_WORKTREE, ""),
        image_id=labels.get(LABEL_IMAGE, ""),
    )


def _from_inspect(data: dict[str, Any]) -> Container:
    labels = (data.get("Config") or {}).get("Labels") or {}
    return Container(
        name=str(data.get("Name", "")).lstrip("/"),
        id=str(data.get("Id", "")),
        state=str((data.get("State") or {}).get("Status", "")).lower(),
        branch=labels.get(LABEL_BRANCH, ""),
        worktree=labels.get(LABEL_WORKTREE, ""),
        image_id=labels.get(LABEL_IMAGE, ""),
    )


def list_containers(settings: Settings, podman: Podman) -> list[Container]:
    rows = podman.api.containers({LABEL_REPO: str(settings.repo)})
    return sorted((_from_list(r) for r in rows), key=lambda c: c.branch)


def get(podman: Podman, name: str) -> Container | None:
    data = podman.api.container(name)
    return None if data is None else _from_inspect(data)


@dataclass(frozen=True)
class HostUser:
    uid: int
    gid: int
    name: str

    @classmethod
    def current(cls) -> HostUser:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = f"user{os.getuid()}"
        return cls(os.getuid(), os.getgid(), _slug(name, 32))

    @property
    def home(self) -> str:
        return f"/var/home/{self.name}"


def run_argv(
    settings: Settings,
    *,
    name: str,
    branch: str,
    worktree: Path,
    image_id: str,
    user: HostUser,
    rootless: bool,
    env: dict[str, str],
) -> list[str]:
    """The ``podman run`` arguments (after ``podman``) for a branch's container."""
    var_vol, etc_vol = volume_names(name)
    mounts = [worktree] if worktree == settings.repo else [worktree, settings.repo]
    argv = [
        "run",
        "--detach",
        "--init",
        "--name",
        name,
        "--hostname",
        name[:63],
        "--label",
        f"{LABEL_REPO}={settings.repo}",
        "--label",
        f"{LABEL_BRANCH}={branch}",
        "--label",
        f"{LABEL_WORKTREE}={worktree}",
        "--label",
        f"{LABEL_IMAGE}={image_id}",
        # read-only root; /tmp, /run, /var/tmp tmpfs (podman's --read-only-tmpfs default)
        "--read-only",
        # /var and /etc writable and kept across stop/start, seeded from the image on first
        # use (podman copies image content into an empty named volume); --recreate renews
        # /etc from the new image and keeps /var (the home), as bootc does on upgrade
        "--volume",
        f"{var_vol}:/var",
        "--volume",
        f"{etc_vol}:/etc",
        "--security-opt",
        "no-new-privileges",
        "--cap-drop",
        "all",
    ]
    for cap in ENTRYPOINT_CAPS:
        argv += ["--cap-add", cap]
    for path in mounts:  # same absolute path inside: .git files of worktrees resolve
        argv += ["--volume", f"{path}:{path}:rw,z"]
    if rootless:
        argv += ["--userns", "keep-id"]  # host UID -> same UID inside; refused by rootful podman
    argv += ["--user", "0:0"]  # the entrypoint starts as root (in the container) and drops to the user
    if settings.network:
        argv += ["--network", settings.network]
    all_env = {
        "DEVBOX_UID": str(user.uid),
        "DEVBOX_GID": str(user.gid),
        "DEVBOX_USER": user.name,
        "DEVBOX_WORKDIR": str(worktree),
        "DEVBOX_BRANCH": branch,
        **env,
    }
    for key, value in sorted(all_env.items()):
        argv += ["--env", f"{key}={value}"]
    argv += ["--workdir", str(worktree), image_id, *KEEPALIVE]
    return argv


def exec_argv(container: Container, user: HostUser, command: list[str], *, tty: bool) -> list[str]:
    """``podman exec`` arguments (after ``podman``) that run ``command`` as the host user."""
    argv = ["exec", "--interactive"]
    if tty:
        argv.append("--tty")
    argv += [
        "--user",
        f"{user.uid}:{user.gid}",
        "--workdir",
        container.worktree or "/",
        "--env",
        f"HOME={user.home}",
        "--env",
        f"USER={user.name}",
        "--env",
        f"LOGNAME={user.name}",
        container.name,
        *command,
    ]
    return argv
