"""The bootc image: is it fresh for bootc/, and build it when it is not.

An image's identity is what it was built from, carried in its labels:
``devbox.sources`` (the digest of bootc/ as podman sees it: ignore files honoured),
``devbox.checkout`` (which clone built it: two clones never fight over one tag) and
``devbox.base`` (the ID of each FROM image at build time: a newer base makes it stale).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devbox.core import podman_build
from devbox.core.config import Settings
from devbox.core.errors import BuildFailed, ConfigError
from devbox.core.events import Reporter
from devbox.core.filesystem import write_atomic
from devbox.core.freshness import ManifestStore, SourceTree, Verdict, ignore_patterns, judge, scan
from devbox.core.locks import hold
from devbox.core.podman import Podman
from devbox.core.podman_records import ImageRecord

LABEL_SOURCES = "devbox.sources"
LABEL_CHECKOUT = "devbox.checkout"
LABEL_BASE = "devbox.base"


@dataclass(frozen=True)
class ImageStatus:
    name: str
    info: ImageRecord | None
    sources: SourceTree
    verdict: Verdict

    @property
    def id(self) -> str | None:
        return self.info.id if self.info else None

    def line(self) -> str:
        ident = self.info.short_id if self.info else "(none)"
        return f"{self.name} {ident}: " + ("fresh" if self.verdict.fresh else f"stale ({self.verdict.reason})")

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


_FROM = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE | re.MULTILINE)


BASE_ARG = "DEVBOX_BASE"  # the build argument image.base is passed as


def base_images(context: Path, base: str = "") -> list[str]:
    """The images the Containerfile builds FROM (not its own stages, not scratch, not
    references made of build arguments, which only the build can resolve: except
    ``$DEVBOX_BASE``, which is ``base``, image.base)."""
    try:
        text = (context / "Containerfile").read_text(errors="replace")
    except OSError:
        return []
    stages: set[str] = set()
    bases: list[str] = []
    for m in _FROM.finditer(text):
        ref, alias = m.group(1), m.group(2)
        if base and ref in (f"${{{BASE_ARG}}}", f"${BASE_ARG}"):
            ref = base
        if ref.lower() != "scratch" and ref.lower() not in stages and "$" not in ref and ref not in bases:
            bases.append(ref)
        if alias:
            stages.add(alias.lower())
    return bases


def _base_label(bases: dict[str, str]) -> str:
    return " ".join(f"{ref}={iid}" for ref, iid in sorted(bases.items()))


def _parse_base_label(text: str) -> dict[str, str]:
    return dict(part.rsplit("=", 1) for part in text.split() if "=" in part)


def local_bases(settings: Settings, podman: Podman) -> dict[str, str | None]:
    """Each FROM image and its local ID (None: not present here)."""
    return {ref: rec.id if rec else None for ref, rec in _bases(settings, podman).items()}


def _bases(settings: Settings, podman: Podman, also: Sequence[str] = ()) -> dict[str, ImageRecord | None]:
    """The FROM images' records and ``also``'s, in one ask."""
    if not settings.image_base:
        try:
            text = (settings.bootc_dir / "Containerfile").read_text(errors="replace")
        except OSError:
            text = ""
        if f"${{{BASE_ARG}}}" in text or f"${BASE_ARG}" in text:
            raise ConfigError(f"{settings.bootc_dir}/Containerfile builds FROM ${BASE_ARG}, but image.base is not set",
                              'set [image] base = "IMAGE" in devbox.toml (the shared devbox image)')  # fmt: skip
    return podman.images([*also, *base_images(settings.bootc_dir, settings.image_base)])


def status(settings: Settings, podman: Podman, tree: SourceTree | None = None) -> ImageStatus:
    """Fresh or stale, and why (no build)."""
    tree = scan_sources(settings) if tree is None else tree
    try:
        found = _bases(settings, podman, also=[settings.image])  # one ask for the image and its bases
    except ConfigError:  # FROM $DEVBOX_BASE without image.base: said when the image is there
        found = {settings.image: podman.image(settings.image)}
        if found[settings.image] is not None:
            raise
    info = found[settings.image]
    built = None if info is None else info.labels.get(LABEL_SOURCES, "")
    verdict = judge(tree, built, _manifests(settings), _prefix(settings), "image")
    reasons = list(verdict.reasons)
    if info is not None:
        checkout = info.labels.get(LABEL_CHECKOUT)
        if checkout and checkout != str(settings.repo):
            reasons.insert(0, f"built from another checkout ({checkout})")
        recorded = _parse_base_label(info.labels.get(LABEL_BASE, ""))
        for ref, rec in found.items():
            iid = rec.id if rec else None
            if ref == settings.image:
                continue
            if iid is not None and ref in recorded and recorded[ref] != iid:
                reasons.append(f"base image {ref} updated")
            elif recorded and ref not in recorded:  # image.base names another image now
                reasons.append(f"builds FROM {ref} now (was {', '.join(recorded)})")
    if reasons != list(verdict.reasons):
        verdict = Verdict(False, tuple(reasons))
    return ImageStatus(settings.image, info, tree, verdict)


def ensure_bases(settings: Settings, podman: Podman, report: Reporter) -> None:
    """Pull FROM images that are not here yet, before anything else is made: a host that
    cannot reach the registry hears so before a worktree or branch exists."""
    for ref, iid in local_bases(settings, podman).items():
        if iid is None:
            report.step("start", f"pulling base image {ref}")
            if not podman.pull(ref):
                raise BuildFailed(
                    f"base image {ref} is not here and could not be pulled",
                    f"check the network and registry login (podman login {ref.split('/')[0]}), then run again",
                )
            report.step("done", f"pulled {ref}")


def build(
    settings: Settings,
    podman: Podman,
    report: Reporter,
    cancel: threading.Event,
    *,
    force: bool = False,
    pull: bool = False,
    current: ImageStatus | None = None,
) -> ImageStatus:
    """Build the image if its sources changed (or ``force``); report why either way.

    A fresh image is answered without the build lock (``current``: the caller's status,
    computed once per operation), so a forced rebuild running elsewhere never holds up a
    start-work that needs no build; a stale one is checked again under the lock (another
    build may just have made it)."""
    if not (force or pull):
        current = current or status(settings, podman)  # (its answer is podman's check too)
        if current.verdict.fresh:
            assert current.info is not None
            report.step("skip", f"{settings.image} {current.info.short_id} is up to date")
            return current
    podman.check()
    lock = settings.build_path("locks", "image.lock")

    def waiting() -> None:
        report.step("start", "waiting for another devbox process to finish its build")

    with hold(lock, "an image build", cancel=cancel, on_wait=waiting):
        return _build_locked(settings, podman, report, cancel, force=force, pull=pull)


def _pull_bases(settings: Settings, podman: Podman, report: Reporter) -> None:
    """``--pull``/``--force``: fetch newer FROM images first, so the labels record the IDs the
    build really used."""
    for ref, before in local_bases(settings, podman).items():
        if not podman.pull(ref):
            if before is None:
                raise BuildFailed(
                    f"base image {ref} could not be pulled", "check the network and registry login, then run again"
                )
            report.log(f"could not check {ref} for updates; building on the local copy")
            continue
        after = podman.image(ref)
        if after is not None and after.id != before:
            report.log(f"base image {ref} updated: {after.short_id}")


def _ignorefile(settings: Settings) -> Path:
    """bootc/'s own ignore patterns plus devbox's editor patterns, for ``--ignorefile``: what
    the digest leaves out, podman leaves out too."""
    path = settings.build_path("cache", "bootc.containerignore")
    write_atomic(path, ("\n".join(ignore_patterns(settings.bootc_dir)) + "\n").encode())
    return path


def _build_locked(
    settings: Settings, podman: Podman, report: Reporter, cancel: threading.Event, *, force: bool, pull: bool
) -> ImageStatus:
    try:
        current = status(settings, podman)  # after the lock: the other build may have made it fresh
        if current.verdict.fresh and not (force or pull):
            assert current.info is not None
            report.step("skip", f"{settings.image} {current.info.short_id} is up to date")
            return current
        why = ("--force" if force else "--pull") if current.verdict.fresh else current.verdict.reason
        report.step("start", f"building {settings.image}: {why}")
        if pull or force:
            _pull_bases(settings, podman, report)
        bases = {ref: iid for ref, iid in local_bases(settings, podman).items() if iid is not None}
        labels = {LABEL_SOURCES: current.sources.digest, LABEL_CHECKOUT: str(settings.repo)}
        new_id = podman_build.build(
            podman.cli(),
            settings.bootc_dir,
            settings.image,
            labels | ({LABEL_BASE: _base_label(bases)} if bases else {}),
            report,
            cancel,
            record=settings.build_path("run", "image-build.json"),
            no_cache=force,
            ignorefile=_ignorefile(settings),
            build_args={BASE_ARG: settings.image_base} if settings.image_base else None,
        )
        _manifests(settings).save(current.sources)
        after = status(settings, podman)
        assert after.info is not None
        if current.info is not None and current.info.id != after.info.id:
            # the previous build, untagged now: drop it unless a container still runs on it
            fate = "removed" if podman.remove_image(current.info.id) else "kept: a container still uses it"
            report.log(f"previous image {current.info.short_id} {fate}")
        note = "" if after.verdict.fresh else f" (changed during the build: {after.verdict.reason})"
        report.step("done", f"{settings.image} {after.info.short_id or new_id[:12]}{note}")
        return after
    except BaseException as exc:
        report.step("fail", getattr(exc, "message", "") or type(exc).__name__)
        raise
