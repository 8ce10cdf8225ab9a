"""Content digests of build inputs and the fresh/stale verdicts, with reasons, for any
artifact (the image now; the disk and the VM record the identities they were built from
the same way).

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

from devbox.core.filesystem import write_atomic

CACHE_VERSION = 2
# Editor and OS droppings: never part of an image's identity, and never sent to podman
# either (the build's ignore file lists them too), so the digest and the build agree.
EDITOR_PATTERNS = ("*.swp", "*.swo", "*.swx", "*~", ".#*", "#*#", ".DS_Store", "4913")
IGNORE_FILES = (".containerignore", ".dockerignore")  # podman reads the first that exists


def ignore_file(root: Path) -> Path | None:
    return next((root / n for n in IGNORE_FILES if (root / n).is_file()), None)


def ignore_patterns(root: Path) -> list[str]:
    """The context's own ignore patterns (docker syntax) plus devbox's editor patterns."""
    own: list[str] = []
    path = ignore_file(root)
    if path is not None:
        with contextlib.suppress(OSError):
            own = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return [*own, *(f"**/{p}" for p in EDITOR_PATTERNS)]


def _ignored(root: Path) -> Callable[[str], bool]:
    """A matcher for relative paths that podman leaves out of the build context."""
    patterns = ignore_patterns(root)
    if ignore_file(root) is None:  # editor patterns only: fnmatch on the name, no import
        import fnmatch

        return lambda rel: any(fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], p) for p in EDITOR_PATTERNS)
    import pathspec  # ~60 ms to import: only on a cold scan of a context that has an ignore file

    # docker patterns are anchored at the context root; gitignore's are not: anchor them
    lines = [f"!/{p[1:].lstrip('/')}" if p.startswith("!") else f"/{p.lstrip('/')}" for p in patterns]
    spec = pathspec.PathSpec.from_lines("gitwildmatch", lines)
    return lambda rel: spec.match_file(rel)


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
    ignored = _ignored(root)
    for full, st in zip(paths, stats, strict=True):
        rel = full[cut:]
        if ignored(rel) or (stat.S_ISDIR(st.st_mode) and ignored(f"{rel}/")):  # "notes/" names a directory
            continue
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


def judge(
    tree: SourceTree, built_digest: str | None, manifests: ManifestStore, prefix: str, artifact: str = "image"
) -> Verdict:
    """Is ``artifact``, built from sources with ``built_digest``, still fresh for ``tree``?

    ``built_digest`` is None when the artifact does not exist and "" when it carries no
    record of its sources.
    """
    if built_digest is None:
        return Verdict(False, (f"{artifact} missing",))
    if not built_digest:
        return Verdict(False, (f"{artifact} has no record of its sources (built outside devbox)",))
    if built_digest == tree.digest:
        return Verdict(True)
    old = manifests.load(built_digest)
    if old is None:
        return Verdict(False, (f"{prefix} changed since the {artifact} was built",))
    return Verdict(False, diff_reasons(prefix, old, tree.entries) or (f"{prefix} changed",))
