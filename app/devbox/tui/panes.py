"""The dashboard's panes: worktrees, containers, VMs and the artifact chain.

Tables are reconciled by row key on every snapshot (as memray's TUI does): new rows are
added, changed cells updated in place, vanished rows removed. Nothing is rebuilt per tick,
so the cursor stays where the user put it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable, Static

from devbox.core import labels
from devbox.core.git import Activity

if TYPE_CHECKING:  # types only: VM mode's modules (libvirt, builder, terraform) load after the first paint
    from devbox.core.containers import Container
    from devbox.core.libvirt import Vm
    from devbox.core.ops import Problem, Status, VmOverview, WorktreeRow
    from devbox.core.podman_records import ContainerStats


def ago(epoch: float | None, now: float | None = None) -> str:
    if epoch is None:
        return "-"
    secs = max(0, int((now or time.time()) - epoch))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def short_path(path: Path, repo: Path) -> str:
    """Relative to the repo's parent when inside it (worktrees live beside the repo)."""
    try:
        return str(path.relative_to(repo.parent))
    except ValueError:
        home = str(Path.home())
        text = str(path)
        return "~" + text[len(home) :] if text.startswith(home + os.sep) else text


class ReconciledTable(DataTable[Text]):
    """A DataTable whose rows are kept in step with a snapshot by key."""

    COLUMNS: tuple[tuple[str, str], ...] = ()

    def on_mount(self) -> None:
        self._shown: dict[str, list[str]] = {}  # what each row shows now, to compare without asking the table
        self.cursor_type = "row"
        self.zebra_stripes = True
        for key, label in self.COLUMNS:
            self.add_column(label, key=key)

    def reconcile(self, rows: Mapping[str, Sequence[str]]) -> None:
        shown = self._shown
        for key in shown.keys() - rows.keys():
            self.remove_row(key)
            del shown[key]
        for key, cells in rows.items():
            old = shown.get(key)
            shown[key] = list(cells)
            if old is None:
                # Text, never a str: DataTable parses a str as markup, and a branch or an
                # agent's message with "[/]" in it would crash the dashboard (or style it)
                self.add_row(*(Text(c) for c in cells), key=key)
                continue
            if old == shown[key]:
                continue
            for (col, _), new, before in zip(self.COLUMNS, cells, old, strict=True):
                if new != before:
                    # re-measuring a column walks every row (Textual's update_width): only when
                    # the new text is wider than the column already is
                    wider = cell_len(new) > self.columns[col].content_width  # type: ignore[index]
                    self.update_cell(key, col, Text(new), update_width=wider)

    def selected_key(self) -> str | None:
        if self.row_count == 0:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key((self.cursor_row, 0))  # type: ignore[arg-type]
        except Exception:
            return None
        return str(row_key.value)


class WorktreesTable(ReconciledTable):
    COLUMNS = (
        ("branch", "branch"),
        ("path", "path"),
        ("state", "state"),
        ("sync", "↑↓"),
        ("age", "last commit"),
        ("diff", "vs base"),
        ("container", "container"),
    )

    def show(self, rows: Sequence[WorktreeRow], activity: Mapping[Path, Activity], repo: Path) -> None:
        now = time.time()
        data: dict[str, list[str]] = {}
        for r in rows:
            s = r.state
            state = labels.worktree_state(s)
            sync = "-" if s.ahead is None else f"+{s.ahead} -{s.behind}"
            act = activity.get(r.worktree.path, Activity())
            diff = f"+{act.insertions} −{act.deletions}, {act.files} files" if act.files else "-"
            cont = f"{r.container.name} ({r.container.state})" if r.container else "-"
            label = r.worktree.label + (" (main)" if r.worktree.is_main else "")
            data[str(r.worktree.path)] = [
                label,
                short_path(r.worktree.path, repo),
                state,
                sync,
                ago(act.last_commit, now),
                diff,
                cont,
            ]
        self.reconcile(data)


class ContainersTable(ReconciledTable):
    COLUMNS = (
        ("name", "name"),
        ("branch", "branch"),
        ("state", "state"),
        ("up", "uptime"),
        ("image", "image"),
        ("cpu", "CPU"),
        ("mem", "memory"),
    )

    def show(self, conts: Sequence[Container], current_image: str | None, stats: Mapping[str, ContainerStats]) -> None:
        now = time.time()
        data: dict[str, list[str]] = {}
        for c in conts:
            st = stats.get(c.name)
            data[c.name] = [
                c.name,
                c.branch,
                c.state,
                ago(c.started_at, now) if c.running else "-",
                "stale" if c.stale(current_image) else "fresh",
                f"{st.cpu_percent:.1f}%" if st else "-",
                f"{labels.size(st.mem_bytes)}" if st else "-",
            ]
        self.reconcile(data)


def problem_text(problem: Problem | None) -> str:
    return f"⚠ {problem.message}\n  fix: {problem.remedy}" if problem else ""


def artifacts_line(st: Status, vm: VmOverview | None = None) -> str:
    """``bootc/ sources → image → disk → VM``, each fresh or stale with its reason."""
    src = st.sources.value
    sources = f"bootc/ sources {src.digest[:8]}" if src else "bootc/ sources ?"
    img = st.image.value
    if img is None:
        image = f"image ? ({st.image.problem.message})" if st.image.problem else "image ?"
    elif img.verdict.fresh:
        image = f"image {img.info.short_id if img.info else ''} fresh"
    else:
        image = f"image stale ({img.verdict.reason})"
    d = st.disk.value
    if d is None or d.record is None:
        disk = "disk: not built"
    elif d.verdict.fresh:
        disk = "disk fresh"
    else:
        disk = f"disk stale ({d.verdict.reason})"
    where = f" on {vm.host}" if vm is not None and vm.host else ""
    if vm is None:
        machine = "VM ?"
    elif vm.vms.problem is not None:
        machine = f"VM{where} ? ({vm.vms.problem.message})"
    elif vm.verdict.fresh:
        machine = f"VM{where} fresh"
    else:
        machine = f"VM{where} stale ({'; '.join(vm.verdict.reasons)})"
    return f"{sources}  →  {image}  →  {disk}  →  {machine}"


class Plain(Static):
    """A Static that shows its text as written: paths, branch names, file names and agents'
    messages are not Rich markup ("[/]" in one crashed the dashboard, "[keys]" vanished)."""

    def __init__(self, content: str = "", **kw: object) -> None:
        super().__init__(content, markup=False, **kw)  # type: ignore[arg-type]


class ArtifactsStrip(Plain):
    pass


class VmsTable(ReconciledTable):
    """This checkout's VMs (libvirt): name, state, address, size, uptime, CPU time."""

    COLUMNS = (
        ("name", "name"),
        ("state", "state"),
        ("ip", "IP"),
        ("size", "vCPU/mem"),
        ("up", "up"),
        ("cpu", "CPU"),
        ("mode", "cpu mode"),
    )

    def show(self, vms: Sequence[Vm]) -> None:
        self.reconcile(
            {
                v.name: [
                    v.name,
                    v.state,
                    v.ip or "-",
                    f"{v.vcpus}/{labels.size(v.memory_mib * 1024 * 1024)}",
                    labels.duration(v.uptime()),
                    f"{v.cpu_seconds:.0f}s",
                    v.cpu_mode or "default",
                ]
                for v in vms
            }
        )
