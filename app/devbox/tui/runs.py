"""The dashboard's runs: every operation it starts runs in its own worker with its own
cancel event and log file (``LogPane`` keeps their lines apart); an operation that needs
what a running one holds is refused at once; ``c`` cancels, ``L`` shows another run, ``q``
asks while something runs. A mixin of DevboxApp, so app.py stays layout and wiring."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from devbox.core import ops
from devbox.core.errors import Cancelled, DevboxError
from devbox.core.events import Sink
from devbox.tui.dialogs import AskLine, ConfirmTeardown, RunPicker
from devbox.tui.logpane import Run

if TYPE_CHECKING:
    from devbox.tui.logpane import LogPane


def op_name(command: str) -> str:
    """A run's name from its command line: "./devbox container rm --force x" -> "container-rm-x"."""
    words = [w for w in command.replace("./", "").split() if not w.startswith("-") and w != "devbox"]
    return "-".join(words)[:60] or "operation"


class Runs:
    """Mixed into DevboxApp (which provides log_pane, run_worker, notify, push_screen, exit)."""

    _quitting = False  # q confirmed: runs that end now were interrupted
    _wake: threading.Event

    if TYPE_CHECKING:

        @property
        def log_pane(self) -> LogPane: ...

        def run_worker(self, *args: Any, **kwargs: Any) -> Any: ...
        def notify(self, *args: Any, **kwargs: Any) -> Any: ...
        def push_screen(self, *args: Any, **kwargs: Any) -> Any: ...
        def exit(self, *args: Any, **kwargs: Any) -> Any: ...
        def show_detail(self, tab: str) -> None: ...
        def selection(self) -> tuple[Any, Any]: ...

        session: Any
        state_cache: Any

        def call_from_thread(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...

    def run_op(
        self, name: str, command: str, fn: Callable[[Sink, threading.Event], object],
        locks: frozenset[str] = frozenset(),
    ) -> Run | None:  # fmt: skip
        """Start ``fn`` as a run of its own: its worker, cancel event and log file. Refused at
        once, with a notification, when a running operation holds a lock it needs."""
        for other in self.log_pane.running():
            clash = sorted(locks & other.locks)
            if clash:
                self.notify(
                    f"{other.name} is running and holds {', '.join(clash)}: wait for it, or cancel it (c)",
                    title=f"{name} not started",
                    severity="warning",
                    timeout=8,
                )
                return None
        run = self.log_pane.start(name, command, locks)
        self.show_detail("log")  # what the key started, on show
        self.run_worker(
            partial(self._run_op, run, fn), thread=True, exit_on_error=False, group=f"op-{run.number}",
            name=name, description=command,
        )  # fmt: skip
        return run

    def _run_op(self, run: Run, fn: Callable[[Sink, threading.Event], object]) -> None:
        """In the run's worker: the same cleanup and messages as the CLI (the same ops)."""
        pane = self.log_pane
        try:
            fn(pane.sink_for(run), run.cancel)
        except Cancelled as exc:
            pane.finish(run, "cancelled", f"devbox: {exc.one_line()}")
        except DevboxError as exc:
            pane.finish(run, "failed", f"devbox: {exc.one_line()}")
            with contextlib.suppress(Exception):  # the app may be closing
                self.call_from_thread(
                    self.notify, exc.message, title=exc.remedy or "devbox", severity="error", timeout=10
                )
        except Exception as exc:
            pane.finish(run, "failed", f"internal error: {type(exc).__name__}: {exc}")
            raise
        else:
            pane.finish(run, "interrupted" if self._quitting else "done")
        finally:
            self.state_cache.forget()  # what it changed is asked of git at the next poll
            self._wake.set()

    def action_cancel_op(self) -> None:
        """Cancel the shown run if it runs, else the newest running one, after a one-line yes."""
        pane = self.log_pane
        shown = pane.shown
        run = shown if shown is not None and shown.running and shown.name != "dashboard" else None
        run = run or next((r for r in pane.running() if r.name != "dashboard"), None)
        if run is None:
            self.notify("nothing is running", timeout=3)
            return

        def answered(yes: bool | None) -> None:
            if yes and run.running:
                pane.show(run)
                pane.note(f"devbox-tui: cancel requested ({run.name})")
                run.cancel.set()

        self.push_screen(AskLine(f"Cancel {run.label()}?"), answered)

    def action_log_runs(self) -> None:
        pane = self.log_pane
        if not pane.runs:
            self.notify("nothing has run yet", timeout=3)
            return

        def chosen(number: int | None) -> None:
            run = next((r for r in pane.runs if r.number == number), None)
            if run is not None:
                pane.show(run)

        self.push_screen(RunPicker([(r.number, r.label()) for r in pane.runs]), chosen)

    async def action_quit(self) -> None:
        """Quit; while operations run, ask first, then cancel them (each log records it)."""
        running = [r for r in self.log_pane.running() if not r.name.startswith("log-")]
        if not running:
            self.exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._quitting = True
                for run in running:
                    run.log.line("devbox-tui: interrupted: the dashboard was quit")
                    run.cancel.set()
                self.exit()

        names = ", ".join(r.name for r in running)
        self.push_screen(AskLine(f"{len(running)} operation(s) running ({names}): stop them and quit?"), answered)

    def _ask(
        self, title: str, losses: list[str], cmd: str, fn: Callable[[Sink, threading.Event], object],
        locks: frozenset[str] = frozenset(), **dialog: str,
    ) -> None:  # fmt: skip
        def answered(yes: bool | None) -> None:
            if yes:
                self.run_op(op_name(cmd), cmd, fn, locks)

        self.push_screen(ConfirmTeardown(title, losses, cmd, **dialog), answered)

    # the log pane's own keys ---------------------------------------------------------------
    def _follow_one(self, prefix: str, title: str, follow: Callable[[Sink, threading.Event], object]) -> None:
        """``follow`` as an operation of its own, in place of the one with the same ``prefix``
        (one followed log of a kind at a time)."""
        for run in self.log_pane.running():
            if run.name.startswith(prefix.split("-", 1)[0] + "-"):
                run.cancel.set()
        self.run_op(prefix, title, follow)

    def action_container_log(self) -> None:
        _, c = self.selection()
        if c is not None:
            name = c.name
            self._follow_one(f"log-{c.branch}", f"podman logs -f {name}",
                             lambda sink, cancel: ops.follow_container_log(self.session, name, sink=sink,
                                                                           cancel=cancel))  # fmt: skip

    def action_net_log(self) -> None:
        _, c = self.selection()
        if c is not None:
            branch = c.branch
            self._follow_one(f"net-{branch}", f"devbox net log {branch} --follow",
                             lambda sink, cancel: ops.watch_net_log(self.session, branch, sink=sink,
                                                                    cancel=cancel))  # fmt: skip

    def action_filter_log(self) -> None:
        self.log_pane.open_filter()

    def action_follow_log(self) -> None:
        self.log_pane.toggle_follow()
