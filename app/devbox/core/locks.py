"""Advisory file locks under .build/locks/, so concurrent devbox runs do not collide."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from devbox.core.errors import Busy, Cancelled, DevboxError, DiskFull

WAIT_FIRST, WAIT_MOST = 0.005, 0.2  # seconds between looks at a lock another run holds


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip() or "0")
        if pid:
            return f" (pid {pid})"
    return ""


@contextlib.contextmanager
def hold(
    path: Path,
    what: str,
    *,
    cancel: threading.Event | None = None,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive lock on ``path``.

    Without ``cancel`` it raises Busy at once when another process holds the lock; with
    one it calls ``on_wait`` and waits until the lock is free or ``cancel`` is set.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"disk full: cannot create {path}", "free disk space and run the command again") from None
        raise DevboxError(
            f"cannot create lock file {path}: {exc.strerror}", "make the build directory (paths.build) writable"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if cancel is None:
                raise Busy(
                    f"{what} is already in progress in another devbox process{_holder(fd)}",
                    "wait for it to finish, then run the command again",
                ) from None
            if on_wait is not None:
                on_wait()
            # short holds (a worktree add: tens of ms) are common: look again soon, then less
            # often; a fixed 0.2 s made ten starts at once wait ~0.2 s per turn at the worktree lock
            pause = WAIT_FIRST
            while True:
                if cancel.wait(pause):
                    raise Cancelled(f"interrupted while waiting for {what}") from None
                pause = min(pause * 2, WAIT_MOST)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    continue
        with contextlib.suppress(OSError):  # the holder's pid is a courtesy: a full disk must not fail the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
