"""The dashboard's merge-back: ``M`` on a row asks for the strategy in a dialog that first
shows what would land (commits, files) and any predicted conflict, runs ``ops.merge`` as
a run of its own, and after a merge offers the worktree's teardown through the usual
dialog, which names what would be lost. A mixin of DevboxApp, like fleet_actions.py."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from textual import work

from devbox.core import ops
from devbox.core.errors import DevboxError
from devbox.core.events import Sink
from devbox.tui.dialogs import MergeDialog

if TYPE_CHECKING:
    from devbox.core.session import Devbox


class ReviewActions:
    """Mixed into DevboxApp (which provides session, selection, run_op, push_screen, ...)."""

    session: Devbox

    if TYPE_CHECKING:
        status: Any

        def selection(self) -> tuple[Any, Any]: ...
        def run_op(self, *args: Any, **kwargs: Any) -> Any: ...
        def push_screen(self, *args: Any, **kwargs: Any) -> Any: ...
        def call_from_thread(self, *args: Any, **kwargs: Any) -> Any: ...
        def notify(self, *args: Any, **kwargs: Any) -> Any: ...
        def _confirm_worktree(self, row: Any) -> Any: ...

    def action_merge(self) -> None:
        row, _ = self.selection()
        if row is not None and row.worktree.branch and not row.worktree.is_main:
            self._prepare_merge(row.worktree.branch)

    @work(thread=True, exit_on_error=False, group="confirm")
    def _prepare_merge(self, branch: str) -> None:
        diff = ops.diff_branch(self.session, branch)
        prediction = ops.predict_merge(self.session, branch, into=diff.base)
        commits = [f"{c.sha[:8]} {c.subject}" for c in diff.commits]
        files = [f.path for f in diff.committed]
        pending = diff.uncommitted.names()
        blocked = (f"{len(pending)} uncommitted file(s) in {diff.worktree} ({', '.join(pending[:3])}): commit "
                   f"them first, or ./devbox merge {branch} --commit-all MSG") if pending else ""  # fmt: skip
        self.call_from_thread(self._ask_merge, branch, diff.base, commits, files, list(prediction.conflicts), blocked)

    def _ask_merge(
        self, branch: str, base: str, commits: list[str], files: list[str], conflicts: list[str], blocked: str
    ) -> None:  # fmt: skip
        def answered(strategy: str | None) -> None:
            if strategy is None:
                return
            cmd = f"./devbox merge {branch} --into {base} --strategy {strategy} --yes"

            def land(sink: Sink, cancel: threading.Event) -> None:
                ops.merge(self.session, branch, into=base, strategy=strategy, sink=sink, cancel=cancel)
                self.call_from_thread(self._offer_teardown, branch)

            self.run_op(f"merge-{branch}", cmd, land, frozenset({f"branch {branch}", f"branch {base}"}))

        self.push_screen(MergeDialog(branch, base, commits, files, conflicts, blocked), answered)

    def _offer_teardown(self, branch: str) -> None:
        """After a merge: the worktree's teardown dialog (Cancel is its default)."""
        rows = (self.status.worktrees.value or ()) if self.status is not None else ()
        row = next((r for r in rows if r.worktree.branch == branch), None)
        if row is None:
            return
        try:
            self._confirm_worktree(row)
        except DevboxError as exc:
            self.notify(exc.message, severity="warning")
