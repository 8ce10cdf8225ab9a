"""The podman adapter's records: frozen values for what libpod answers, and the parsing
of its JSON shapes (list and inspect answers differ; times are RFC 3339 with nanoseconds).

Part of the podman adapter: only ``podman.py`` turns libpod answers into these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


# records ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageRecord:
    id: str
    created: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class ContainerRecord:
    name: str
    id: str
    state: str  # running, exited, created, stopped, ...
    labels: Mapping[str, str]
    started_at: float | None = None  # epoch seconds, when running
    pid: int = 0  # the main process on the host, while running


@dataclass(frozen=True)
class ContainerEvent:
    action: str  # create, start, died, stop, remove, ...
    id: str
    name: str
    labels: Mapping[str, str]
    time_nano: str


@dataclass(frozen=True)
class ContainerStats:
    name: str
    cpu_percent: float
    mem_bytes: int
    mem_limit: int


def _event(raw: Mapping[str, Any]) -> ContainerEvent:
    actor = raw.get("Actor") or {}
    attrs = dict(actor.get("Attributes") or {})
    return ContainerEvent(
        action=str(raw.get("Action") or raw.get("status") or ""),
        id=str(actor.get("ID") or raw.get("id") or ""),
        name=str(attrs.pop("name", "")),
        labels={k: str(v) for k, v in attrs.items()},
        time_nano=str(raw.get("timeNano") or raw.get("time") or ""),
    )


def _demux(raw: bytes) -> str:
    """Undo libpod's log framing (8-byte headers: stream, 0, 0, 0, big-endian size); a TTY
    container's log is not framed."""
    out = bytearray()
    i = 0
    while i + 8 <= len(raw) and raw[i] in (0, 1, 2) and raw[i + 1 : i + 4] == b"\0\0\0":
        size = int.from_bytes(raw[i + 4 : i + 8], "big")
        out += raw[i + 8 : i + 8 + size]
        i += 8 + size
    return (out if i else raw).decode(errors="replace")


@dataclass(frozen=True)
class Mount:
    source: str  # a host path (bind) or a volume name
    target: str
    volume: bool = False
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreateSpec:
    """What a container is made of, in podman's terms (container-mode policy lives in
    containers.py; this is only the shape the API takes)."""

    name: str
    image: str
    command: tuple[str, ...]
    labels: Mapping[str, str]
    env: Mapping[str, str]
    mounts: tuple[Mount, ...]
    workdir: str
    hostname: str
    user: str
    cap_add: tuple[str, ...]
    userns: str = ""  # "keep-id" for rootless
    network: str = ""  # "", "none", "host", or a network name
    read_only: bool = True
    tmpfs: tuple[tuple[str, str, int], ...] = ()  # (path, mode, size in bytes or 0): explicit tmpfs mounts
    memory: int = 0  # bytes; 0: no limit
    cpus: float = 0.0  # 0: no limit
    pids: int = 0  # 0: podman's default
    init: bool = True
    no_new_privileges: bool = True
    # egress (core/egress.py): networks by name, each with a fixed address or "" (any);
    # when given, they replace ``network``
    networks: Mapping[str, str] = field(default_factory=dict)
    dns: tuple[str, ...] = ()  # the resolv.conf nameservers; (): podman's own choice
    sysctls: Mapping[str, str] = field(default_factory=dict)
    entrypoint: tuple[str, ...] = ()  # (): the image's
    log_size: int = 0  # bytes its log file may reach (podman's k8s-file rotates it); 0: unbounded


def _ts(value: object) -> float | None:
    """An RFC 3339 time from libpod (nanoseconds, a zone) as epoch seconds."""
    if not isinstance(value, str) or value.startswith("0001-"):
        return None
    from datetime import datetime

    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Python takes at most 6 fraction digits
        n = len(rest) - len(rest.lstrip("0123456789"))  # the fraction, before the zone
        text = f"{head}.{rest[: min(n, 6)]}{rest[n:]}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _image(attrs: Mapping[str, Any]) -> ImageRecord:
    """A record from an image's inspect answer (podman-py's ``attrs`` or the CLI's JSON)."""
    labels = attrs.get("Labels") or (attrs.get("Config") or {}).get("Labels") or {}
    return ImageRecord(id=str(attrs.get("Id", "")), created=str(attrs.get("Created", "")), labels=labels)


def _container(attrs: Mapping[str, Any]) -> ContainerRecord:
    """A record from either a list entry or an inspect answer (their shapes differ)."""
    state = attrs.get("State")
    if isinstance(state, dict):  # inspect
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        return ContainerRecord(
            name=str(attrs.get("Name", "")).lstrip("/"),
            id=str(attrs.get("Id", "")),
            state=str(state.get("Status", "")).lower(),
            labels=dict(labels),
            started_at=_ts(state.get("StartedAt")) if state.get("Running") else None,
            pid=_int(state.get("Pid")) if state.get("Running") else 0,
        )
    names = attrs.get("Names") or [""]
    started = attrs.get("StartedAt")
    return ContainerRecord(
        name=str(names[0]),
        id=str(attrs.get("Id", "")),
        state=str(state or "").lower(),
        labels=dict(attrs.get("Labels") or {}),
        started_at=float(started) if isinstance(started, int | float) and started > 0 else None,
        pid=_int(attrs.get("Pid")) if str(state or "").lower() == "running" else 0,
    )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
