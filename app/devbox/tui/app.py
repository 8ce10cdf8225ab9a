"""devbox-tui: the dashboard. Two views of one screen: the fleet (one row per environment
and its agent, most urgent first; the main view) and the resources (worktrees, containers,
VMs and the artifact chain; ``R`` and ``F`` switch), above a detail area whose tabs show the
selected agent's terminal (Preview) and a log that follows whatever runs (Log); one key per
operation.

The app only renders and dispatches: every action calls the same ``ops`` function as a
``devbox`` subcommand, in a thread worker, and the log pane shows that command line first.
A status poll (every 2 s, skipped while a dialog is open, woken at once by podman's event
stream or by ``r``) posts snapshots that replace each other in the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.command import CommandPalette
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen
from textual.widgets import ContentSwitcher, DataTable, Footer, Header, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from devbox import tui
from devbox.core import notify, ops, proc
from devbox.core.containers import Container
from devbox.core.errors import DevboxError, ExitCode
from devbox.core.events import Sink
from devbox.core.podman_records import ContainerStats
from devbox.core.session import Devbox
from devbox.tui import commands
from devbox.tui.dialogs import NewWorktree
from devbox.tui.diffview import DiffPane
from devbox.tui.fleet import FleetView, PreviewPane
from devbox.tui.fleet_actions import FleetActions
from devbox.tui.logpane import LogPane
from devbox.tui.messages import AttachReady, StatusUpdated
from devbox.tui.panes import (
    ArtifactsStrip,
    ContainersTable,
    Plain,
    VmsTable,
    WorktreesTable,
    artifacts_line,
    problem_text,
)
from devbox.tui.review_actions import ReviewActions
from devbox.tui.runs import Runs
from devbox.tui.vm_actions import VmActions

POLL = 2.0  # seconds between git/status polls (podman events wake the poll at once)
RADAR_PER_POLL = 24  # new branch pairs asked of git merge-tree per poll (core/ops/radar.py)
RADAR_EVERY = 30.0  # seconds the radar's answer stands while no worktree's branch moved
POLL_IDLE = 6.0  # seconds between polls once nobody has touched the dashboard for IDLE_AFTER
IDLE_AFTER = 30.0  # (podman events, the agents' hooks and any key still refresh at once)
WORKER_THREADS = 64  # pollers, followers, and every operation at once (each a thread)
HOSTS_WAIT = 1.0  # seconds a poll waits for other hosts' agents; a slower host answers at the next poll


def styles_path() -> Path:
    """styles/devbox.tcss from the wheel (devbox/styles) or from the source checkout."""
    packaged = Path(str(resources.files("devbox"))) / "styles" / "devbox.tcss"
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[3] / "styles" / "devbox.tcss"


class DevboxApp(FleetActions, ReviewActions, Runs, VmActions, App[None]):
    TITLE = "devbox"
    BINDINGS: ClassVar[list[BindingType]] = list(commands.bindings())

    def __init__(self, session: Devbox, *, read_only: bool = False, watch: bool = True, view: str = "fleet") -> None:
        super().__init__(css_path=styles_path())
        self.session = session
        self.first_view = view  # "fleet" (devbox-tui) or "resources"
        self.read_only = read_only
        self.live = watch
        self.status: ops.Status | None = None
        self.last_update: StatusUpdated | None = None
        self.agent_watcher = notify.Watcher()  # which agents moved since the last look
        self.state_cache = ops.StateCache()  # git asked each poll only where something may have changed
        self.looking_at = ""  # the selected row's branch
        self._last_radar: tuple[tuple[tuple[str | None, str], ...], ops.Radar, float] | None = None
        self._last_input = time.monotonic()  # the poll slows down when nobody uses the dashboard
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._quitting = False  # q confirmed: runs that end now were interrupted
        self._shown: dict[str, str] = {}
        self._enabled: tuple[bool | None, ...] = ()
        self.sub_title = str(session.settings.repo) + ("  [read-only]" if read_only else "")
        # what the core tells the user on its own (e.g. a podman service it started) goes to
        # the log pane: writing to the terminal would tear the screen
        session.notify = lambda text: self.log_pane.note(text)
        # Mounting and styling the first screen allocates hundreds of thousands of objects, and
        # the cyclic GC's passes over them were ~40 ms of a ~500 ms start. What is made before
        # the first paint is mostly the screen itself, not garbage: the GC is off until then
        # (``_gc_back_on``).
        self._gc_was_on = gc.isenabled() or tui.held  # (held: by the devbox-tui command, from its start)
        tui.held = False
        gc.disable()

    # layout -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with ContentSwitcher(initial=f"{self.first_view}-view", id="views"):
            yield FleetView(id="fleet-view", classes="pane")
            with Vertical(id="resources-view"):
                yield from self._resources()
        # the Log tab first on the resources view: what its keys start shows there
        with TabbedContent(initial="preview-tab" if self.first_view == "fleet" else "log-tab", id="detail"):
            with TabPane("Preview", id="preview-tab"):
                yield PreviewPane(id="preview-pane")
            with TabPane("Diff", id="diff-tab"):
                yield DiffPane(id="diff-pane")
            with TabPane("Log", id="log-tab"):
                yield LogPane(self.session.settings.build_path("logs"), id="log-pane")
        yield Footer()

    def _resources(self) -> ComposeResult:
        with Horizontal(id="top"):
            with Vertical(id="worktrees-pane", classes="pane"):
                yield Plain("Worktrees", classes="pane-title")
                yield Plain("", id="worktrees-problem", classes="problem")
                yield WorktreesTable(id="worktrees")
            with Vertical(id="containers-pane", classes="pane"):
                yield Plain("Containers", classes="pane-title")
                yield Plain("", id="containers-problem", classes="problem")
                yield ContainersTable(id="containers")
        with Horizontal(id="middle"):
            with Vertical(id="vms-pane", classes="pane"):
                yield Plain("VMs", classes="pane-title")
                yield Plain("", id="vms-problem", classes="problem")
                yield VmsTable(id="vms")
            yield ArtifactsStrip("bootc/ sources → image → disk → VM", id="artifacts", classes="pane")

    @property
    def main(self) -> Screen[Any]:
        """The dashboard's own screen: a dialog on top must not hide the panes from updates."""
        first: Screen[Any] = self.screen_stack[0]
        return first

    @work(thread=True, exit_on_error=False, group="seen")
    def _keep_seen_marks(self, marks: dict[str, float | None]) -> None:
        ops.save_seen_marks(self.session, marks)

    @property
    def log_pane(self) -> LogPane:
        return self._log_pane

    def on_mount(self) -> None:
        # Textual runs thread workers on asyncio's default executor: min(32, CPUs + 4) threads,
        # 6 on a 2-core machine. The pollers and followers hold 5 for the app's life, so one
        # followed log left a build waiting forever: every worker gets a thread of its own
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="devbox-worker")
        )
        self._log_pane = self.main.query_one(LogPane)  # kept: worker threads write to it while dialogs are open
        overrides = dict(self.session.settings.keys)
        if overrides:  # (an empty keymap still refreshes every binding: the footer made again)
            self.set_keymap(overrides)
        for clash in commands.key_clashes(commands.keymap(overrides)):
            self.notify(f"devbox.toml [keys]: {clash}", severity="warning", timeout=15)
        for unknown in commands.unknown_ids(overrides):
            self.notify(f"devbox.toml [keys]: no action {unknown!r} (see the README's key table)",
                        severity="warning", timeout=15)  # fmt: skip
        self.fleet.seen.update(ops.seen_marks(self.session))
        if not self.read_only:
            self.fleet.on_seen = self._keep_seen_marks
        self.main.set_class(self.first_view == "resources", "resources")
        self._focus_view()
        self.call_after_refresh(self._gc_back_on)
        if self.live:
            self.poll_status()
            self.follow_podman_events()
            self.follow_vm_events()
            self.follow_agent_states()
            self.main.query_one(PreviewPane).follow(self.session, self._preview_shown)

    def _gc_back_on(self) -> None:
        """After the first paint: what the start left behind is collected once, and what is
        left (the screen, the app: they live as long as it does) is frozen, so later passes
        do not walk it again (a first pass over it all cost one refresh ~40 ms)."""
        if self._gc_was_on and not gc.isenabled():
            gc.collect()
            gc.freeze()
            gc.enable()

    def on_unmount(self) -> None:
        self._gc_back_on()  # an app that never painted (a failed start) leaves it as it found it
        gc.unfreeze()  # (for a process that goes on: tests, benchmarks)
        self._stop.set()
        for run in self.log_pane.running():
            run.cancel.set()
        self._wake.set()

    def notify(self, message: str, *, title: str = "", markup: bool = False, **kw: Any) -> None:
        """Toasts show their text as written (agents' messages, paths): never markup."""
        super().notify(message, title=title, markup=markup, **kw)

    def handle_bindings_clash(self, clashed_bindings: set[Binding], node: Any) -> None:
        names = ", ".join(sorted(b.id or b.action for b in clashed_bindings))
        self.notify(f"key clash in devbox.toml [keys]: {names}", severity="warning", timeout=15)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Every devbox action in the command palette (ctrl+p), with its key and command."""
        yield from super().get_system_commands(screen)
        keys = commands.keymap(self.session.settings.keys)
        for cmd in commands.COMMANDS:
            if cmd.id == "quit" or self.check_action(cmd.id, ()) is False:
                continue
            help_text = f"key {keys[cmd.id]}" + (f" · {cmd.cli.strip('`')}" if cmd.cli.startswith("`") else "")
            yield SystemCommand(f"devbox: {cmd.title}", help_text, partial(self.run_action, cmd.id))

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key | events.MouseDown):  # someone is using it: the quick poll
            was_idle = time.monotonic() - self._last_input >= IDLE_AFTER
            self._last_input = time.monotonic()
            if was_idle:
                self._wake.set()  # what changed meanwhile, now rather than within POLL_IDLE
        await super().on_event(event)

    # background work --------------------------------------------------------------------
    def modal_open(self) -> bool:
        """A devbox dialog on top (the command palette is not one: it lists the actions)."""
        return isinstance(self.screen, ModalScreen) and not isinstance(self.screen, CommandPalette)

    @work(thread=True, exit_on_error=False, group="poll", exclusive=True, description="status poll")
    def poll_status(self) -> None:
        worker = get_current_worker()
        while not (worker.is_cancelled or self._stop.is_set()):
            if not self.modal_open():
                self.post_message(self.snapshot())
            self._wake.wait(POLL if time.monotonic() - self._last_input < IDLE_AFTER else POLL_IDLE)
            self._wake.clear()

    def snapshot(self) -> StatusUpdated:
        if self.looking_at:  # (set on the UI thread: a str is read whole)
            self.state_cache.want([self.looking_at])  # the row someone looks at is always asked afresh
        st = ops.status(self.session, hosts_wait=HOSTS_WAIT, cache=self.state_cache)
        rows = st.worktrees.value or ()
        try:
            act = ops.activity(self.session, rows)
        except DevboxError:
            act = {}
        stats: dict[str, ContainerStats] = {}
        if st.containers.value:
            with contextlib.suppress(DevboxError):
                stats = ops.container_stats(self.session, st.containers.value)
        radar = self._radar(rows)
        return StatusUpdated(st, act, stats, ops.vm_overview(self.session, st.disk.value, st.vms), radar)

    def _radar(self, rows: tuple[ops.WorktreeRow, ...]) -> ops.Radar | None:
        """The conflict radar, asked again only when a branch moved, pairs are still pending,
        or ``RADAR_EVERY`` passed (a base branch no worktree has checked out may move)."""
        heads = tuple((r.worktree.branch, r.worktree.head) for r in rows)
        last = self._last_radar
        if last is not None and last[0] == heads and not last[1].pending and time.monotonic() - last[2] < RADAR_EVERY:
            return last[1]
        try:  # a few new pairs per poll: 20 agents never stall it
            radar = ops.conflicts(self.session, limit=RADAR_PER_POLL, worktrees=[r.worktree for r in rows])
        except DevboxError:
            return None
        self._last_radar = (heads, radar, time.monotonic())
        return radar

    @work(thread=True, exit_on_error=False, group="events", exclusive=True, description="podman events")
    def follow_podman_events(self) -> None:
        while not self._stop.is_set():
            try:
                for _ in ops.watch_containers(self.session, self._stop):
                    self._wake.set()
            except DevboxError:
                self._stop.wait(3.0)  # podman is down: the poll shows why; try again

    @work(thread=True, exit_on_error=False, group="vm-events", exclusive=True, description="libvirt events")
    def follow_vm_events(self) -> None:
        while not self._stop.is_set():
            try:
                ops.watch_vms(self.session, lambda _domain, _event: self._wake.set(), self._stop)
            except DevboxError:
                self._stop.wait(10.0)  # libvirtd down or libvirt-python missing: the poll shows why

    def on_status_updated(self, msg: StatusUpdated) -> None:
        # a snapshot that arrives while the app closes: no screen, or its widgets already gone
        with contextlib.suppress(NoMatches):
            if self.screen_stack:
                self._show_status(msg)

    def _show_status(self, msg: StatusUpdated) -> None:
        st = msg.status
        self.status = st
        self.last_update = msg
        repo = self.session.settings.repo
        self.main.query_one(WorktreesTable).show(st.worktrees.value or (), msg.activity, repo)
        self.main.query_one(ContainersTable).show(st.containers.value or (), st.image_id, msg.stats)
        # every update below re-lays out part of the screen: only when its text changed
        self._set_text("#worktrees-problem", problem_text(st.worktrees.problem))
        self._set_text("#containers-problem", problem_text(st.containers.problem))
        if msg.vm is not None:
            self.main.query_one(VmsTable).show(msg.vm.vms.value or ())
            self._set_text("#vms-problem", problem_text(msg.vm.vms.problem))
        self._set_text("#artifacts", artifacts_line(st, msg.vm))
        self.fleet.show_status(st, msg.activity, msg.stats, msg.radar)
        self._follow_selection()
        if st.agents.value is not None:  # not read (podman down): no moves, or its return alerts every row
            self._notify_agents(st.agents.value)
        self._refresh_bindings_if_changed()

    def _set_text(self, selector: str, text: str) -> None:
        widget = self.main.query_one(selector, Static)
        if self._shown.get(selector) != text:
            self._shown[selector] = text
            widget.update(text)
            if widget.has_class("problem"):
                widget.display = bool(text)

    def _refresh_bindings_if_changed(self) -> None:
        """The footer is rebuilt on refresh_bindings (CSS applied anew): only when what the
        keys can do has changed."""
        if not self.screen_stack:  # a row highlight that arrives while the app closes
            return
        state = tuple(self.check_action(b.action, ()) for b in self.BINDINGS if isinstance(b, Binding))
        if state != self._enabled:
            self._enabled = state
            self.refresh_bindings()

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        err = event.worker.error
        if isinstance(err, DevboxError):
            self.log_pane.note(f"devbox: {err.one_line()}")
            self.notify(err.message, title=err.remedy or "devbox", severity="error", timeout=10)
        else:
            self.notify(f"internal error: {type(err).__name__}: {err}", severity="error", timeout=10)
        self._wake.set()

    # selection --------------------------------------------------------------------------
    def selection(self) -> tuple[ops.WorktreeRow | None, Container | None]:
        st = self.status
        if st is None or not self.screen_stack:
            return None, None
        rows = st.worktrees.value or ()
        conts = st.containers.value or ()
        try:
            wts, cts = self.main.query_one(WorktreesTable), self.main.query_one(ContainersTable)
        except NoMatches:  # the app is closing
            return None, None
        if self.view == "fleet":  # the fleet's row: its worktree, and its container
            agent = self.fleet.selected()
            if agent is None:
                return None, None
            row = next((r for r in rows if r.worktree.branch == agent.branch), None)
            c = next((c for c in conts if c.name == agent.container), None)
            return row, c
        if self.focused is cts:
            name = cts.selected_key()
            c = next((c for c in conts if c.name == name), None)
            row = next((r for r in rows if c is not None and r.worktree.branch == c.branch), None)
            return row, c
        path = wts.selected_key()
        row = next((r for r in rows if str(r.worktree.path) == path), None)
        return row, row.container if row else None

    @on(DataTable.RowHighlighted)
    def _moved(self) -> None:
        self._follow_selection()
        self._refresh_bindings_if_changed()

    def on_descendant_focus(self) -> None:
        self._refresh_bindings_if_changed()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return commands.allowed(self, action, read_only=self.read_only)

    def action_new(self) -> None:
        def created(answer: tuple[str, str | None] | None) -> None:
            if answer is None:
                return
            branch, base = answer
            cmd = f"./start-work {branch} --detach" + (f" --from {base}" if base else "")
            self.run_op(
                f"start-work-{branch}",
                cmd,
                lambda sink, cancel: ops.start_work(self.session, branch, from_ref=base, sink=sink, cancel=cancel),
                frozenset({f"branch {branch}"}),
            )

        self.push_screen(NewWorktree(), created)

    def action_rebuild(self, force: bool = False) -> None:
        cmd = "./devbox image build" + (" --force" if force else "")
        self.run_op(
            "image-build",
            cmd,
            lambda sink, cancel: ops.build_image(self.session, force=force, sink=sink, cancel=cancel),
            frozenset({"image"}),
        )

    def action_rebuild_force(self) -> None:
        self.action_rebuild(force=True)

    def action_stop(self) -> None:
        _, c = self.selection()
        if c is not None:
            name = c.name
            self.run_op(
                f"stop-{c.branch}",
                f"./devbox container stop {c.branch}",
                lambda sink, cancel: ops.stop_container(self.session, name, sink=sink, cancel=cancel),
                frozenset({f"branch {c.branch}"}),
            )

    def action_remove_container(self) -> None:
        _, c = self.selection()
        if c is not None:
            self._confirm_container(c)

    @work(thread=True, exit_on_error=False, group="confirm")
    def _confirm_container(self, c: Container) -> None:
        loss = ops.container_loss(self.session, c)
        cmd = f"./devbox container rm --force {c.branch}"
        self.call_from_thread(
            self._ask,
            f"Remove container {c.name}?",
            loss.lines(),
            cmd,
            lambda sink, cancel: ops.remove_container(self.session, c.name, force=True, sink=sink, cancel=cancel),
            frozenset({f"branch {c.branch}"}),
        )

    def action_remove_worktree(self) -> None:
        row, _ = self.selection()
        if row is not None and not row.worktree.is_main:
            self._confirm_worktree(row)

    @work(thread=True, exit_on_error=False, group="confirm")
    def _confirm_worktree(self, row: ops.WorktreeRow) -> None:
        wt = ops.find_worktree(self.session, str(row.worktree.path))
        found = ops.worktree_loss(self.session, wt)
        loss, unknown = found.loss, found.unchecked
        lines = loss.lines() + ([f"(containers not checked: {unknown})"] if unknown else [])
        cmd = f"./devbox worktree remove --force {wt.branch or wt.path}"
        path = str(wt.path)
        self.call_from_thread(
            self._ask,
            f"Remove worktree {wt.path}?",
            lines,
            cmd,
            lambda sink, cancel: ops.remove_worktree(self.session, path, force=True, sink=sink, cancel=cancel),
            frozenset({f"branch {wt.branch or wt.path}"}),
        )

    def action_attach(self) -> None:
        row, c = self.selection()
        if c is not None and c.running:
            self._prepare_attach(c.name, None)
        elif row is not None and row.worktree.branch:
            branch = row.worktree.branch

            def start_then_attach(sink: Sink, cancel: threading.Event) -> None:
                started = ops.start_work(self.session, branch, sink=sink, cancel=cancel).container
                self.post_message(AttachReady(ops.attach_argv(self.session, started, self._login, tty=True)))

            self.run_op(f"start-work-{branch}", f"./start-work {branch}", start_then_attach,
                        frozenset({f"branch {branch}"}))  # fmt: skip

    @property
    def _login(self) -> list[str]:
        return [self.session.settings.shell, "-l"]

    @work(thread=True, exit_on_error=False, group="attach")
    def _prepare_attach(self, name: str | None, branch: str | None) -> None:
        c = ops.find_container(self.session, name or "")
        self.post_message(AttachReady(ops.attach_argv(self.session, c, self._login, tty=True)))

    def on_attach_ready(self, msg: AttachReady) -> None:
        with self.suspend():
            proc.interactive(msg.argv, tool=Path(msg.argv[0]).name)  # podman, or ssh for the VM
        self._wake.set()

    def _status_updated(self, *args: Any) -> StatusUpdated:
        return StatusUpdated(*args)

    def _attach_ready(self, argv: list[str]) -> AttachReady:
        return AttachReady(argv)

    def action_refresh(self) -> None:
        self.state_cache.forget()  # r asks git about every worktree again
        self._wake.set()


def make_app(session: Devbox, *, read_only: bool = False, watch: bool = True, view: str = "fleet") -> DevboxApp:
    """The app factory (tests and snapshots build the app from a session, no argv)."""
    return DevboxApp(session, read_only=read_only, watch=watch, view=view)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devbox-tui", description="The devbox dashboard.")
    parser.add_argument("--repo", help="project checkout (default: $DEVBOX_REPO or the nearest devbox.toml)")
    parser.add_argument("--read-only", action="store_true", help="show everything, change nothing")
    args = parser.parse_args(argv)
    try:
        session = Devbox.open(Path(args.repo).expanduser() if args.repo else None)
    except DevboxError as exc:
        sys.stderr.write(f"devbox-tui: {exc.message}" + (f" (fix: {exc.remedy})" if exc.remedy else "") + "\n")
        return int(exc.exit_code)
    with session:
        make_app(session, read_only=args.read_only).run()
    return int(ExitCode.OK)


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
