"""The log pane: whatever operation runs (or a container's own log), without ever flooding
the screen.

Lines arrive from worker threads through ``sink`` (thread-safe) and are kept three ways:
every line goes to the operation's log file under ``.build/logs/`` (named in the pane);
the last ``CAP`` lines stay in a ring buffer; and the widget gets them in one
``write_lines`` per tick (``TICK`` seconds), never one message per line. ``/`` filters:
the ring buffer at once, then the whole log file in a worker, so a line that scrolled out
of memory is still found. ANSI escapes are stripped; a huge line is cut on screen only.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Log, Static

from devbox.core.events import Event, LogLine, Progress, Step

CAP = 10_000  # lines held in memory (ring buffer and widget)
TICK = 0.08  # seconds between batches to the widget
SHOWN = 2_000  # characters of one line shown on screen (the file has all of it)
ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
MARKS = {"start": "==>", "done": " ok", "skip": " --", "fail": "!!!"}


def clean(text: str) -> str:
    text = ANSI.sub("", text).replace("\t", "    ")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}… ({len(text) - SHOWN} more characters)"


def describe(event: Event) -> str | None:
    """One display line for an event (None: not a log line)."""
    if isinstance(event, LogLine):
        return event.text
    if isinstance(event, Step):
        if event.state == "fail" and not event.detail:
            return None
        return f"{MARKS[event.state]} {event.subject}: {event.detail}"
    return None


class LogPane(Vertical):
    """Title, the log, and a filter input that appears on ``/``."""

    def __init__(self, log_dir: Path, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.log_dir = log_dir
        self.ring: deque[str] = deque(maxlen=CAP)
        self.pending: list[str] = []
        self._mutex = threading.Lock()
        self.file: IO[str] | None = None
        self.file_path: Path | None = None
        self.progress = ""
        self.filter_text = ""
        self.lines_total = 0

    def compose(self) -> ComposeResult:
        yield Static("Log: nothing has run yet", id="log-title")
        yield Log(max_lines=CAP, auto_scroll=True, id="log")
        yield Input(placeholder="filter the log (Enter keeps it, Escape clears)", id="log-filter")

    def on_mount(self) -> None:
        self.query_one("#log-filter", Input).display = False
        self.set_interval(TICK, self.flush)

    # fed from worker threads ------------------------------------------------------------
    def begin(self, name: str, command: str) -> None:
        """A new operation: a new log file, named in the pane, starting with its command line."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.log_dir / f"{stamp}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)[:60]}.log"
        with self._mutex:
            if self.file is not None:
                self.file.close()
            self.file = path.open("a", encoding="utf-8", errors="replace")
            self.file_path = path
            self.progress = ""
        self.sink_text(f"$ {command}")

    def sink(self, event: Event) -> None:
        if isinstance(event, Progress):
            frac = event.fraction
            self.progress = (f"{frac:.0%} " if frac is not None else "") + event.text[:60]
            return
        text = describe(event)
        if text is not None:
            self.sink_text(text)

    def sink_text(self, text: str) -> None:
        with self._mutex:
            if self.file is not None:
                self.file.write(text + "\n")
            for part in text.splitlines() or [""]:
                shown = clean(part)
                self.ring.append(shown)
                self.pending.append(shown)
                self.lines_total += 1

    # on the UI thread -------------------------------------------------------------------
    def flush(self) -> None:
        with self._mutex:
            batch, self.pending = self.pending, []
            if self.file is not None:
                self.file.flush()
        if batch:
            if self.filter_text:
                batch = [ln for ln in batch if self.filter_text in ln]
            if batch:
                self.query_one("#log", Log).write_lines(batch[-CAP:])
        self._title()

    def _title(self) -> None:
        where = f"  ({self.file_path})" if self.file_path else ""
        flt = f"  filter: {self.filter_text!r}" if self.filter_text else ""
        follow = "" if self.query_one("#log", Log).auto_scroll else "  [paused: f follows]"
        prog = f"  {self.progress}" if self.progress else ""
        self.query_one("#log-title", Static).update(f"Log{where}{flt}{follow}{prog}")

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
        with self._mutex:
            lines = [ln for ln in self.ring if text in ln] if text else list(self.ring)
        log.write_lines(lines)
        if text and self.file_path is not None:
            self._search_file(text, self.file_path, len(lines))
        self._title()

    @work(thread=True, exclusive=True, group="log-search", exit_on_error=False)
    def _search_file(self, text: str, path: Path, shown: int) -> None:
        """Lines of the whole log file that match and are no longer in memory."""
        matches: list[str] = []
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if text in line:
                    matches.append(clean(line.rstrip("\n")))
        older = matches[: max(0, len(matches) - shown)]
        if older and self.filter_text == text:
            self.app.call_from_thread(self._show_older, text, older[-CAP:])

    def _show_older(self, text: str, older: list[str]) -> None:
        if self.filter_text != text:
            return
        log = self.query_one("#log", Log)
        current = [ln for ln in self.ring if text in ln]
        log.clear()
        log.write_lines([f"(from {self.file_path})", *older, "(in memory)", *current][-CAP:])
