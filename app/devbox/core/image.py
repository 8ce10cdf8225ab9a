"""The bootc image: is it fresh for bootc/, and build it when it is not."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from devbox.core.config import Settings
from devbox.core.events import LogLine, Sink, Step
from devbox.core.freshness import ManifestStore, SourceTree, Verdict, judge, scan
from devbox.core.locks import hold
from devbox.core.podman import ImageInfo, Podman

LABEL_SOURCES = "devbox.sources"


@dataclass(frozen=True)
class ImageStatus:
    name: str
    info: ImageInfo | None
    sources: SourceTree
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.info.id if self.info else None,
            "created": self.info.created if self.info else None,
            "sources_digest": self.sources.digest,
            "built_from": self.info.labels.get(LABEL_SOURCES) if self.info else None,
            "fresh": self.verdict.fresh,
            "reasons": list(self.verdict.reasons),
        }


def _prefix(settings: Settings) -> str:
    try:
        return f"{settings.bootc_dir.relative_to(settings.repo)}/"
    except ValueError:
        return f"{settings.bootc_dir}/"


def _manifests(settings: Settings) -> ManifestStore:
    return ManifestStore(settings.build_path("manifests"))


def scan_sources(settings: Settings) -> SourceTree:
    return scan(settings.bootc_dir, settings.build_path("cache", "bootc-stat.json"))


def status(settings: Settings, podman: Podman) -> ImageStatus:
    """Fresh or stale, and why (no build)."""
    tree = scan_sources(settings)
    info = podman.image(settings.image)
    built = None if info is None else info.labels.get(LABEL_SOURCES, "")
    return ImageStatus(settings.image, info, tree, judge(tree, built, _manifests(settings), _prefix(settings)))


def build(
    settings: Settings,
    podman: Podman,
    sink: Sink,
    cancel: threading.Event,
    *,
    force: bool = False,
) -> ImageStatus:
    """Build the image if its sources changed (or ``force``); report why either way."""
    podman.check()
    lock = settings.build_path("locks", "image.lock")

    def waiting() -> None:
        sink(Step("image", "start", "waiting for another devbox process to finish its build"))

    with hold(lock, "an image build", cancel=cancel, on_wait=waiting):
        return _build_locked(settings, podman, sink, cancel, force)


def _build_locked(settings: Settings, podman: Podman, sink: Sink, cancel: threading.Event, force: bool) -> ImageStatus:
    try:
        current = status(settings, podman)  # after the lock: the other build may have made it fresh
        if current.verdict.fresh and not force:
            assert current.info is not None
            sink(Step("image", "skip", f"{settings.image} {current.info.short_id} is up to date"))
            return current
        why = "--force" if force and current.verdict.fresh else current.verdict.reason
        sink(Step("image", "start", f"building {settings.image}: {why}"))
        podman.build(
            settings.bootc_dir, settings.image, {LABEL_SOURCES: current.sources.digest}, sink, cancel, no_cache=force
        )
        _manifests(settings).save(current.sources)
        after = status(settings, podman)
        assert after.info is not None
        if current.info is not None and current.info.id != after.info.id:
            # the previous build, untagged now: drop it unless a container still runs on it
            fate = "removed" if podman.api.remove_image(current.info.id) else "kept: a container still uses it"
            sink(LogLine("devbox", f"previous image {current.info.short_id} {fate}"))
        note = "" if after.verdict.fresh else f" (sources changed during the build: {after.verdict.reason})"
        sink(Step("image", "done", f"{settings.image} {after.info.short_id}{note}"))
        return after
    except BaseException:
        sink(Step("image", "fail"))
        raise
