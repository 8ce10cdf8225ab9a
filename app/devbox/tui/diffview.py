"""The Diff tab of the detail area: what the selected row's branch changed against its
base (``ops.diff_branch``: its commits, its files with ``+/-``, then what its worktree
holds uncommitted, marked so), the conflicts the radar predicts for it, and the selected
file's patch, coloured by Rich's own diff highlighting (Pygments' diff lexer).

The patch view draws only the lines on screen (Textual's line API): a 20,000-line diff
scrolls as fast as a short one. Binary files are summarised, never drawn; a patch over
2 MiB is cut (core/git_merge.patch). Loading runs in a worker, for the shown tab only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.segment import Segment
from rich.style import Style
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import DataTable

from devbox.core import ops
from devbox.core.errors import DevboxError
from devbox.core.session import Devbox
from devbox.tui.panes import Plain, ReconciledTable

if TYPE_CHECKING:
    from rich.syntax import Syntax
    from rich.text import Text

_HIGHLIGHT: list[Syntax] = []  # made on first use: Pygments costs ~20 ms to import


def highlight(line: str) -> Text:
    """One patch line, coloured by Rich's diff highlighting (Pygments' diff lexer)."""
    if not _HIGHLIGHT:
        from rich.syntax import Syntax

        _HIGHLIGHT.append(Syntax("", "diff", theme="ansi_dark"))
    return _HIGHLIGHT[0].highlight(line)


@dataclass(frozen=True)
class Entry:
    """One row of the file list: a committed change, or an uncommitted file."""

    path: str
    label: str  # "M +3 -1", "binary", "unstaged", "untracked", ...
    committed: bool
    binary: bool = False


class PatchView(ScrollView):
    """A patch, one highlighted line at a time, only the visible ones."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.lines: list[str] = []
        self._cache: dict[int, Strip] = {}

    def show(self, text: str) -> None:
        lines = text.splitlines()
        if lines == self.lines:
            return  # the same patch again (a refresh): keep the scroll position
        self.lines = lines
        self._cache.clear()
        width = max((len(line) for line in self.lines[:5000]), default=0)
        self.virtual_size = Size(min(width, 2000), len(self.lines))
        self.scroll_to(0, 0, animate=False)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        _, scroll_y = self.scroll_offset
        index = y + scroll_y
        if index >= len(self.lines):
            return Strip.blank(self.size.width)
        strip = self._cache.get(index)
        if strip is None:
            text = highlight(self.lines[index].expandtabs(4)[:2000])
            text.rstrip()
            segments = [Segment(s.text, s.style or Style()) for s in text.render(self.app.console)]
            strip = Strip(segments).simplify()
            if len(self._cache) > 4000:
                self._cache.clear()
            self._cache[index] = strip
        scroll_x, _ = self.scroll_offset
        return strip.crop(scroll_x, scroll_x + self.size.width).extend_cell_length(self.size.width)


class FilesTable(ReconciledTable):
    COLUMNS = (("change", "change"), ("path", "file"))


class DiffPane(Horizontal):
    """The file list, commits and conflicts on the left; the selected file's patch."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.branch = ""
        self.version: object = None
        self.diff: ops.BranchDiff | None = None
        self.entries: dict[str, Entry] = {}
        self.conflicts: tuple[str, ...] = ()  # "⚠ conflicts with fan-2: src/app.py", from the radar

    def compose(self) -> ComposeResult:
        with Vertical(id="diff-side"):
            yield Plain("Diff: select a branch", id="diff-title", classes="pane-title")
            yield FilesTable(id="diff-files")
            yield Plain("", id="diff-commits")
        yield PatchView(id="diff-patch")

    def follow(self, session: Devbox, branch: str, conflicts: tuple[str, ...] = (), version: object = None) -> None:
        """Show ``branch``: loaded in a worker when it or its ``version`` (its HEAD and
        uncommitted counts) changed."""
        self.conflicts = conflicts
        if (branch, version) == (self.branch, self.version):
            return
        self.branch, self.version = branch, version
        if branch:
            self._load(session, branch)

    @work(thread=True, exclusive=True, group="diff", exit_on_error=False)
    def _load(self, session: Devbox, branch: str) -> None:
        try:
            diff: ops.BranchDiff | str = ops.diff_branch(session, branch)
        except DevboxError as exc:
            diff = exc.message
        self.app.call_from_thread(self._show_diff, session, branch, diff)

    def _show_diff(self, session: Devbox, branch: str, diff: ops.BranchDiff | str) -> None:
        if branch != self.branch or not self.is_mounted:
            return
        title = self.query_one("#diff-title", Plain)
        table = self.query_one(FilesTable)
        if isinstance(diff, str):
            self.diff = None
            title.update(f"Diff: {branch}: {diff}")
            table.reconcile({})
            self.query_one(PatchView).show("")
            return
        self.diff = diff
        entries: dict[str, Entry] = {}
        for f in diff.committed:
            label = f"{f.status} binary" if f.added is None else f"{f.status} +{f.added} -{f.deleted}"
            entries[f"c:{f.path}"] = Entry(f.path, label, True, f.added is None)
        u = diff.uncommitted
        for kind, names in (("staged", u.staged), ("unstaged", u.unstaged), ("untracked", u.untracked)):
            for name in names:
                entries.setdefault(f"u:{name}", Entry(name, f"{kind} (uncommitted)", False))
        self.entries = entries
        clash = f"⚠ {len(self.conflicts)} conflict(s), " if self.conflicts else ""
        pending = "worktree MISSING" if diff.worktree_missing else f"{len(u.names())} uncommitted"
        landed = " (landed)" if diff.landed else ""
        title.update(  # what a decision depends on first; the title wraps, never cuts
            f"Diff: {branch} against {diff.base}: {clash}{pending}, {len(diff.commits)} commit(s), "
            f"{len(diff.committed)} file(s){landed}"
        )
        table.reconcile({k: [e.label, e.path] for k, e in entries.items()})
        commits = "\n".join(f"{c.sha[:8]} {c.subject}" for c in diff.commits[-20:])
        self.query_one("#diff-commits", Plain).update(
            "\n".join((*self.conflicts, commits or "(no commits since the base)"))
        )
        first = next(iter(entries), None)
        if first is not None:
            self._load_patch(session, diff, entries[first])
        else:
            self.query_one(PatchView).show("")

    @on(DataTable.RowHighlighted, "#diff-files")
    def _file_moved(self, event: DataTable.RowHighlighted) -> None:
        event.stop()  # not the app's selection
        entry = self.entries.get(str(event.row_key.value))
        session = getattr(self.app, "session", None)
        if entry is not None and self.diff is not None and session is not None:
            self._load_patch(session, self.diff, entry)

    @work(thread=True, exclusive=True, group="diff-patch", exit_on_error=False)
    def _load_patch(self, session: Devbox, diff: ops.BranchDiff, entry: Entry) -> None:
        from devbox.core import git_merge  # (in the worker: the first paint does not wait for it)

        if entry.binary:
            text = f"{entry.path}: a binary file ({entry.label}), not drawn"
        else:
            try:
                if entry.committed:
                    text = git_merge.patch(session.settings.repo, diff.merge_base, f"refs/heads/{diff.branch}",
                                         entry.path)  # fmt: skip
                elif diff.worktree:
                    text = git_merge.patch(Path(diff.worktree), "HEAD", None, entry.path)
                    text = text or f"{entry.path}: {entry.label} (git diff HEAD shows nothing: an untracked file)"
                else:
                    text = ""
            except DevboxError as exc:
                text = f"({exc.message})"
        self.app.call_from_thread(self._show_patch, diff.branch, text)

    def _show_patch(self, branch: str, text: str) -> None:
        if branch == self.branch and self.is_mounted:
            self.query_one(PatchView).show(text)
