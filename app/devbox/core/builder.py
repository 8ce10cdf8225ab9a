"""The disk builder adapter: the bootc image as a qcow2 disk, with bootc-image-builder.

bootc-image-builder runs rootful, as a privileged container that reads the image from the
root containers storage and writes ``OUT/qcow2/disk.qcow2``. devbox gives it a temporary
directory under ``.build/`` and moves the disk to ``.build/disk.qcow2`` only when it is
complete, with ``.build/disk.json`` beside it: the image ID and a key over every builder
input (image ID, config, rootfs, size, builder image ID), as bcvk keys its disks. The disk
is fresh iff the key matches. Interrupted, the builder container is removed and the old
disk is kept. ``disk.builder = "bib"`` is the only builder today; the name leaves room for
``bcvk to-disk`` (rootless) later.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devbox.core import podman_build, transfer
from devbox.core.config import Settings
from devbox.core.containers import HostUser
from devbox.core.errors import BuildFailed, Busy, Cancelled, DevboxError, DiskFull, NotAvailable, NotFound
from devbox.core.events import Reporter
from devbox.core.filesystem import read_json, write_json
from devbox.core.freshness import Verdict
from devbox.core.locks import hold
from devbox.core.podman import Podman

PROGRESS = re.compile(r"\[(\d+)\s*/\s*(\d+)\]\s*(.*)")


@dataclass(frozen=True)
class DiskStatus:
    path: Path
    record: dict[str, Any] | None
    key: str | None  # the key the disk would have if built now (None: the image is missing)
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "exists": self.path.exists(),
            "image_id": (self.record or {}).get("image_id"),
            "key": (self.record or {}).get("key"),
            "fresh": self.verdict.fresh,
            "reasons": list(self.verdict.reasons),
        }


def disk_path(settings: Settings) -> Path:
    return settings.build_path("disk.qcow2")


def record_path(settings: Settings) -> Path:
    return settings.build_path("disk.json")


# The last DISK_CACHE disks are kept under .build/disks/ by the image's content (its bootc/
# digest and base image IDs, the labels that make devbox call an image fresh) and the other
# builder inputs, hard links to the disk in use where the filesystem allows: switching back
# to an earlier image (a branch, a reverted change) reuses its disk instead of running the
# builder again, as bcvk caches its base disks by image digest.
DISK_CACHE = 2


def _cache_dir(settings: Settings) -> Path:
    return settings.build_path("disks")


def content_key(podman: Podman, settings: Settings, config: str, builder_id: str) -> str | None:
    """The disk's key by what the image was built from (None: the image has no such labels)."""
    from devbox.core.image import LABEL_BASE, LABEL_SOURCES

    image = podman.image(settings.image)
    if image is None or not image.labels.get(LABEL_SOURCES):
        return None
    content = f"{image.labels[LABEL_SOURCES]} {image.labels.get(LABEL_BASE, '')}"
    return disk_key(content, config, settings.disk_rootfs, settings.disk_size_gib, builder_id)


def _cache_take(settings: Settings, key: str, into: Path) -> dict[str, Any] | None:
    """The cached disk for ``key`` put in place at ``into`` (whole or not at all); its record."""
    disk, rec = _cache_dir(settings) / f"{key}.qcow2", read_json(_cache_dir(settings) / f"{key}.json")
    if not disk.is_file() or not isinstance(rec, dict):
        return None
    tmp = into.with_name(f".{into.name}.{os.getpid()}.tmp")
    try:
        try:
            os.link(disk, tmp)
        except OSError:
            shutil.copy2(disk, tmp)
        os.replace(tmp, into)
    except OSError:
        tmp.unlink(missing_ok=True)
        return None
    os.utime(disk)  # the newest used: kept longest
    return rec


def _cache_put(settings: Settings, key: str, disk: Path, record: dict[str, Any]) -> list[str]:
    """Keep ``disk`` under ``key``; drop the oldest beyond ``DISK_CACHE``; what was dropped."""
    cache = _cache_dir(settings)
    cache.mkdir(parents=True, exist_ok=True)
    kept = cache / f"{key}.qcow2"
    with contextlib.suppress(OSError):
        kept.unlink(missing_ok=True)
        try:
            os.link(disk, kept)
        except OSError:
            shutil.copy2(disk, kept)
        write_json(cache / f"{key}.json", record)
    entries = sorted(cache.glob("*.qcow2"), key=lambda q: q.stat().st_mtime, reverse=True)
    dropped = []
    for old in entries[DISK_CACHE:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
        dropped.append(old.stem[:12])
    return dropped


def config_toml(user: str, public_key: str, size_gib: int) -> str:
    """bootc-image-builder's config: the VM user (groups wheel) with the project key, and the
    disk size (``[customizations.disk] minsize``, not also a filesystem entry)."""
    quoted = public_key.strip().replace("\\", "\\\\").replace('"', '\\"')
    return (
        "[[customizations.user]]\n"
        f'name = "{user}"\n'
        f'key = "{quoted}"\n'
        'groups = ["wheel"]\n\n'
        "[customizations.disk]\n"
        f'minsize = "{size_gib} GiB"\n'
    )


def _user_sha(config: str) -> str:
    """The user part of the config (name and key), so a size change is not reported as one."""
    return hashlib.sha256(config.split("[customizations.disk]")[0].encode()).hexdigest()


def disk_key(image_id: str, config: str, rootfs: str, size_gib: int, builder_id: str) -> str:
    h = hashlib.sha256()
    for part in (image_id, config, rootfs, str(size_gib), builder_id):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _inputs(
    settings: Settings, podman: Podman, user: HostUser, *, make_key: bool = False
) -> tuple[str, str | None, str | None]:
    """The config text, the image ID and the builder image ID (None when missing). Only a
    build makes the SSH key; a status check never writes anything."""
    key = transfer.project_key(settings) if make_key else settings.build_path("ssh", "id_ed25519")
    pub_path = key.with_suffix(".pub")
    try:
        pub = pub_path.read_text()
    except OSError:
        pub = ""
    config = config_toml(settings.vm.user or user.name, pub, settings.disk_size_gib)
    found = podman.images([settings.image, settings.builder_image])  # one ask
    image, builder = found[settings.image], found[settings.builder_image]
    return config, image.id if image else None, builder.id if builder else None


def status(settings: Settings, podman: Podman, user: HostUser) -> DiskStatus:
    """Fresh iff the recorded key is the key of today's inputs; the reason says which input moved."""
    path = disk_path(settings)
    rec = read_json(record_path(settings))
    rec = rec if isinstance(rec, dict) else None
    config, image_id, builder_id = _inputs(settings, podman, user)
    key = (
        None
        if image_id is None
        else disk_key(image_id, config, settings.disk_rootfs, settings.disk_size_gib, builder_id or "")
    )
    reasons: list[str] = []
    if rec is None or not path.exists():
        reasons.append("disk missing")
    elif image_id is None:
        reasons.append("image missing")
    elif rec.get("key") != key:
        if rec.get("image_id") != image_id:
            reasons.append("image rebuilt since the disk was made")
        if rec.get("builder_id") != (builder_id or ""):
            reasons.append("builder image changed")
        if rec.get("size_gib") != settings.disk_size_gib or rec.get("rootfs") != settings.disk_rootfs:
            reasons.append("disk size or rootfs changed")
        if rec.get("user_sha") != _user_sha(config):
            reasons.append("VM user or SSH key changed")
        reasons = reasons or ["builder inputs changed"]
    return DiskStatus(path, rec, key, Verdict(not reasons, tuple(reasons)))


def parse_progress(line: str) -> tuple[float | None, float | None, str] | None:
    """bootc-image-builder's ``--progress verbose`` step lines, e.g. ``[3/7] Building ...``."""
    m = PROGRESS.search(line)
    if m is None:
        return None
    return float(m.group(1)), float(m.group(2)), m.group(3).strip() or line.strip()


def _lock(settings: Settings) -> Path:
    return settings.build_path("locks", "disk.lock")


def _run_record(settings: Settings) -> Path:
    return settings.build_path("run", "disk-build.json")


def build(
    settings: Settings,
    podman: Podman,
    user: HostUser,
    report: Reporter,
    cancel: threading.Event,
    *,
    force: bool = False,
) -> DiskStatus:
    """Build the disk when it is stale (or ``force``); the old disk stays until the new one
    is whole. Under the disk lock: what an earlier run that died left is removed first."""

    def waiting() -> None:
        report.log("waiting for another devbox disk build to finish")

    with hold(_lock(settings), "a disk build", cancel=cancel, on_wait=waiting):
        _remove_leftovers(settings, podman, report)
        return _build_locked(settings, podman, user, report, cancel, force=force)


def clean_leftovers(settings: Settings, podman: Podman, report: Reporter) -> tuple[str, ...]:
    """What a disk build that died (killed, the machine lost power) left: its builder
    container and work directory. Never a live run's: when one holds the lock, nothing is
    touched."""
    try:
        with hold(_lock(settings), "a disk build"):  # no cancel: Busy at once while one runs
            return _remove_leftovers(settings, podman, report)
    except Busy:
        return ()


def _remove_leftovers(settings: Settings, podman: Podman, report: Reporter) -> tuple[str, ...]:
    """Called with the disk lock held: every run record and work directory is a dead run's."""
    removed: list[str] = []
    rec = read_json(_run_record(settings))
    name = rec.get("name") if isinstance(rec, dict) else None
    if isinstance(name, str) and name:
        with contextlib.suppress(DevboxError):
            if podman.container(name) is not None:
                podman.remove(name, force=True)
                report.log(f"removed the builder container {name}, left by a disk build that did not finish")
                removed.append(name)
    _run_record(settings).unlink(missing_ok=True)
    for d in sorted(settings.build_path().glob("disk-build-*")):
        shutil.rmtree(d, ignore_errors=True)
        if not d.exists():
            report.log(f"removed {d}, left by a disk build that did not finish")
            removed.append(str(d))
    return tuple(removed)


def _build_locked(
    settings: Settings, podman: Podman, user: HostUser, report: Reporter, cancel: threading.Event, *, force: bool
) -> DiskStatus:
    transfer.project_key(settings, report)
    current = status(settings, podman, user)
    if current.verdict.fresh and not force:
        report.step("skip", f"{current.path} is up to date")
        return current
    if podman.rootless():
        raise NotAvailable(
            "bootc-image-builder must run as root, and this podman is rootless",
            f"copy the image to root's storage: podman image scp {os.environ.get('USER', 'you')}@localhost::"
            f"{settings.image} root@localhost::, then run devbox as root (sudo -E ./vm-up.sh)",
        )
    if current.key is None:
        raise NotFound(f"image {settings.image} is not built", "build it first: ./devbox image build")
    if podman.image(settings.builder_image) is None:
        report.log(f"pulling {settings.builder_image}")
        if not podman.pull(settings.builder_image):
            raise BuildFailed(
                f"the builder image {settings.builder_image} is not here and could not be pulled",
                "check the network and registry login, or set image.builder",
            )
        current = status(settings, podman, user)
    why = "--force" if current.verdict.fresh else current.verdict.reason
    config, image_id, builder_id = _inputs(settings, podman, user, make_key=True)
    assert image_id is not None and current.key is not None
    content = content_key(podman, settings, config, builder_id or "")
    if content is not None and not force:
        cached = _cache_take(settings, content, current.path)
        if cached is not None:
            write_json(record_path(settings), {**cached, "image_id": image_id, "key": current.key})
            report.step("done", f"{current.path}: the disk built earlier from the same bootc/ and base, reused "
                                f"({why}; no builder run)")  # fmt: skip
            return status(settings, podman, user)
    report.step("start", f"building {current.path}: {why}")
    graphroot = str((podman.info().get("store") or {}).get("graphRoot") or "/var/lib/containers/storage")
    work = Path(tempfile.mkdtemp(prefix="disk-build-", dir=settings.build_path()))
    name = f"devbox-bib-{hashlib.sha256(str(settings.repo).encode()).hexdigest()[:8]}-{os.getpid()}"
    write_json(_run_record(settings), {"pid": os.getpid(), "name": name, "work": str(work)})
    try:
        (work / "output").mkdir()
        (work / "config.toml").write_text(config)
        argv = [
            "run",
            "--rm",
            "--name",
            name,
            "--privileged",
            "--pull=never",  # pulled above (or refused) through the API
            "--security-opt",
            "label=type:unconfined_t",
            "-v",
            f"{graphroot}:/var/lib/containers/storage",
            "-v",
            f"{work / 'output'}:/output",
            "-v",
            f"{work / 'config.toml'}:/config.toml:ro",
            settings.builder_image,
            "--type",
            "qcow2",
            "--rootfs",
            settings.disk_rootfs,
            "--progress",
            "verbose",
            "--chown",
            f"{user.uid}:{user.gid}",
            settings.image,
        ]
        done = podman_build.run_tool(
            podman, argv, report, cancel, name=name, source="bootc-image-builder", parse=parse_progress
        )
        if done.cancelled:
            raise Cancelled("disk build interrupted", "the builder container was removed; the previous disk is kept")
        made = work / "output" / "qcow2" / "disk.qcow2"
        if done.returncode != 0 or not made.is_file():
            text = "\n".join(done.tail).lower()
            if "no space left" in text:
                raise DiskFull("disk full while building the VM disk", "free space under .build/ and run again")
            raise BuildFailed(
                f"bootc-image-builder failed: {done.last_error()[:300]}",
                "see its output above; fix bootc/ or the builder settings and run again",
                detail=done.tail,
            )
        os.replace(made, current.path)  # same filesystem (.build/): the old disk is replaced whole
        record = {
            "image_id": image_id,
            "key": current.key,
            "builder_image": settings.builder_image,
            "builder_id": builder_id or "",
            "rootfs": settings.disk_rootfs,
            "size_gib": settings.disk_size_gib,
            "config_sha": hashlib.sha256(config.encode()).hexdigest(),
            "user_sha": _user_sha(config),
            "built_at": time.time(),
        }
        write_json(record_path(settings), record)
        if content is not None:
            dropped = _cache_put(settings, content, current.path, record)
            if dropped:
                report.log(f"disk cache: dropped the oldest ({', '.join(dropped)}), keeping {DISK_CACHE}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        _run_record(settings).unlink(missing_ok=True)
    after = status(settings, podman, user)
    report.step("done", f"{after.path} ({after.path.stat().st_size >> 20} MiB)")
    return after
