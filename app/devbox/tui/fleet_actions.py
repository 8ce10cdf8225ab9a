"""The dashboard's fleet wiring: the fleet screen's key, attaching to an agent, a cheap
stat poll of the agents' state files (a hook's write reaches the fleet without a full
status), and notifications on a move into needs you, done or error. A mixin of
DevboxApp, like vm_actions.py and runs.py, so app.py stays layout and wiring."""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import TYPE_CHECKING, Any

from textual import work
from textual.message import Message

from devbox.core import agent_state, ops
from devbox.core import notify as notifications
from devbox.tui.fleet import FleetScreen

if TYPE_CHECKING:
    from devbox.core.session import Devbox
    from devbox.tui.app import StatusUpdated
    from devbox.tui.logpane import LogPane

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

        @property
        def log_pane(self) -> LogPane: ...

        def post_message(self, *args: Any, **kwargs: Any) -> Any: ...
        def push_screen(self, *args: Any, **kwargs: Any) -> Any: ...
        def notify(self, *args: Any, **kwargs: Any) -> Any: ...
        def bell(self) -> None: ...
        def _status_updated(self, *args: Any) -> Any: ...
        def _attach_ready(self, argv: list[str]) -> Any: ...

    @work(thread=True, exit_on_error=False, group="agent-states", exclusive=True, description="agent states")
    def follow_agent_states(self) -> None:
        """A cheap stat poll of the agents' state files: a hook's write reaches the fleet in
        about ``AGENT_POLL`` without the full status (git, podman) being made again."""
        root = self.session.settings.build_path("agents")
        last = agent_state.signature(root)
        while not self._stop.wait(AGENT_POLL):
            now = agent_state.signature(root)
            if now == last or self.last_update is None:
                continue
            last = now
            conts = self.last_update.status.containers.value
            if conts is not None:
                self.post_message(AgentsUpdated(ops.agent_rows(self.session, conts)))

    def on_agents_updated(self, msg: AgentsUpdated) -> None:
        if not self.screen_stack or self.last_update is None:
            return
        u = self.last_update
        st = dataclasses.replace(u.status, agents=ops.Section(msg.rows))
        self.status = st
        self.last_update = self._status_updated(st, u.activity, u.stats, u.vm)
        if isinstance(self.screen, FleetScreen):
            self.screen.show_status(st, u.activity, u.stats)
        self._notify_agents(msg.rows)

    def _notify_agents(self, rows: tuple[ops.AgentRow, ...]) -> None:
        """A move into needs you / done / error: the bell, a toast, OSC 9/777 and
        notify.command; once per move, never for the agent on screen."""
        looking = self.screen.preview_for if isinstance(self.screen, FleetScreen) else None
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

    def action_fleet(self) -> None:
        if not isinstance(self.screen, FleetScreen):
            self.push_screen(FleetScreen())

    def attach_agent(self, branch: str) -> None:
        self._prepare_agent_attach(branch)

    @work(thread=True, exit_on_error=False, group="attach")
    def _prepare_agent_attach(self, branch: str) -> None:
        self.post_message(self._attach_ready(ops.agent_attach_argv(self.session, branch)))
