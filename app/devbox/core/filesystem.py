"""Small filesystem helpers every artifact record needs: atomic writes, free space.

A record (the stat cache, ``.build/disk.json``, terraform's recorded variables) is either the old file or
the new one, never half of either, even when devbox is killed mid-write or the disk fills.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Any

from devbox.core.errors import DevboxError, DiskFull


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def free_bytes(path: Path) -> int | None:
    """Free space for an unprivileged writer on the filesystem holding ``path`` (or its
    nearest existing parent)."""
    for d in (path, *path.parents):
        if d.exists():
            try:
                st = os.statvfs(d)
            except OSError:
                return None
            return st.f_bavail * st.f_frsize
    return None


def os_error(exc: OSError, doing: str) -> DevboxError:
    """An OSError as a one-line devbox error (disk full gets its own exit code)."""
    if exc.errno == errno.ENOSPC:
        return DiskFull(f"disk full while {doing}", "free disk space and run the command again")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DevboxError(f"{doing} failed: {exc.strerror}", "check the permissions of the path")
    return DevboxError(f"{doing} failed: {exc.strerror or exc}", "check the path and its permissions")
