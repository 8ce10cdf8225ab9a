"""Content digests of build inputs and the fresh/stale verdicts, with reasons.

Freshness compares identities, never clocks: the image carries the digest of the bootc/
tree it was built from (paths, modes, contents). A stat cache (size, mtime, ctime, inode)
lets a warm check skip re-hashing files that did not change; a ``touch`` or a ``git
checkout`` only costs a re-hash of the touched files and never a rebuild, while a content
change with its mtime set back still changes ctime and is caught.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import marshal
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_VERSION = 1


class SourceTree:
    """The identity of a directory tree: one digest plus an entry per path.

    ``entries`` (relpath -> "f 644 <sha256>" | "d 755" | "l target") is needed only to
    explain a stale verdict or to record a build, so a warm scan loads it lazily.
    """

    def __init__(self, root: Path, digest: str, entries: Callable[[], dict[str, str]] | dict[str, str]) -> None:
        self.root = root
        self.digest = digest
        self._entries = entries

    @property
    def entries(self) -> dict[str, str]:
        if callable(self._entries):
            self._entries = self._entries()
        return self._entries

    def __repr__(self) -> str:
        return f"SourceTree({self.root}, {self.digest[:12]})"


@dataclass(frozen=True)
class Verdict:
    fresh: bool
    reasons: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "up to date"


def _hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _load_cache(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    return data


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _walk(base: str) -> tuple[list[str], list[os.stat_result]]:
    """Full paths and their lstat results for everything under ``base`` (the hot loop:
    one stat call per entry, nothing else built per entry)."""
    paths: list[str] = []
    stats: list[os.stat_result] = []
    stack = [base]
    while stack:
        with os.scandir(stack.pop()) as it:
            for de in it:
                paths.append(de.path)
                stats.append(de.stat(follow_symlinks=False))
                if de.is_dir(follow_symlinks=False):
                    stack.append(de.path)
    return paths, stats


def scan(root: Path, cache: Path | None = None) -> SourceTree:
    """Digest the tree under ``root``; ``cache`` (a JSON file) remembers what it saw.

    Warm path: when every path's (mode, size, mtime, ctime, inode) is as last time, the
    cached digest is the answer and no file is opened. Otherwise files whose stat changed
    are re-hashed and the rest reuse their cached hash.
    """
    base = os.fspath(root)
    paths, stats = _walk(base)
    # marshal: the fastest stable serialisation of the stat signature (C, no formatting)
    h = hashlib.sha256(marshal.dumps(paths))
    h.update(marshal.dumps([(s.st_mode, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino) for s in stats]))
    sig = h.hexdigest()
    if cache is not None:
        known = cache
        with contextlib.suppress(OSError, ValueError):
            old_sig, digest = cache.with_suffix(".sig").read_text().split()
            if old_sig == sig:
                return SourceTree(root, digest, lambda: _entries_or_rescan(root, known))
    data = _load_cache(cache)
    old: dict[str, list[Any]] = data.get("files") or {}
    new: dict[str, list[Any]] = {}
    entries: dict[str, str] = {}
    cut = len(base) + 1
    for full, st in zip(paths, stats, strict=True):
        rel = full[cut:]
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            entries[rel] = f"d {mode:o}"
        elif stat.S_ISLNK(st.st_mode):
            entries[rel] = f"l {os.readlink(full)}"
        elif stat.S_ISREG(st.st_mode):
            key: list[Any] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            hit = old.get(rel)
            sha = str(hit[4]) if hit is not None and hit[:4] == key else _hash_file(full)
            new[rel] = [*key, sha]
            entries[rel] = f"f {mode:o} {sha}"
        else:
            entries[rel] = f"o {stat.S_IFMT(st.st_mode):o}"  # fifo, socket: identity only
    digest = hashlib.sha256("".join(f"{rel}\0{entries[rel]}\n" for rel in sorted(entries)).encode()).hexdigest()
    if cache is not None:
        with contextlib.suppress(OSError):  # a read-only .build must not stop a status check
            payload = {"version": CACHE_VERSION, "files": new, "entries": entries}
            write_atomic(cache, json.dumps(payload).encode())
            write_atomic(cache.with_suffix(".sig"), f"{sig} {digest}\n".encode())
    return SourceTree(root, digest, entries)


def _entries_or_rescan(root: Path, cache: Path) -> dict[str, str]:
    entries = _load_cache(cache).get("entries")
    if isinstance(entries, dict):
        return entries
    return scan(root).entries


def diff_reasons(prefix: str, old: dict[str, str], new: dict[str, str], limit: int = 5) -> tuple[str, ...]:
    """Human reasons, e.g. ``("bootc/Containerfile changed", "bootc/x added")``."""
    reasons: list[str] = []
    for rel in sorted(old.keys() | new.keys()):
        if rel not in new:
            reasons.append(f"{prefix}{rel} removed")
        elif rel not in old:
            reasons.append(f"{prefix}{rel} added")
        elif old[rel] != new[rel]:
            what = "mode changed" if old[rel].split()[2:] == new[rel].split()[2:] else "changed"
            reasons.append(f"{prefix}{rel} {what}")
    if len(reasons) > limit:
        reasons = [*reasons[:limit], f"and {len(reasons) - limit} more"]
    return tuple(reasons)


class ManifestStore:
    """Remembers which entries produced a digest, so a stale verdict can name files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(self, tree: SourceTree) -> None:
        data = json.dumps(tree.entries, sort_keys=True).encode()
        with contextlib.suppress(OSError):
            write_atomic(self.directory / f"{tree.digest}.json", data)

    def load(self, digest: str) -> dict[str, str] | None:
        if not all(c in "0123456789abcdef" for c in digest):
            return None
        try:
            data = json.loads((self.directory / f"{digest}.json").read_bytes())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def judge(tree: SourceTree, built_digest: str | None, manifests: ManifestStore, prefix: str) -> Verdict:
    """Is an artifact built from ``built_digest`` still fresh for ``tree``?"""
    if built_digest is None:
        return Verdict(False, ("image missing",))
    if not built_digest:
        return Verdict(False, ("image has no devbox.sources label (built outside devbox)",))
    if built_digest == tree.digest:
        return Verdict(True)
    old = manifests.load(built_digest)
    if old is None:
        return Verdict(False, (f"{prefix} changed since the image was built",))
    return Verdict(False, diff_reasons(prefix, old, tree.entries) or (f"{prefix} changed",))
