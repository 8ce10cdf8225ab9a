"""A command's first podman question, asked by the entry point before devbox is imported.

``start-work`` and ``vm up`` begin by asking podman about the image and its bases (one
``podman --url URL image inspect`` process, ~40 ms, see ``podman_cli.py``), and only after
Python has imported the CLI and the core (~70 ms) could they ask. The question is the same
from one run to the next, so each run records it (``.build/early-images.json``: the argument
list per command) and the next run of that command starts it first thing, while the rest is
imported. ``podman_cli`` takes its answer only when it is about to ask exactly that
argument list; anything else (another image name, another socket) asks anew and the early
one is stopped. It is a read-only question: an answer asked ~0.1 s earlier is one that
could have been asked then. Standard library, ``repo_root`` and ``proc`` only, like
``plan_launch``, and only for the default build directory (``<repo>/.build``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from devbox.core import proc, repo_root
from devbox.core.errors import DevboxError
from devbox.core.plan_launch import command_words

if TYPE_CHECKING:
    import subprocess

RECORD = "early-images.json"
COMMANDS = ("start-work", "vm up")  # the commands whose first question is the image one
TIMEOUT = 3.0  # as podman_cli's own questions


class _Early:
    def __init__(self, child: subprocess.Popen[bytes], argv: list[str], out: Path, err: Path) -> None:
        self.child, self.argv, self.out, self.err = child, argv, out, err

    def close(self, *, stop: bool) -> None:
        if stop:
            proc.stop(self.child, grace=0.5)
        for f in (self.out, self.err):
            f.unlink(missing_ok=True)


_record: Path | None = None  # where this command's question is recorded (None: not recorded)
_key = ""
_early: _Early | None = None
_remembered = False


def launch(argv: Sequence[str]) -> None:
    """For ``start-work`` and ``vm up``: start the question the last run of the command
    asked first (nothing for other commands, or without a record)."""
    global _record, _key, _early
    words, repo = command_words(argv)
    key = next((c for c in COMMANDS if words[: len(c.split())] == c.split()), "")
    if not key or any(a in ("-h", "--help") or a.startswith("--host") for a in argv):
        return  # (--host: the question goes to another machine's podman)
    try:
        build = repo_root.find_repo(repo) / ".build"
    except DevboxError:
        return  # the command says what is wrong with the project
    _record, _key = build / RECORD, key
    try:
        asked = [str(a) for a in json.loads(_record.read_text())[key]]
    except (OSError, ValueError, KeyError, TypeError):
        return
    out, err = (build / f".early-images-{os.getpid()}.{x}" for x in ("out", "err"))  # this process's own
    try:
        child = proc.launch(asked, tool="podman", cwd=build, env={}, output=out, errors=err)
    except (DevboxError, OSError):
        for f in (out, err):
            f.unlink(missing_ok=True)
        return
    _early = _Early(child, asked, out, err)


def answer(argv: Sequence[str]) -> proc.Completed | None:
    """The early question's answer when it asked exactly ``argv`` (once), else ``None``
    (and a different early question is stopped: nobody will want it). One that did not
    answer in time answers as a failed run, so the caller does not wait a second time."""
    global _early
    early, _early = _early, None
    if early is None:
        return None
    if early.argv != list(argv):
        early.close(stop=True)
        return None
    try:
        done = proc.finish(early.child, tool="podman", output=early.out, errors=early.err, timeout=TIMEOUT)
    except DevboxError as exc:  # (stopped by finish) no answer in time: as the caller's own run would say
        done = proc.Completed(tuple(early.argv), 125, "", exc.message)
    finally:
        early.close(stop=False)
    return done


def remember(argv: Sequence[str]) -> None:
    """Record ``argv`` as this command's first question (the first one asked, once)."""
    global _remembered
    if _record is None or _remembered:
        return
    _remembered = True
    try:
        doc = json.loads(_record.read_text())
        doc = doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        doc = {}
    if doc.get(_key) == list(argv):
        return
    doc[_key] = list(argv)
    from devbox.core.filesystem import write_atomic  # (not at the entry point's start)

    with contextlib.suppress(OSError):  # a read-only or full .build/: the next run just asks late
        write_atomic(_record, json.dumps(doc).encode())


def discard() -> None:
    """At the command's end: an early question nobody asked for is stopped."""
    global _early
    early, _early = _early, None
    if early is not None:
        early.close(stop=True)
