"""The records of what devbox shows: ``devbox status`` and its sections, the worktree and
agent rows of the fleet, and what removing a worktree would lose. Apart from
``results.py`` so that starting an environment does not create them (~4 ms of its CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from devbox.core.errors import DevboxError
from devbox.core.ops.results import Loss, Problem

if TYPE_CHECKING:  # VM mode's records and the agents': a start-work must not load their modules
    from devbox.core.agent_state import AgentState
    from devbox.core.builder import DiskStatus
    from devbox.core.containers import Container
    from devbox.core.egress import EgressView
    from devbox.core.freshness import SourceTree
    from devbox.core.git import Worktree, WorktreeState
    from devbox.core.image import ImageStatus
    from devbox.core.libvirt import Vm

T = TypeVar("T")


@dataclass(frozen=True)
class Section(Generic[T]):
    """One part of a view: its value, or the problem that kept devbox from getting it."""

    value: T | None = None
    problem: Problem | None = None

    @classmethod
    def fetch(cls, get: Callable[[], T]) -> Section[T]:
        try:
            return cls(get())
        except DevboxError as exc:
            return cls(None, Problem.of(exc))


@dataclass(frozen=True)
class WorktreeRow:
    worktree: Worktree
    state: WorktreeState
    container: Container | None

    def to_json(self) -> dict[str, Any]:
        s = self.state
        return {
            "branch": self.worktree.branch,
            "path": str(self.worktree.path),
            "head": self.worktree.head,
            "main": self.worktree.is_main,
            "missing": s.missing,
            "dirty": s.dirty,
            "changed": s.changed,
            "untracked": s.untracked,
            "files": list(s.files),
            "ahead": s.ahead,
            "behind": s.behind,
            "error": s.error or None,
            "container": self.container.name if self.container else None,
            "container_state": self.container.state if self.container else None,
        }


IN_VM = "vm"  # AgentRow.container_state of an agent in the VM (core/ops/fleet_vm.py)


@dataclass(frozen=True)
class AgentRow:
    branch: str
    container: str
    container_state: str
    agent: AgentState
    host: str = ""  # another host's name ([hosts.NAME]); "" here
    egress: EgressView | None = None  # None: not known here (the VM's, another host's for now)

    def to_json(self) -> dict[str, Any]:
        return {"branch": self.branch, "container": self.container, "container_state": self.container_state,
                "host": self.host or "local", **self.agent.to_json(),
                "egress": self.egress.to_json() if self.egress else None}  # fmt: skip


@dataclass(frozen=True)
class Status:
    """``devbox status``: every section fetched on its own (schema in README, "status --json")."""

    repo: str
    sources: Section[SourceTree]
    image: Section[ImageStatus]
    worktrees: Section[tuple[WorktreeRow, ...]]
    containers: Section[tuple[Container, ...]]
    disk: Section[DiskStatus] = Section()
    vms: Section[tuple[Vm, ...]] = Section()
    agents: Section[tuple[AgentRow, ...]] = Section()

    SCHEMA = 3  # 2: the agents section; 3: each agent's and container's egress

    @property
    def image_id(self) -> str | None:
        return self.image.value.id if self.image.value else None

    def problems(self) -> dict[str, Problem]:
        parts: dict[str, Section[Any]] = {
            "sources": self.sources,
            "image": self.image,
            "worktrees": self.worktrees,
            "containers": self.containers,
            "disk": self.disk,
            "vms": self.vms,
            "agents": self.agents,
        }
        return {name: sec.problem for name, sec in parts.items() if sec.problem is not None}

    def to_json(self) -> dict[str, Any]:
        current = self.image_id
        return {
            "schema": self.SCHEMA,
            "repo": self.repo,
            "sources": {"path": str(self.sources.value.root), "digest": self.sources.value.digest}
            if self.sources.value
            else None,
            "image": self.image.value.to_json() if self.image.value else None,
            "worktrees": [r.to_json() for r in self.worktrees.value or ()],
            "containers": [c.to_json(current) for c in self.containers.value or ()],
            "disk": self.disk.value.to_json() if self.disk.value else None,
            "vms": [v.to_json() for v in self.vms.value or ()],
            "agents": [a.to_json() for a in self.agents.value or ()],
            "errors": {name: p.to_json() for name, p in self.problems().items()},
        }


@dataclass(frozen=True)
class WorktreeList:
    """Worktrees (git only) and the containers section: podman being down costs only the
    container column."""

    rows: tuple[WorktreeRow, ...]
    containers: Section[tuple[Container, ...]]


@dataclass(frozen=True)
class WorktreeLoss:
    """What removing a worktree would lose, its container, and why containers were not
    checked ("" when they were)."""

    loss: Loss
    container: Container | None
    unchecked: str
