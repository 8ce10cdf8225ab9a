"""Containers: one per worktree, named and labelled so devbox can find it again.

The create spec is the isolation contract of container mode (see ``spec``): the
worktree and the main repository at their host paths, read-only root, per-container
volumes for /var and /etc, the host user's UID/GID, no-new-privileges, a minimal
capability set that the entrypoint drops entirely, and nothing else of the host.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devbox.core.config import Limits, Settings
from devbox.core.egress import Wiring
from devbox.core.podman import Podman
from devbox.core.podman_records import ContainerRecord, CreateSpec, Mount

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
    started_at: float | None = None
    pid: int = 0  # its main process on the host, while running
    limits: Limits | None = None  # as made (None: made before devbox set limits)
    egress: str = "open"  # its network's mode as made (core/egress.py)

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
            "started_at": self.started_at,
            "stale_image": self.stale(current_image_id),
            "limits": None if self.limits is None else dataclasses.asdict(self.limits),
            "egress": self.egress,
        }

    @classmethod
    def from_record(cls, rec: ContainerRecord) -> Container:
        labels = rec.labels
        return cls(
            name=rec.name,
            id=rec.id,
            state=rec.state,
            branch=labels.get(LABEL_BRANCH, ""),
            worktree=labels.get(LABEL_WORKTREE, ""),
            image_id=labels.get(LABEL_IMAGE, ""),
            started_at=rec.started_at,
            pid=rec.pid,
            limits=Limits.from_label(labels.get(LABEL_LIMITS, "")),
            egress=labels.get(LABEL_EGRESS, "open"),
        )


def list_containers(settings: Settings, podman: Podman) -> list[Container]:
    recs = podman.containers({LABEL_REPO: str(settings.repo)})
    return sorted((Container.from_record(r) for r in recs), key=lambda c: (c.branch, c.name))


def get(podman: Podman, name: str) -> Container | None:
    rec = podman.container(name)
    return None if rec is None else Container.from_record(rec)


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


AGENT_STATE_MOUNT = "/run/devbox-agent"  # where the agent's hooks write (agent-hook's default)
STATE_SIZE = 16 << 20  # bytes: the state directory is a tmpfs of this size (writes past it fail inside)
LABEL_LIMITS = "devbox.limits"  # memory=BYTES,cpus=N,pids=N as the container was made with
LABEL_EGRESS = "devbox.egress"  # open | allow | none: the network it was made on (core/egress.py)


def agent_state_dir(c: Container) -> Path | None:
    """Where the host reads the agent's state directory of the running container ``c``: its
    tmpfs, through the container's root (``/proc/<pid>/root``), so it is bounded by
    ``STATE_SIZE`` and lives no longer than the container; None when it is not running here.
    devbox reads it as untrusted input (core/agent_state.py): the directory is a mount point
    the agent cannot replace, and nothing in it is followed as a symlink."""
    if not c.running or not c.pid:
        return None
    return Path(f"/proc/{c.pid}/root{AGENT_STATE_MOUNT}")


def agent_record(settings: Settings, name: str) -> Path:
    """Which agent was started in the container (host side, beside the state directory and
    not in it: the agent cannot rewrite it)."""
    return settings.build_path("agents", f"{name}.agent.json")


def spec(
    settings: Settings,
    *,
    name: str,
    branch: str,
    worktree: Path,
    image_id: str,
    user: HostUser,
    rootless: bool,
    env: dict[str, str],
    gitdir: Path,
    dotgit: Path,
    objects: Path,
    limits: Limits,
    repo: Path | None = None,
    wiring: Wiring | None = None,
) -> CreateSpec:
    """The isolation contract of a branch's container, as a podman create spec. ``gitdir``
    and ``dotgit``: the environment's own git directory and the file naming it
    (core/envgit.py); ``objects``: the repository's object store, read-only inside; ``repo``:
    the repository where the container runs (on another host: its mirror there). The main
    repository itself (its checkout, ``.git``, ``devbox.toml``, ``.build/``) is not mounted."""
    var_vol, etc_vol = volume_names(name)
    repo = repo or settings.repo
    if worktree == repo:
        raise ValueError("an environment on the main checkout")  # refused with a remedy by the caller
    return CreateSpec(
        name=name,
        image=image_id,
        command=KEEPALIVE,
        labels={
            LABEL_REPO: str(repo),
            LABEL_BRANCH: branch,
            LABEL_WORKTREE: str(worktree),
            LABEL_IMAGE: image_id,
            LABEL_LIMITS: limits.label(),
            LABEL_EGRESS: wiring.policy.mode if wiring else "open",
        },
        env={
            "DEVBOX_UID": str(user.uid),
            "DEVBOX_GID": str(user.gid),
            "DEVBOX_USER": user.name,
            "DEVBOX_WORKDIR": str(worktree),
            "DEVBOX_BRANCH": branch,
            **(wiring.env if wiring else {}),
            **env,
        },
        mounts=(
            # /var and /etc writable and kept across stop/start, seeded from the image on first
            # use (podman copies image content into an empty named volume); --recreate renews
            # /etc from the new image and keeps /var (the home), as bootc does on upgrade
            Mount(var_vol, "/var", volume=True),
            Mount(etc_vol, "/etc", volume=True),
            # the worktree at its host path; its .git names the environment's own git directory
            Mount(str(worktree), str(worktree), options=("z",)),
            Mount(str(gitdir), str(gitdir), options=("z",)),
            Mount(str(dotgit), f"{worktree}/.git", options=("ro", "z")),
            # the repository's objects, read-only: the environment's alternates (nothing inside
            # can drop or change an object the host or another environment needs)
            Mount(str(objects), str(objects), options=("ro", "z")),
        ),
        workdir=str(worktree),
        hostname=name[:63],
        user="0:0",  # the entrypoint starts as root (in the container) and drops to the user
        cap_add=ENTRYPOINT_CAPS,
        userns="keep-id" if rootless else "",  # host UID -> same UID inside; refused by rootful podman
        network=wiring.network if wiring else settings.network,
        networks=wiring.networks if wiring else {},
        dns=wiring.dns if wiring else (),
        sysctls=wiring.sysctls if wiring else {},
        read_only=True,
        # writable scratch space on the read-only root, as podman's --read-only-tmpfs makes it
        # (explicit: podman 4.x ignores the API's read_write_tmpfs): sticky and world-writable
        # /tmp and /var/tmp, /run for root inside; the agent's state directory, bounded (the
        # entrypoint gives it to the user)
        tmpfs=(
            ("/tmp", "1777", 0),
            ("/var/tmp", "1777", 0),
            ("/run", "755", 0),
            (AGENT_STATE_MOUNT, "700", STATE_SIZE),
        ),
        memory=limits.memory,
        cpus=limits.cpus,
        pids=limits.pids,
    )


def drop_privileges(user: HostUser, command: list[str]) -> list[str]:
    """``command`` behind the same privilege drop as the entrypoint's main process: every
    process devbox starts in a container runs as the user with no capabilities at all (a
    host root user too) and no way to gain any."""
    return [
        "/usr/bin/setpriv",
        f"--reuid={user.uid}",
        f"--regid={user.gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
        *command,
    ]


def exec_env(user: HostUser) -> dict[str, str]:
    return {"HOME": user.home, "USER": user.name, "LOGNAME": user.name}
