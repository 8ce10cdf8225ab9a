"""An agent's state, from what its hooks wrote: the folded state devbox shows (working,
needs you, done, error, exited), when it entered it, and the last message.

The agent's hooks (``bootc/agent-hook.sh``, run by Claude Code inside the environment)
append one JSON line per event to ``events.jsonl`` in a per-environment state directory.
That directory is written by code the user has not read, so everything here treats it as
untrusted input: the directory and the file are opened without following symlinks, only a
regular file is read (a FIFO, a device or a directory named like it is ignored), at most
the last ``MAX_BYTES`` of it, lines longer than ``MAX_LINE`` and lines that are not the
expected JSON are skipped (and counted), and nothing outside the directory is ever opened.
Messages are cut to ``MAX_MESSAGE`` characters and stripped of control characters before
anyone shows them.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

EVENTS = "events.jsonl"
MAX_BYTES = 1 << 20  # the tail of the file that is read
MAX_LINE = 64 << 10  # a longer line is skipped
MAX_MESSAGE = 300

State = Literal["working", "needs you", "done", "error", "exited", "no agent", "unknown", "working?", "idle?",
                "missing"]  # fmt: skip
#: "missing": the environment's worktree was deleted by hand (the agent may still run)
#: what each state asks of the user, most urgent first (the fleet sorts by it). "working?"
#: and "idle?" are guesses from the terminal's activity, for agents without hooks: labelled
#: as guesses, never counted as needing you
URGENCY: dict[str, int] = {"needs you": 0, "error": 1, "missing": 1, "done": 2, "idle?": 3, "working": 3, "working?": 3,
                           "exited": 4, "unknown": 5, "no agent": 6}  # fmt: skip


@dataclass(frozen=True)
class AgentState:
    state: State
    since: float | None = None  # when it entered this state (the hook's clock)
    message: str = ""  # e.g. the permission asked for
    last_event: float | None = None
    events: int = 0  # well-formed events read
    skipped: int = 0  # lines that were too long or not the expected JSON
    problem: str = ""  # why the state is unknown (the directory is gone, not a regular file, ...)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state, "since": self.since, "message": self.message, "last_event": self.last_event,
            "events": self.events, "skipped": self.skipped, "problem": self.problem,
        }  # fmt: skip


def clean(text: object) -> str:
    """A message from the agent as it may be shown: printable, one line, bounded."""
    s = text if isinstance(text, str) else ""
    s = "".join(c if c.isprintable() else " " for c in s[: MAX_MESSAGE * 2])
    return " ".join(s.split())[:MAX_MESSAGE]


@dataclass
class _Fold:
    state: State = "unknown"
    since: float | None = None
    message: str = ""
    last: float | None = None
    events: int = 0
    skipped: int = 0
    seen: list[str] = field(default_factory=list)

    def to(self, state: State, ts: float, message: str | None = None) -> None:
        if state != self.state:
            self.state, self.since = state, ts
        if message is not None:
            self.message = message


def _event(fold: _Fold, line: bytes) -> None:
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        fold.skipped += 1
        return
    payload = rec.get("payload") if isinstance(rec, dict) else None
    ts = rec.get("ts") if isinstance(rec, dict) else None
    if not isinstance(payload, dict) or not isinstance(ts, int | float) or isinstance(ts, bool):
        fold.skipped += 1
        return
    name = payload.get("hook_event_name")
    if not isinstance(name, str):
        fold.skipped += 1
        return
    fold.events += 1
    fold.last = float(ts)
    tool = clean(payload.get("tool_name"))
    if name == "SessionStart":
        # devbox hands the first prompt over with the start, so a new session is working;
        # only a finished turn is done (a "done" here rang every agent's bell at its start).
        # A session started without a prompt says so with idle_prompt, a minute later.
        fold.to("working", ts, "session started")
    elif name == "UserPromptSubmit":
        fold.to("working", ts, clean(payload.get("prompt")))
    elif name == "PreToolUse":
        if tool == "AskUserQuestion":  # a question is only visible here (wmux PR #212)
            fold.to("needs you", ts, "asks: " + clean(json.dumps(payload.get("tool_input"))[:MAX_MESSAGE]))
        else:
            fold.to("working", ts, f"running {tool}" if tool else None)
    elif name == "PostToolUse":
        fold.to("working", ts, f"ran {tool}" if tool else None)
    elif name == "PermissionRequest":
        fold.to("needs you", ts, clean(payload.get("message")) or f"permission for {tool or 'a tool'}")
    elif name == "Notification":
        kind = payload.get("notification_type")
        message = clean(payload.get("message"))
        if kind in ("permission_prompt", "elicitation_dialog"):
            fold.to("needs you", ts, message)
        elif kind == "idle_prompt" and fold.state != "needs you":
            fold.to("done", ts, message)  # arrives late (~60 s): never overrides a question
        elif message:
            fold.message = message
    elif name == "Stop":
        fold.to("done", ts, "turn finished: your move")
    elif name == "StopFailure":
        fold.to("error", ts, clean(payload.get("error") or payload.get("message")) or "the turn failed")
    elif name == "SessionEnd":
        fold.to("exited", ts, clean(payload.get("reason")) or "session ended")
    elif name == "DevboxAgentExit":  # devbox's wrapper: the agent's command ended, however it ended
        fold.to("exited", ts, f"the agent ended (status {clean(str(payload.get('status')))})")


def read(directory: Path) -> AgentState:
    """The folded state from ``directory/events.jsonl`` (never following a symlink, never
    reading anything but that regular file)."""
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            why = "the state directory is missing"
        elif exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(directory):
            why = "the state directory is a symlink (not followed)"
        else:
            why = f"state directory: {exc.strerror}"
        return AgentState("unknown", problem=why)
    try:
        try:
            fd = os.open(EVENTS, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return AgentState("unknown", problem="no event yet")
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW's answer to a symlink
                return AgentState("unknown", problem=f"{EVENTS} is a symlink (not followed)")
            return AgentState("unknown", problem=f"{EVENTS}: not a regular file ({exc.strerror})")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return AgentState("unknown", problem=f"{EVENTS}: not a regular file")
            start = max(0, st.st_size - MAX_BYTES)
            data = os.pread(fd, MAX_BYTES, start)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)
    return fold(data, cut=start > 0)


def fold(data: bytes, *, cut: bool = False) -> AgentState:
    """The state from the tail of an events file (read here, or over ssh from the VM: the
    same caps either way). ``cut``: the tail starts mid-line, so its first line is dropped."""
    data = data[-MAX_BYTES:]
    lines = data.split(b"\n")
    if cut:
        lines = lines[1:]
    acc = _Fold()
    for line in lines:
        if not line.strip():
            continue
        if len(line) > MAX_LINE:
            acc.skipped += 1
            continue
        _event(acc, line)
    problem = ""
    if not acc.events and (acc.skipped or data.strip()):
        problem = (
            f"the last {_size(len(data))} of {EVENTS} hold no event devbox understands ({acc.skipped} line(s) skipped)"
        )
    elif not acc.events:
        problem = "no event yet"
    return AgentState(acc.state, acc.since, acc.message, acc.last, acc.events, acc.skipped, problem)


def _size(n: int) -> str:
    return "MiB" if n >= MAX_BYTES else f"{n} bytes"


def signature(dirs: Iterable[tuple[str, Path]]) -> tuple[tuple[str, int, int], ...]:
    """What changed in each ``(name, directory)``'s ``events.jsonl`` (mtime, size: ``lstat``,
    no symlink followed): a cheap poll for the dashboard to redraw the agents at once (20
    agents: 20 stats)."""
    out = []
    for name, directory in dirs:
        try:
            st = os.lstat(os.path.join(directory, EVENTS))
        except OSError:
            continue
        out.append((name, st.st_mtime_ns, st.st_size))
    return tuple(sorted(out))


def append(directory: Path, payload: dict[str, Any], ts: float) -> bool:
    """devbox's own line (e.g. "the agent was stopped"), written as the hooks write theirs,
    without following a symlink the agent may have planted; False when it could not."""
    line = (json.dumps({"ts": int(ts), "payload": payload}) + "\n").encode()
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fd = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     0o644, dir_fd=dfd)  # fmt: skip
    except OSError:
        return False
    finally:
        os.close(dfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        os.write(fd, line)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
