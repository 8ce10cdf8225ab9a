"""``vm up``'s terraform plan, started by the entry point before devbox is imported.

A no-op ``vm up`` is a ``terraform plan`` (~0.25 s, the authority on the VM) plus devbox's
own work around it; the plan can only overlap that work if it starts first. Every plan
``vm up`` makes records its command here (``.build/terraform/plan-command.json``: the
argument list with its two file names left open, the directory, devbox's terraform
environment); the next ``devbox vm up`` starts that command with the variables of the last
plan before anything but this module, ``repo_root`` and ``proc`` is imported (no settings,
no terraform adapter: ~25 ms after the process starts instead of ~55).

Whether its answer is used is decided later, with everything loaded
(``core/early_plan.py``): only when the command is exactly the one ``vm up`` would run now,
with exactly the variables it computes, against the state it planned against. Its files are
its own (``early-PID.*``), so it never writes a plan another ``vm up`` applies. Nothing is
started when there is no record, no state, or an apply was interrupted. The record is only
looked for in the default build directory (``<repo>/.build``): with ``paths.build`` set,
``vm up`` starts its plan beside the image and disk checks instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from devbox.core import proc, repo_root
from devbox.core.errors import DevboxError

if TYPE_CHECKING:
    import subprocess

RECORD = "plan-command.json"
VARS, PLAN = "@VARS@", "@PLAN@"  # the open file names in the recorded argument list


class Launched:
    """A plan started from the record: the child, what it runs, and what it planned against."""

    def __init__(self, child: subprocess.Popen[bytes], argv: list[str], env: dict[str, str | None],
                 variables: object, serial: object, files: tuple[Path, Path, Path], build: Path) -> None:  # fmt: skip
        self.child, self.argv, self.env = child, argv, env
        self.variables, self.serial = variables, serial  # as read when it started
        self.files = files  # its variables, its plan, its output
        self.build = build  # the .build/terraform it belongs to


_launched: Launched | None = None
_tried = False


def record(build: Path, argv: Sequence[str], cwd: str, env: Mapping[str, str | None], state: Path,
           applying: Path) -> None:  # fmt: skip
    """Write the command the next ``vm up`` starts early (unchanged: not rewritten)."""
    doc = {"argv": list(argv), "cwd": cwd, "env": dict(env), "state": str(state), "applying": str(applying)}
    path = build / RECORD
    try:
        if json.loads(path.read_text()) == doc:
            return
    except (OSError, ValueError):
        pass
    from devbox.core.filesystem import write_atomic  # (not at the entry point's start)

    write_atomic(path, json.dumps(doc).encode())


def command_words(argv: Sequence[str]) -> tuple[list[str], Path | None]:
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


def launch(argv: Sequence[str]) -> None:
    """For ``devbox vm up``: start the recorded plan now (once per process), when everything
    it needs is there; ``take`` hands it over."""
    global _launched, _tried
    if not _tried:
        _tried = True
        _launched = start(argv)


def start(argv: Sequence[str]) -> Launched | None:
    """The recorded plan started for this devbox command line, or ``None`` (not ``vm up``,
    no record, no state, an interrupted apply, anything unreadable)."""
    words, repo = command_words(argv)
    if words[:2] != ["vm", "up"] or any(a in argv for a in ("--force-disk", "-h", "--help")):
        return None
    try:
        build = repo_root.find_repo(repo) / ".build" / "terraform"
        rec = json.loads((build / RECORD).read_text())
        state = json.loads(Path(rec["state"]).read_text())
        if not state.get("resources") or Path(rec["applying"]).exists():
            return None  # nothing made yet, or an interrupted apply: the locked path's to handle
        recorded = (build / "vars.tfvars.json").read_bytes()
        variables = json.loads(recorded)  # (read before anything is started)
        run_argv = [str(a) for a in rec["argv"]]
        env = {str(k): (None if v is None else str(v)) for k, v in dict(rec["env"]).items()}
        cwd = Path(rec["cwd"])
    except (DevboxError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # the command itself reports whatever is wrong
    tag = f"early-{os.getpid()}"
    files = (build / f"{tag}.tfvars.json", build / f"{tag}.tfplan", build / f"{tag}.log")
    run_argv = [a.replace(VARS, str(files[0])).replace(PLAN, str(files[1])) for a in run_argv]
    try:
        files[0].write_bytes(recorded)
        child = proc.launch(run_argv, tool="terraform", cwd=cwd, env=env, output=files[2])
    except (DevboxError, OSError):
        for f in files:
            f.unlink(missing_ok=True)
        return None
    return Launched(child, run_argv, env, variables, state.get("serial"), files, build)


def take() -> Launched | None:
    """The plan ``launch`` started (once; the taker answers for stopping it)."""
    global _launched
    launched, _launched = _launched, None
    return launched


def discard() -> None:
    """At the command's end: a plan nobody took (the command failed first) is stopped and
    its files removed."""
    launched = take()
    if launched is not None:
        proc.stop(launched.child, grace=1.0)
        for f in launched.files:
            f.unlink(missing_ok=True)
