"""Processes devbox started and may have to find again, read from /proc: when one started
(a pid plus its start time names one process for good), its children and descendants, and
signalling or waiting for them. Apart from ``proc.py`` (which starts and waits for
processes) because nothing here starts one."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence


def started_at(pid: int) -> float | None:
    """When ``pid`` started, as epoch seconds (its start time is in clock ticks since boot:
    the boot time from ``/proc/stat`` is added), or None if it is gone."""
    ticks = start_time(pid)
    if ticks is None:
        return None
    try:
        with open("/proc/stat", "rb") as fh:
            btime = next(int(line.split()[1]) for line in fh if line.startswith(b"btime "))
    except (OSError, StopIteration, ValueError):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone.

    A pid plus its start time names one process for good: pids are reused, start times
    are not.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc, every thread's list)."""
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids += [int(x) for x in fh.read().split()]
        except OSError:
            continue
    return kids


def descendants(pid: int) -> list[list[int]]:
    """The process tree below ``pid``, level by level (children first)."""
    levels: list[list[int]] = []
    level = children(pid)
    while level:
        levels.append(level)
        level = [k for p in level for k in children(p)]
    return levels


def kill(pids: Sequence[int], sig: int = signal.SIGKILL) -> int:
    """Signal each pid that still exists; return how many were signalled."""
    n = 0
    for pid in pids:
        try:
            os.kill(pid, sig)
            n += 1
        except (ProcessLookupError, PermissionError):
            continue
    return n


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while start_time(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def pid_namespace(pid: int) -> str:
    """``pid``'s pid namespace (``pid:[4026532...]``), or "" when it cannot be read."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def namespaces_running(command: str) -> set[str]:
    """The pid namespaces in which some process named ``command`` (its ``comm``) runs: one
    pass over /proc, for every container at once, no process started."""
    found: set[str] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm", "rb") as fh:
                if not fh.read().startswith(command.encode()):
                    continue
            found.add(os.readlink(f"/proc/{entry}/ns/pid"))
        except OSError:
            continue
    return found
