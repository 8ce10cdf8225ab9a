"""The dashboard's merge-back: ``M`` on a row asks for the strategy in a dialog that first
shows what would land (commits, files) and any predicted conflict, runs ``ops.merge`` as
a run of its own, and after a merge offers the worktree's teardown through the usual
dialog, which names what would be lost. ``C`` on a copy of a task opens the Compare view
(tui/compare.py); picking a copy there is the same merge dialog, after which the teardown
dialog names what each other copy would lose. A mixin of DevboxApp, like fleet_actions.py."""

from __future__ import annotations

import shlex
import threading
from typing import TYPE_CHECKING, Any

from textual import work

from devbox.core import ops
from devbox.core.errors import DevboxError
from devbox.core.events import Sink
from devbox.tui.compare import CompareScreen
from devbox.tui.dialogs import ConfirmTeardown, MergeDialog

if TYPE_CHECKING:
    from devbox.core.session import Devbox


class ReviewActions:
    """Mixed into DevboxApp (which provides session, selection, run_op, push_screen, ...)."""

    session: Devbox

    if TYPE_CHECKING:
        status: Any

        fleet: Any

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
    def _prepare_merge(self, branch: str, task: str = "") -> None:
        diff = ops.diff_branch(self.session, branch)
        prediction = ops.predict_merge(self.session, branch, into=diff.base)
        commits = [f"{c.sha[:8]} {c.subject}" for c in diff.commits]
        files = [f.path for f in diff.committed]
        pending = diff.uncommitted.names()
        blocked = (f"{len(pending)} uncommitted file(s) in {diff.worktree} ({', '.join(pending[:3])}): commit "
                   f"them first, or ./devbox merge {branch} --commit-all MSG") if pending else ""  # fmt: skip
        if diff.nothing_to_land:  # ops.merge refuses it too: Merge would only fail
            blocked = (f"nothing to land: what {branch} changed is on {diff.base} already" if diff.landed
                       else f"nothing to land: {branch} has nothing {diff.base} does not have")  # fmt: skip
        blocked = ops.base_blocker(self.session, diff.base) or blocked
        self.call_from_thread(self._ask_merge, branch, diff.base, commits, files, list(prediction.conflicts), blocked,
                              task)  # fmt: skip

    def _ask_merge(
        self, branch: str, base: str, commits: list[str], files: list[str], conflicts: list[str], blocked: str,
        task: str = "",
    ) -> None:  # fmt: skip
        def answered(strategy: str | None) -> None:
            if strategy is None:
                self.notify(f"not landed: {branch} and {base} are as they were", timeout=4)
                return
            cmd = f"./devbox merge {branch} --into {base} --strategy {strategy} --yes"

            def land(sink: Sink, cancel: threading.Event) -> None:
                ops.merge(self.session, branch, into=base, strategy=strategy, sink=sink, cancel=cancel)
                if task:
                    self._offer_discard(task, branch)
                else:
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

    def action_fetch(self) -> None:
        row = self.fleet.selected()
        if row is None or not row.host:
            return
        branch = row.branch
        self.run_op(f"fetch-{branch}", f"./devbox fetch {branch}",
                    lambda sink, cancel: ops.fetch(self.session, branch, sink=sink, cancel=cancel),
                    frozenset({f"branch {branch}"}))  # fmt: skip

    # several agents on one task -------------------------------------------------------------
    def action_compare(self) -> None:
        row, c = self.selection()
        branch = row.worktree.branch if row is not None else (c.branch if c is not None else None)
        if branch:
            self._open_compare(branch)

    @work(thread=True, exit_on_error=False, group="confirm")
    def _open_compare(self, branch: str) -> None:
        task = ops.task_of(self.session, branch)
        if not task:
            self.call_from_thread(self.notify, f"{branch} is not a copy of a task (devbox agent start TASK --count N)",
                                  timeout=5)  # fmt: skip
            return
        self.call_from_thread(self._show_compare, task, branch)

    def _show_compare(self, task: str, branch: str) -> None:
        def picked(choice: str | None) -> None:
            if choice is not None:
                self._prepare_merge(choice, task)

        self.push_screen(CompareScreen(self.session, task, branch, self._run_checks), picked)

    def _run_checks(self, screen: CompareScreen) -> None:
        task = screen.task_name

        def check(sink: Sink, cancel: threading.Event) -> None:
            try:
                ops.run_checks(self.session, task, sink=sink, cancel=cancel)
            finally:
                self.call_from_thread(screen.checks_done)

        if self.run_op(f"check-{task}", f"./devbox compare {task} --check", check) is None:
            screen.checks_done()

    def _offer_discard(self, task: str, keep: str) -> None:
        """In the merge's worker: what removing the other copies would lose, then the dialog."""
        plans = ops.discard_plan(self.session, task, keep)
        if not plans:
            return
        names = [p.branch for p in plans]
        losses = [f"{p.branch}: " + "; ".join(p.losses) for p in plans]
        cmd = " && ".join(f"./devbox worktree remove --force --delete-branch {shlex.quote(b)}" for b in names)

        def discard(sink: Sink, cancel: threading.Event) -> None:
            ops.discard(self.session, names, sink=sink, cancel=cancel)

        def ask() -> None:
            def answered(yes: bool | None) -> None:
                if yes:
                    self.run_op(f"discard-{task}", cmd, discard, frozenset(f"branch {b}" for b in names))

            self.push_screen(ConfirmTeardown(f"Remove the other copies of {task}?", losses, cmd), answered)

        self.call_from_thread(ask)
