"""The podman adapter: the only module that talks to podman.

Queries (inspect, list, stop, remove) go to the libpod REST socket (fast, no process).
Builds, ``run`` and ``exec`` use the podman CLI: ``podman build`` stops a RUN step at once on
SIGINT (a REST client that disconnects leaves the server running the step to its end:
measured 12 s of an interrupted ``sleep``), and ``exec -it`` needs a real terminal. When
podman.url is set, the CLI is pointed at the same service with ``--url``, so both paths
always see the same storage.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devbox.core.errors import BuildFailed, Cancelled, DiskFull, PodmanMissing
from devbox.core.events import LogLine, Sink
from devbox.core.podman_api import PodmanAPI, default_socket
from devbox.core.proc import run, stream

INSTALL_REMEDY = "install podman: sudo dnf install podman (Debian/Ubuntu: sudo apt-get install podman)"


@dataclass(frozen=True)
class ImageInfo:
    id: str
    created: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]


class Podman:
    """One front door to podman for a devbox settings' connection."""

    def __init__(self, url: str = "") -> None:
        self.explicit_url = url
        self.url = url or default_socket()
        self._api: PodmanAPI | None = None
        self._checked = False

    @property
    def api(self) -> PodmanAPI:
        if self._api is None:
            if not self.explicit_url and shutil.which("podman") is None:
                raise PodmanMissing("podman is not installed (no `podman` on PATH)", INSTALL_REMEDY)
            self._api = PodmanAPI(self.url)
        return self._api

    def cli(self) -> list[str]:
        """The argv prefix for the podman CLI, bound to the same service as the API."""
        exe = shutil.which("podman")
        if exe is None:
            raise PodmanMissing("podman is not installed (no `podman` on PATH)", INSTALL_REMEDY)
        return [exe, "--url", self.explicit_url] if self.explicit_url else [exe]

    def check(self) -> None:
        """Fail with the right error when podman is missing or its socket is not answering."""
        if self._checked:
            return
        self.cli()
        self.api.ping()
        self._checked = True

    # images -------------------------------------------------------------------------
    def image(self, name: str) -> ImageInfo | None:
        data = self.api.image(name)
        if data is None:
            return None
        config: dict[str, Any] = data.get("Config") or {}
        labels = data.get("Labels") or config.get("Labels") or {}
        return ImageInfo(id=str(data.get("Id", "")), created=str(data.get("Created", "")), labels=labels)

    def _build_containers(self) -> set[str]:
        """IDs of buildah working containers (podman lists them with --external only)."""
        res = run([*self.cli(), "ps", "--all", "--external", "--format", "json"])
        if res.returncode != 0:
            return set()
        try:
            rows = json.loads(res.stdout or "[]")
        except ValueError:
            return set()
        return {str(r["Id"]) for r in rows if str(r.get("State", "")).lower() == "storage"}

    def build(
        self,
        context: Path,
        tag: str,
        labels: Mapping[str, str],
        sink: Sink,
        cancel: threading.Event,
        *,
        no_cache: bool = False,
    ) -> str:
        """Build ``context`` and tag it ``tag``; return the new image ID.

        The tag moves only when the build succeeds, so an interrupted or failed build leaves
        the previous image tagged and usable.
        """
        argv = self.cli()
        with tempfile.TemporaryDirectory(prefix="devbox-build-") as tmp:
            iidfile = Path(tmp) / "iid"
            argv += ["build", "--tag", tag, "--iidfile", str(iidfile)]
            for key, value in sorted(labels.items()):
                argv += ["--label", f"{key}={value}"]
            if no_cache:
                argv.append("--no-cache")
            argv += ["--file", str(context / "Containerfile"), str(context)]
            before = self._build_containers()
            done = stream(argv, "podman", sink, cancel)
            if done.cancelled or done.returncode != 0:
                # podman 4.x leaves its working container behind when a build is signalled
                for leftover in sorted(self._build_containers() - before):
                    run([*self.cli(), "rm", "--force", leftover])
                    sink(LogLine("devbox", f"removed build container {leftover[:12]} left by the interrupted build"))
            if done.cancelled:
                raise Cancelled("image build interrupted", f"the previous image {tag} is untouched")
            if done.returncode != 0:
                text = "\n".join(done.tail).lower()
                if "no space left on device" in text:
                    raise DiskFull(
                        "disk full while building the image",
                        "free space (podman system prune; df -h) and run `devbox image build` again",
                        detail=done.tail,
                    )
                if "initializing source" in text or "pinging container registry" in text:
                    raise BuildFailed(
                        "podman could not pull the base image named in the Containerfile",
                        "check the network and registry login (podman login quay.io), then build again",
                        detail=done.tail,
                    )
                raise BuildFailed(
                    f"podman build failed (exit {done.returncode})",
                    f"fix the step shown above in {context.name}/ and run `devbox image build` again",
                    detail=done.tail,
                )
            try:
                return iidfile.read_text().strip()
            except OSError:
                info = self.image(tag)
                return info.id if info else ""
