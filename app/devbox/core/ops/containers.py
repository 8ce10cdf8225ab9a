"""Container operations: start-work (worktree, image, container), stop, remove, attach."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from devbox.core import branch_notes, containers, egress, envgit, git, image, labels
from devbox.core.config import Limits
from devbox.core.containers import Container
from devbox.core.egress import Policy
from devbox.core.errors import (
    BadName,
    Cancelled,
    ContainerFailed,
    DevboxError,
    NotFound,
    PodmanError,
    PodmanMissing,
    PodmanUnreachable,
    Refused,
)
from devbox.core.events import Event, Reporter, Sink, Subject, null_sink
from devbox.core.locks import hold
from devbox.core.ops import egress as egress_ops
from devbox.core.ops.results import ContainerList, Loss, Problem, Removed, StartedSeveral, StartResult
from devbox.core.ops.steps import branch_lock, ensure_worktree, remove_container_record
from devbox.core.session import Devbox

READY = "devbox-entrypoint: ready"
READY_WAKE = 0.05  # seconds between looks at cancel and the deadline while the log is followed
# the entrypoint logs its ready line within tens of ms of the start, but podman's log follow
# notices a new line only when its file tail next polls (~250 ms in podman 4): the log is
# read a few times first, a request each, and followed only when the line is not there yet
QUICK_READS, QUICK_WAIT = 6, 0.01
AT_ONCE = 10  # starts in flight in start_several: the podman service's work, not devbox's, bounds them
MOST = 50  # branches start_several takes in one call


def list_containers(session: Devbox) -> ContainerList:
    """This repo's containers and the current image ID (to tell stale ones)."""
    conts = tuple(containers.list_containers(session.settings, session.podman))
    info = session.podman.image(session.settings.image)
    return ContainerList(conts, info.id if info else None)


def find_container(session: Devbox, ref: str) -> Container:
    """A container of this repo by branch or by name."""
    for c in containers.list_containers(session.settings, session.podman):
        if ref in (c.branch, c.name):
            return c
    raise NotFound(f"no devbox container for {ref!r} in {session.settings.repo}", "see `devbox container list`")


def container_loss(session: Devbox, c: Container) -> Loss:
    from devbox.core.ops.envsync import holds_unsynced, sync_branches  # (it imports this module's neighbours)

    sync_branches(session, [c.branch], conts=[c])  # its commits on the host first: they are kept
    var_vol = containers.volume_names(c.name)[0]
    return Loss(running=c.name if c.running else "", home=var_vol if session.podman.volume_exists(var_vol) else "",
                unsynced=c.name if holds_unsynced(session, c) else "")  # fmt: skip


def remove_container(
    session: Devbox, ref: str, *, force: bool = False, sink: Sink = null_sink, cancel: threading.Event | None = None
) -> Removed:
    """Remove a container and its volumes. ``cancel`` is honoured until the removal starts
    (a removal is not stopped halfway: it would leave a container without its volumes)."""
    c = find_container(session, ref)
    if cancel is not None and cancel.is_set():
        raise Cancelled("interrupted: nothing removed")
    report = Reporter(sink, "container-rm", Subject("container", c.name))
    report.step("start", f"removing {c.name}")
    gone = remove_container_record(session, c, force=force, report=report)
    report.step("done", f"removed {c.name}")
    return Removed(tuple(gone))


def stop_container(
    session: Devbox, ref: str, *, sink: Sink = null_sink, cancel: threading.Event | None = None
) -> Container:
    """Stop a container (podman's own timeout, then SIGKILL). ``cancel`` is honoured until
    the stop starts."""
    c = find_container(session, ref)
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"interrupted: {c.name} not stopped")
    report = Reporter(sink, "container-stop", Subject("container", c.name))
    report.step("start", f"stopping {c.name}")
    session.podman.stop(c.name)
    if c.egress == "allow":  # its proxy with it (start-work starts both again); it keeps no state
        session.podman.stop(egress_ops.proxy_name(c.name), timeout=1)
    after = containers.get(session.podman, c.name) or c
    report.step("done", f"{c.name} {after.state}")
    return after


def attach_argv(session: Devbox, c: Container, command: list[str], *, tty: bool) -> list[str]:
    """The argv that runs ``command`` in ``c`` as the user, with no privileges (the face
    execs it, or runs it on its terminal)."""
    if not c.running:
        raise Refused(f"container {c.name} is not running ({c.state})", f"start it: ./start-work {c.branch}")
    if c.worktree and not os.path.isdir(c.worktree):  # (runc would refuse it in its own words)
        raise Refused(f"the worktree of {c.branch} is missing: {c.worktree}", labels.missing_worktree_fix(c.branch))
    user = session.user
    return session.podman.exec_argv(
        c.name,
        containers.drop_privileges(user, command),
        user="0:0",  # setpriv needs root inside to clear the bounding set, then becomes the user
        workdir=c.worktree or "/",
        env=containers.exec_env(user),
        tty=tty,
    )


def _wait_ready(session: Devbox, name: str, cancel: threading.Event, since: int, timeout: float = 30.0) -> Container:
    """Wait for the entrypoint's ready line (logged after ``since``); if the container dies
    first, say why.

    The log is read a few times (QUICK_READS), then followed (one request the service answers
    line by line), not polled: polling cost two API calls every 10 ms per starting container,
    which ten starts at once paid in CPU. The follow runs in a thread so that ``cancel`` and
    the timeout are honoured here; it ends with its stream, when the line comes or the
    container stops or is removed (what a failed or cancelled start does to it)."""
    podman = session.podman
    for _ in range(QUICK_READS):
        if any(READY in line for line in podman.logs(name, tail=200, since=since)):
            c = containers.get(podman, name)
            if c is not None and c.running:
                return c
            break  # it stopped after the line: the follow below ends at once and says why
        if cancel.wait(QUICK_WAIT):
            raise Cancelled(f"interrupted while {name} was starting")
    lines: list[str] = []
    ended = threading.Event()
    failed: list[BaseException] = []

    def follow() -> None:
        try:
            for line in podman.stream_logs(name, since):
                lines.append(line)
                if READY in line:
                    return
        except Exception as exc:  # (PodmanError from the adapter) said below
            failed.append(exc)
        finally:
            ended.set()

    threading.Thread(target=follow, name=f"ready-{name}", daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ended.wait(READY_WAKE):  # local wake-ups only: the service does the waiting
        if cancel.is_set():
            raise Cancelled(f"interrupted while {name} was starting")
        if time.monotonic() > deadline:
            break
    if failed and isinstance(failed[0], PodmanUnreachable):
        raise failed[0]
    c = containers.get(podman, name)
    if c is not None and c.running and any(READY in line for line in lines):
        return c
    state = c.state if c else "gone"
    shown = list(lines) or podman.logs(name, tail=30, since=since)
    last = next((ln for ln in reversed(shown) if ln.strip()), "no output")
    raise ContainerFailed(
        f"container {name} did not start ({state}): {last[:300]}",
        f"see `podman logs {name}`; after fixing bootc/, run start-work with --recreate",
        detail=tuple(ln[:400] for ln in shown[-15:]),
    )


def _create(
    session: Devbox,
    name: str,
    branch: str,
    wt: git.Worktree,
    image_id: str,
    report: Reporter,
    cancel: threading.Event,
    *,
    keep_var: bool = False,
    absent: bool = False,
    policy: Policy,
) -> Container:
    """Create and start the branch's container under its egress ``policy`` (for ``allow``,
    its network and proxy first); a failed or interrupted start leaves nothing.
    ``absent``: the caller found no container by this name under the branch's lock."""
    podman = session.podman
    settings = session.settings
    if not absent and containers.get(podman, name) is not None:
        raise Refused(f"container {name} already exists (made by another devbox run)", "run start-work again")
    env_git = envgit.prepare(settings, name, wt, branch_notes.recorded_base(settings.repo, branch))
    early = egress_ops.EgressStart(podman, settings, name, image_id, policy, addresses=None, report=report,
                                   cancel=cancel, fresh=absent)  # fmt: skip
    wiring = early.wiring()
    spec = containers.spec(
        settings,
        name=name,
        branch=branch,
        worktree=wt.path,
        image_id=image_id,
        user=session.user,
        rootless=podman.rootless(),
        env=git.identity(settings.repo),
        gitdir=env_git.gitdir,
        dotgit=env_git.dotgit,
        objects=settings.repo / ".git" / "objects",
        limits=settings.limits if podman.limits_enforced() else Limits(),
        wiring=wiring,
    )
    try:
        podman.create(spec)
        since = int(time.time()) - 1
        podman.start(name)
        started = _wait_ready(session, name, cancel, since)
        early.join()
        if cancel.is_set():
            raise Cancelled(f"interrupted while {name} was starting")
        egress.write_record(settings.build_dir, name, policy)
        return started
    except BaseException as exc:
        early.join_quietly()  # its start ends first (quickly: it listens, or its squid exits), then goes
        half = containers.get(podman, name)
        gone = []
        if half is not None:
            gone = remove_container_record(session, half, force=True, report=report, keep_var=keep_var)
        gone += egress_ops.unwire(podman, name)  # (a start that failed before the container)
        if isinstance(exc, Cancelled) and gone:
            raise Cancelled(f"interrupted while {name} was starting", f"removed {', '.join(gone)}") from None
        if isinstance(exc, PodmanError):
            cause = exc.message.split(" failed: ", 1)[-1]
            raise PodmanError(f"podman could not start {name}: {cause}", exc.remedy) from None
        raise


def start_work(
    session: Devbox,
    branch: str,
    *,
    from_ref: str | None = None,
    recreate: bool = False,
    sink: Sink = null_sink,
    cancel: threading.Event | None = None,
    image_status: image.ImageStatus | None = None,
    policy: Policy | None = None,
) -> StartResult:
    """A worktree for ``branch``, a fresh-enough image, and the branch's container running.
    ``image_status``: the image's status as the caller just asked it (``start_several``).
    ``policy``: the egress a new environment gets (None: ``[container] egress``); an
    environment that exists keeps its own (recorded; ``--recreate`` too), and a different
    mode asked of it is refused with the way to get it."""
    cancel = cancel or threading.Event()
    settings = session.settings
    report = Reporter(sink, "start-work")
    git.check_branch_name(branch)
    for path, key in ((settings.repo, "the repository"), (settings.worktrees_dir, "paths.worktrees")):
        if ":" in str(path) or "," in str(path):  # podman's mount syntax cannot carry them
            raise BadName(f"{key} path {path} contains ':' or ','; podman cannot mount it", "move it to a plain path")
    podman = session.podman
    if not git.worktree_path(settings.worktrees_dir, branch).exists():  # a new environment: its create
        podman.preload()  # needs podman-py (~170 ms of CPU to import), loaded while podman and git answer
    try:
        # podman's first answer is its check too: a missing podman must leave no worktree behind
        current = image_status or image.status(settings, podman)
    except (PodmanMissing, PodmanUnreachable, PodmanError):
        gone = git.find_worktree(settings.repo, branch)  # a worktree deleted by hand is named first
        if gone is not None and gone.prunable and not recreate:
            ensure_worktree(session, branch, report, cancel, known=gone)
        raise
    with hold(branch_lock(session, branch), f"start-work for {branch!r}"):
        known = git.find_worktree(settings.repo, branch)  # once per operation, passed down
        if known is not None and known.is_main:
            raise Refused(
                f"{branch} is checked out in the main checkout: an environment there would hand its agent "
                "devbox.toml, .build/ and the repository itself",
                f"check out another branch in {settings.repo}, or start one of its own: ./start-work work/{branch}",
            )
        if known is not None and known.prunable and not recreate:
            ensure_worktree(session, branch, report, cancel, known=known)  # says what happened and the fix
        if known is not None and known.prunable:
            report.about(Subject("worktree", branch)).log(f"{known.path} was deleted by hand: making it anew")
            git.prune(settings.repo)
            known = None
        img_report = report.about(Subject("image", settings.image))
        if not current.verdict.fresh:
            image.ensure_bases(settings, podman, img_report)  # an unpullable base fails before the worktree
        wt = ensure_worktree(session, branch, report, cancel, from_ref, known=known)
        img = image.build(settings, podman, img_report, cancel, current=current)
        assert img.info is not None
        name = containers.container_name(settings, branch)
        r = report.about(Subject("container", name))
        existing = containers.get(podman, name)
        stale = existing is not None and existing.stale(img.info.id)
        recorded = egress.read_record(settings.build_dir, name)
        if existing is not None and recreate:
            keep = policy or recorded or Policy(existing.egress)
            r.step("start", f"recreating {name} from {img.info.short_id} (keeping its /var; egress {keep.mode})")
            remove_container_record(session, existing, force=True, report=r, keep_var=True)
            c = _create(session, name, branch, wt, img.info.id, r, cancel, keep_var=True, policy=keep)
            r.step("done", f"{name} recreated")
            return StartResult(c, wt, "recreated", False)
        if existing is None:
            chosen = policy or (recorded if recreate and recorded else settings.egress)
            r.step("start", f"creating {name} (egress {chosen.describe()})")
            c = _create(session, name, branch, wt, img.info.id, r, cancel, absent=True, policy=chosen)
            r.step("done", f"{name} running")
            return StartResult(c, wt, "created", False)
        if policy is not None and policy.mode != existing.egress:
            raise Refused(
                f"{branch}'s environment has egress {existing.egress}, not {policy.mode}: it is chosen when an "
                "environment is made",
                f"remake it with that policy: devbox start-work {branch} --recreate --egress {policy.mode} "
                f"(or ask for {existing.egress}: --egress {existing.egress})",
            )
        note = f" (made from an older image; --recreate switches to {img.info.short_id})" if stale else ""
        if existing.running:
            r.step("skip", f"{name} is running{note}")
            return StartResult(existing, wt, "running", stale)
        r.step("start", f"starting stopped {name}{note}")
        since = int(time.time()) - 1
        try:
            if existing.egress == "allow":  # its proxy first, with the rules recorded since it was made
                egress_ops.restart_proxy(session, name, recorded or Policy("allow"), cancel)
            podman.start(name)
            started = _wait_ready(session, name, cancel, since)
        except Cancelled:
            podman.stop(name, timeout=2)
            raise Cancelled(f"interrupted while {name} was starting", f"stopped {name} again") from None
        r.step("done", f"{name} {started.state}")
        return StartResult(started, wt, "started", stale)


def start_several(
    session: Devbox,
    branches: Sequence[str],
    *,
    from_ref: str | None = None,
    recreate: bool = False,
    sink: Sink = null_sink,
    cancel: threading.Event | None = None,
    then: Callable[[str, StartResult, Sink], None] | None = None,
    policies: Mapping[str, Policy] | None = None,
) -> StartedSeveral:
    """``start_work`` for several branches at once (``start-work A B C --detach``): the image
    is checked (and built, if stale) once, then each branch starts in a worker of its own.
    Ten starts in one process pay Python's start, devbox's imports and podman-py's once,
    not ten times. One branch failing does not stop the others: the result says what each did.
    ``policies``: the egress each new environment asks for (``start_work``'s ``policy``).
    ``then(branch, result, sink)`` runs in the branch's worker once its environment is up
    (``agent start TASK --count N`` starts each copy's agent there); its error is the
    branch's failure. ``cancel`` stops every start (each removes what it half made) and
    raises once all are back."""
    from concurrent.futures import ThreadPoolExecutor  # here: start_work's own import stays light

    cancel = cancel or threading.Event()
    names = list(dict.fromkeys(branches))
    if not names or len(names) > MOST:
        raise BadName(f"{len(names)} branches: between 1 and {MOST} at once", "name the branches to start")
    for branch in names:
        git.check_branch_name(branch)
    lock = threading.Lock()

    def one_at_a_time(event: Event) -> None:  # the sink is not thread-safe (a terminal renderer)
        with lock:
            sink(event)

    session.podman.preload()  # (main thread only) while the image is checked
    current = image.status(session.settings, session.podman)
    if not current.verdict.fresh:  # built once, here: the workers find it fresh
        report = Reporter(one_at_a_time, "start-work").about(Subject("image", session.settings.image))
        image.ensure_bases(session.settings, session.podman, report)
        current = image.build(session.settings, session.podman, report, cancel, current=current)

    def start(branch: str) -> StartResult | Problem:
        try:
            res = start_work(session, branch, from_ref=from_ref, recreate=recreate, sink=one_at_a_time,
                             cancel=cancel, image_status=current, policy=(policies or {}).get(branch))  # fmt: skip
            if then is not None and not cancel.is_set():
                then(branch, res, one_at_a_time)
            return res
        except DevboxError as exc:
            return Problem.of(exc)

    with ThreadPoolExecutor(max_workers=min(AT_ONCE, len(names)), thread_name_prefix="start") as pool:
        outcomes = list(pool.map(start, names))
    started = tuple(o for o in outcomes if isinstance(o, StartResult))
    failed = tuple((b, o) for b, o in zip(names, outcomes, strict=True) if isinstance(o, Problem))
    if cancel.is_set():
        made = ", ".join(r.container.name for r in started) or "none"
        raise Cancelled(f"interrupted: {len(started)} of {len(names)} started ({made})",
                        "remove what you do not want: devbox worktree remove BRANCH")  # fmt: skip
    return StartedSeveral(started, failed)
