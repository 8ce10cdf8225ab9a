"""A small libpod REST client over the podman socket (stdlib ``socket`` only).

Why not podman-py: importing it costs ~200 ms here (requests + urllib3), more than a
whole ``podman run -d`` (~190 ms), and start-work's no-op path has to stay within 15 %
of that. Why not http.client: it pulls in email and ssl (~40 ms here). The calls devbox
makes are small JSON requests with ``Connection: close``, so HTTP/1.1 framing (status
line, headers, Content-Length or chunked body) is all this module needs.
"""

from __future__ import annotations

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


def _demux(raw: bytes) -> str:
    """Undo docker/libpod log framing (8-byte headers: stream, 0, 0, 0, big-endian size)."""
    out = bytearray()
    i = 0
    while i + 8 <= len(raw) and raw[i] in (0, 1, 2) and raw[i + 1 : i + 4] == b"\0\0\0":
        size = int.from_bytes(raw[i + 4 : i + 8], "big")
        out += raw[i + 8 : i + 8 + size]
        i += 8 + size
    if i == 0:  # not framed (a TTY container)
        return raw.decode(errors="replace")
    return out.decode(errors="replace")


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    i = 0
    while True:
        eol = body.find(b"\r\n", i)
        if eol < 0:
            break
        size = int(body[i:eol].split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += body[eol + 2 : eol + 2 + size]
        i = eol + 2 + size + 2
    return bytes(out)


def parse_response(raw: bytes) -> tuple[int, bytes]:
    """Status and body of a complete HTTP/1.1 response."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1."):
        raise ValueError("not an HTTP response")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        headers[key.strip().lower()] = value.strip().lower()
    if headers.get(b"transfer-encoding") == b"chunked":
        body = _dechunk(body)
    elif b"content-length" in headers:
        body = body[: int(headers[b"content-length"])]
    return status, body


class PodmanAPI:
    """Blocking JSON calls to libpod; every failure becomes a devbox error."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout
        parts = urlsplit(url)
        self._unix = parts.path if parts.scheme == "unix" else None
        self._host = parts.hostname or "localhost"
        self._port = parts.port or 8080

    def _connect(self) -> socket.socket:
        if self._unix is None:
            return socket.create_connection((self._host, self._port), timeout=self.timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._unix)
        except OSError:
            sock.close()
            raise
        return sock

    def _unreachable(self, exc: OSError) -> PodmanUnreachable:
        if self._unix is not None and not Path(self._unix).exists():
            return PodmanUnreachable(f"podman API socket {self._unix} does not exist", SOCKET_REMEDY)
        return PodmanUnreachable(f"podman API at {self.url} is not answering: {exc.strerror or exc}", SOCKET_REMEDY)

    def request(
        self, method: str, path: str, params: dict[str, Any] | None = None, raw: bool = False
    ) -> tuple[int, Any]:
        query = f"?{urlencode(params)}" if params else ""
        request = f"{method} {API}{path}{query} HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        chunks = []
        try:
            with self._connect() as sock:
                sock.sendall(request.encode())
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            status, body = parse_response(b"".join(chunks))
        except OSError as exc:
            raise self._unreachable(exc) from None
        except (ValueError, IndexError):
            raise PodmanUnreachable(f"podman API at {self.url} sent a broken answer", SOCKET_REMEDY) from None
        data: Any = None
        if raw:
            return status, body
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                data = body.decode(errors="replace")
        return status, data

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

    def logs(self, name: str, tail: int = 50, since: int | None = None) -> list[str]:
        """The last lines of a container's output (stdout and stderr, non-TTY framing)."""
        params: dict[str, Any] = {"stdout": "true", "stderr": "true", "tail": tail}
        if since is not None:
            params["since"] = since
        status, data = self.request("GET", f"/containers/{quote(name, safe='')}/logs", params, raw=True)
        if status >= 400 or data is None:
            return []
        return _demux(data).splitlines()

    def start(self, name: str) -> None:
        self.call("POST", f"/containers/{quote(name, safe='')}/start")

    def rootless(self) -> bool:
        info = self.call("GET", "/info") or {}
        return bool(((info.get("host") or {}).get("security") or {}).get("rootless"))

    def stop(self, name: str, timeout: int = 10) -> None:
        self.call("POST", f"/containers/{quote(name, safe='')}/stop", {"timeout": timeout}, ok_missing=True)

    def remove(self, name: str, force: bool = False, volumes: bool = False) -> None:
        params = {"force": str(force).lower(), "v": str(volumes).lower()}
        self.call("DELETE", f"/containers/{quote(name, safe='')}", params, ok_missing=True)

    def remove_image(self, ref: str) -> bool:
        """Remove an image unless a container uses it (then keep it and answer False)."""
        status, _ = self.request("DELETE", f"/images/{quote(ref, safe='')}")
        return status < 400

    def remove_volume(self, name: str) -> None:
        self.call("DELETE", f"/volumes/{quote(name, safe='')}", {"force": "false"}, ok_missing=True)
