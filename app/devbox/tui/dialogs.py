"""Dialogs: teardown confirmation (names what will be lost; Cancel is the default), the merge
dialog, the new-worktree form (the branch name checked as you type, by the core's own
rules) and the small pickers. The two that decide something (teardown, merge) fit any
terminal from 60x20 up: title and buttons always show, their body scrolls between them."""

from __future__ import annotations

from typing import ClassVar, TypeVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from devbox.core.errors import DevboxError
from devbox.core.git import check_branch_name
from devbox.tui.panes import Plain

T = TypeVar("T")


class FittedDialog(ModalScreen[T]):
    """A dialog that fits the terminal: its title and its buttons always show, and the body
    between them (``#dialog-body``) scrolls when the terminal is too short for all of it.
    Wrapping within the width is the stylesheet's (``#dialog``: at most the screen's width)."""

    def on_mount(self) -> None:
        # toasts sit at the bottom right, over the buttons of a dialog on a small terminal:
        # those shown go (a modal screen has no toast rack: new ones wait until it closes)
        self.app.clear_notifications()
        self.call_after_refresh(self._fit)

    def on_resize(self) -> None:
        self.call_after_refresh(self._fit)

    def _fit(self) -> None:
        if not self.is_mounted:
            return
        dialog, body = self.query_one("#dialog"), self.query_one("#dialog-body")
        fixed = dialog.gutter.height + sum(
            c.outer_size.height + c.styles.margin.top + c.styles.margin.bottom for c in dialog.children if c is not body
        )
        body.styles.max_height = max(3, self.size.height - fixed - body.styles.margin.height)


class ConfirmTeardown(FittedDialog[bool]):
    """ "Remove X?" with the list of what would be lost. Escape or Cancel (focused) says no;
    only the focused button is drawn highlighted (Enter presses it), Left/Right move between them."""

    BINDINGS: ClassVar = [
        Binding("escape", "cancel", "Cancel"),
        Binding("left", "app.focus_previous", show=False),
        Binding("right", "app.focus_next", show=False),
    ]
    # focused when shown: a selector Textual applies once the screen is composed (a lookup in
    # on_mount raised NoMatches in CI when the app closed before the compose)
    AUTO_FOCUS = "#cancel"

    def __init__(
        self, title: str, losses: list[str], command: str, *, heading: str = "This will be lost:",
        verb: str = "Remove", none: str = "Nothing uncommitted, unpushed or running will be lost.",
    ) -> None:  # fmt: skip
        super().__init__()
        self.title_text = title
        self.losses = losses
        self.command = command
        self.heading, self.verb, self.none = heading, verb, none

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Plain(self.title_text, id="dialog-title")
            with VerticalScroll(id="dialog-body"):
                if self.losses:
                    yield Plain(self.heading + "\n" + "\n".join(f"  • {x}" for x in self.losses), id="dialog-loss")
                else:
                    yield Plain(self.none, id="dialog-loss")
                yield Plain(f"same as: {self.command}", id="dialog-command")
                yield Plain("Enter presses the focused button · ←→ Tab move · Esc cancels", id="dialog-keys")
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button(self.verb, id="confirm", compact=True)

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def _cancel_button(self) -> None:
        self.dismiss(False)

    def action_cancel(self) -> None:
        self.dismiss(False)


class BranchName(Validator):
    def validate(self, value: str) -> ValidationResult:
        try:
            check_branch_name(value)
        except DevboxError as exc:
            return self.failure(exc.message)
        return self.success()


class NewWorktree(ModalScreen["tuple[str, str | None] | None"]):
    """Branch (checked as you type) and an optional base ref; answers None on Escape."""

    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]
    AUTO_FOCUS = "#branch"

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("New worktree and container", id="dialog-title")
            yield Input(placeholder="branch, e.g. feature/login", id="branch", validators=[BranchName()])
            yield Plain("", id="branch-error")
            yield Input(placeholder="start from (optional: a ref, default HEAD)", id="from")
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Create", id="create", variant="primary")

    @on(Input.Changed, "#branch")
    def _changed(self, event: Input.Changed) -> None:
        result = event.validation_result
        msg = "" if result is None or result.is_valid or not event.value else result.failure_descriptions[0]
        self.query_one("#branch-error", Static).update(msg)
        self.query_one("#create", Button).disabled = not (result is not None and result.is_valid)

    @on(Input.Submitted)
    @on(Button.Pressed, "#create")
    def _create(self) -> None:
        box = self.query_one("#branch", Input)
        result = box.validate(box.value)
        if result is None or not result.is_valid:
            return
        base = self.query_one("#from", Input).value.strip() or None
        self.dismiss((box.value, base))

    @on(Button.Pressed, "#cancel")
    def _cancel_button(self) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TransferPaths(ModalScreen["tuple[str, str] | None"]):
    """Local and VM paths for a directory push or pull, prefilled; None on Escape."""

    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]
    AUTO_FOCUS = "#go"

    def __init__(self, title: str, local: str, remote: str, verb: str, note: str = "") -> None:
        super().__init__()
        self._title, self._local, self._remote, self._verb, self._note = title, local, remote, verb, note

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self._title, id="dialog-title")
            if self._note:
                yield Plain(self._note, id="dialog-note")
            yield Label("here")
            yield Input(self._local, id="local")
            yield Label("in the VM (relative: under the VM user's home)")
            yield Input(self._remote, id="remote")
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self._verb, id="go", variant="primary")

    @on(Input.Submitted)
    @on(Button.Pressed, "#go")
    def _go(self) -> None:
        local, remote = self.query_one("#local", Input).value.strip(), self.query_one("#remote", Input).value.strip()
        if local and remote:
            self.dismiss((local, remote))

    @on(Button.Pressed, "#cancel")
    def _cancel_button(self) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class AskLine(ModalScreen[bool]):
    """A one-line yes/no question (cancel an operation, quit while one runs): y or Enter
    says yes, n or Escape says no."""

    BINDINGS: ClassVar = [
        Binding("y,enter", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Plain(f"{self.question}  [y/N]", id="ask-line")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class RunPicker(ModalScreen["int | None"]):
    """The runs since the dashboard started, newest first; Enter shows one in the log pane."""

    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel")]
    AUTO_FOCUS = "#runs"

    def __init__(self, runs: list[tuple[int, str]]) -> None:
        super().__init__()
        self.runs = runs

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Show the log of", id="dialog-title")
            yield OptionList(*(Option(label, id=str(number)) for number, label in self.runs), id="runs")

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id or 0))

    def action_cancel(self) -> None:
        self.dismiss(None)


class MergeDialog(FittedDialog["str | None"]):
    """Land a branch: the strategy, and before anything happens, the commits that land, the
    files they touch and the conflicts predicted. A predicted conflict, or uncommitted work
    in the branch's worktree, leaves only Cancel.

    The keys: Up/Down choose the strategy wherever the focus is (the strategy line never
    takes the focus, so the arrows cannot be lost to it), Left/Right/Tab move between the
    buttons, Enter presses the focused one, Escape cancels. Cancel has the focus at first
    and only the focused button is drawn highlighted; the chosen strategy is what the
    strategy line, the button and the "same as" line say."""

    STRATEGIES = ("merge", "rebase", "squash")
    BINDINGS: ClassVar = [
        Binding("escape", "cancel", "Cancel"),
        Binding("up", "strategy(-1)", "Strategy", show=False, priority=True),
        Binding("down", "strategy(1)", "Strategy", show=False, priority=True),
        Binding("left", "app.focus_previous", show=False),
        Binding("right", "app.focus_next", show=False),
    ]
    AUTO_FOCUS = "#cancel"

    def __init__(
        self, branch: str, base: str, commits: list[str], files: list[str], conflicts: list[str], blocked: str = ""
    ) -> None:  # fmt: skip
        super().__init__()
        self.branch, self.base = branch, base
        self.commits, self.files, self.conflicts = commits, files, conflicts
        self.blocked = blocked  # why it cannot land now (uncommitted work): only Cancel
        self.strategy = self.STRATEGIES[0]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Plain(f"Land {self.branch} on {self.base}", id="dialog-title")
            with VerticalScroll(id="dialog-body"):
                if self.conflicts:  # first: it is why only Cancel is offered
                    yield Plain(f"would conflict in {len(self.conflicts)} file(s): " + ", ".join(self.conflicts)
                                + f"\nrebase {self.branch} in its worktree and resolve them there first",
                                id="dialog-loss")  # fmt: skip
                if self.blocked:
                    yield Plain(self.blocked, id="merge-blocked")
                shown = [*self.commits[:8], *(["…"] if len(self.commits) > 8 else [])]
                files = [*self.files[:8], *([f"… and {len(self.files) - 8} more"] if len(self.files) > 8 else [])]
                yield Plain(
                    f"{len(self.commits)} commit(s):\n"
                    + "\n".join(f"  {c}" for c in shown)
                    + f"\n{len(self.files)} file(s):\n"
                    + "\n".join(f"  {f}" for f in files),
                    id="merge-what",
                )
                yield Plain("", id="dialog-command")
                yield Plain("↑↓ strategy · ←→ Tab button · Enter presses it · Esc cancels", id="dialog-keys")
            yield Static("", id="merge-strategy")
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Merge", id="confirm", compact=True, disabled=bool(self.conflicts or self.blocked))

    def on_mount(self) -> None:
        super().on_mount()
        self._show_strategy()

    def action_strategy(self, step: int) -> None:
        at = self.STRATEGIES.index(self.strategy)
        self.strategy = self.STRATEGIES[(at + step) % len(self.STRATEGIES)]
        self._show_strategy()

    def _show_strategy(self) -> None:
        line = Text("strategy (↑↓): ")
        for s in self.STRATEGIES:
            line.append(f" {s} ", style="reverse bold" if s == self.strategy else "")
        self.query_one("#merge-strategy", Static).update(line)
        self.query_one("#confirm", Button).label = self.strategy.capitalize()
        self.query_one("#dialog-command", Static).update(
            f"same as: ./devbox merge {self.branch} --into {self.base} --strategy {self.strategy} --yes"
        )

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.dismiss(self.strategy)

    @on(Button.Pressed, "#cancel")
    def _cancel_button(self) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
