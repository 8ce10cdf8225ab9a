"""The fleet: one row per environment (its branch, its agent's state and how long, the
environment's state, its changes, CPU and memory), most urgent first, and below it the
selected agent's terminal (Preview), captured live for that row only.

``]`` / ``[`` jump to the next / previous agent that needs you; Enter attaches to the
selected agent (the app steps aside; tmux's detach key brings you back); a row you looked
at is marked seen, and a done agent you have not seen sorts above the working ones.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import get_current_worker

from devbox.core import labels, ops
from devbox.core.errors import DevboxError
from devbox.core.git import Activity
from devbox.core.podman_records import ContainerStats
from devbox.tui.panes import ReconciledTable

if TYPE_CHECKING:
    from devbox.tui.app import DevboxApp

PREVIEW_POLL = 1.0  # seconds between captures of the selected agent's terminal
MARK = {"needs you": "!", "error": "x", "done": "✓", "working": "…", "exited": "-", "unknown": "?", "no agent": " "}


GROUPS = {"needs you": 0, "error": 1, "done": 2, "working": 3, "exited": 5, "unknown": 6, "no agent": 7}


def rank(row: ops.AgentRow, seen: Mapping[str, float | None]) -> tuple[int, str]:
    """Sort key: needs you, error, done-and-unseen, working, done-and-seen, the rest;
    stable (by branch) within a group."""
    state = row.agent.state
    group = GROUPS.get(state, 8)
    if state == "done" and seen.get(row.branch) == row.agent.since:
        group = 4  # looked at: after the working ones
    return (group, row.branch)


class FleetTable(ReconciledTable):
    COLUMNS = (
        ("branch", "branch"),
        ("agent", "agent"),
        ("env", "env"),
        ("changes", "changes"),
        ("cpu", "CPU"),
        ("mem", "mem"),
    )

    def show(
        self, rows: Sequence[ops.AgentRow], activity: Mapping[str, tuple[Activity, int]],
        stats: Mapping[str, ContainerStats], seen: Mapping[str, float | None],
    ) -> None:  # fmt: skip
        now = time.time()
        ordered = sorted(rows, key=lambda r: rank(r, seen))
        data: dict[str, list[str]] = {}
        for r in ordered:
            s = r.agent
            age = labels.duration(now - s.since) if s.since else ""
            unseen = "*" if s.state in ("needs you", "done", "error") and seen.get(r.branch) != s.since else ""
            act, dirty = activity.get(r.branch, (Activity(), 0))
            changes = f"+{act.insertions} −{act.deletions}, {act.files}f" if act.files else "-"
            if dirty:
                changes += f", {dirty} uncommitted"
            st = stats.get(r.container)
            data[r.branch] = [
                r.branch,
                f"{MARK.get(s.state, ' ')} {s.state} {age}{unseen}".rstrip(),
                r.container_state,
                changes,
                f"{st.cpu_percent:.0f}%" if st else "-",
                labels.size(st.mem_bytes) if st else "-",
            ]
        if list(data) != list(self._shown):  # the order changed: refill (tens of rows), keep the cursor
            selected = self.selected_key()
            self.clear()
            self._shown = {}
            self.reconcile(data)
            if selected in data:
                self.move_cursor(row=list(data).index(selected))
        else:
            self.reconcile(data)


class FleetScreen(Screen[None]):
    """The agents at a glance, and the selected one's terminal."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right_square_bracket", "next_needing", "Next needs-you", id="next_needing"),
        Binding("left_square_bracket", "previous_needing", "Prev needs-you", id="previous_needing"),
        Binding("enter", "attach_agent", "Attach agent", id="attach_agent"),
        Binding("F,escape", "app.pop_screen", "Resources", id="resources"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: tuple[ops.AgentRow, ...] = ()
        self.seen: dict[str, float | None] = {}  # branch -> the state's start time when looked at
        self.preview_for = ""

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="fleet-pane", classes="pane"):
            yield Static("Fleet: agents, most urgent first", classes="pane-title")
            yield Static("", id="fleet-problem", classes="problem")
            yield FleetTable(id="fleet")
        with Vertical(id="preview-pane", classes="pane"):
            yield Static("Preview", id="preview-title", classes="pane-title")
            yield Static("", id="preview")
        yield Footer()

    @property
    def devbox(self) -> DevboxApp:
        return self.app  # type: ignore[return-value]

    def on_mount(self) -> None:
        self.query_one(FleetTable).focus()
        if self.devbox.last_update is not None:
            u = self.devbox.last_update
            self.show_status(u.status, u.activity, u.stats)
        if self.devbox.live:  # snapshots and tests without pollers show no live terminal
            self.follow_preview()

    def show_status(
        self, st: ops.Status, activity: Mapping[Path, Activity], stats: Mapping[str, ContainerStats]
    ) -> None:
        self.rows = st.agents.value or ()
        problem = st.agents.problem
        box = self.query_one("#fleet-problem", Static)
        box.update(f"⚠ {problem.message}\n  fix: {problem.remedy}" if problem else "")
        box.display = problem is not None
        by_branch: dict[str, tuple[Activity, int]] = {}
        for w in st.worktrees.value or ():
            if w.worktree.branch:
                dirty = w.state.changed + w.state.untracked
                by_branch[w.worktree.branch] = (activity.get(w.worktree.path, Activity()), dirty)
        self.query_one(FleetTable).show(self.rows, by_branch, stats, self.seen)
        self._mark_seen()

    def selected(self) -> ops.AgentRow | None:
        key = self.query_one(FleetTable).selected_key()
        return next((r for r in self.rows if r.branch == key), None)

    @on(DataTable.RowHighlighted)
    def _moved(self) -> None:
        self._mark_seen()

    def _mark_seen(self) -> None:
        row = self.selected()
        if row is not None:
            self.seen[row.branch] = row.agent.since
            self.preview_for = row.branch
            self.query_one("#preview-title", Static).update(
                f"Preview: {row.branch}: {row.agent.state}" + (f": {row.agent.message}" if row.agent.message else "")
            )

    def _jump(self, step: int) -> None:
        table = self.query_one(FleetTable)
        keys = list(table._shown)
        asking = {r.branch for r in self.rows if r.agent.state == "needs you"}
        needing = [i for i, k in enumerate(keys) if k in asking]
        if not needing:
            self.notify("no agent needs you", timeout=3)
            return
        here = table.cursor_row
        order = [i for i in needing if (i > here if step > 0 else i < here)] or needing
        table.move_cursor(row=order[0] if step > 0 else order[-1])

    def action_next_needing(self) -> None:
        self._jump(+1)

    def action_previous_needing(self) -> None:
        self._jump(-1)

    def action_attach_agent(self) -> None:
        row = self.selected()
        if row is not None:
            self.devbox.attach_agent(row.branch)

    @on(DataTable.RowSelected)
    def _chosen(self) -> None:  # Enter on the table (the table takes the key before the screen)
        self.action_attach_agent()

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def follow_preview(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            branch = self.preview_for
            if branch:
                try:
                    text = ops.agent_preview(self.devbox.session, branch)
                except DevboxError as exc:
                    text = f"({exc.message})"
                self.app.call_from_thread(self._show_preview, branch, text)
            time.sleep(PREVIEW_POLL)

    def _show_preview(self, branch: str, text: str) -> None:
        if branch == self.preview_for and self.is_mounted:
            lines = text.splitlines()[-(max(3, self.query_one("#preview").size.height or 20)) :]
            self.query_one("#preview", Static).update(Text("\n".join(lines)), layout=False)  # never markup
