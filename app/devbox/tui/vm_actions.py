"""The dashboard's VM-mode keys: VM up, VM down (confirmed, naming what is lost), rebuild
the disk, and ssh into the VM (the app suspends, ``ssh`` runs on the terminal). Each calls
the same ``ops`` function as its ``devbox`` subcommand. A mixin, so app.py stays the
container-mode dashboard plus wiring."""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.message import Message

from devbox.core import labels, ops, proc
from devbox.core.events import Sink
from devbox.tui.dialogs import TransferPaths

if TYPE_CHECKING:
    from devbox.core.session import Devbox
    from devbox.tui.logpane import LogPane, Run

# what each operation must have to itself in this dashboard (a second `u`, or `d` during
# `u`, is refused at once): the image and disk steps of vm up, the VM itself
DISK_LOCKS = frozenset({"image", "disk"})
VM_UP_LOCKS = DISK_LOCKS | {"vm"}
PUSH_ASK_BYTES = 100 * 1000 * 1000  # a push bigger than this is confirmed with its size first
PUSH_NOTE = "Sends what git would track: .gitignore is respected; .git, .build/ and the project key never go."
PULL_NOTE = "Into a git checkout: its .git is never written; files with uncommitted changes are refused."


class SshReady(Message):
    def __init__(self, argv: list[str]) -> None:
        super().__init__()
        self.argv = argv


class VmActions:
    """Mixed into DevboxApp (which provides session, run_op, _ask, log_pane, suspend)."""

    session: Devbox
    _stop: threading.Event
    _wake: threading.Event

    if TYPE_CHECKING:

        @property
        def log_pane(self) -> LogPane: ...

        def run_op(
            self,
            name: str,
            command: str,
            fn: Callable[[Sink, threading.Event], object],
            locks: frozenset[str] = frozenset(),
        ) -> Run | None: ...
        def _ask(
            self,
            title: str,
            losses: list[str],
            cmd: str,
            fn: Callable[[Sink, threading.Event], object],
            locks: frozenset[str] = frozenset(),
            **dialog: str,
        ) -> None: ...
        def call_from_thread(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...
        def post_message(self, message: Message) -> bool: ...
        def suspend(self) -> Any: ...
        def selection(self) -> tuple[ops.WorktreeRow | None, Any]: ...

    def action_vm_up(self) -> None:
        self.run_op(
            "vm-up", "./vm-up.sh", lambda sink, cancel: ops.vm_up(self.session, sink=sink, cancel=cancel), VM_UP_LOCKS
        )

    def action_disk_rebuild(self) -> None:
        self.run_op(
            "disk-build",
            "./devbox disk build --force",
            lambda sink, cancel: ops.build_disk(self.session, force=True, sink=sink, cancel=cancel),
            DISK_LOCKS,
        )

    def action_vm_down(self) -> None:
        self._confirm_vm_down()

    @work(thread=True, exit_on_error=False, group="confirm")
    def _confirm_vm_down(self) -> None:
        loss = ops.vm_loss(self.session)
        if loss.empty:
            self.log_pane.note(f"no VM to remove ({ops.domain_name(self.session)} does not exist)")
            return
        self.call_from_thread(
            self._ask,
            f"Remove VM {loss.domain or ops.domain_name(self.session)}?",
            loss.lines(),
            "./vm-down.sh --yes",
            lambda sink, cancel: ops.vm_down(self.session, sink=sink, cancel=cancel),
            VM_UP_LOCKS,
        )

    def action_vm_ssh(self) -> None:
        self._prepare_ssh()

    @work(thread=True, exit_on_error=False, group="attach")
    def _prepare_ssh(self) -> None:
        self.post_message(SshReady(ops.ssh_argv(self.session, [], tty=True)))

    def on_ssh_ready(self, msg: SshReady) -> None:
        with self.suspend():
            proc.interactive(msg.argv, tool="ssh")
        self._wake.set()

    # transfers, for the selected worktree -------------------------------------------------
    def _selected_worktree(self) -> ops.WorktreeRow | None:
        row, _ = self.selection()
        if row is None or row.state.missing:
            self.log_pane.note("select a worktree first")
            return None
        return row

    def action_dir_push(self) -> None:
        self._dir_dialog(push=True)

    def action_dir_pull(self) -> None:
        self._dir_dialog(push=False)

    def _dir_dialog(self, *, push: bool) -> None:
        row = self._selected_worktree()
        if row is None:
            return
        local = str(row.worktree.path)

        def answered(paths: tuple[str, str] | None) -> None:
            if paths is None:
                return
            here, there = paths
            if push:
                self._plan_push(here, there)
            else:
                into = ops.is_checkout_root(Path(here))
                self.run_op(
                    "dir-pull",
                    shlex.join(["./vm-dir-pull.sh", there, here, *(["--into-checkout"] if into else [])]),
                    lambda sink, cancel: ops.dir_pull(
                        self.session, there, Path(here), into_checkout=into, sink=sink, cancel=cancel
                    ),
                )

        title = "Push a directory into the VM" if push else "Pull a directory from the VM"
        note = PUSH_NOTE if push else PULL_NOTE
        dialog = TransferPaths(title, local, Path(local).name, "Push" if push else "Pull", note)
        self.push_screen(dialog, answered)  # type: ignore[attr-defined]

    @work(thread=True, exit_on_error=False, group="confirm")
    def _plan_push(self, here: str, there: str) -> None:
        """A dry run first: a push over ``PUSH_ASK_BYTES`` is confirmed with its size."""
        plan = ops.plan_dir_push(self.session, Path(here), there)
        cmd = shlex.join(["./vm-dir-push.sh", here, there])

        def push(sink: Sink, cancel: threading.Event) -> object:
            return ops.dir_push(self.session, Path(here), there, sink=sink, cancel=cancel)

        if plan.size <= PUSH_ASK_BYTES:
            self.call_from_thread(self.run_op, "dir-push", cmd, push)
            return
        lines = [f"{plan.files} file(s), {labels.size(plan.size)} to send", plan.summary()]
        title = f"Push {labels.size(plan.size)} into the VM?"
        self.call_from_thread(partial(self._ask, title, lines, cmd, push, heading="The push:", verb="Push"))

    def action_git_push(self) -> None:
        self._branch_op(push=True)

    def action_git_pull(self) -> None:
        self._branch_op(push=False)

    def _branch_op(self, *, push: bool) -> None:
        row = self._selected_worktree()
        if row is None or not row.worktree.branch:
            return
        branch = row.worktree.branch
        op = ops.git_push if push else ops.git_pull
        verb = "push" if push else "pull"
        self.run_op(
            f"git-{verb}",
            f"./vm-git-{verb}.sh {branch}",
            lambda sink, cancel: op(self.session, branch, sink=sink, cancel=cancel),
        )
