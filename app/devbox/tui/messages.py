"""The dashboard's own messages: a status snapshot from the poll thread, and an attach
command ready to run on the terminal."""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from devbox.core import ops
from devbox.core.git import Activity
from devbox.core.podman_records import ContainerStats


class StatusUpdated(Message):
    """A new snapshot; a newer one replaces an unhandled older one in the queue."""

    def __init__(
        self,
        status: ops.Status,
        activity: dict[Path, Activity],
        stats: dict[str, ContainerStats],
        vm: ops.VmOverview | None = None,
        radar: ops.Radar | None = None,
    ) -> None:
        super().__init__()
        self.status = status
        self.activity = activity
        self.stats = stats
        self.vm = vm
        self.radar = radar

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StatusUpdated)


class AttachReady(Message):
    def __init__(self, argv: list[str]) -> None:
        super().__init__()
        self.argv = argv
