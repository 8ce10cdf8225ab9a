"""The ``devbox`` command's entry point: what must start before devbox's own modules load.

Importing the CLI (argparse, every command, the core they call) costs ~0.1 s of CPU before
the first line of a command runs. ``vm up``'s terraform plan needs none of it, so it is
started first, from the command the last plan recorded (``core/plan_launch.py``: standard
library, ``repo_root`` and ``proc`` only), and runs while the rest is imported; so does the
podman question ``start-work`` and ``vm up`` ask first (``core/early_images.py``).
"""

from __future__ import annotations

import sys
from typing import NoReturn


def run() -> None:
    from devbox.core import early_images, plan_launch
    from devbox.core.errors import ExitCode

    plan_launch.launch(sys.argv[1:])
    early_images.launch(sys.argv[1:])  # start-work's and vm up's first podman question
    try:
        from devbox.cli import main

        code = main()
    except KeyboardInterrupt:  # Ctrl-C while the CLI was still loading (after, main handles it)
        sys.stderr.write("devbox: interrupted\n")
        code = int(ExitCode.INTERRUPTED)
    finally:
        plan_launch.discard()  # a plan nobody took must not outlive the command (main stops it too)
        early_images.discard()
    end(code)


def end(code: int) -> NoReturn:
    """End the process without the interpreter's own shutdown, which was ~35 ms of a 0.3-0.4 s
    command (a last GC pass, every module torn down). What devbox must do at its end is done
    by now: the log file closed, the session and its children stopped, the output flushed
    here. A thread of devbox's own still running (not a daemon) gets the normal exit, which
    waits for it."""
    import contextlib
    import os
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that left (a closed pipe), a closed stream
            stream.flush()
    os._exit(code)
