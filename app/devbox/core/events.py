"""What operations report: log lines, steps and progress, each about a subject.

An operation never prints. It reports through a ``Reporter`` (bound to the operation's
name and the thing it is working on) to a sink, and checks ``cancel.is_set()``. Every event
names its subject (which image, worktree, container, disk or VM), the operation it belongs
to and when it happened, so a dashboard can route it to the right pane; log lines also say
which tool printed them and on which stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

StepState = Literal["start", "done", "skip", "fail"]
Stream = Literal["stdout", "stderr", "devbox"]


@dataclass(frozen=True, slots=True)
class Subject:
    kind: str  # "repo", "image", "worktree", "container", "disk", "vm"
    name: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" if self.name else self.kind


NOBODY = Subject("repo")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogLine:
    text: str
    source: str = "devbox"  # the tool: "podman", "git", "bootc-image-builder", "terraform"
    stream: Stream = "devbox"
    subject: Subject = NOBODY
    op: str = ""
    ts: float = field(default_factory=time.time)
    raw: bytes | None = None  # the tool's own bytes when ``text`` (decoded, errors replaced) differs


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    subject: Subject
    state: StepState
    detail: str = ""  # why it runs or was skipped, what it made, or why it failed
    op: str = ""
    ts: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.subject.kind


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A progress update: ``done``/``total`` when the tool says them, else only ``text``
    (the latest ``\\r``-terminated status line)."""

    text: str = ""
    done: float | None = None
    total: float | None = None
    subject: Subject = NOBODY
    op: str = ""
    ts: float = field(default_factory=time.time)

    @property
    def fraction(self) -> float | None:
        if self.done is None or not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))


Event = LogLine | Step | Progress
Sink = Callable[[Event], None]


def null_sink(event: Event) -> None:
    """A sink that drops everything (for callers that only want the result)."""


class Reporter:
    """A sink bound to one operation and one subject: ``r.step("start", "building")``."""

    __slots__ = ("op", "sink", "subject")

    def __init__(self, sink: Sink, op: str, subject: Subject = NOBODY) -> None:
        self.sink = sink
        self.op = op
        self.subject = subject

    def about(self, subject: Subject) -> Reporter:
        return Reporter(self.sink, self.op, subject)

    def step(self, state: StepState, detail: str = "") -> None:
        self.sink(Step(subject=self.subject, state=state, detail=detail, op=self.op))

    def log(self, text: str, *, source: str = "devbox", stream: Stream = "devbox", raw: bytes | None = None) -> None:
        self.sink(LogLine(text=text, source=source, stream=stream, subject=self.subject, op=self.op, raw=raw))

    def progress(self, text: str = "", done: float | None = None, total: float | None = None) -> None:
        self.sink(Progress(text=text, done=done, total=total, subject=self.subject, op=self.op))

    def emit(self, event: Event) -> None:
        self.sink(event)
