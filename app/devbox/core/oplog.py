"""Per-operation log files under ``.build/logs/``: every operation, from the CLI or the
dashboard, writes one file ``<time>-<operation>.log`` holding everything it reported,
whole lines with the tool's own bytes, so a line cut on screen is never lost.

Both faces use this module, so the file, the step markers and the cut marker on screen
(which names the file) are the same everywhere. The directory is bounded: before a new
file is made, the oldest are removed until at most ``KEEP_FILES`` files and ``KEEP_BYTES``
bytes remain (a file still being written by a live run is never removed: it is the newest).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from pathlib import Path

from devbox.core.events import Event, LogLine, Step

KEEP_FILES = 200
KEEP_BYTES = 500 * 1000 * 1000
MARKS = {"start": "==>", "done": " ok", "skip": " --", "fail": "!!!"}


def describe(event: Event) -> str | None:
    """One display line for an event (None: not a line of the log: progress, a silent fail)."""
    if isinstance(event, LogLine):
        return event.text
    if isinstance(event, Step):
        if event.state == "fail" and not event.detail:
            return None
        return f"{MARKS[event.state]} {event.subject.kind}: {event.detail}"
    return None


def cut(text: str, limit: int, log: Path | None) -> str:
    """``text`` as shown on a screen: at most ``limit`` characters, the cut named, with the
    file that holds the whole line."""
    if len(text) <= limit:
        return text
    where = f"; the whole line is in {log}" if log is not None else ""
    return f"{text[:limit]}… ({len(text) - limit} more characters{where})"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:60] or "operation"


def prune(log_dir: Path, keep_files: int = KEEP_FILES, keep_bytes: int = KEEP_BYTES) -> list[Path]:
    """Remove the oldest logs beyond the bounds; returns what it removed."""
    try:
        entries = [(e.stat().st_mtime, e.stat().st_size, Path(e.path)) for e in os.scandir(log_dir)
                   if e.is_file() and e.name.endswith(".log")]  # fmt: skip
    except OSError:
        return []
    entries.sort(reverse=True)  # newest first
    kept_bytes = 0
    removed = []
    for i, (_mtime, size, path) in enumerate(entries):
        kept_bytes += size
        if i > 0 and (i >= keep_files or kept_bytes > keep_bytes):  # the newest always stays
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


class OpLog:
    """One operation's log file. Thread-safe: worker threads write, a face reads the path."""

    def __init__(self, log_dir: Path, name: str, command: str) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        prune(log_dir, KEEP_FILES - 1)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{_slug(name)}"
        for n in range(1, 1000):  # two operations of one name in one second: -2, -3, ...
            path = log_dir / (f"{base}.log" if n == 1 else f"{base}-{n}.log")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - a thousand runs of one operation in one second
            raise OSError(f"no free log file name for {base}")
        self.path = path
        self.name = name
        self.command = command
        self._fh = os.fdopen(fd, "ab")
        self._mutex = threading.Lock()
        self.closed = False
        self.line(f"$ {command}")

    def write(self, event: Event) -> None:
        """An event as a line of the file: a tool's line with its own bytes."""
        if isinstance(event, LogLine) and event.raw is not None:
            self._write(event.raw + b"\n")
            return
        text = describe(event)
        if text is not None:
            self.line(text)

    def line(self, text: str) -> None:
        self._write(text.encode("utf-8", "surrogateescape") + b"\n")

    def _write(self, data: bytes) -> None:
        with self._mutex:
            if not self.closed:
                with contextlib.suppress(OSError):  # a full disk must not stop the operation
                    self._fh.write(data)

    def flush(self) -> None:
        with self._mutex:
            if not self.closed:
                with contextlib.suppress(OSError):
                    self._fh.flush()

    def close(self, outcome: str = "") -> None:
        if outcome:
            self.line(outcome)
        with self._mutex:
            if not self.closed:
                self.closed = True
                with contextlib.suppress(OSError):
                    self._fh.close()
