"""The front door of the core: ``Devbox(settings)`` holds the settings and the adapters.

Like podman-py's ``PodmanClient`` it is a context manager, and it makes each adapter on
first use: a ``devbox worktree list`` never loads podman-py. Operations (``core/ops/``)
take a session as their first argument. VM mode's adapters (builder, terraform, libvirt,
transfer) are plain modules the VM operations call with the session's settings.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from devbox.core import config, repo_root
from devbox.core.config import Settings
from devbox.core.containers import HostUser
from devbox.core.podman import Podman

if TYPE_CHECKING:  # (hosts and its ssh are loaded only when a VM lives on another host)
    from devbox.core.host_config import HostSpec
    from devbox.core.hosts import Tunnel


def _to_stderr(text: str) -> None:
    sys.stderr.write(text + "\n")


class Devbox:
    """Settings plus lazily made adapters, shared by every operation of one face."""

    def __init__(
        self, settings: Settings, *, user: HostUser | None = None, notify: Callable[[str], None] | None = None,
        podman: Podman | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.notify = notify or _to_stderr
        self.user = user or HostUser.current()
        self._podman: Podman | None = podman  # given: another host's (core/ops/remote.py)
        self._lock = threading.Lock()
        self._libvirt_tunnel: Tunnel | None = None

    @classmethod
    def open(cls, repo: Path | None = None, env: Mapping[str, str] | None = None) -> Devbox:
        """The session for ``repo`` (default: $DEVBOX_REPO or the nearest devbox.toml)."""
        return cls(config.load(repo_root.find_repo(repo, env), env))

    @property
    def podman(self) -> Podman:
        if self._podman is None:
            with self._lock:
                if self._podman is None:
                    s = self.settings
                    self._podman = Podman(
                        s.podman_url, timeout=s.podman_timeout, autostart=s.podman_autostart, notify=self.notify
                    )
        return self._podman

    @property
    def vm_host(self) -> HostSpec | None:
        """The host this checkout's VM lives on (``vm up --host``), None for this machine."""
        from devbox.core import hosts

        return hosts.vm_host(self.settings)

    @property
    def libvirt_uri(self) -> str:
        """Where this checkout's VM is managed: ``libvirt.uri``, or, when the VM lives on a
        host, that host's libvirtd through one ssh-forwarded socket kept for the session
        (made again when its ssh ended: a host that went down and came back)."""
        spec = self.vm_host
        if spec is None:
            return self.settings.libvirt_uri
        from devbox.core import hosts

        with self._lock:
            t = self._libvirt_tunnel
            if t is None or not t.alive or t.spec != spec:
                if t is not None:
                    t.__exit__(None, None, None)
                    self._libvirt_tunnel = None
                t = hosts.Tunnel(self.settings, spec, hosts.libvirt_socket(spec), "libvirt.sock")
                t.__enter__()
                self._libvirt_tunnel = t
            return f"qemu+unix:///system?socket={t.local}"

    def close(self) -> None:
        if self._podman is not None:
            self._podman.close()
        with self._lock:
            if self._libvirt_tunnel is not None:
                self._libvirt_tunnel.__exit__(None, None, None)
                self._libvirt_tunnel = None

    def __enter__(self) -> Devbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
