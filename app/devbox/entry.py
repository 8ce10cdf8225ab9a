"""The ``devbox`` command's entry point: what must start before devbox's own modules load.

Importing the CLI (argparse, every command, the core they call) costs ~0.1 s of CPU before
the first line of a command runs. ``vm up``'s terraform plan needs none of it, so it is
started first, from the command the last plan recorded (``core/plan_launch.py``: standard
library, ``repo_root`` and ``proc`` only), and runs while the rest is imported.
"""

from __future__ import annotations

import sys


def run() -> None:
    from devbox.core import plan_launch
    from devbox.core.errors import ExitCode

    plan_launch.launch(sys.argv[1:])
    try:
        from devbox.cli import main

        code = main()
    except KeyboardInterrupt:  # Ctrl-C while the CLI was still loading (after, main handles it)
        sys.stderr.write("devbox: interrupted\n")
        code = int(ExitCode.INTERRUPTED)
    finally:
        plan_launch.discard()  # a plan nobody took must not outlive the command (main stops it too)
    sys.exit(code)
