"""The ``devbox`` command's entry point: what must start before devbox's own modules load.

Importing the CLI (argparse, every command, the core they call) costs ~0.1 s of CPU before
the first line of a command runs. ``vm up``'s terraform plan needs none of it, so it is
started first, from the command the last plan recorded (``core/plan_launch.py``: standard
library, ``repo_root`` and ``proc`` only), and runs while the rest is imported; so does the
podman question ``start-work`` and ``vm up`` ask first (``core/early_images.py``).

The cyclic GC is off while a command starts (``hold_gc``): the imports (podman-py's ~340
modules, devbox's own) allocate objects that it walked again and again, ~7 ms of the ~0.2 s
of CPU a new environment spends before its container is created (measured, A/B).
"""

from __future__ import annotations

import gc
import sys
import threading
from typing import NoReturn

# seconds: a command still running by then gets its cyclic GC back. Its one collection
# walks everything allocated so far (~0.1 s of CPU after podman-py's import), so it comes
# well after the start: ten environments from one command (~2 s) never pay it
GC_BACK = 10.0


def hold_gc() -> threading.Timer | None:
    """The GC off until the command has started; a command still running after ``GC_BACK``
    seconds (a build, a terraform apply) gets it back: one collection (no cycle made while it
    was off is kept), then what is alive is frozen (kept out of every later collection: the
    modules, the session). Most commands end before (``end`` skips the interpreter's
    shutdown, and with it its last collection). Returns the timer that gives it back (None
    when the GC was off already: whoever turned it off turns it on)."""
    if not gc.isenabled():
        return None
    gc.disable()
    back = threading.Timer(GC_BACK, _gc_back)
    back.daemon = True
    back.start()
    return back


def _gc_back() -> None:
    gc.collect()
    gc.freeze()
    gc.enable()


def run() -> None:
    hold_gc()
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
