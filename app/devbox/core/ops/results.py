"""The frozen records operations return, and how each becomes JSON for ``--json``.

What ``devbox status`` and the fleet show (sections, worktree and agent rows) is in
``views.py``: a new environment's start loads this module's records, not those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devbox.core.errors import DevboxError

if TYPE_CHECKING:
    from devbox.core.containers import Container
    from devbox.core.git import Worktree


@dataclass(frozen=True)
class Problem:
    """A devbox error as data: a status section that could not be made says why."""

    message: str
    remedy: str
    exit_code: int

    @classmethod
    def of(cls, exc: DevboxError) -> Problem:
        return cls(exc.message, exc.remedy, int(exc.exit_code))

    def one_line(self) -> str:
        return f"{self.message} (fix: {self.remedy})" if self.remedy else self.message

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "remedy": self.remedy, "exit_code": self.exit_code}


@dataclass(frozen=True)
class Loss:
    """What removing a worktree or a container would destroy; empty means nothing."""

    dirty: int = 0  # changed + untracked files
    files: tuple[str, ...] = ()
    commits: int = 0  # on no other branch or remote (capped at 100)
    detached: bool = False
    running: str = ""  # the name of a running container
    home: str = ""  # the /var volume of a container (the user's home inside)
    unsynced: str = ""  # a container whose git directory holds commits not brought to the host

    @property
    def empty(self) -> bool:
        return not (self.dirty or self.commits or self.running or self.home or self.unsynced)

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.dirty:
            shown = ", ".join(self.files)
            more = f" and {self.dirty - len(self.files)} more" if self.dirty > len(self.files) else ""
            out.append(f"{self.dirty} uncommitted file(s): {shown}{more}")
        if self.commits:
            where = "the detached HEAD" if self.detached else "the branch"
            plus = "+" if self.commits >= 100 else ""
            out.append(f"{self.commits}{plus} commit(s) of {where} on no other branch or remote")
        if self.running:
            out.append(f"running container {self.running}")
        if self.home:
            out.append(f"home volume {self.home} (/var of the container)")
        if self.unsynced:
            out.append(f"commits made in {self.unsynced} that are not on the host yet (start it, then devbox status)")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "dirty": self.dirty,
            "files": list(self.files),
            "commits": self.commits,
            "running": self.running or None,
            "home": self.home or None,
            "unsynced": self.unsynced or None,
        }


@dataclass(frozen=True)
class Removed:
    what: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class StartResult:
    container: Container
    worktree: Worktree
    action: str  # "created", "started", "running", "recreated"
    stale_image: bool


@dataclass(frozen=True)
class StartedSeveral:
    """``start_several``: each branch's outcome, in the order asked."""

    started: tuple[StartResult, ...]
    failed: tuple[tuple[str, Problem], ...]  # (branch, why)


@dataclass(frozen=True)
class ContainerList:
    """This repo's containers and the current image ID (to tell the stale ones)."""

    containers: tuple[Container, ...]
    image_id: str | None
