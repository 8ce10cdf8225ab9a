"""VM mode's operations, as far as they are built: the disk (image → qcow2)."""

from __future__ import annotations

import threading

from devbox.core import builder, image
from devbox.core.events import Reporter, Sink, Subject, null_sink
from devbox.core.session import Devbox


def disk_status(session: Devbox) -> builder.DiskStatus:
    """Fresh or stale, and why ("disk missing", "image rebuilt since the disk was made")."""
    return builder.status(session.settings, session.podman, session.user)


def build_disk(
    session: Devbox, *, force: bool = False, sink: Sink = null_sink, cancel: threading.Event | None = None
) -> builder.DiskStatus:
    """The image if stale, then the disk if stale (or ``force``): each step says why."""
    cancel = cancel or threading.Event()
    s = session.settings
    report = Reporter(sink, "disk-build")
    image.build(s, session.podman, report.about(Subject("image", s.image)), cancel)
    return builder.build(
        s, session.podman, session.user, report.about(Subject("disk", str(builder.disk_path(s)))), cancel, force=force
    )
