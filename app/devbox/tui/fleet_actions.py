"""The dashboard's fleet wiring: switching between the fleet and the resources, the
fleet's keys (``]`` / ``[``, Enter attaches), the Preview following the selection, a
cheap stat poll of the agents' state files (a hook's write reaches the fleet without a
full status), and notifications on a move into needs you, done or error. A mixin of
DevboxApp, like vm_actions.py and runs.py, so app.py stays layout and wiring."""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import TYPE_CHECKING, Any

from textual import work
from textual.message import Message
from textual.widgets import ContentSwitcher, TabbedContent

from devbox.core import agent_state, ops
from devbox.core import notify as notifications
from devbox.core.errors import DevboxError
from devbox.tui.diffview import DiffPane
from devbox.tui.fleet import FleetTable, FleetView, PreviewPane
from devbox.tui.panes import WorktreesTable

if TYPE_CHECKING:
    from devbox.core.session import Devbox
    from devbox.tui.logpane import LogPane
    from devbox.tui.messages import StatusUpdated

AGENT_POLL = 0.1  # seconds between stats of the agents' state files


class AgentsUpdated(Message):
    """The agents' states, read again because a state file changed (no full status)."""

    def __init__(self, rows: tuple[ops.AgentRow, ...]) -> None:
        super().__init__()
        self.rows = rows

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, AgentsUpdated)


class FleetActions:
    """Mixed into DevboxApp (which provides session, last_update, screen, post_message, ...)."""

    session: Devbox
    _stop: threading.Event
    last_update: StatusUpdated | None
    agent_watcher: notifications.Watcher

    if TYPE_CHECKING:
        status: Any
        screen: Any
        screen_stack: list[Any]
        read_only: bool

        @property
        def main(self) -> Any: ...

        def selection(self) -> tuple[Any, Any]: ...
        def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None: ...
        def _refresh_bindings_if_changed(self) -> None: ...
        def modal_open(self) -> bool: ...
        def call_from_thread(self, *args: Any, **kwargs: Any) -> Any: ...

        @property
        def log_pane(self) -> LogPane: ...

        def post_message(self, *args: Any, **kwargs: Any) -> Any: ...
        def push_screen(self, *args: Any, **kwargs: Any) -> Any: ...
        def notify(self, *args: Any, **kwargs: Any) -> Any: ...
        def bell(self) -> None: ...
        def _status_updated(self, *args: Any) -> Any: ...
        def _attach_ready(self, argv: list[str]) -> Any: ...

        state_cache: ops.StateCache
        looking_at: str

    @work(thread=True, exit_on_error=False, group="agent-states", exclusive=True, description="agent states")
    def follow_agent_states(self) -> None:
        """A cheap stat poll of the agents' state files: a hook's write reaches the fleet in
        about ``AGENT_POLL`` without the full status (git, podman) being made again."""

        def dirs() -> list[tuple[str, Any]]:  # each running container's state tmpfs
            conts = self.last_update.status.containers.value if self.last_update is not None else None
            return ops.agent_state_dirs(conts or ())

        last = agent_state.signature(dirs())
        while not self._stop.wait(AGENT_POLL):
            now = agent_state.signature(dirs())
            if now == last or self.last_update is None:
                continue
            conts = self.last_update.status.containers.value
            moved = {name for name, *_ in set(now) ^ set(last)}
            last = now
            if conts is not None:
                # an agent's hooks reported: its worktree is asked afresh at the next poll (the
                # others wait for theirs, StateCache)
                self.state_cache.want(c.branch for c in conts if c.name in moved)
                self.post_message(AgentsUpdated(ops.agent_rows(self.session, conts)))

    def on_agents_updated(self, msg: AgentsUpdated) -> None:
        if not self.screen_stack or self.last_update is None:
            return
        u = self.last_update
        from devbox.core.ops.views import IN_VM  # (loaded by the poll by now; not before the first paint)

        # the VM's and other hosts' rows are read by the full poll (over ssh)
        far = tuple(r for r in u.status.agents.value or () if r.container_state == IN_VM or r.host)
        st = dataclasses.replace(u.status, agents=ops.Section(msg.rows + far))
        self.status = st
        self.last_update = self._status_updated(st, u.activity, u.stats, u.vm, u.radar)
        self.fleet.show_status(st, u.activity, u.stats, u.radar)
        self._follow_selection()
        self._notify_agents(msg.rows)

    def _notify_agents(self, rows: tuple[ops.AgentRow, ...]) -> None:
        """A move into needs you / done / error: the bell, a toast, OSC 9/777 and
        notify.command; once per move, never for the agent on screen."""
        looking = self.main.query_one(PreviewPane).branch if self.view == "fleet" else None
        for move in self.agent_watcher.alerts(self.agent_watcher.update(rows), looking_at=looking):
            self.bell()
            self.notify(move.message or move.after, title=f"{move.branch}: {move.after}", timeout=8)
            driver = getattr(self, "_driver", None)
            if driver is not None:
                driver.write(notifications.terminal_sequence(move, in_tmux=bool(os.environ.get("TMUX")))[1:])
            self._notify_command(move)

    @work(thread=True, exit_on_error=False, group="notify")
    def _notify_command(self, move: notifications.Transition) -> None:
        failed = notifications.run_command(self.session.settings.notify_command, move)
        if failed:
            self.log_pane.note(f"devbox: {failed}")

    # the views and the detail area --------------------------------------------------------
    @property
    def fleet(self) -> FleetView:
        return self.main.query_one(FleetView)  # type: ignore[no-any-return]

    @property
    def view(self) -> str:
        """ "fleet" or "resources": the view on show."""
        return str(self.main.query_one("#views", ContentSwitcher).current or "").removesuffix("-view")

    def _focus_view(self) -> None:
        table = self.main.query_one(FleetTable if self.view == "fleet" else WorktreesTable)
        table.focus()

    def _switch(self, view: str) -> None:
        self.main.query_one("#views", ContentSwitcher).current = f"{view}-view"
        self.main.set_class(view == "resources", "resources")
        self._focus_view()
        self.fleet.mark_seen()
        self._follow_selection()
        self._refresh_bindings_if_changed()

    def action_fleet(self) -> None:
        self._switch("fleet")

    def action_resources(self) -> None:
        self._switch("resources")

    def show_detail(self, tab: str) -> None:
        """The detail area's tab: "preview" or "log"."""
        self.main.query_one("#detail", TabbedContent).active = f"{tab}-tab"

    def action_detail_tab(self) -> None:
        """Preview, Diff, Log, and round again."""
        order = ["preview", "diff", "log"]
        shown = self.main.query_one("#detail", TabbedContent).active.removesuffix("-tab")
        self.show_detail(order[(order.index(shown) + 1) % len(order)] if shown in order else "preview")

    def on_tabbed_content_tab_activated(self, _event: object) -> None:
        self._follow_selection()  # the Diff tab loads the selected branch when it is shown
        if self._preview_shown():
            self.main.query_one(PreviewPane).poke()  # the terminal as it is now, not in a few seconds

    def _preview_shown(self) -> bool:
        """From the preview's worker: capture only while its tab is on show."""
        try:
            return bool(self.main.query_one("#detail", TabbedContent).active == "preview-tab")
        except Exception:
            return False

    def _follow_selection(self) -> None:
        """The Preview follows the selected row, in either view."""
        if not self.screen_stack:
            return
        if self.view == "fleet":
            agent = self.fleet.selected()
            branch = agent.branch if agent else ""
        else:
            row, c = self.selection()
            branch = (row.worktree.branch if row is not None else None) or (c.branch if c is not None else "") or ""
            agent = next((r for r in self.fleet.rows if r.branch == branch), None)
        self.looking_at = branch
        self.main.query_one(PreviewPane).follow_row(agent, branch)
        if self.main.query_one("#detail", TabbedContent).active == "diff-tab":
            radar = self.fleet.radar
            clashes = radar.of(branch) if radar and branch else ()
            conflicts = tuple(f"⚠ conflicts with {'its base ' if c.with_base else ''}{c.b}: {', '.join(c.files)}"
                              for c in clashes)  # fmt: skip
            rows = (self.status.worktrees.value or ()) if self.status is not None else ()
            row = next((r for r in rows if r.worktree.branch == branch), None)
            version = (row.worktree.head, row.state.changed, row.state.untracked, row.state.files) if row else None
            self.main.query_one(DiffPane).follow(self.session, branch, conflicts, version)

    def action_next_needing(self) -> None:
        if not self.fleet.jump(+1):
            self.notify("no agent needs you", timeout=3)

    def action_previous_needing(self) -> None:
        if not self.fleet.jump(-1):
            self.notify("no agent needs you", timeout=3)

    def action_attach_agent(self) -> None:
        from devbox.core.ops.views import IN_VM

        row = self.fleet.selected()
        if row is not None:
            self._prepare_agent_attach(row.branch, row.container_state == IN_VM, row.host)

    def on_fleet_view_chosen(self, _msg: FleetView.Chosen) -> None:
        """Enter on a fleet row (the table takes the key first): the same checks as the key."""
        if self.check_action("attach_agent", ()):
            self.action_attach_agent()
            return
        row = self.fleet.selected()
        if row is not None and self.view == "fleet" and not self.modal_open():  # never silent
            where = (
                "no container" if row.container_state == "no container" else f"its container is {row.container_state}"
            )
            self.notify(f"no agent to attach to: {where}; start one: ./devbox agent start {row.branch}",
                        title=f"{row.branch}: cannot attach", severity="warning", timeout=6)  # fmt: skip

    @work(thread=True, exit_on_error=False, group="attach")
    def _prepare_agent_attach(self, branch: str, in_vm: bool, host: str = "") -> None:
        attach = ops.vm_agent_attach_argv if in_vm else ops.agent_attach_argv
        if host:
            attach = ops.host_agent_attach_argv
        nested = bool(os.environ.get("TMUX"))  # the dashboard runs in the user's tmux
        try:
            argv = attach(self.session, branch, nested=nested)
        except DevboxError as exc:  # (an exited container, a missing worktree: said, never silent)
            self.call_from_thread(self.notify, exc.one_line(), title=f"{branch}: cannot attach",
                                  severity="warning", timeout=8)  # fmt: skip
            return
        if nested:
            self.call_from_thread(self.log_pane.note, f"{branch}: {ops.attach_hint(nested)}")
        self.post_message(self._attach_ready(argv))
