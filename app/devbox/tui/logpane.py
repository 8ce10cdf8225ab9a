"""The log pane: every operation the dashboard runs (and every container log it follows) is
a *run* with its own log file, cancel event and lines; the pane shows one run at a time and
can switch between all runs since the dashboard started (newest first).

Lines arrive from worker threads through a run's ``sink`` (thread-safe). Each run keeps
its lines three ways: every event goes to its own log file under ``.build/logs/`` (the
core's ``OpLog``, the same files the CLI writes, whole lines with the tool's bytes); the
last ``CAP`` lines stay in the run's ring buffer; and, when it is the run on screen, the
widget gets them in one ``write_lines`` per tick (``TICK`` seconds), never one message per
line. Operations running at once therefore never write into each other's files or lines.
``/`` filters the shown run: its ring buffer at once, then its whole file in a worker.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Log, Static

from devbox.core import labels
from devbox.core.events import Event, Progress
from devbox.core.oplog import OpLog, cut, describe
from devbox.tui.panes import Plain

CAP = 10_000  # lines held in memory per run (ring buffer and widget)
TICK = 0.08  # seconds between batches to the widget
SHOWN = 2_000  # characters of one line shown on screen (the file has all of it)
ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def clean(text: str, log: Path | None = None) -> str:
    text = ANSI.sub("", text).replace("\t", "    ")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return cut(text, SHOWN, log)


@dataclass(eq=False)
class Run:
    """One operation (or followed log) of this dashboard session."""

    number: int
    name: str
    command: str
    log: OpLog
    locks: frozenset[str] = frozenset()
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    outcome: str = "running"  # then "done", "failed", "cancelled", "interrupted"
    ring: deque[str] = field(default_factory=lambda: deque(maxlen=CAP))
    lines_total: int = 0
    progress: str = ""

    @property
    def running(self) -> bool:
        return self.ended is None

    def label(self) -> str:
        took = labels.duration((self.ended or time.monotonic()) - self.started)
        return f"#{self.number} {self.name} ({self.outcome} {took})"


class LogPane(Vertical):
    """Title, the shown run's log, and a filter input that appears on ``/``."""

    def __init__(self, log_dir: Path, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.log_dir = log_dir
        self.runs: list[Run] = []  # newest first
        self.shown: Run | None = None
        self.pending: list[str] = []
        self._mutex = threading.Lock()
        self.filter_text = ""
        self._notes: Run | None = None
        self._switched = False  # the shown run changed: the widget is refilled at the next tick
        self._shown_title = "Log: nothing has run yet"

    def compose(self) -> ComposeResult:
        yield Plain("Log: nothing has run yet", id="log-title")
        yield Log(max_lines=CAP, auto_scroll=True, id="log")
        yield Input(placeholder="filter the log (Enter keeps it, Escape clears)", id="log-filter")

    def on_mount(self) -> None:
        self.query_one("#log-filter", Input).display = False
        self.set_interval(TICK, self.flush)

    # runs (any thread) ------------------------------------------------------------------
    def start(self, name: str, command: str, locks: frozenset[str] = frozenset()) -> Run:
        """A new run, with its own log file (starting with its command line), shown at once."""
        log = OpLog(self.log_dir, name, command)
        with self._mutex:
            run = Run(len(self.runs) + 1, name, command, log, locks)
            self.runs.insert(0, run)
        self._append(run, f"$ {command}", logged=True)  # the log file starts with it already
        self.show(run)
        return run

    def sink_for(self, run: Run) -> Callable[[Event], None]:
        def sink(event: Event) -> None:
            run.log.write(event)
            if isinstance(event, Progress):
                frac = event.fraction
                run.progress = (f"{frac:.0%} " if frac is not None else "") + event.text[:60]
                return
            text = describe(event)
            if text is not None:
                self._append(run, text, logged=True)

        return sink

    def finish(self, run: Run, outcome: str, line: str = "") -> None:
        if line:
            self._append(run, line)
        run.outcome = outcome
        run.ended = time.monotonic()
        run.progress = ""
        run.log.close(f"devbox-tui: {outcome}")

    def note(self, text: str) -> None:
        """What the core or the dashboard says outside any operation (a podman service it
        started, "select a worktree first"): into the shown run, else a "dashboard" run."""
        run = self.shown
        if run is None:
            run = self._notes = self._notes or self.start("dashboard", "devbox-tui")
        self._append(run, text)

    def _append(self, run: Run, text: str, *, logged: bool = False) -> None:
        if not logged:
            run.log.line(text)
        with self._mutex:
            for part in text.splitlines() or [""]:
                shown = clean(part, run.log.path)
                run.ring.append(shown)
                run.lines_total += 1
                if run is self.shown:
                    self.pending.append(shown)

    def show(self, run: Run) -> None:
        """Switch the pane to ``run`` (its lines so far replace the widget's at the next tick)."""
        if run is self.shown:
            return
        with self._mutex:
            self.shown = run
            self.pending = []
            self._switched = True

    # the shown run's lines, count and file (what a user sees)
    @property
    def ring(self) -> deque[str]:
        return self.shown.ring if self.shown is not None else deque()

    @property
    def lines_total(self) -> int:
        return self.shown.lines_total if self.shown is not None else 0

    @property
    def file_path(self) -> Path | None:
        return self.shown.log.path if self.shown is not None else None

    def running(self) -> list[Run]:
        """The operations still running (the dashboard's own notes are not one: they made q
        ask "1 operation(s) running (dashboard): stop them and quit?" after any note)."""
        return [r for r in self.runs if r.running and r is not self._notes]

    # on the UI thread -------------------------------------------------------------------
    def flush(self) -> None:
        with self._mutex:
            batch, self.pending = self.pending, []
            switched, self._switched = self._switched, False
            run = self.shown
            lines = list(run.ring) if switched and run is not None else []
        if run is not None:
            run.log.flush()
        log = self.query_one("#log", Log)
        if switched:
            log.clear()
            batch = lines
            if log.auto_scroll:  # once the cleared widget has its new size
                self.call_after_refresh(log.scroll_end, animate=False)
        if batch:
            if self.filter_text:
                batch = [ln for ln in batch if self.filter_text in ln]
            if batch:
                # following (f toggles it) means the end, also right after a switch of runs,
                # when the scroll position is still the previous run's
                log.write_lines(batch[-CAP:], scroll_end=log.auto_scroll)
        self._title()

    def _title(self) -> None:
        run = self.shown
        if run is None:
            text = "Log: nothing has run yet"
        else:
            others = f"  [{len(self.runs)} runs: L switches]" if len(self.runs) > 1 else ""
            prog = f"  {run.progress}" if run.progress else ""
            flt = f"  filter: {self.filter_text!r}" if self.filter_text else ""
            follow = "" if self.query_one("#log", Log).auto_scroll else "  [paused: f follows]"
            text = f"Log {run.label()}  ({run.log.path}){others}{flt}{follow}{prog}"
        # only a changed title: an update re-lays out the screen, and this runs every TICK
        # (unchanged, it was most of an idle dashboard's CPU)
        if text != self._shown_title:
            self._shown_title = text
            self.query_one("#log-title", Static).update(text)

    def toggle_follow(self) -> bool:
        log = self.query_one("#log", Log)
        log.auto_scroll = not log.auto_scroll
        if log.auto_scroll:
            log.scroll_end(animate=False)
        self._title()
        return log.auto_scroll

    def open_filter(self) -> None:
        box = self.query_one("#log-filter", Input)
        box.display = True
        box.value = self.filter_text
        box.focus()

    @on(Input.Submitted, "#log-filter")
    def _submitted(self, event: Input.Submitted) -> None:
        self.apply_filter(event.value)
        self.query_one("#log", Log).focus()

    def on_key(self, event: object) -> None:
        key = getattr(event, "key", "")
        box = self.query_one("#log-filter", Input)
        if key == "escape" and box.has_focus:
            box.value = ""
            self.apply_filter("")
            box.display = False
            self.query_one("#log", Log).focus()

    def apply_filter(self, text: str) -> None:
        self.filter_text = text
        log = self.query_one("#log", Log)
        log.clear()
        run = self.shown
        with self._mutex:
            ring = list(run.ring) if run is not None else []
        lines = [ln for ln in ring if text in ln] if text else ring
        log.write_lines(lines)
        if text and run is not None:
            self._search_file(text, run, len(lines))
        self._title()

    @work(thread=True, exclusive=True, group="log-search", exit_on_error=False)
    def _search_file(self, text: str, run: Run, shown: int) -> None:
        """Lines of the run's whole log file that match and are no longer in memory."""
        run.log.flush()
        matches: list[str] = []
        with run.log.path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if text in line:
                    matches.append(clean(line.rstrip("\n"), run.log.path))
        older = matches[: max(0, len(matches) - shown)]
        if older and self.filter_text == text:
            self.app.call_from_thread(self._show_older, text, run, older[-CAP:])

    def _show_older(self, text: str, run: Run, older: list[str]) -> None:
        if self.filter_text != text or self.shown is not run:
            return
        log = self.query_one("#log", Log)
        current = [ln for ln in run.ring if text in ln]
        log.clear()
        log.write_lines([f"(from {run.log.path})", *older, "(in memory)", *current][-CAP:])
