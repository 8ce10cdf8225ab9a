"""What every CLI command shares: the ``Context`` it gets (session, renderer, cancel
event, the operation's log file), JSON output and the lines of what failed. Its own module so that ``cli.py`` (the
parser and ``main``) and ``cli_vm.py`` (VM mode's commands) both use it without importing
each other."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devbox.core.config import Settings
from devbox.core.oplog import OpLog
from devbox.core.ops.results import Problem
from devbox.core.session import Devbox
from devbox.render import Renderer


class Context:
    """What every command gets: the session, a renderer, a cancel event, and the
    operation's log file (made at its first event: views that report nothing make none)."""

    def __init__(self, args: argparse.Namespace, renderer: Renderer, argv: Sequence[str]) -> None:
        self.args = args
        self.renderer = renderer
        self.cancel = threading.Event()
        self.argv = list(argv)
        self.oplog: OpLog | None = None
        self.log_name = ""  # the log file's operation name; default: the first event's operation
        start = Path(args.repo).expanduser() if args.repo else None
        # `devbox init` runs before there is a devbox.toml: no session for it
        self._session = None if getattr(args, "sessionless", False) else Devbox.open(start)

    @property
    def session(self) -> Devbox:
        assert self._session is not None, "a command without a session asked for one"
        return self._session

    @property
    def settings(self) -> Settings:
        return self.session.settings

    def sink(self, event: Any) -> None:
        if self.oplog is None:
            self._open_log(self.log_name or getattr(event, "op", "") or "devbox")
        if self.oplog is not None:
            self.oplog.write(event)
        self.renderer(event)

    def _open_log(self, op: str) -> None:
        try:
            self.oplog = OpLog(self.settings.build_path("logs"), op, shlex.join(["devbox", *self.argv]))
        except OSError:
            return  # an unwritable .build/ must not stop the operation: the screen still shows it
        self.renderer.log_path = self.oplog.path

    def finish(self, outcome: str) -> None:
        if self.oplog is not None:
            self.oplog.close(outcome)

    def close(self) -> None:
        """The session's adapters: its podman client, and the ssh it keeps to a VM's host; and
        the log file, when a path that did not finish it left it open (the process may end
        without the interpreter's shutdown: devbox/entry.py)."""
        if self._session is not None:
            self._session.close()
        if self.oplog is not None:
            self.oplog.close()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def failures(failed: Sequence[tuple[str, Problem]]) -> int:
    """Several things started at once (``start-work A B C``, ``agent start TASK --count N``):
    one line per one that failed, on stderr; the exit code is the first failure's."""
    for name, why in failed:
        sys.stderr.write(f"devbox: {name}: {why.one_line()}\n")
    return failed[0][1].exit_code if failed else 0


def egress_flags(p: argparse.ArgumentParser, default: str) -> None:
    """--egress and --allow on the commands that make environments."""
    p.add_argument("--egress", choices=("open", "allow", "none"), default="",
                   help=f"where a new environment may connect (default: {default})")  # fmt: skip
    p.add_argument("--allow", action="append", default=[], metavar="HOST",
                   help="a name it may reach besides its list (with --egress allow); repeatable")  # fmt: skip
