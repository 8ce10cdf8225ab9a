"""A small libpod REST client over the podman socket (stdlib only).

Why not podman-py: importing it costs ~200 ms here (requests + urllib3), more than a
whole ``podman run -d`` (~190 ms), and start-work's no-op path has to stay within 15 %
of that. The queries devbox needs (inspect, list, stop, remove) are five endpoints.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from devbox.core.errors import PodmanError, PodmanUnreachable

API = "/v4.0.0/libpod"
SOCKET_REMEDY = (
    "start the podman API socket: systemctl --user enable --now podman.socket "
    "(as root: systemctl enable --now podman.socket), or set podman.url in devbox.toml"
)


def default_socket(uid: int | None = None, env: dict[str, str] | None = None) -> str:
    """The socket of the podman that owns this user's storage (rootful for root)."""
    uid = os.getuid() if uid is None else uid
    env = dict(os.environ) if env is None else env
    if uid == 0:
        return "unix:///run/podman/podman.sock"
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}"
    return f"unix://{runtime}/podman/podman.sock"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class PodmanAPI:
    """Blocking JSON calls to libpod; every failure becomes a devbox error."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout
        parts = urlsplit(url)
        self._unix = parts.path if parts.scheme == "unix" else None
        self._host = parts.hostname or "localhost"
        self._port = parts.port or 8080

    def _connection(self) -> http.client.HTTPConnection:
        if self._unix is not None:
            return _UnixConnection(self._unix, self.timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _unreachable(self, exc: OSError) -> PodmanUnreachable:
        if self._unix is not None and not Path(self._unix).exists():
            return PodmanUnreachable(f"podman API socket {self._unix} does not exist", SOCKET_REMEDY)
        return PodmanUnreachable(f"podman API at {self.url} is not answering: {exc.strerror or exc}", SOCKET_REMEDY)

    def request(self, method: str, path: str, params: dict[str, Any] | None = None) -> tuple[int, Any]:
        query = f"?{urlencode(params)}" if params else ""
        conn = self._connection()
        try:
            conn.request(method, f"{API}{path}{query}")
            resp = conn.getresponse()
            body = resp.read()
        except OSError as exc:
            raise self._unreachable(exc) from None
        except http.client.HTTPException as exc:
            raise PodmanUnreachable(f"podman API at {self.url} broke off: {exc}", SOCKET_REMEDY) from None
        finally:
            conn.close()
        data: Any = None
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                data = body.decode(errors="replace")
        return resp.status, data

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, ok_missing: bool = False) -> Any:
        status, data = self.request(method, path, params)
        if status == 404 and ok_missing:
            return None
        if status >= 400:
            msg = data.get("message") or data.get("cause") if isinstance(data, dict) else data
            raise PodmanError(f"podman: {msg or f'HTTP {status}'}", "see `podman info` and the podman service log")
        return data

    def ping(self) -> None:
        status, _ = self.request("GET", "/_ping")
        if status != 200:
            raise PodmanUnreachable(f"podman API at {self.url} answered HTTP {status} to ping", SOCKET_REMEDY)

    def image(self, name: str) -> dict[str, Any] | None:
        return self.call("GET", f"/images/{quote(name, safe='')}/json", ok_missing=True)  # type: ignore[no-any-return]

    def containers(self, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        filters = {"label": [f"{k}={v}" for k, v in (labels or {}).items()]}
        data = self.call("GET", "/containers/json", {"all": "true", "filters": json.dumps(filters)})
        return list(data or [])

    def container(self, name: str) -> dict[str, Any] | None:
        return self.call("GET", f"/containers/{quote(name, safe='')}/json", ok_missing=True)  # type: ignore[no-any-return]

    def stop(self, name: str, timeout: int = 10) -> None:
        self.call("POST", f"/containers/{quote(name, safe='')}/stop", {"timeout": timeout}, ok_missing=True)

    def remove(self, name: str, force: bool = False, volumes: bool = False) -> None:
        params = {"force": str(force).lower(), "v": str(volumes).lower()}
        self.call("DELETE", f"/containers/{quote(name, safe='')}", params, ok_missing=True)

    def remove_volume(self, name: str) -> None:
        self.call("DELETE", f"/volumes/{quote(name, safe='')}", {"force": "false"}, ok_missing=True)
