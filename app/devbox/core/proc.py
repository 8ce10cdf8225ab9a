"""Running a tool as a child process: argument lists only, streamed, cancellable.

Every adapter that runs a long command (podman build, later bootc-image-builder and
terraform) goes through ``stream``: each output line goes to the sink as it appears; a set
cancel event sends SIGINT to the child (in its own session, so a terminal Ctrl-C reaches
it once, through us), then SIGTERM and SIGKILL if it does not stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devbox.core.events import LogLine, Sink


@dataclass(frozen=True)
class Finished:
    returncode: int
    cancelled: bool
    tail: tuple[str, ...]  # the last lines of output, for error messages


def _stopper(proc: subprocess.Popen[bytes], cancel: threading.Event, grace: float) -> None:
    while proc.poll() is None:
        if cancel.wait(0.1):
            break
    else:
        return
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def stream(
    argv: Sequence[str],
    source: str,
    sink: Sink,
    cancel: threading.Event,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    grace: float = 20.0,
    tail_lines: int = 30,
) -> Finished:
    """Run ``argv``, report stdout+stderr line by line, honour ``cancel``."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    stopper = threading.Thread(target=_stopper, args=(proc, cancel, grace), daemon=True)
    stopper.start()
    tail: deque[str] = deque(maxlen=tail_lines)
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\r\n")
        tail.append(line)
        sink(LogLine(source, line))
    rc = proc.wait()
    stopper.join()
    return Finished(rc, cancel.is_set(), tuple(tail))


def run(argv: Sequence[str], *, cwd: Path | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run a short command and capture its output (text)."""
    return subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
    )
