"""``status``: the one view both faces show, each section fetched on its own and at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from devbox.core import builder, containers, image
from devbox.core.agent_state import AgentState
from devbox.core.events import Reporter, Sink, null_sink
from devbox.core.image import ImageStatus
from devbox.core.ops.fleet import agent_rows
from devbox.core.ops.views import AgentRow, Section, Status
from devbox.core.ops.vm import list_vms
from devbox.core.ops.worktrees import StateCache, rows
from devbox.core.session import Devbox


def status(
    session: Devbox, *, sink: Sink = null_sink, cancel: threading.Event | None = None, hosts_wait: float | None = None,
    cache: StateCache | None = None,
) -> Status:  # fmt: skip
    """Sources, image, worktrees, containers, the VM disk and the VMs. podman being down costs the
    image, containers and disk sections (each says why and how to fix it); the worktrees
    and the sources still list. ``hosts_wait``: how long other hosts' agents may hold the
    answer up (the dashboard's bound; see ``host_agent_rows``); ``cache``: the dashboard's
    memory of the worktrees' git states (``StateCache``)."""
    settings = session.settings
    sources = Section.fetch(lambda: image.scan_sources(settings))  # no podman needed
    with ThreadPoolExecutor(max_workers=3) as pool:
        conts_f = pool.submit(Section.fetch, lambda: tuple(containers.list_containers(settings, session.podman)))
        image_f = pool.submit(Section.fetch, lambda: image.status(settings, session.podman, sources.value))
        conts = conts_f.result()
        wts = Section.fetch(lambda: rows(session, conts.value, cancel, cache))
        vms_f = pool.submit(Section.fetch, lambda: list_vms(session))
        from devbox.core.ops.fleet_host import host_agent_rows
        from devbox.core.ops.fleet_vm import vm_agent_rows  # ssh and transfer: only when status runs

        vm_agents_f = pool.submit(vm_agent_rows, session)  # no ssh unless an agent was started with --vm
        host_agents_f = pool.submit(host_agent_rows, session, wait=hosts_wait)  # one ssh per host, at once
        disk = Section.fetch(lambda: builder.status(settings, session.podman, session.user))
        vm_agents = vm_agents_f.result() + host_agents_f.result()
        if conts.value is not None:
            agents = Section(agent_rows(session, conts.value) + vm_agents, None)
        else:  # podman did not answer: what runs here is not known, which is not "nothing runs"
            elsewhere = {r.branch for r in vm_agents}
            why = "not known: podman did not answer" + (f" ({conts.problem.message})" if conts.problem else "")
            unknown = tuple(
                AgentRow(w.worktree.branch, "", "unknown", AgentState("unknown", problem=why))
                for w in wts.value or ()
                if w.worktree.branch and not w.worktree.is_main and not w.state.missing
                and w.worktree.branch not in elsewhere
            )  # fmt: skip
            agents = Section((vm_agents + unknown) or None, conts.problem)
        return Status(str(settings.repo), sources, image_f.result(), wts, conts, disk, vms_f.result(), agents)


def image_status(session: Devbox) -> ImageStatus:
    """Fresh or stale, and why (no build)."""
    return image.status(session.settings, session.podman)


def build_image(
    session: Devbox,
    *,
    force: bool = False,
    pull: bool = False,
    sink: Sink = null_sink,
    cancel: threading.Event | None = None,
) -> ImageStatus:
    """Build the image if its sources (or, with ``pull``, its base) changed; ``force``
    rebuilds without the layer cache."""
    from devbox.core.events import Subject

    report = Reporter(sink, "image-build", Subject("image", session.settings.image))
    return image.build(session.settings, session.podman, report, cancel or threading.Event(), force=force, pull=pull)
