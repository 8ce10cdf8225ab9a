"""Headless rendering of core events: Rich on a terminal, plain lines otherwise.

Rich is imported only when stdout is a terminal, so scripted and no-op runs stay fast.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from devbox.core.errors import DevboxError
from devbox.core.events import Event, LogLine, Progress, Step
from devbox.core.oplog import cut, describe

LONGEST = 4000  # a log line longer than this is cut on screen (the operation's log file has it whole)


class _Shows:
    log_path: Path | None = None  # the operation's log file, once it has one (named in cut lines)

    def shown(self, text: str) -> str:
        return cut(text, LONGEST, self.log_path)


class PlainRenderer(_Shows):
    """One line per event; log lines verbatim. For pipes, CI logs and tests."""

    def __init__(self, out: IO[str] | None = None, err: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.shown_tail = False
        self.last_progress = 0.0
        self.shows_log = True  # every log line is printed

    def __call__(self, event: Event) -> None:
        if isinstance(event, LogLine):
            self.out.write(f"{self.shown(event.text)}\n")
            self.shown_tail = True
        elif isinstance(event, Step):
            line = describe(event)
            if line is None:
                return
            self.out.write(line.rstrip() + "\n")
        elif isinstance(event, Progress):
            # redraws arrive many times a second: a log file gets one line every 2 s at most
            now = time.monotonic()
            if now - self.last_progress < 2.0:
                return
            self.last_progress = now
            frac = event.fraction
            self.out.write(f"... {event.text}" + (f" ({frac:.0%})" if frac is not None else "") + "\n")
        self.out.flush()

    def close(self) -> None:
        self.out.flush()

    def error(self, exc: DevboxError) -> None:
        if exc.detail and not self.shown_tail:
            for line in exc.detail:
                self.err.write(f"  {line[:400]}\n")
        fix = f" (fix: {exc.remedy})" if exc.remedy else ""
        log = f" [log: {self.log_path}]" if self.log_path is not None else ""
        self.err.write(f"devbox: {exc.message}{fix}{log}\n")
        self.err.flush()


class RichRenderer(_Shows):
    """A spinner with the current step and a live tail of the log; steps stay on screen."""

    TAIL = 12

    def __init__(self, verbose: bool = False) -> None:
        from rich.console import Console

        self.console = Console()
        self.err_console = Console(stderr=True)
        self.verbose = verbose
        self.shows_log = verbose  # without -v, log lines live only in the transient tail
        self.tail: deque[str] = deque(maxlen=self.TAIL)
        self.current = ""
        self.progress = ""
        self.started = time.monotonic()
        self.live: Any = None
        from rich.spinner import Spinner

        # one Spinner for the whole run: it animates from its own start time, so a new one
        # per refresh would show its first frame forever
        self.spinner = Spinner("dots", style="bold")

    def _renderable(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        elapsed = time.monotonic() - self.started
        progress = f"  {self.progress}" if self.progress else ""
        self.spinner.update(text=Text(f"{self.current}{progress}  {elapsed:4.0f}s", style="bold"))
        lines = [Text(f"  {line[:500]}", style="dim", overflow="ellipsis", no_wrap=True) for line in self.tail]
        return Group(self.spinner, *lines)

    def _ensure_live(self) -> None:
        if self.live is None:
            from rich.live import Live

            self.live = Live(self._renderable(), console=self.console, refresh_per_second=8, transient=True)
            self.live.start()
            self.live.get_renderable = self._renderable  # re-render on each refresh (spinner, clock)

    def __call__(self, event: Event) -> None:
        if isinstance(event, LogLine):
            self.tail.append(event.text)
            if self.verbose:
                self.console.print(self.shown(event.text), markup=False, highlight=False)
            self._ensure_live()
        elif isinstance(event, Step):
            self.progress = ""
            if event.state == "start":
                self.current = f"{event.name}: {event.detail}"
                self.started = time.monotonic()
                self.tail.clear()
                self._ensure_live()
            else:
                style = {"done": "green", "skip": "cyan", "fail": "red"}[event.state]
                mark = {"done": "✓", "skip": "·", "fail": "✗"}[event.state]
                if event.state != "fail" or event.detail:
                    from rich.markup import escape

                    self.console.print(
                        f"[{style}]{mark}[/] [bold]{escape(event.name)}[/]: {escape(event.detail)}", highlight=False
                    )
                if event.state != "fail":
                    self.tail.clear()
        elif isinstance(event, Progress):
            frac = event.fraction
            self.progress = (f"{frac:.0%} " if frac is not None else "") + event.text[:80]

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def error(self, exc: DevboxError) -> None:
        self.close()
        lines = exc.detail or ()
        if lines and not self.verbose:
            self.err_console.rule("last lines of the log", style="red")
            for line in lines:
                self.err_console.print(f"  {line[:400]}", markup=False, highlight=False)
        from rich.markup import escape

        fix = f" [dim](fix: {escape(exc.remedy)})[/]" if exc.remedy else ""
        log = f" [dim]\\[log: {escape(str(self.log_path))}][/]" if self.log_path is not None else ""
        self.err_console.print(f"[bold red]devbox:[/] {escape(exc.message)}{fix}{log}", highlight=False, soft_wrap=True)


Renderer = PlainRenderer | RichRenderer


def make_renderer(verbose: bool = False) -> Renderer:
    if sys.stdout.isatty():
        return RichRenderer(verbose=verbose)
    return PlainRenderer()
