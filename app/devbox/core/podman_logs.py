"""A container's output, read through podman-py: the last lines, the lines as they come
while it starts, and the dashboard's follow. Apart from ``podman.py`` to keep that adapter
readable; ``Podman`` inherits these (they use its ``client`` and ``api``)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

from devbox.core.podman_records import _demux


class ContainerLogs:
    """The log half of the podman adapter."""

    @property
    def client(self) -> Any:  # podman-py's PodmanClient (imported by podman.py only)
        raise NotImplementedError  # Podman.client

    def api(self, doing: str) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError  # Podman.api

    def logs(self, ref: str, *, tail: int | str = 50, since: int | None = None, stderr: bool = True) -> list[str]:
        """The last lines of a container's output (stdout and stderr; ``tail="all"``: all of it)."""
        with self.api(f"reading the log of {ref}"):
            try:
                c = self.client.containers.prepare_model({"Id": ref})  # by name: no inspect first
                raw = c.logs(stdout=True, stderr=stderr, tail=tail, since=since, stream=False)
            except Exception as exc:
                if type(exc).__name__.endswith("NotFound"):
                    return []
                raise
            data = raw if isinstance(raw, bytes) else b"".join(raw)
            return data.decode(errors="replace").splitlines()

    def stream_logs(self, ref: str, since: int, *, stderr: bool = True) -> Iterator[str]:
        """A container's output lines from ``since`` (epoch seconds) as they are written; the
        stream ends when the container stops or is removed (podman notices within ~0.5 s).
        One request that waits in the service: no polling while a container starts."""
        with self.api(f"following the log of {ref}"):
            c = self.client.containers.prepare_model({"Id": ref})  # by name: no inspect first (see start)
            chunks = cast(Iterator[bytes], c.logs(stdout=True, stderr=stderr, since=since, stream=True, follow=True))
            rest = b""
            for chunk in chunks:
                *lines, rest = (rest + chunk).split(b"\n")
                yield from (ln.decode(errors="replace") for ln in lines)
            if rest:
                yield rest.decode(errors="replace")

    def follow_logs(
        self, ref: str, cancel: threading.Event, *, tail: int | str = 200, stderr: bool = True
    ) -> Iterator[str]:
        """A container's output as it comes (``podman logs -f``), until ``cancel`` or the
        container is gone. Reads in windows (``until``) so that ``cancel`` is honoured."""
        since: str | None = None
        first = True
        while not cancel.is_set():
            until = int(time.time()) + 1
            with self.api(f"following the log of {ref}"):
                try:
                    c = self.client.containers.get(ref)
                except Exception as exc:
                    if type(exc).__name__.endswith("NotFound"):
                        return
                    raise
                params: dict[str, Any] = {"stdout": True, "stderr": stderr, "timestamps": True, "until": until}
                if first:
                    params["tail"] = tail
                elif since is not None:
                    params["since"] = since
                res = self.client.api.get(f"/containers/{c.id}/logs", params=params)
                body = res.content if res.ok else b""
            for line in _demux(body).splitlines():
                ts, _, text = line.partition(" ")
                if since is not None and ts <= since:
                    continue
                since = ts
                yield text
            first = False
            cancel.wait(0.5)
