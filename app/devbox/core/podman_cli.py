"""podman's CLI as a quick client of the same API service, for the first questions of a
command, asked before podman-py is loaded.

podman-py costs ~170 ms of CPU to import (requests, urllib3, its own modules): more than a
whole ``terraform plan`` leaves free on two cores, and most of a new environment's start.
A no-op ``vm up`` asks podman three questions (the image, its base, the builder image) and
nothing else; a ``start-work`` whose container runs asks those and whether its container
is there; a new one asks them while podman-py loads in the background for the create.
``podman --url URL`` is podman's own remote client: one Go process (~15 ms) talking to the
very service podman-py would, so the answers are the same records (``Id``, ``Created``,
``Labels`` of the libpod inspect; a test compares them). It is asked only while podman-py
is not loaded yet; anything unexpected (no local ``podman`` binary, a refused connection,
an unknown answer) raises ``NoAnswer`` and the caller asks podman-py, whose errors carry
the remedies (and podman.autostart).

Part of the podman adapter (``core/podman.py`` calls it; nothing else does).
"""

from __future__ import annotations

import json
import shutil

from devbox.core import early_images, proc
from devbox.core.errors import DevboxError
from devbox.core.podman_records import ContainerRecord, ImageRecord, _container, _image

# a quick question: a service that takes longer (a hung listener, a busy service) is
# left to podman-py, whose timeouts and errors say what is wrong
TIMEOUT = 3.0

#: podman's wording for an image it does not have (4.x: "image not known")
_MISSING = ("image not known", "no such image")
_NO_CONTAINER = "no such container"


class NoAnswer(Exception):
    """The CLI could not answer: ask podman-py."""


def _run(url: str, *args: str, first: bool = False) -> proc.Completed:
    """``first``: the command's first question, which the entry point may have asked
    already (``early_images.py``); it is recorded for the next run of the command."""
    exe = shutil.which("podman")
    if exe is None:
        raise NoAnswer("no podman binary")
    argv = [exe, "--url", url, *args]
    if first:
        early_images.remember(argv)
        done = early_images.answer(argv)
        if done is not None:
            return done
    try:
        return proc.run(argv, tool="podman", timeout=TIMEOUT)
    except DevboxError as exc:
        raise NoAnswer(exc.message) from None


def ping(url: str) -> bool:
    """The service at ``url`` answers. Every remote podman command pings the service
    (``/_ping``) before its own call; ``image exists`` is the cheapest call (~10 ms, where
    ``version`` and ``info`` take 0.2-0.3 s on the service's side). Exit 0 or 1 (there or
    not) is an answer; 125 is none."""
    try:
        return _run(url, "image", "exists", "localhost/devbox-ping:none").returncode in (0, 1)
    except NoAnswer:
        return False


def images(url: str, refs: list[str]) -> dict[str, ImageRecord | None]:
    """Each image of ``refs`` as the service has it (``None``: it has none by that name), in
    one call. podman prints the ones it has, in order, and names each missing one on stderr
    (``unable to inspect "REF"``). Raises ``NoAnswer`` for anything else."""
    done = _run(url, "image", "inspect", "--format", "json", *refs, first=True)
    missing = {r for r in refs if f'inspect "{r}"' in done.stderr} if not done.ok else set()
    if not done.ok and not (missing and any(m in done.stderr for m in _MISSING)):
        raise NoAnswer(done.last_error())
    try:
        found = json.loads(done.stdout) if done.stdout.strip() else []
    except ValueError:
        raise NoAnswer("unexpected output of podman image inspect") from None
    present = [r for r in refs if r not in missing]
    if len(found) != len(present):
        raise NoAnswer("podman image inspect answered for other images than asked")
    out: dict[str, ImageRecord | None] = dict.fromkeys(refs)
    for ref, attrs in zip(present, found, strict=True):
        out[ref] = _image(attrs)
    return out


def container(url: str, ref: str) -> ContainerRecord | None:
    """The container ``ref`` (the same record as podman-py's inspect gives), or ``None``.
    Raises ``NoAnswer`` for anything else."""
    done = _run(url, "container", "inspect", "--format", "json", ref)
    if not done.ok:
        if _NO_CONTAINER in done.stderr:
            return None
        raise NoAnswer(done.last_error())
    try:
        (attrs,) = json.loads(done.stdout)
    except ValueError:
        raise NoAnswer("unexpected output of podman container inspect") from None
    return _container(attrs)
