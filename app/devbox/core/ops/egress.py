"""An environment's egress made real (the policy is ``core/egress.py``): its own internal
network and its proxy container for ``allow``, no network for ``none``, and what reads
and changes a running environment's policy: ``net log``, ``net allow``, ``net deny``.

The proxy runs from the environment's own image (squid is in bootc/Containerfile) in a
container of its own: another network namespace, another PID namespace, no capabilities,
a read-only root, bounded memory and processes. The environment can reach it only on its
port; nothing in the environment can signal it, read its configuration or write its log.
Its configuration travels in its environment and ``podman exec``, never through a file
the host shares, so the same code serves another host's podman.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from devbox.core import egress, proc
from devbox.core.config import Settings
from devbox.core.egress import Connection, EgressView, Policy, PolicyError, Tally, Wiring
from devbox.core.errors import BadName, ContainerFailed, DevboxError, NotFound, Refused
from devbox.core.events import Reporter, Sink, Subject, null_sink
from devbox.core.podman import Podman
from devbox.core.podman_records import CreateSpec
from devbox.core.session import Devbox

LABEL_FOR = "devbox.egress-for"  # on the network and the proxy: the environment's container
PROXY_MEMORY = 256 << 20
PROXY_PIDS = 128
# the proxy's log (every request the environment makes, one line each): an agent that
# floods it fills this much of the host's disk, no more (podman keeps the newest part)
PROXY_LOG_SIZE = 16 << 20
PROXY_READY = "Accepting HTTP Socket connections"
NO_IPV6 = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
# the proxy's configuration arrives in its environment; a reload writes it again first
CONF_PATH = "/tmp/squid.conf"
START = f'printf "%s" "$DEVBOX_EGRESS_CONF" > {CONF_PATH} && exec squid -N -f {CONF_PATH}'
RELOAD = f'printf "%s" "$DEVBOX_EGRESS_CONF" > {CONF_PATH}.new && mv {CONF_PATH}.new {CONF_PATH} && squid -k reconfigure -f {CONF_PATH}'  # noqa: E501
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAMED_MODES = ("none", "host", "private", "slirp4netns", "pasta")  # container.network words, not networks


def choose_policy(
    session: Devbox, *, mode: str = "", allow: Sequence[str] = (), agent: str | None = None
) -> Policy | None:
    """The egress a start asks for: ``agent``'s (its ``egress`` and ``allow``, then every
    environment's ``[container] allow``), else ``[container]``'s; ``mode`` (``--egress``)
    and ``allow`` (``--allow``) over it. None: a plain start that asks for nothing (an
    environment that exists keeps its own)."""
    settings = session.settings
    if agent is None and not mode and not allow:
        return None
    if mode and mode not in egress.MODES:
        raise BadName(f"--egress {mode!r} is not one of {', '.join(egress.MODES)}", "e.g. --egress allow")
    try:
        if agent is not None:
            spec = settings.agents[agent]
            base = Policy(spec.egress, egress.parse_rules(spec.allow))
            return egress.choose(mode=mode, allow=allow, base=base, extra=[r.text() for r in settings.egress.allow])
        return egress.choose(mode=mode, allow=allow, base=settings.egress)
    except PolicyError as exc:
        raise BadName(str(exc), "e.g. --allow pypi.org") from None


def network_name(container: str) -> str:
    return f"{container}-net"


def proxy_name(container: str) -> str:
    return f"{container}-egress"


def outside_network(settings: Settings) -> str:
    """The network the proxy reaches out through: ``container.network`` when it names one."""
    return settings.network if settings.network and settings.network not in NAMED_MODES else "podman"


def host_addresses() -> tuple[str, ...]:
    """This machine's addresses (``ip -j addr``); () where ``ip`` is missing."""
    try:
        done = proc.run(["ip", "-j", "addr"], tool="ip", timeout=10)
    except Exception:  # (ToolMissing: the remaining checks still hold; said in the README)
        return ()
    return egress.host_addresses(done.stdout) if done.ok else ()


def refused(podman: Podman, settings: Settings, addresses: Sequence[str]) -> list[str]:
    """Where a proxy must never connect beyond ALWAYS_REFUSED: the machine's ``addresses``,
    its outside network (the host's gateway, environments whose egress is open) and every
    environment's own network."""
    found = [*(podman.network_subnets(outside_network(settings)) or ()), *addresses]
    for subs in podman.networks({LABEL_FOR: ""}).values():
        found += subs
    return sorted(set(found))


class EgressStart:
    """An environment's egress being made, in a thread of its own while the environment itself
    is created and started: for ``allow``, its network (then ``wiring()`` answers: the
    environment can be created), then its proxy's create, start and first listen (``join``).
    For ``open`` and ``none`` there is nothing to wait for. On a failure after ``wiring()``
    the caller joins, then calls ``unwire``. (What the proxy costs: bench/new_env.py.)"""

    def __init__(
        self, podman: Podman, settings: Settings, name: str, image_id: str, policy: Policy, *,
        addresses: Sequence[str] | None, report: Reporter, cancel: threading.Event, fresh: bool = False,
    ) -> None:  # fmt: skip
        self.policy = policy
        self._podman, self._name = podman, name
        self._wiring: Wiring | None = None
        self._failed: list[BaseException] = []
        self._known = threading.Event()
        self._thread: threading.Thread | None = None
        if policy.mode == "open":
            self._wiring = Wiring(policy, network=settings.network)
        elif policy.mode == "none":
            self._wiring = Wiring(policy, network="none", sysctls=NO_IPV6)
        else:
            args = (podman, settings, name, image_id, addresses, report, cancel, fresh)
            self._thread = threading.Thread(target=self._run, args=args, name=f"egress-{name}", daemon=True)
            self._thread.start()
            return
        self._known.set()

    def _run(
        self, podman: Podman, settings: Settings, name: str, image_id: str, addresses: Sequence[str] | None,
        report: Reporter, cancel: threading.Event, fresh: bool,
    ) -> None:  # fmt: skip
        try:
            net, proxy = network_name(name), proxy_name(name)
            labels = {LABEL_FOR: name}
            if not fresh:
                unwire(podman, name)  # a leftover of an interrupted start
            subnets = podman.create_network(net, internal=True, labels=labels)
            if not subnets:
                raise ContainerFailed(f"podman gave {net} no subnet", f"see `podman network inspect {net}`")
            address = egress.proxy_address(subnets[0])
            made = (f"network {net}", f"container {proxy}")
            self._wiring = Wiring(self.policy, networks={net: ""}, dns=("127.0.0.1",), sysctls=NO_IPV6,
                                  env=egress.proxy_env(address), made=made)  # fmt: skip
            self._known.set()
            found = host_addresses() if addresses is None else addresses
            conf = egress.squid_conf(self.policy, refused=refused(podman, settings, found), dns=settings.egress_dns)
            podman.create(CreateSpec(
                name=proxy, image=image_id, command=(), entrypoint=("/bin/sh", "-c", START),
                labels=labels, env={"DEVBOX_EGRESS_CONF": conf, "PATH": PATH}, mounts=(), workdir="/tmp",
                hostname="devbox-egress", user="65534:65534", cap_add=(),
                networks={net: address, outside_network(settings): ""},
                tmpfs=(("/tmp", "1777", 64 << 20), ("/run", "755", 1 << 20)), memory=PROXY_MEMORY, pids=PROXY_PIDS,
                log_size=PROXY_LOG_SIZE,
            ))  # fmt: skip
            podman.start(proxy)
            report.log(f"egress: {self.policy.describe()} through {proxy} ({address}:{egress.PROXY_PORT})")
            wait_proxy(podman, name, cancel)
        except BaseException as exc:  # (raised again in the caller's thread: wiring, join)
            self._failed.append(exc)
        finally:
            self._known.set()

    def wiring(self) -> Wiring:
        """What the environment's create spec takes (waits for its network); when that failed,
        what it made is removed first."""
        self._known.wait()
        if self._wiring is None:
            self.join_quietly()
            unwire(self._podman, self._name)
            raise self._failed[0]
        return self._wiring

    def join_quietly(self) -> None:
        """Until it is over, whatever became of it (a failed start cleans up after it)."""
        if self._thread is not None:
            self._thread.join()

    def join(self) -> None:
        """Until the proxy listens; its failure, raised here."""
        if self._thread is not None:
            self._thread.join()
        if self._failed:
            raise self._failed[0]


def wait_proxy(podman: Podman, name: str, cancel: threading.Event, timeout: float = 20.0) -> None:
    """Until the proxy of ``name`` listens (its log says so), or why it does not."""
    proxy = proxy_name(name)
    deadline = time.monotonic() + timeout
    while True:
        lines = podman.logs(proxy, tail=200)
        if any(PROXY_READY in ln for ln in lines):
            return
        rec = podman.container(proxy)
        if rec is None or rec.state != "running" or time.monotonic() > deadline:
            last = next((ln for ln in reversed(lines) if ln.strip()), "no output")
            raise ContainerFailed(
                f"the egress proxy of {name} did not start: {last[:300]}",
                "is squid in the image (bootc/Containerfile installs it)? or start with --egress open",
                detail=tuple(ln[:400] for ln in lines[-15:]),
            )
        if cancel.wait(0.1):
            return  # the caller says it was interrupted


def restart_proxy(
    session: Devbox, name: str, policy: Policy, cancel: threading.Event, *, addresses: Sequence[str] | None = None
) -> None:
    """A stopped environment's proxy started again under ``policy`` (its recorded rules: the
    ones it was made with are in its environment, what ``net allow`` changed is not)."""
    podman = session.podman
    rec = podman.container(proxy_name(name))
    if rec is None:
        raise NotFound(f"the egress proxy of {name} is gone", f"remake both: devbox start-work {name} --recreate")
    if rec.state != "running":
        podman.start(proxy_name(name))
    wait_proxy(podman, name, cancel)
    reload(session, name, policy, addresses=host_addresses() if addresses is None else addresses)


def unwire(podman: Podman, name: str) -> list[str]:
    """Remove the proxy and network of environment ``name`` (after the environment itself:
    a network in use stays); what went, as said to the user."""
    gone = []
    proxy = proxy_name(name)
    if podman.container(proxy) is not None:
        podman.remove(proxy, force=True)
        gone.append(f"container {proxy}")
    if podman.network_subnets(network_name(name)) is not None and podman.remove_network(network_name(name)):
        gone.append(f"network {network_name(name)}")
    return gone


# a running environment's policy -----------------------------------------------------------
@dataclass(frozen=True)
class NetPolicy:
    """``net allow`` / ``net deny``: the environment's policy after the change."""

    branch: str
    container: str
    policy: Policy
    changed: tuple[str, ...]  # the entries added or taken away


def _env(session: Devbox, branch: str) -> str:
    """The container of ``branch``'s environment."""
    from devbox.core.ops.containers import find_container  # (it imports this module)

    return find_container(session, branch).name


@contextlib.contextmanager
def _place(session: Devbox, branch: str) -> Iterator[tuple[Devbox, str, Sequence[str] | None]]:
    """Where ``branch``'s environment is: this machine's podman, or its host's through an ssh
    tunnel (the host's podman enforces its egress); the session there, the container's name
    and that machine's addresses (None: this one's, asked when needed)."""
    from devbox.core.ops.remote import _addresses, host_of  # (it imports this module)

    host = host_of(session, branch)
    if not host:
        yield session, _env(session, branch), None
        return
    from devbox.core import containers, hosts
    from devbox.core.ops.hostlist import spec_of

    s = session.settings
    spec = spec_of(session, host)
    f = hosts.probe(s, spec)
    with hosts.Tunnel(s, spec, f.socket) as url:
        podman = Podman(url, timeout=s.podman_timeout)
        try:
            there = Devbox(s, user=session.user, notify=session.notify, podman=podman)
            yield there, containers.container_name(s, branch), _addresses(s, spec)
        finally:
            podman.close()


def policy_of(session: Devbox, container: str) -> Policy:
    """The recorded policy of an environment (one made before egress existed: open)."""
    return egress.read_record(session.settings.build_dir, container) or Policy("open")


def _change(session: Devbox, branch: str, entries: Sequence[str], widen: bool, sink: Sink) -> NetPolicy:
    with _place(session, branch) as (there, name, addresses):
        return _change_at(there, branch, name, entries, widen, sink, addresses)


def _change_at(
    session: Devbox, branch: str, name: str, entries: Sequence[str], widen: bool, sink: Sink,
    addresses: Sequence[str] | None,
) -> NetPolicy:  # fmt: skip
    before = policy_of(session, name)
    if before.mode != "allow":
        fix = f"devbox start-work {branch} --recreate --egress allow" + "".join(f" --allow {e}" for e in entries)
        raise Refused(f"{branch}'s egress is {before.mode}: there is no list to change", fix)
    try:
        after = before.widened(entries) if widen else before.narrowed(entries)
        asked = egress.parse_rules(entries)
    except PolicyError as exc:
        raise BadName(str(exc), "e.g. devbox net allow BRANCH pypi.org") from None
    changed = tuple(r.text() for r in asked if (r in after.allow) == widen and (r in before.allow) != widen)
    report = Reporter(sink, "net-allow" if widen else "net-deny", Subject("container", name))
    reload(session, name, after, addresses=host_addresses() if addresses is None else addresses)
    egress.write_record(session.settings.build_dir, name, after)  # so --recreate keeps it
    report.step("done", f"{branch}: {after.describe()}")
    return NetPolicy(branch, name, after, changed)


def reload(session: Devbox, name: str, policy: Policy, *, addresses: Sequence[str]) -> None:
    """The running proxy's rules replaced in place (``squid -k reconfigure``): the agent and
    its open connections carry on."""
    podman = session.podman
    proxy = proxy_name(name)
    rec = podman.container(proxy)
    if rec is None or rec.state != "running":
        raise NotFound(f"the egress proxy of {name} is not running", f"devbox start-work {name} --recreate")
    conf = egress.squid_conf(policy, refused=refused(podman, session.settings, addresses),
                             dns=session.settings.egress_dns)  # fmt: skip
    done = proc.run([*podman.cli(), "exec", "--user", "65534:65534", "--env", "DEVBOX_EGRESS_CONF", "--env",
                     f"PATH={PATH}", proxy, "/bin/sh", "-c", RELOAD], tool="podman",
                    env={"DEVBOX_EGRESS_CONF": conf}, timeout=30)  # fmt: skip
    if not done.ok:
        raise ContainerFailed(f"the egress proxy of {name} did not take the change: {done.last_error()}",
                              f"see `podman logs {proxy}`")  # fmt: skip


def net_allow(session: Devbox, branch: str, hosts: Sequence[str], *, sink: Sink = null_sink) -> NetPolicy:
    """Widen ``branch``'s allow list while it runs (recorded: ``--recreate`` keeps it)."""
    return _change(session, branch, hosts, True, sink)


def net_deny(session: Devbox, branch: str, hosts: Sequence[str], *, sink: Sink = null_sink) -> NetPolicy:
    """Narrow ``branch``'s allow list while it runs (recorded: ``--recreate`` keeps it)."""
    return _change(session, branch, hosts, False, sink)


# what the proxy saw ----------------------------------------------------------------------
@dataclass(frozen=True)
class NetLog:
    branch: str
    container: str
    policy: Policy
    connections: tuple[Connection, ...]
    tally: Tally


def net_log(session: Devbox, branch: str) -> NetLog:
    """Every request ``branch``'s proxy answered or refused, oldest first (on its host, when
    it has one)."""
    with _place(session, branch) as (there, name, _):
        conns = connections(there.podman, name)
        return NetLog(branch, name, policy_of(session, name), conns, egress.tally(conns))


def watch_net_log(session: Devbox, branch: str, *, sink: Sink = null_sink, cancel: threading.Event) -> NetLog:
    """``net log --follow`` as an operation's log (the dashboard's ``e``): the requests so
    far, then each as it comes, until ``cancel``."""
    log = net_log(session, branch)
    report = Reporter(sink, "net-log", Subject("container", log.container))
    report.log(f"{branch}: egress {log.policy.describe()}; {log.tally.refused} refused of {log.tally.seen}")
    if log.policy.mode != "allow":
        report.log("no proxy: egress open reaches what the host reaches, none reaches nothing")
        return log
    for c in log.connections:
        report.log(c.line(), source="proxy")
    shown = max((c.time for c in log.connections), default=0.0)
    for c in follow_net_log(session, branch, cancel, after=shown):
        report.log(c.line(), source="proxy")
    return log


def connections(podman: Podman, name: str) -> tuple[Connection, ...]:
    lines = podman.logs(proxy_name(name), tail="all", stderr=False)
    return tuple(c for c in map(egress.parse_line, lines) if c is not None)


def follow_net_log(
    session: Devbox, branch: str, cancel: threading.Event, *, after: float = 0.0
) -> Iterator[Connection]:
    """The proxy's requests as they come (those after ``after``, epoch seconds: what a caller
    showed already is not said again), until ``cancel`` or the proxy is gone."""
    with _place(session, branch) as (there, name, _):
        for line in there.podman.follow_logs(proxy_name(name), cancel, tail=0, stderr=False):
            conn = egress.parse_line(line)
            if conn is not None and conn.time > after:
                yield conn


def view(session: Devbox, container: str, mode: str, running: bool) -> EgressView:
    """An environment's egress for its row: the recorded policy and, for ``allow``, its
    proxy's refusals so far (read incrementally: ``TALLIES``)."""
    policy = egress.read_record(session.settings.build_dir, container) or Policy(mode)
    allow = tuple(r.text() for r in policy.allow) if policy.mode == "allow" else ()
    if policy.mode != "allow":
        return EgressView(policy.mode, allow)
    try:
        t = TALLIES.of(session.podman, container) if running else TALLIES.known(container)
    except DevboxError:  # its proxy is gone or podman stopped answering: the row still shows
        t = TALLIES.known(container)
    last = f"{t.last.host}:{t.last.port}" if t.last else ""
    return EgressView(policy.mode, allow, t.refused, last)


class Tallies:
    """Each environment's refusals for the rows, read incrementally: a proxy's log is read
    whole once, then from the last second seen, and at most every ``EVERY`` seconds (the
    dashboard polls every few seconds; podman reads a log file through to answer ``since``)."""

    EVERY = 10.0

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, Tally]] = {}
        self._read: dict[str, float] = {}  # proxy -> when its log was last read (monotonic)
        self._lock = threading.Lock()

    def known(self, name: str) -> Tally:
        with self._lock:
            return self._seen.get(proxy_name(name), (0.0, Tally()))[1]

    def of(self, podman: Podman, name: str) -> Tally:
        proxy = proxy_name(name)
        now_mono = time.monotonic()
        with self._lock:
            last_ts, known = self._seen.get(proxy, (0.0, Tally()))
            if proxy in self._read and now_mono - self._read[proxy] < self.EVERY:
                return known
            self._read[proxy] = now_mono
        since = int(last_ts) if last_ts else None
        lines = podman.logs(proxy, tail="all", since=since, stderr=False)
        new = [c for c in map(egress.parse_line, lines) if c is not None and c.time > last_ts]
        if not new:
            return known
        add = egress.tally(new)
        now = Tally(known.refused + add.refused, add.last or known.last, known.seen + add.seen)
        with self._lock:
            self._seen[proxy] = (max(c.time for c in new), now)
        return now


TALLIES = Tallies()  # one per process: the dashboard's poll reads each proxy's new lines only
