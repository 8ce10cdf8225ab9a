"""``vm up``'s terraform plan, running while devbox does the rest of its work.

A no-op ``vm up`` is a ``terraform plan`` (the authority on the VM, ~0.25 s) plus devbox's
own work around it: Python's start, devbox's imports, the image and disk checks, libvirt's
answers. The plan overlaps that work when it is started first: by the entry point, before
devbox's imports, from the command the last plan recorded (``core/plan_launch.py``), else by
``vm up`` itself with the recorded disk, beside the image and disk checks.

``vm up`` uses its answer only when the variables it computes under the VM lock are those
the early plan used, the command is the one it would run now, and terraform's state is the
one it planned against (its ``serial`` unchanged: no apply by another ``vm up`` came
between); otherwise the answer is thrown away (its terraform stopped) and the plan runs
again under the lock. The early plan runs outside that lock, so it has files of its own
(``early-PID.*``, removed after) and never writes the plan a concurrent ``vm up`` applies;
terraform's state lock orders it with any apply.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox.core import plan_launch
from devbox.core.errors import DevboxError
from devbox.core.events import Reporter, null_sink

if TYPE_CHECKING:  # loaded by vm up only: other commands never import VM mode's modules
    from devbox.core import terraform


class EarlyPlan:
    """A plan of the recorded variables, waited for in a thread of its own: one this process
    starts (``runner.plan``), or the one the entry point launched (``launched``)."""

    def __init__(self, runner: terraform.Runner, wanted: dict[str, Any], origin: str,
                 launched: plan_launch.Launched | None = None) -> None:  # fmt: skip
        self.origin = origin  # when it started, for the log: "with devbox", "beside the disk check"
        self.runner = runner
        self.launched = launched
        self.plan: terraform.Plan | None = None
        self.unused = ""  # why its answer was not used (said in the log, -v)
        self.cancel = threading.Event()
        self.wanted: Any
        self.files: tuple[Path, ...]
        if launched is not None:
            self.wanted, self.serial, self.files = launched.variables, launched.serial, launched.files
        else:
            tag = f"early-{os.getpid()}"
            self.wanted, self.serial = _normal(wanted), runner.serial()  # the state it plans against
            self.files = (runner.dir / f"{tag}.tfvars.json", runner.dir / f"{tag}.tfplan")
        self.thread = threading.Thread(target=self._run, name="early-plan", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from devbox.core import proc, terraform

        try:
            if self.launched is None:
                self.plan = self.runner.plan(
                    self.wanted, Reporter(null_sink, "vm-up"), self.cancel, var_file=self.files[0], out=self.files[1]
                )
            else:
                done = proc.finish(
                    self.launched.child,
                    tool="terraform",
                    output=self.files[2],
                    timeout=terraform.PLAN_TIMEOUT,
                    cancel=self.cancel,
                    remedy=terraform.PLAN_REMEDY,
                )
                self.plan = self.runner.plan_result(done, self.files[0], self.files[1])
        except DevboxError as exc:
            self.plan = None  # the plan made under the lock reports it
            self.unused = f"it failed: {exc.one_line()}"

    def answer(self, runner: terraform.Runner, wanted: dict[str, Any]) -> terraform.Plan | None:
        """Its answer when it planned exactly this (same checkout, same variables, the same
        command, the state unchanged since); else ``None``, and it is stopped. An answer with
        changes is applied from its own plan file (``stop`` afterwards removes it)."""
        same = runner.dir == self.runner.dir and _normal(wanted) == self.wanted
        if same and self.launched is not None:
            same = (self.launched.argv == runner.plan_argv(self.files[0], self.files[1])
                    and self.launched.env == runner.env())  # fmt: skip
        if not same:
            self.stop()  # (its thread then says "interrupted": the reason is this)
            self.unused = "it planned other variables, another command or environment"
            return None
        self.thread.join()
        if runner.serial() != self.serial:  # another vm up applied meanwhile: plan again
            self.stop()
            self.unused = "the state changed while it planned"
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


def prestart(argv: Sequence[str]) -> None:
    """Start ``vm up``'s recorded plan now (``plan_launch``), when the entry point did not."""
    plan_launch.launch(argv)


def take(runner: terraform.Runner) -> EarlyPlan | None:
    """The plan the entry point launched, for ``runner``'s checkout (once; the caller answers
    for stopping it). One launched for another build directory is stopped."""
    launched = plan_launch.take()
    if launched is None:
        return None
    early = EarlyPlan(runner, {}, "started with devbox, before its imports", launched)
    if launched.build.resolve() != runner.dir.resolve():
        early.stop()
        return None
    return early


def stop() -> None:
    """At the command's end: a plan nobody took (the command failed first) is stopped."""
    plan_launch.discard()
