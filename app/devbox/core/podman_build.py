"""The podman adapter's long CLI runs: ``podman build`` streamed, stopped so that it cleans
up after itself, and found again when devbox was killed mid-build; and ``podman run`` of a
tool container (bootc-image-builder), removed by name when interrupted.

Part of the podman adapter: ``image.py`` and ``builder.py`` call it (the podman CLI runs
nowhere else; podman-py stays in ``podman.py``). Builds use the CLI,
not the REST API: a REST build runs its current RUN step to the end after the client
leaves, while a local ``podman build`` can be stopped.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devbox.core import proc, proc_table
from devbox.core.errors import BuildFailed, Cancelled, DevboxError, DiskFull, PodmanMissing, ToolMissing
from devbox.core.events import Reporter
from devbox.core.filesystem import read_json, write_json
from devbox.core.podman import INSTALL_REMEDY, Podman


def build(
    cli: list[str],
    context: Path,
    tag: str,
    labels: Mapping[str, str],
    report: Reporter,
    cancel: threading.Event,
    *,
    record: Path,
    no_cache: bool = False,
    ignorefile: Path | None = None,
    build_args: Mapping[str, str] | None = None,
) -> str:
    """Build ``context`` and tag it ``tag``; return the new image ID.

    The tag moves only when the build succeeds, so an interrupted or failed build leaves
    the previous image tagged and usable. ``record`` names the running build (pid and
    start time) so that a devbox killed mid-build is found and stopped by the next run.
    """
    take_over_build(record, report)
    argv = list(cli)
    with tempfile.TemporaryDirectory(prefix="devbox-build-") as tmp:
        iidfile = Path(tmp) / "iid"
        argv += ["build", "--tag", tag, "--iidfile", str(iidfile)]
        for key, value in sorted(labels.items()):
            argv += ["--label", f"{key}={value}"]
        if no_cache:
            argv.append("--no-cache")
        if ignorefile is not None:
            argv += ["--ignorefile", str(ignorefile)]
        for key, value in sorted((build_args or {}).items()):
            argv += ["--build-arg", f"{key}={value}"]
        argv += ["--file", str(context / "Containerfile"), str(context)]

        def started(pid: int) -> None:
            with contextlib.suppress(OSError):
                write_json(record, {"pid": pid, "start": proc_table.start_time(pid), "tag": tag})

        try:
            done = proc.stream(
                argv, report, cancel, source="podman", on_start=started, stop=lambda p: stop_build(p.pid)
            )
        except ToolMissing:
            raise PodmanMissing("podman is not installed (no `podman` on PATH)", INSTALL_REMEDY) from None
        finally:
            with contextlib.suppress(OSError):
                record.unlink()
        if done.cancelled:
            raise Cancelled("image build interrupted", f"the previous image {tag} is untouched")
        if done.returncode != 0:
            raise _build_error(done, context)
        try:
            return iidfile.read_text().strip()
        except OSError:
            return ""


def run_tool(
    podman: Podman,
    args: list[str],
    report: Reporter,
    cancel: threading.Event,
    *,
    name: str,
    source: str,
    parse: proc.ProgressParser | None = None,
) -> proc.Finished:
    """``podman run`` of a tool container, streamed. On cancel the named container is removed
    (stopping the client alone leaves it running)."""

    def stop(p: Any) -> None:
        with contextlib.suppress(DevboxError):
            podman.run_cli("rm", "--force", "--time", "2", name, timeout=60)
        proc_table.kill([p.pid], signal.SIGTERM)

    try:
        return proc.stream([*podman.cli(), *args], report, cancel, source=source, parse=parse, stop=stop)
    except ToolMissing:
        raise PodmanMissing("podman is not installed (no `podman` on PATH)", INSTALL_REMEDY) from None


def _build_error(done: proc.Finished, context: Path) -> DevboxError:
    text = "\n".join(done.tail).lower()
    tail = tuple(done.tail)
    if "no space left on device" in text:
        return DiskFull(
            "disk full while building the image",
            "free space (podman system prune; df -h) and run `devbox image build` again",
            detail=tail,
        )
    if "initializing source" in text or "pinging container registry" in text or "manifest unknown" in text:
        return BuildFailed(
            "podman could not pull the base image named in the Containerfile",
            "check the network and registry login (podman login quay.io), then build again",
            detail=tail,
        )
    for line in done.tail:  # podman answers a bad COPY source with a dump of Go structs: say it in one line
        # (a third form, seen once in CI: "reading "/ctx/x": error encoding request for copier
        # subprocess: write |1: broken pipe", when podman's copier process died on the bad source)
        if any(m in line for m in ("error during bulk transfer for copier", "copier: get:", "copier: stat:",
                                   "request for copier subprocess")):  # fmt: skip
            return _copy_error(line, context, tail)
    return BuildFailed(
        f"podman build failed (exit {done.returncode})",
        f"fix the step shown above in {context.name}/ and run `devbox image build` again",
        detail=tail,
    )


def _copy_error(line: str, context: Path, tail: tuple[str, ...]) -> DevboxError:
    step = re.search(r'building at STEP "([^"]*)"', line)
    source = re.search(r'reading "([^"]*)"', line)
    # podman 4.3 says either (which one depends on its cache): "... reading "/ctx/x": ..."
    # or "checking on sources under "/ctx": copier: stat: "/x": no such file or directory"
    stat = re.search(r'copier: stat: "([^"]*)"', line)
    cause = line.rsplit("}: ", 1)[-1].removeprefix("copier: get: ")[:200]
    where = f" at {step.group(1)!r}" if step else ""
    if source or stat:
        path = Path(source.group(1)) if source else context / (stat.group(1).lstrip("/") if stat else "")
        if path.is_symlink():
            target = os.path.realpath(path)
            if not target.startswith(str(context.resolve()) + os.sep):
                return BuildFailed(
                    f"podman build failed{where}: {path.name} is a symlink to {target}, outside the build context",
                    f"copy the file itself into {context.name}/ instead of a symlink, then build again",
                    detail=tail,
                )
    return BuildFailed(
        f"podman build failed{where}: {cause}",
        f"check the COPY source in {context.name}/Containerfile, then build again",
        detail=tail,
    )


def stop_build(pid: int) -> None:
    """Stop a ``podman build`` so that it cleans up after itself.

    Signalled, podman 4.x leaves its RUN step running (reparented to init) and its working
    container behind. Killed RUN processes instead make the step fail, and a failed build
    removes its own working container. So: SIGKILL everything below podman's direct
    children (the RUN step's processes; PID 1 of a container ignores SIGTERM), give podman
    time to fail the step, and only then signal podman itself.
    """
    for _ in range(3):
        levels = proc_table.descendants(pid)
        if not proc_table.kill([p for level in levels[1:] for p in level]):
            break
        if proc_table.wait_gone(pid, 10.0):
            return
    for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if not proc_table.kill([pid], sig) or proc_table.wait_gone(pid, wait):
            return


def take_over_build(record: Path, report: Reporter) -> None:
    """A build left running by a devbox that was killed: say so and stop it."""
    data = read_json(record)
    if not isinstance(data, dict):
        return
    pid, start = data.get("pid"), data.get("start")
    if isinstance(pid, int) and start is not None and proc_table.start_time(pid) == start:
        report.log(
            f"an image build left running by an earlier devbox run (podman pid {pid}) is still going: stopping it"
        )
        stop_build(pid)
    with contextlib.suppress(OSError):
        record.unlink()
