"""``vm up``'s terraform plan, started before the rest of devbox is imported.

A no-op ``vm up`` is a ``terraform plan`` (the authority on the VM, ~0.25 s) plus devbox's
own work around it: Python's start, devbox's imports, the image and disk checks, libvirt's
answers. The plan can only overlap that work if it starts first. ``devbox``'s entry point
(``devbox/entry.py``) calls ``prestart`` with the command line before importing the CLI:
for ``vm up`` it loads the settings (config and terraform modules only) and starts the plan
with the variables of the last plan (``.build/terraform/vars.tfvars.json``), which are
today's variables unless something changed.

``vm up`` then ``take``s it and uses its answer only when the variables it computes under
the VM lock are those the early plan used and terraform's state is the one it planned
against (its ``serial`` unchanged: no apply by another ``vm up`` came between); otherwise the
answer is thrown away (its terraform stopped) and the plan runs again under the lock, as
before. The early plan runs outside that lock, so it has files of its own (``early-PID.*``,
removed after) and never writes the plan a concurrent ``vm up`` applies; terraform's state
lock orders it with any apply. Nothing is started for a first ``vm up``, an interrupted
apply, a module that needs ``terraform init``, or ``--force-disk``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox.core.errors import DevboxError
from devbox.core.events import Reporter, null_sink
from devbox.core.filesystem import read_json

if TYPE_CHECKING:  # loaded by prestart for vm up only: other commands never import VM mode's modules
    from devbox.core import terraform

_started: EarlyPlan | None = None  # one per process: the entry point's
_tried = False  # prestart runs once (the entry point's call, then the CLI's own)


class EarlyPlan:
    """A plan of the recorded variables, running in a thread of its own."""

    def __init__(self, runner: terraform.Runner, wanted: dict[str, Any], origin: str) -> None:
        self.origin = origin  # when it started, for the log: "with devbox", "beside the disk check"
        self.runner = runner
        self.wanted = _normal(wanted)
        self.serial = runner.serial()  # the state it plans against
        self.plan: terraform.Plan | None = None
        self.cancel = threading.Event()
        tag = f"early-{os.getpid()}"
        self.files = (runner.dir / f"{tag}.tfvars.json", runner.dir / f"{tag}.tfplan")
        self.thread = threading.Thread(target=self._run, name="early-plan", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.plan = self.runner.plan(
                self.wanted, Reporter(null_sink, "vm-up"), self.cancel, var_file=self.files[0], out=self.files[1]
            )
        except DevboxError:
            self.plan = None  # the plan made under the lock reports it

    def answer(self, runner: terraform.Runner, wanted: dict[str, Any]) -> terraform.Plan | None:
        """Its answer when it planned exactly this (same checkout, same variables, the state
        unchanged since); else ``None``, and it is stopped. An answer with changes is
        applied from its own plan file (``stop`` afterwards removes it)."""
        if runner.dir != self.runner.dir or _normal(wanted) != self.wanted:
            self.stop()
            return None
        self.thread.join()
        if runner.serial() != self.serial:  # another vm up applied meanwhile: plan again
            self.stop()
            return None
        return self.plan

    def stop(self) -> None:
        """Stop its terraform (its process group: the provider too), wait, remove its files."""
        self.cancel.set()
        self.thread.join()
        for f in self.files:
            f.unlink(missing_ok=True)


def _normal(variables: dict[str, Any]) -> Any:
    return json.loads(json.dumps(variables))  # as the variables file holds them (lists, not tuples)


def _command(argv: Sequence[str]) -> tuple[list[str], Path | None]:
    """The command words and ``--repo`` of a devbox command line (``-v`` anywhere)."""
    words: list[str] = []
    repo: Path | None = None
    it = iter(argv)
    for a in it:
        if a == "--repo":
            repo = Path(next(it, ".")).expanduser()
        elif a.startswith("--repo="):
            repo = Path(a.split("=", 1)[1]).expanduser()
        elif not a.startswith("-"):
            words.append(a)
    return words, repo


def prestart(argv: Sequence[str]) -> None:
    """Start ``vm up``'s plan now, when it can be started from what is recorded."""
    global _started, _tried
    words, repo = _command(argv)
    if _tried:
        return
    _tried = True
    if words[:2] != ["vm", "up"] or "--force-disk" in argv or "-h" in argv or "--help" in argv:
        return
    from devbox.core import config, terraform

    try:
        runner = terraform.Runner(config.load(config.find_repo(repo)))
        recorded = read_json(runner.vars)
        if not isinstance(recorded, dict) or not runner.has_state() or runner.interrupted():
            return
        if not runner.initialized():
            return  # terraform init is the locked path's to run
        _started = EarlyPlan(runner, recorded, "started with devbox, before its imports")
    except (DevboxError, OSError):
        return  # the command itself reports whatever is wrong


def take() -> EarlyPlan | None:
    """The plan ``prestart`` started (once; the caller answers for stopping it)."""
    global _started
    started, _started = _started, None
    return started


def stop() -> None:
    """At the command's end: a plan nobody took (the command failed first) is stopped."""
    started = take()
    if started is not None:
        started.stop()
