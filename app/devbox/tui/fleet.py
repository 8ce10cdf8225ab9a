"""The fleet, the dashboard's main view: one row per environment (its branch, its agent's
state and how long, the environment's state, its changes, CPU and memory), most urgent
first; and the Preview tab of the detail area below, the selected agent's terminal,
captured live for that row only and only while the tab is shown.

``]`` / ``[`` jump to the next / previous agent that needs you; Enter attaches to the
selected agent (the app steps aside; tmux's detach key brings you back); a row you looked
at is marked seen, and a done agent you have not seen sorts above the working ones.

Both are widgets of the one dashboard screen, not screens: the log, the selection and the
resources view (``R``) stay where they are while the view switches, and the detail area's
Log tab is the same log pane either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from devbox.core import labels, ops
from devbox.core.agent_state import AgentState
from devbox.core.errors import DevboxError
from devbox.core.git import Activity
from devbox.core.podman_records import ContainerStats
from devbox.tui.commands import BY_ID
from devbox.tui.panes import Plain, ReconciledTable

if TYPE_CHECKING:
    from devbox.core.session import Devbox

PREVIEW_POLL = 1.0  # seconds between captures of the selected agent's terminal while it changes
PREVIEW_IDLE = 8.0  # at most this long between captures of a terminal that stopped changing
MARK = {
    "needs you": "!",
    "error": "x",
    "missing": "!",
    "done": "✓",
    "working": "…",
    "exited": "-",
    "unknown": "?",
    "no agent": " ",
    "working?": "~",
    "idle?": "~",
}
# needs you, error, done-and-unseen, working (and the guesses: idle? may be waiting for you,
# but a guess never jumps the queue), done-and-seen, exited, unknown, no agent
GROUPS = {
    "needs you": 0,
    "error": 1,
    "missing": 1,
    "done": 2,
    "working": 3,
    "working?": 3,
    "idle?": 3,
    "exited": 5,
    "unknown": 6,
    "no agent": 7,
}


def rank(row: ops.AgentRow, seen: Mapping[str, float | None]) -> tuple[int, str]:
    """Sort key: needs you, error, done-and-unseen, working, done-and-seen, the rest;
    stable (by branch) within a group."""
    state = row.agent.state
    group = GROUPS.get(state, 8)
    if state == "done" and seen.get(row.branch) == row.agent.since:
        group = 4  # looked at: after the working ones
    return (group, row.branch)


WIDE = 96  # columns of the table (a 100-column terminal) from which the agent's last message gets a column
NARROW = 72  # below it (a 60-column terminal) the env, CPU and mem columns leave (the Resources view has them)


class FleetTable(ReconciledTable):
    # Enter is the table's (it selects the row, which attaches: FleetView.Chosen); shown in the
    # footer under the registry's title, which the app's own binding cannot be while the table has the focus
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", BY_ID["attach_agent"].title, key_display="⏎", show=True)
    ]
    COLUMNS: tuple[tuple[str, str], ...] = (
        ("branch", "branch"),
        ("agent", "agent"),
        ("env", "env"),
        ("changes", "changes"),
        ("cpu", "CPU"),
        ("mem", "mem"),
    )
    WIDE_COLUMNS: tuple[tuple[str, str], ...] = (*COLUMNS, ("message", "last message"))
    NARROW_COLUMNS: tuple[tuple[str, str], ...] = (("branch", "branch"), ("agent", "agent"), ("changes", "changes"))

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._ranks: dict[str, tuple[int, str]] = {}  # each row's place at the last show
        self._pin: tuple[str, tuple[int, str] | None] | None = None  # (selected branch, its place)

    def _set_columns(self, width: int) -> None:
        """Every column shown fits: 80 columns show what matters without scrolling, wider
        terminals add the message, narrower ones keep the branch, the agent and its changes."""
        cls = type(self)
        if not width:  # not laid out (the other view is on show): as it was
            return
        columns = cls.WIDE_COLUMNS if width >= WIDE else cls.COLUMNS if width >= NARROW else cls.NARROW_COLUMNS
        if columns != self.COLUMNS:
            self.COLUMNS = columns
            self.clear(columns=True)
            self._shown = {}
            for key, label in columns:
                self.add_column(label, key=key)

    def show(
        self, rows: Sequence[ops.AgentRow], activity: Mapping[str, tuple[Activity, int]],
        stats: Mapping[str, ContainerStats], seen: Mapping[str, float | None], clashes: Mapping[str, int],
    ) -> None:  # fmt: skip
        now = time.time()
        selected = self.selected_key()
        self._set_columns(self.size.width)
        narrow = self.COLUMNS == self.NARROW_COLUMNS
        # the row under the cursor keeps the place it had when the cursor came to it (looking
        # at a done row marks it seen, which would sort it after the working ones): rows never
        # move under the cursor, so the next key acts on the row the user sees selected. It
        # takes its real place once the cursor leaves it
        if selected is not None and (self._pin is None or self._pin[0] != selected):
            self._pin = (selected, self._ranks.get(selected))
        pinned = self._pin[1] if self._pin is not None and self._pin[0] == selected else None
        self._ranks = {r.branch: rank(r, seen) for r in rows}
        ordered = sorted(rows, key=lambda r: pinned if pinned is not None and r.branch == selected else
                         self._ranks[r.branch])  # fmt: skip
        data: dict[str, list[str]] = {}
        for r in ordered:
            s = r.agent
            age = labels.duration(now - s.since) if s.since else ""
            unseen = "*" if s.state in ("needs you", "done", "error") and seen.get(r.branch) != s.since else ""
            shown_state = "MISSING" if s.state == "missing" else s.state  # (as the resources view says it)
            act, dirty = activity.get(r.branch, (Activity(), 0))
            changes = f"+{act.insertions} −{act.deletions} {act.files}f" if act.files else "-"
            if dirty:  # (the resources view's word for uncommitted files; "~N" where columns are few)
                changes += f" ~{dirty}" if narrow else f", dirty {dirty}"
            if clashes.get(r.branch):  # would conflict with that many branches (or its base)
                changes += f" ⚠ {clashes[r.branch]}"
            st = stats.get(r.container)
            # refusals of its egress proxy: counted in the env column, the last destination
            # where the message column shows (a 100-column terminal), else in `e` (net log)
            blocked = ""
            if r.egress is not None and r.egress.refused:
                blocked = f" blocked {r.egress.refused}" + (
                    f" ({r.egress.last})" if self.COLUMNS == self.WIDE_COLUMNS else ""
                )
                if narrow:
                    changes += f" ⛔{r.egress.refused}"
            cells = {
                "branch": r.branch,
                "agent": f"{MARK.get(s.state, ' ')} {shown_state} {age}{unseen}".rstrip(),
                "env": r.container_state + (f"@{r.host}" if r.host else "") + blocked,
                "changes": changes,
                "cpu": f"{st.cpu_percent:.0f}%" if st else "-",
                "mem": labels.size(st.mem_bytes) if st else "-",
                "message": s.message or s.problem,  # why, for unknown
            }
            data[r.branch] = [cells[key] for key, _ in self.COLUMNS]
        if list(data) != list(self._shown):  # the order changed: refill (tens of rows), keep the cursor
            self.clear()
            self._shown = {}
            self.reconcile(data)
            if selected in data:
                self.move_cursor(row=list(data).index(selected))
        else:
            self.reconcile(data)


class FleetView(Vertical):
    """The agents at a glance: the table, the order, which rows were seen, the jumps."""

    class Chosen(Message):
        """Enter on a row: attach to its agent."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.rows: tuple[ops.AgentRow, ...] = ()
        self.seen: dict[str, float | None] = {}  # branch -> the state's start time when looked at
        self.on_seen: Callable[[dict[str, float | None]], object] | None = None  # (the app keeps them)
        self.radar: ops.Radar | None = None

    def compose(self) -> ComposeResult:
        yield Plain("Fleet: agents, most urgent first · * not looked at yet", classes="pane-title")
        yield Plain("", id="fleet-problem", classes="problem")
        yield FleetTable(id="fleet")

    @property
    def table(self) -> FleetTable:
        return self.query_one(FleetTable)

    def show_status(
        self, st: ops.Status, activity: Mapping[Path, Activity], stats: Mapping[str, ContainerStats],
        radar: ops.Radar | None = None,
    ) -> None:  # fmt: skip
        agents = st.agents.value or ()
        have = {r.branch for r in agents}
        # every environment gets a row: a linked worktree without a container is one too
        bare = tuple(
            ops.AgentRow(w.worktree.branch, "", "no container", AgentState("no agent"))
            for w in st.worktrees.value or ()
            if w.worktree.branch and not w.worktree.is_main and w.worktree.branch not in have and not w.state.missing
        )
        self.rows = agents + bare
        problem = st.agents.problem
        box = self.query_one("#fleet-problem", Static)
        box.update(f"⚠ {problem.message}\n  fix: {problem.remedy}" if problem else "")
        box.display = problem is not None
        by_branch: dict[str, tuple[Activity, int]] = {}
        for w in st.worktrees.value or ():
            if w.worktree.branch:
                dirty = w.state.changed + w.state.untracked
                by_branch[w.worktree.branch] = (activity.get(w.worktree.path, Activity()), dirty)
        self.radar = radar
        clashes = {r.branch: len(radar.of(r.branch)) for r in self.rows} if radar else {}
        self.table.show(self.rows, by_branch, stats, self.seen, clashes)
        self.mark_seen()

    def selected(self) -> ops.AgentRow | None:
        key = self.table.selected_key()
        return next((r for r in self.rows if r.branch == key), None)

    @on(DataTable.RowHighlighted)
    def _moved(self, event: DataTable.RowHighlighted) -> None:
        # only a row the cursor is still on: a refill (the order changed) highlights each
        # row that passes under the cursor, and a row the user only passed was not looked at
        if event.row_key.value == self.table.selected_key():
            self.mark_seen(event.row_key.value)

    def mark_seen(self, branch: str | None = None) -> None:
        key = branch if branch is not None else self.table.selected_key()
        row = next((r for r in self.rows if r.branch == key), None)
        if row is not None and self.display and self.seen.get(row.branch, -1.0) != row.agent.since:
            self.seen[row.branch] = row.agent.since
            if self.on_seen is not None:
                self.on_seen(dict(self.seen))

    def jump(self, step: int) -> bool:
        """To the next (+1) / previous (-1) row that needs you, wrapping; False if none."""
        keys = list(self.table._shown)
        asking = {r.branch for r in self.rows if r.agent.state == "needs you"}
        needing = [i for i, k in enumerate(keys) if k in asking]
        if not needing:
            return False
        here = self.table.cursor_row
        order = [i for i in needing if (i > here if step > 0 else i < here)] or needing
        self.table.move_cursor(row=order[0] if step > 0 else order[-1])
        return True

    @on(DataTable.RowSelected)
    def _chosen(self, event: DataTable.RowSelected) -> None:  # Enter on the table (it takes the key first)
        event.stop()
        self.post_message(self.Chosen())


class PreviewPane(Vertical):
    """The selected agent's terminal: ``tmux capture-pane`` once a second, for one agent,
    while this tab is the one shown (``follow`` starts it; the app says whom to follow)."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.branch = ""
        self.title = ""
        self.in_vm = False
        self.on_host = ""  # another host's name: its terminal is read through ssh
        self.capture = False
        self.hint = ""
        self._poke = threading.Event()  # capture now: another row, its state moved, or the pane goes
        self._closed = False

    def compose(self) -> ComposeResult:
        yield Plain("Preview: select an agent", id="preview-title", classes="pane-title")
        yield Plain("", id="preview")

    def follow_row(self, row: ops.AgentRow | None, branch: str) -> None:
        """Follow ``branch`` (the selection); ``row`` is its agent, if it has one."""
        if branch != self.branch:
            self.branch = branch
            self.query_one("#preview", Static).update("")
            self._poke.set()
        self.in_vm = row is not None and row.container_state == "vm"
        self.on_host = row.host if row is not None else ""
        # a terminal to capture: a running container or the VM, with an agent started there
        self.capture = row is not None and row.container_state in ("running", "vm") and row.agent.state != "no agent"
        hint = "" if self.capture or not branch else f"no agent here: devbox agent start {branch}"
        if hint != self.hint:
            self.hint = hint
            self.query_one("#preview", Static).update(Text(hint))
        title = f"Preview: {branch or 'select an agent'}"
        if row is not None:
            title += f": {row.agent.state}" + (f": {row.agent.message}" if row.agent.message else "")
        if title != self.title:
            self.title = title
            self.query_one("#preview-title", Static).update(Text(title))
            self._poke.set()  # its state moved: what it shows now

    def poke(self) -> None:
        """Capture now (the tab came on show, the app closes)."""
        self._poke.set()

    def on_unmount(self) -> None:
        self._closed = True
        self._poke.set()  # the worker's wait ends with the pane, and it captures no more

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def follow(self, session: Devbox, shown: Callable[[], bool]) -> None:
        """Each capture is a ``podman exec`` (about 60 ms of CPU): once a second while the
        terminal changes, then less often the longer it stays the same (an agent waiting for
        its person prints nothing), at once when the row or its state changes."""
        worker = get_current_worker()
        interval, last = PREVIEW_POLL, ("", "")
        while not (worker.is_cancelled or self._closed):
            branch = self.branch
            if branch and shown() and self.capture:
                try:
                    preview = ops.vm_agent_preview if self.in_vm else ops.agent_preview
                    text = (ops.host_agent_preview if self.on_host else preview)(session, branch)
                except DevboxError as exc:
                    text = f"({exc.message})"
                interval = min(interval * 2, PREVIEW_IDLE) if (branch, text) == last else PREVIEW_POLL
                last = (branch, text)
                self.app.call_from_thread(self._show, branch, text)
            self._poke.wait(interval)
            self._poke.clear()

    def _show(self, branch: str, text: str) -> None:
        if branch == self.branch and self.is_mounted:
            body = self.query_one("#preview", Static)
            lines = text.splitlines()[-(max(3, body.size.height or 20)) :]
            body.update(Text("\n".join(lines)), layout=False)  # never markup
