"""Notifications when an agent needs its person: a move into **needs you**, **done** or
**error** is one notification, once per move, rate-limited per environment, never for the
agent the person is looking at. The faces ring the terminal's bell and send a desktop
notification through the terminal (OSC 9 and OSC 777, wrapped for tmux); ``notify.command``
in devbox.toml runs with the branch, state and message as its last three arguments
(an argument list: never a shell)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from devbox.core import proc
from devbox.core.errors import DevboxError

if TYPE_CHECKING:  # (the dashboard imports this before its first paint; the rows come later)
    from devbox.core.ops.views import AgentRow

ALERTING = frozenset({"needs you", "done", "error"})
MIN_GAP = 5.0  # seconds before one environment's same alert is sent again (a flapping agent)


@dataclass(frozen=True)
class Transition:
    branch: str
    before: str
    after: str
    message: str


@dataclass
class Watcher:
    """Remembers each environment's last state; ``update`` answers the moves since."""

    states: dict[str, str] = field(default_factory=dict)
    last_sent: dict[tuple[str, str], float] = field(default_factory=dict)
    primed: bool = False

    def update(self, rows: Iterable[AgentRow]) -> list[Transition]:
        moves = []
        seen: dict[str, str] = {}
        for r in rows:
            seen[r.branch] = r.agent.state
            before = self.states.get(r.branch, "")
            # from "unknown" (a host or podman that was down) is not a move: it was not seen
            if self.primed and before != r.agent.state and before != "unknown":
                moves.append(Transition(r.branch, before or "new", r.agent.state, r.agent.message))
        self.states = seen
        self.primed = True  # the first look is the starting point, not a burst of moves
        return moves

    def alerts(self, moves: Iterable[Transition], *, looking_at: str | None = None) -> list[Transition]:
        """The moves worth a notification: into an alerting state, not the one on screen,
        the same alert of one environment at most once per ``MIN_GAP``."""
        out = []
        now = time.monotonic()
        for m in moves:
            if m.after not in ALERTING or m.branch == looking_at:
                continue
            key = (m.branch, m.after)
            if now - self.last_sent.get(key, -MIN_GAP) < MIN_GAP:
                continue
            self.last_sent[key] = now
            out.append(m)
        return out


def run_command(command: Sequence[str], move: Transition) -> str:
    """``notify.command`` for one move; "" or why it failed (never raised: a broken
    notifier must not stop the watch)."""
    if not command:
        return ""
    try:
        res = proc.run([*command, move.branch, move.after, move.message], tool=command[0], timeout=10)
    except DevboxError as exc:
        return exc.message
    return "" if res.ok else f"notify.command failed: {res.last_error()}"


def terminal_sequence(move: Transition, *, in_tmux: bool) -> str:
    """The bell, OSC 9 and OSC 777 desktop notifications (tmux passes them on when wrapped)."""
    text = f"devbox: {move.branch} {move.after}" + (f": {move.message}" if move.message else "")
    text = "".join(c for c in text if c.isprintable() and c not in "\x1b\x07;")[:200]
    osc = f"\x1b]9;{text}\x07\x1b]777;notify;devbox;{text}\x07"
    if in_tmux:
        osc = "\x1bPtmux;" + osc.replace("\x1b", "\x1b\x1b") + "\x1b\\"
    return "\a" + osc
