"""What long operations report: log lines, steps and progress, to a sink.

An operation never prints. It calls ``sink(event)`` and checks ``cancel.is_set()``; the
CLI renders the events with Rich (or plain lines), the TUI with a log pane.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

StepState = Literal["start", "done", "skip", "fail"]


@dataclass(frozen=True, slots=True)
class LogLine:
    source: str  # "podman", "git", "bootc-image-builder", "terraform", ...
    text: str


@dataclass(frozen=True, slots=True)
class Step:
    name: str  # "image", "worktree", "container", ...
    state: StepState
    detail: str = ""  # why it runs or was skipped, or what it made


@dataclass(frozen=True, slots=True)
class Progress:
    done: int
    total: int
    what: str = ""


Event = LogLine | Step | Progress
Sink = Callable[[Event], None]


def null_sink(event: Event) -> None:
    """A sink that drops everything (for callers that only want the result)."""


def new_cancel() -> threading.Event:
    return threading.Event()
