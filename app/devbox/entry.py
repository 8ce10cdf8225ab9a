"""The ``devbox`` command's entry point: what must start before devbox's own modules load.

Importing the CLI (argparse, every command, the core they call) costs ~0.1 s of CPU before
the first line of a command runs. ``vm up``'s terraform plan needs none of it, so it is
started first, from the command the last plan recorded (``core/plan_launch.py``: standard
library, ``repo_root`` and ``proc`` only), and runs while the rest is imported; so does the
podman question ``start-work`` and ``vm up`` ask first (``core/early_images.py``).
"""

from __future__ import annotations

import sys


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
    sys.exit(code)
