"""The conflict radar: for every pair of active branches (each linked worktree's branch),
and for each branch against its base, would they conflict and on which files, from
``git merge-tree --write-tree`` (no checkout touched).

20 agents make 190 pairs: answers are cached by the pair of commits (a pair is asked again
only when one of its HEADs moved), on disk in ``.build/radar.json`` so the CLI and the
dashboard share them, and the dashboard asks at most ``PER_POLL`` new pairs per poll, so
no poll waits on 190 merges.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from devbox.core import branch_notes, git, git_merge
from devbox.core.errors import DevboxError
from devbox.core.filesystem import read_json, write_json
from devbox.core.ops.envsync import sync_branches
from devbox.core.session import Devbox

CACHE = "radar.json"
PER_POLL = 24  # new pairs the dashboard asks git about per poll (~10 ms each)
MAX_CACHED = 5000  # entries kept in the cache file


@dataclass(frozen=True)
class Clash:
    a: str
    b: str  # another branch, or a's base
    files: tuple[str, ...]
    with_base: bool = False


@dataclass(frozen=True)
class Radar:
    clashes: tuple[Clash, ...] = ()
    pairs: int = 0  # pairs there are
    asked: int = 0  # of which git was asked this time (the rest came from the cache)
    pending: int = 0  # not asked yet (over the limit): known at a later poll

    def of(self, branch: str) -> tuple[Clash, ...]:
        """The clashes ``branch`` is in, the other side first-named."""
        return tuple(
            c if c.a == branch else Clash(branch, c.a, c.files, c.with_base)
            for c in self.clashes
            if branch in (c.a, c.b)
        )

    def to_json(self) -> dict[str, object]:
        return {"pairs": self.pairs, "asked": self.asked, "pending": self.pending,
                "conflicts": [{"a": c.a, "b": c.b, "files": list(c.files), "with_base": c.with_base}
                              for c in self.clashes]}  # fmt: skip


def conflicts(session: Devbox, *, limit: int | None = None, worktrees: Sequence[git.Worktree] | None = None) -> Radar:
    """Every pair of active branches and each branch against its base; ``limit``: ask git
    about at most that many uncached pairs (the rest are ``pending``); ``worktrees``: as a
    ``status`` just listed them (its environments' commits already fetched)."""
    repo = session.settings.repo
    heads: dict[str, str] = {}
    if worktrees is None:
        worktrees = git.list_worktrees(repo)
        if sync_branches(session, [w.branch for w in worktrees if w.branch]).moved:
            worktrees = git.list_worktrees(repo)  # (a branch may have moved)
    for w in worktrees:
        if w.branch and not w.is_main and not w.prunable:
            heads[w.branch] = w.head
    pairs: list[tuple[str, str, bool]] = [(a, b, False) for a, b in itertools.combinations(sorted(heads), 2)]
    bases = branch_notes.recorded_bases(repo)
    main = next((w.branch or "" for w in worktrees if w.is_main), "")  # the main checkout's branch
    for branch in sorted(heads):
        base = bases.get(branch) or main
        if base and base != branch and base not in heads:
            heads.setdefault(base, git.rev(repo, f"refs/heads/{base}"))
            pairs.append((branch, base, True))
        elif base in heads and base != branch:
            pairs.append((branch, base, True))
    cache_path = session.settings.build_path(CACHE)
    cached = read_json(cache_path)
    cache: dict[str, list[str]] = cached if isinstance(cached, dict) else {}
    clashes: list[Clash] = []
    asked = pending = 0
    wrote = False
    own: dict[str, frozenset[str] | None] = {}

    def own_files(branch: str) -> frozenset[str] | None:
        """The files ``branch`` changed since it left its base (None: unknown). A pair of
        branches conflicts only where both changed a file themselves: merging two branches
        also replays what their base did between their starts, and a branch at the base's
        tip (no change of its own) would otherwise inherit every conflict of the base."""
        nonlocal wrote
        if branch not in own:
            base = bases.get(branch) or main
            head, base_head = heads.get(branch, ""), heads.get(base) or git.rev(repo, f"refs/heads/{base}")
            key = f"own:{head}:{base_head}"
            files = cache.get(key)
            if files is None and head and base_head:
                try:
                    files = list(git_merge.changed_since_base(repo, base_head, head))
                except DevboxError:
                    files = None
                if files is not None:
                    cache[key], wrote = files, True
            own[branch] = frozenset(files) if files is not None else None
        return own[branch]

    for a, b, with_base in dict.fromkeys(pairs):
        ha, hb = heads.get(a, ""), heads.get(b, "")
        if not ha or not hb:
            continue
        key = ":".join(sorted((ha, hb)))
        files = cache.get(key)
        if files is None:
            if limit is not None and asked >= limit:
                pending += 1
                continue
            try:
                files = list(git_merge.predict(repo, ha, hb).conflicts)
            except DevboxError:
                continue  # unrelated histories, a broken ref: no answer is not a conflict
            cache[key] = files
            asked += 1
        if files and not with_base:
            mine, theirs = own_files(a), own_files(b)
            if mine is not None and theirs is not None:
                files = [f for f in files if f in mine and f in theirs]
        if files:
            clashes.append(Clash(a, b, tuple(files), with_base))
    if asked or wrote:
        if len(cache) > MAX_CACHED:  # the oldest answers go first (insertion order)
            cache = dict(list(cache.items())[-MAX_CACHED:])
        write_json(cache_path, cache)
    return Radar(tuple(clashes), len(dict.fromkeys(pairs)), asked, pending)
