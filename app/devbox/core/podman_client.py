"""How devbox reaches podman-py: which socket, the command that starts a service on it,
podman-py's (lazy) import, and its failures turned into devbox errors with a remedy.

Part of the podman adapter (``core/podman.py``); kept apart so the adapter itself is its
calls.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any

from devbox.core.errors import DevboxError, NotFound, PodmanError, PodmanMissing, PodmanUnreachable


def default_socket(uid: int | None = None, env: Mapping[str, str] | None = None) -> str:
    """The socket of the podman that owns this user's storage (rootful for root)."""
    uid = os.getuid() if uid is None else uid
    env = os.environ if env is None else env
    if uid == 0:
        return "unix:///run/podman/podman.sock"
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}"
    return f"unix://{runtime}/podman/podman.sock"


def socket_remedy(url: str) -> str:
    """The exact command that starts a podman API service on this machine."""
    path = url.removeprefix("unix://")
    if not url.startswith("unix://"):
        return f"start the podman service that {url} points at, or fix podman.url"
    also = "or set podman.autostart = true in devbox.toml"
    if os.path.isdir("/run/systemd/system") and path == default_socket().removeprefix("unix://"):
        scope = "" if os.getuid() == 0 else " --user"
        return f"systemctl{scope} enable --now podman.socket; {also}"
    return f"run: podman system service --time=0 unix://{path} &; {also}"


# What podman-py's import brings in that devbox never uses, made to fail while it loads:
# rich.progress (its images module's pull progress bar, ~60 ms of a no-op start-work) and a
# character-set detector for requests (charset_normalizer, ~9 ms of a new environment's CPU
# before its create). podman's API answers JSON in UTF-8, and requests reads a reply without
# a declared charset as UTF-8 when no detector is installed (``Response.apparent_encoding``).
# A module already loaded is left as it is.
UNUSED = ("rich.progress", "charset_normalizer", "chardet")


def import_podman_py() -> Any:
    """podman-py, imported on first use (the one place it is imported), without ``UNUSED``.
    A module still being imported by ``preload``'s thread is waited for (``import`` does)."""
    if podman_py_loaded():
        return sys.modules["podman"]
    blocked = [name for name in UNUSED if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    # requests warns at its import when it finds no detector (a filter, not catch_warnings:
    # that swaps the process-wide filters while other threads run)
    warnings.filterwarnings("ignore", message="Unable to find acceptable character detection", module="requests")
    try:
        import podman
    except ImportError:
        raise PodmanMissing("the podman-py library is missing", "reinstall devbox: pip install -e .") from None
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return podman


def podman_py_loaded() -> bool:
    """podman-py is fully imported (not just begun by ``preload``'s thread)."""
    return hasattr(sys.modules.get("podman"), "PodmanClient")


def import_in_background() -> None:
    with contextlib.suppress(Exception):  # the first real use reports a failed import
        import_podman_py()


def translate(exc: Exception, doing: str, url: str) -> DevboxError:
    """podman-py's and requests' failures as devbox errors with a remedy."""
    # podman-py wraps transport failures (requests' ConnectionError, ReadTimeout, a
    # socket's OSError) in an APIError "... operation failed": look down the chain
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and len(chain) < 10:
        chain.append(link)
        link = link.__cause__ or link.__context__
    names = {type(e).__name__ for e in chain}
    if any("Timeout" in n for n in names):
        return PodmanUnreachable(
            f"podman API at {url} is not answering ({doing}: no reply in time)", socket_remedy(url)
        )
    if names & {"ConnectionError", "ChunkedEncodingError", "ProtocolError"} or any(
        type(e).__module__ == "builtins" and isinstance(e, OSError) for e in chain
    ):
        path = url.removeprefix("unix://")
        if url.startswith("unix://") and not os.path.exists(path):
            return PodmanUnreachable(f"podman API socket {path} does not exist", socket_remedy(url))
        return PodmanUnreachable(f"podman API at {url} is not answering", socket_remedy(url))
    explanation = getattr(exc, "explanation", None) or str(exc)
    if getattr(exc, "status_code", None) == 404 or type(exc).__name__.endswith("NotFound"):
        return NotFound(f"podman: {explanation}", "see `devbox status`")
    text = str(explanation).strip().splitlines()[0] if str(explanation).strip() else type(exc).__name__
    return PodmanError(f"podman: {doing} failed: {text[:300]}", "see `podman info` and the podman service log")
