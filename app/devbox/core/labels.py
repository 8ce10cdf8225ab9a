"""How the core's records read to a person: one wording for every face (the CLI's tables
and the dashboard's panes used to word a worktree's state and a duration each their own way)."""

from __future__ import annotations

from devbox.core.git import WorktreeState


def worktree_state(s: WorktreeState) -> str:
    """ "clean", "dirty 2~ 1?" (changed, untracked), "MISSING" or "unknown"."""
    if s.missing:
        return "MISSING"
    if s.error:
        return "unknown"
    return f"dirty {s.changed}~ {s.untracked}?" if s.dirty else "clean"


def worktree_hint(s: WorktreeState) -> str:
    """What to do about a state that needs it ("" otherwise)."""
    if s.missing:
        return "deleted by hand: " + missing_worktree_fix("BRANCH")
    return s.error


def missing_worktree_fix(branch: str) -> str:
    """The fix for a worktree deleted by hand (its branch keeps the commits)."""
    return f"./start-work {branch} --recreate (its branch keeps the commits), or git worktree prune"


def duration(seconds: float | None) -> str:
    """ "42s", "5m07s", "3h05m", "2d04h"; "-" when unknown."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def size(n: float) -> str:
    """Bytes, short: "512B", "300M", "8G"."""
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024:
            return f"{value:.0f}{unit}"
        value /= 1024
    return f"{value:.1f}T"
