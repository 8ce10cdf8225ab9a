"""The podman adapter: the only module that talks to podman (with its helpers
``podman_client.py``, ``podman_cli.py`` and ``podman_build.py``).

Every libpod API call (images, containers, volumes, logs, events, stats) goes through
podman-py, imported on first use (~0.17 s of CPU: requests, urllib3, and rich for its
pull progress, which devbox keeps out). Records are parsed in ``podman_records.py`` and
nowhere else: the rest of devbox sees frozen ``ImageRecord`` / ``ContainerRecord`` values
and devbox errors with a remedy.

The podman CLI is kept where it is the better tool: ``podman build`` (``podman_build.py``:
a local build can be stopped mid-RUN; a REST build runs the current step to its end after
the client leaves), the argv for ``podman exec -it`` (a real terminal), and a command's
first quick questions while podman-py is not loaded yet (``podman_cli.py``: is the service
there, which images, is this container there; the same service, the same records). The
CLI runs locally when it sees the same storage as the API service, else with ``--url``
(see ``cli``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox.core import podman_cli, proc
from devbox.core.errors import (
    DevboxError,
    NotFound,
    PodmanMissing,
    PodmanUnreachable,
    ToolMissing,
)
from devbox.core.podman_client import (
    default_socket,
    import_in_background,
    import_podman_py,
    podman_py_loaded,
    socket_remedy,
    translate,
)
from devbox.core.podman_logs import ContainerLogs
from devbox.core.podman_networks import ContainerNetworks
from devbox.core.podman_records import (
    ContainerEvent,
    ContainerRecord,
    ContainerStats,
    CreateSpec,
    ImageRecord,
    _container,
    _event,
    _image,
)

if TYPE_CHECKING:
    from podman import PodmanClient

INSTALL_REMEDY = "install podman: sudo dnf install podman (Debian/Ubuntu: sudo apt-get install podman)"
PING_TIMEOUT = 3.0  # a listener that never answers is reported as such quickly
KNOWN_FOR = 2.0  # seconds an expected image's quick answer serves (Podman.expect)
CPU_PERIOD = 100_000  # microseconds: the CFS period a CPU limit is a quota of


class Podman(ContainerLogs, ContainerNetworks):
    """One front door to podman: a lazily made podman-py client and the CLI beside it."""

    def __init__(
        self, url: str = "", *, timeout: float = 30.0, autostart: bool = False, notify: Callable[[str], None] = print
    ) -> None:
        self.notify = notify  # tells the user what devbox did on its own (started a service)
        self.explicit_url = url
        self.url = url or default_socket()
        self.timeout = timeout
        self.autostart = autostart
        self._client: PodmanClient | None = None
        self._checked = False
        self._cli: list[str] | None = None
        self._cgroup_v2: bool | None = None  # (asked once, for rootless podman only)
        self._cli_answers = True  # podman_cli's quick answers, until it once has none
        # images a command will ask about next (``expect``), asked with its first question;
        # the answers serve it for KNOWN_FOR seconds, while only quick answers are in use
        # and nothing was built (``cli()`` hands out the CLI a build or tag runs with)
        self._expected: list[str] = []
        self._known: dict[str, ImageRecord | None] = {}
        self._known_at = 0.0
        self._lock = threading.Lock()
        self.started_service: proc.Completed | None = None
        # podman-py is being imported for this command (``preload``): a container question
        # waits for it (an API request) rather than start a podman process (~30 ms of CPU)
        self._preloading = False

    # connection -------------------------------------------------------------------------
    def _make_client(self, timeout: float) -> PodmanClient:
        client: PodmanClient = import_podman_py().PodmanClient(base_url=self.url, timeout=timeout)
        return client

    @property
    def client(self) -> PodmanClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self.check()
                    self._client = self._make_client(self.timeout)
        return self._client

    @contextlib.contextmanager
    def api(self, doing: str) -> Iterator[None]:
        """Turn podman-py's and requests' failures into devbox errors with a remedy."""
        try:
            yield
        except DevboxError:
            raise
        except Exception as exc:  # podman-py raises requests' and its own types
            raise translate(exc, doing, self.url) from None

    def check(self) -> None:
        """Fail with the right error when podman is missing or its service is not answering
        (start a short-lived service first when podman.autostart is on)."""
        if self._checked:
            return
        if shutil.which("podman") is None and not self.explicit_url:
            raise PodmanMissing("podman is not installed (no `podman` on PATH)", INSTALL_REMEDY)
        try:
            self._ping()
        except PodmanUnreachable:
            if not self.autostart or not self.url.startswith("unix://"):
                raise
            self._start_service()
        self._checked = True

    def preload(self) -> None:
        """Import podman-py in the background (the caller has other waits to overlap it with:
        git, the image check); the first API call then finds it loaded."""
        # the CLI's thread only: a worker thread of the dashboard has podman-py loaded already,
        # and import_podman_py's guard on rich.progress must not race with the dashboard's imports
        if "podman" not in sys.modules and threading.current_thread() is threading.main_thread():
            self._preloading = True
            threading.Thread(target=import_in_background, name="podman-py import", daemon=True).start()

    def _ping(self) -> None:
        if self._quick():
            if podman_cli.ping(self.url):
                return  # podman's own client got an answer (podman-py is loaded only when used)
            self._cli_answers = False
        client = self._make_client(PING_TIMEOUT)
        try:
            with self.api("ping"):
                if not client.ping():
                    raise PodmanUnreachable(f"podman API at {self.url} did not answer ping", socket_remedy(self.url))
        finally:
            with contextlib.suppress(Exception):
                client.close()

    def _start_service(self) -> None:
        """``podman system service`` for this user on the configured socket, exiting by itself
        after 5 minutes without clients (podman.autostart)."""
        path = Path(self.url.removeprefix("unix://"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PodmanUnreachable(f"cannot create {path.parent}: {exc.strerror}", socket_remedy(self.url)) from None
        pid = proc.spawn_daemon([self._exe(), "system", "service", "--time=300", self.url], tool="podman")
        self.notify(
            f"devbox: no podman service answered at {self.url}; started one (pid {pid}, podman.autostart), "
            "it exits after 5 minutes without clients"
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                self._ping()
                return
            except PodmanUnreachable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def info(self) -> dict[str, Any]:
        with self.api("info"):
            return dict(self.client.info())

    def rootless(self) -> bool:
        if not self.explicit_url:
            return os.geteuid() != 0
        return bool(((self.info().get("host") or {}).get("security") or {}).get("rootless"))

    def limits_enforced(self) -> bool:
        """Whether podman applies memory, CPU and process limits: not rootless podman on
        cgroup v1, which creates the container without them (a warning in its answer)."""
        if not self.rootless():
            return True
        if self._cgroup_v2 is None:
            self._cgroup_v2 = (self.info().get("host") or {}).get("cgroupVersion") == "v2"
        return self._cgroup_v2

    # the CLI ----------------------------------------------------------------------------
    def _exe(self) -> str:
        exe = shutil.which("podman")
        if exe is None:
            raise PodmanMissing("podman is not installed (no `podman` on PATH)", INSTALL_REMEDY)
        return exe

    def cli(self) -> list[str]:
        """The argv prefix for the podman CLI, bound to the same storage as the API.

        With the default socket the local CLI is the same podman. With podman.url, the CLI
        runs locally only when it sees the service's storage (graph root and run root);
        otherwise it is pointed at the service with ``--url``.
        """
        self._known.clear()  # the caller may change images with it
        if self._cli is None:
            exe = self._exe()
            self._cli = [exe]
            if self.explicit_url:
                store = self.info().get("store") or {}
                local = proc.run([exe, "info", "--format", "{{.Store.GraphRoot}} {{.Store.RunRoot}}"], tool="podman")
                if local.stdout.split() != [str(store.get("graphRoot")), str(store.get("runRoot"))]:
                    self._cli = [exe, "--url", self.explicit_url]
        return list(self._cli)

    def run_cli(self, *args: str, timeout: float = 60.0) -> proc.Completed:
        try:
            return proc.run([*self.cli(), *args], tool="podman", timeout=timeout)
        except ToolMissing:
            raise PodmanMissing("podman is not installed (no `podman` on PATH)", INSTALL_REMEDY) from None

    # images -----------------------------------------------------------------------------
    def _quick(self) -> bool:
        """Ask podman's CLI (podman_cli.py): podman-py is not loaded yet and the CLI answers."""
        return self._client is None and self._cli_answers and not podman_py_loaded()

    def expect(self, refs: Sequence[str]) -> None:
        """The images this command asks about next: the next quick question asks for them too
        (one podman process instead of two: vm up's image check, then its disk check)."""
        self._expected = list(dict.fromkeys([*self._expected, *refs]))

    def images(self, refs: Sequence[str]) -> dict[str, ImageRecord | None]:
        """Several images at once (``None``: not here): one CLI call before podman-py is loaded."""
        refs = list(dict.fromkeys(refs))
        if self._quick() and refs:
            if all(r in self._known for r in refs) and time.monotonic() - self._known_at < KNOWN_FOR:
                return {r: self._known[r] for r in refs}
            ask, self._expected = list(dict.fromkeys([*refs, *self._expected])), []
            try:
                found = podman_cli.images(self.url, ask)
            except podman_cli.NoAnswer:
                self._cli_answers = False  # podman-py from here on: it says why (and autostarts)
            else:
                self._checked = True  # the service answered: check() need not ask again
                self._known, self._known_at = dict(found), time.monotonic()
                return {r: found[r] for r in refs}
        return {ref: self._image_by_api(ref) for ref in refs}

    def image(self, ref: str) -> ImageRecord | None:
        return self.images([ref])[ref]

    def _image_by_api(self, ref: str) -> ImageRecord | None:
        with self.api(f"inspecting image {ref}"):
            try:
                img = self.client.images.get(ref)
            except Exception as exc:
                if type(exc).__name__.endswith("NotFound"):
                    return None
                raise
            return _image(img.attrs)

    def pull(self, ref: str) -> bool:
        """Pull ``ref`` (newer or missing); False when the registry cannot be reached or refuses."""
        with self.api(f"pulling {ref}"):
            try:
                self.client.images.pull(ref)
            except Exception as exc:
                if type(exc).__name__ in ("APIError", "ImageNotFound", "NotFound"):
                    return False
                raise
        return self.image(ref) is not None  # podman-py may answer a failed pull without raising

    def save(self, ref: str) -> Iterator[bytes]:
        """``ref`` as a docker-archive tar stream, chunk by chunk (what ``podman load`` reads)."""
        with self.api(f"saving image {ref}"):
            chunks = self.client.images.get(ref).save(named=True)
            yield from chunks

    def load(self, chunks: Iterator[bytes]) -> None:
        """Load a ``save`` stream (another host's image). podman-py takes it whole: held in
        memory for the call (a test base is tens of MB; a full bootc base, ~2 GB)."""
        with self.api("loading an image"):
            list(self.client.images.load(data=b"".join(chunks)))  # a generator: run it out

    def remove_image(self, ref: str) -> bool:
        """Remove an image unless a container uses it (then keep it and answer False)."""
        with self.api(f"removing image {ref}"):
            try:
                self.client.images.remove(ref)
            except Exception as exc:
                if type(exc).__name__ in ("APIError", "ImageNotFound"):
                    return False
                raise
            return True

    # containers -------------------------------------------------------------------------
    def containers(self, labels: Mapping[str, str]) -> list[ContainerRecord]:
        # the list form: podman-py's dict form stringifies a list of values
        filters = [f"label={k}={v}" for k, v in labels.items()]
        with self.api("listing containers"):
            found = self.client.containers.list(all=True, filters=filters)
            return [_container(c.attrs) for c in found]

    def container(self, ref: str) -> ContainerRecord | None:
        if self._quick() and not self._preloading:
            try:
                return podman_cli.container(self.url, ref)
            except podman_cli.NoAnswer:
                self._cli_answers = False  # podman-py from here on: it says why
        with self.api(f"inspecting container {ref}"):
            try:
                c = self.client.containers.get(ref)
            except Exception as exc:
                if type(exc).__name__.endswith("NotFound"):
                    return None
                raise
            return _container(c.attrs)

    def create(self, spec: CreateSpec) -> ContainerRecord:
        """Create (not start) a container from ``spec``."""
        binds = [m for m in spec.mounts if not m.volume]
        kwargs: dict[str, Any] = {
            "name": spec.name,
            "command": list(spec.command),
            "labels": dict(spec.labels),
            "environment": dict(spec.env),
            "working_dir": spec.workdir,
            "hostname": spec.hostname,
            "user": spec.user,
            "init": spec.init,
            "read_only": spec.read_only,
            # podman 5 adds /dev/shm and friends read-write with this; 4.x ignores it, so the
            # scratch directories are explicit tmpfs mounts below (podman skips its own then)
            "read_write_tmpfs": spec.read_only,
            "no_new_privileges": spec.no_new_privileges,
            "cap_drop": ["all"],
            "cap_add": list(spec.cap_add),
            "volumes": {m.source: {"bind": m.target, "mode": "rw"} for m in spec.mounts if m.volume},
            # podman-py's bind keys: ``read_only`` (it drops an unknown key such as ``ro`` without
            # a word: the mount was then read-write) and ``relabel``
            "mounts": [
                {"type": "bind", "source": m.source, "target": m.target}
                | ({"read_only": True} if "ro" in m.options else {})
                | ({"relabel": "z"} if "z" in m.options else {})
                for m in binds
            ]
            + [
                {"type": "tmpfs", "source": "tmpfs", "target": path, "mode": mode, **({"size": size} if size else {})}
                for path, mode, size in spec.tmpfs
            ],
        }
        # podman-py drops ``nano_cpus`` without a word (its create ignores the key): a CPU
        # limit is a quota per period, which it passes on
        if spec.cpus:
            kwargs["cpu_period"] = CPU_PERIOD
            kwargs["cpu_quota"] = int(spec.cpus * CPU_PERIOD)
        if spec.memory:
            kwargs["mem_limit"] = spec.memory
            kwargs["memswap_limit"] = spec.memory  # no swap beyond it: a hog meets the limit
        if spec.pids:
            kwargs["pids_limit"] = spec.pids
        if spec.userns:
            kwargs["userns_mode"] = spec.userns
        if spec.networks:
            # bridge said outright: rootless podman's default is slirp4netns, which takes no networks
            kwargs["network_mode"] = "bridge"
            kwargs["networks"] = {n: ({"static_ips": [ip]} if ip else {}) for n, ip in spec.networks.items()}
        elif spec.network in ("none", "host", "private", "slirp4netns", "pasta"):
            kwargs["network_mode"] = spec.network
        elif spec.network:
            kwargs["network"] = spec.network
        if spec.dns:
            kwargs["dns"] = list(spec.dns)
        if spec.sysctls:
            kwargs["sysctls"] = dict(spec.sysctls)
        if spec.entrypoint:
            kwargs["entrypoint"] = list(spec.entrypoint)
        if spec.log_size:
            kwargs["log_config"] = {"Type": "k8s-file", "Config": {"size": spec.log_size}}
        with self.api(f"creating {spec.name}"):
            c = self.client.containers.create(spec.image, **kwargs)
            return _container(c.attrs) if c.attrs.get("State") else self._must(spec.name)

    def _must(self, ref: str) -> ContainerRecord:
        rec = self.container(ref)
        if rec is None:
            raise NotFound(f"container {ref} is gone", "see `devbox container list`")
        return rec

    def start(self, ref: str) -> None:
        with self.api(f"starting {ref}"):
            # a model by name, not ``get``: an inspect before every start was a request (and
            # the service's work) a new environment did not need; a missing one is a 404 either way
            self.client.containers.prepare_model({"Id": ref}).start()  # type: ignore[attr-defined]

    def stop(self, ref: str, timeout: int = 10) -> None:
        with self.api(f"stopping {ref}"):
            try:
                self.client.containers.get(ref).stop(timeout=timeout)
            except Exception as exc:
                if not type(exc).__name__.endswith("NotFound"):
                    raise

    def remove(self, ref: str, *, force: bool = False) -> None:
        with self.api(f"removing {ref}"):
            try:
                self.client.containers.remove(ref, force=force)
            except Exception as exc:
                if not type(exc).__name__.endswith("NotFound"):
                    raise

    # streams the dashboard follows --------------------------------------------------------
    def events(self, cancel: threading.Event) -> Iterator[ContainerEvent]:
        """Container events (create, start, died, remove, ...) as they happen, until ``cancel``.

        One streaming request that the service answers as events happen (it follows its
        events file). Asking in short windows (``until``) instead made the service read its
        whole events file again at every window: 1.4% of a core, for ever, growing with the
        file. ``cancel`` shuts the request's socket down, which ends the read at once: no
        thread is left blocked on it when the app quits (podman-py's ``events()`` keeps its
        response to itself, hence the raw API here). A stream the service ends is asked again
        from the last event seen.
        """
        since = str(int(time.time()))
        seen: set[tuple[str, str, str]] = set()
        while not cancel.is_set():
            params = {"stream": True, "since": since, "filters": json.dumps({"type": ["container"]})}
            with self.api("following podman events"):
                res = self.client.api.get("/events", params=params, stream=True)
                done = threading.Event()
                threading.Thread(target=_shut_on, args=(res, cancel, done), daemon=True,
                                 name="podman-events-cancel").start()  # fmt: skip
                try:
                    for line in res.iter_lines():
                        if not line:
                            continue
                        ev = _event(json.loads(line))
                        key = (ev.time_nano, ev.id, ev.action)
                        if key not in seen:
                            seen.add(key)
                            if ev.time_nano[:-9]:
                                since = ev.time_nano[:-9]  # (seconds: the service's resolution for since)
                            yield ev
                except Exception:
                    if cancel.is_set():
                        return  # the read that cancel ended
                    raise
                finally:
                    done.set()
                    res.close()
            if len(seen) > 10_000:
                seen.clear()
            cancel.wait(1.0)  # the service ended the stream (a restart): ask again shortly

    def stats(self, names: list[str]) -> dict[str, ContainerStats]:
        """CPU and memory of running containers, one API call for all of them."""
        if not names:
            return {}
        with self.api("reading container stats"):
            res = self.client.api.get("/containers/stats", params={"stream": False, "containers": names})
            if not res.ok:
                return {}
            data = res.json() or {}
        out: dict[str, ContainerStats] = {}
        for row in data.get("Stats") or []:
            name = str(row.get("Name", ""))
            out[name] = ContainerStats(
                name=name,
                cpu_percent=float(row.get("CPU") or 0.0),
                mem_bytes=int(row.get("MemUsage") or 0),
                mem_limit=int(row.get("MemLimit") or 0),
            )
        return out

    # volumes ----------------------------------------------------------------------------
    def volume_exists(self, name: str) -> bool:
        with self.api(f"inspecting volume {name}"):
            return bool(self.client.volumes.exists(name))

    def remove_volume(self, name: str) -> bool:
        """Remove a named volume; False when it did not exist."""
        with self.api(f"removing volume {name}"):
            try:
                self.client.volumes.remove(name, force=False)
            except Exception as exc:
                if type(exc).__name__.endswith("NotFound"):
                    return False
                raise
            return True

    # exec -------------------------------------------------------------------------------
    def exec_argv(
        self, ref: str, command: list[str], *, user: str, workdir: str, env: Mapping[str, str], tty: bool,
        pass_env: Sequence[str] = (),
    ) -> list[str]:  # fmt: skip
        """The full ``podman exec`` argv (a face runs or execs it on its terminal).
        ``pass_env``: names whose values podman takes from its own environment (``--env
        NAME``): a credential never appears on a command line or in the container's config."""
        argv = [*self.cli(), "exec", "--interactive"]
        if tty:
            argv.append("--tty")
        argv += ["--user", user, "--workdir", workdir]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        for name in pass_env:
            argv += ["--env", name]
        return [*argv, ref, *command]


def _shut_on(res: Any, cancel: threading.Event, done: threading.Event) -> None:
    """When ``cancel`` is set (and the stream is still open), shut the response's socket down:
    a thread blocked reading it wakes at once (closing it from here would not wake it)."""
    while not done.is_set():
        if cancel.wait(0.5):
            sock = getattr(getattr(res.raw, "_connection", None), "sock", None)
            with contextlib.suppress(OSError):
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            return
