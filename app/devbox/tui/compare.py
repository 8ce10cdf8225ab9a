"""The Compare view: the copies of one task (``agent start TASK --count N``) side by side,
one card each: the agent and its state, commits, files with +/-, uncommitted files,
predicted conflicts with the base and the check's result, then the commit list. ``←``/``→``
choose a card, Enter picks it (the merge dialog, then the others' teardown), ``c`` runs
``review.check_command`` in every copy (a run of its own, in the Log tab), Escape closes.

A modal screen over the dashboard: it loads in a worker (git and state files only) and
reloads when its checks finish."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from devbox.core import ops
from devbox.core.errors import DevboxError
from devbox.core.session import Devbox
from devbox.tui.panes import Plain

SHOWN_COMMITS = 6
TAIL_SHOWN = 4  # last lines of a check's output on its card
CARD_MIN = 24  # columns: three cards side by side on an 80-column terminal, more scroll


def card_text(c: ops.Candidate, checks: bool, running: bool) -> Text:
    """One copy's card: state and numbers first (comparable at a glance), commits last."""
    t = Text(no_wrap=False, overflow="fold")
    t.append(f"{c.agent or 'no agent'}: {c.agent_state}\n", style="bold")
    t.append(f"container {c.container_state}\n", style="dim")
    t.append(f"{_n(len(c.commits), 'commit')}, {_n(c.files, 'file')}\n")
    t.append(f"+{c.added}", style="green")
    t.append(" ")
    t.append(f"-{c.deleted}", style="red")
    t.append(f"  {c.binary} binary\n" if c.binary else "\n")
    if c.uncommitted:
        t.append(f"{len(c.uncommitted)} uncommitted: {', '.join(c.uncommitted[:3])}\n", style="yellow")
    else:
        t.append("nothing uncommitted\n", style="dim")
    if c.conflicts:
        t.append(f"⚠ conflicts with base: {', '.join(c.conflicts[:3])}\n", style="bold red")
    else:
        t.append("merges cleanly\n", style="green")
    if running:
        t.append("check: running…\n", style="yellow")
    elif c.check is not None:
        style = "green" if c.check.passed and not c.check.stale else ("red" if c.check.status else "yellow")
        t.append(f"check: {c.check.label()}\n", style=style)
        for line in c.check.tail[-TAIL_SHOWN:]:  # what it said last (all of it: the run's log)
            t.append(f"  {line}\n", style="dim")
    elif checks:
        t.append("check: not run (c)\n", style="dim")
    t.append("\n")
    for commit in c.commits[:SHOWN_COMMITS]:
        t.append(commit.sha[:8], style="yellow")
        t.append(f" {commit.subject}\n")
    if len(c.commits) > SHOWN_COMMITS:
        t.append(f"… {len(c.commits) - SHOWN_COMMITS} more\n", style="dim")
    return t


def _n(count: int, what: str) -> str:
    return f"{count} {what}" + ("" if count == 1 else "s")


class Card(Static):
    """One copy of the task."""

    can_focus = False


class CompareScreen(ModalScreen["str | None"]):
    """Answers the branch picked (Enter), or None (Escape)."""

    BINDINGS: ClassVar = [
        Binding("escape", "close", "Close"),
        Binding("left", "move(-1)", "Previous", show=False),
        Binding("right", "move(1)", "Next", show=False),
        Binding("enter", "pick", "Pick"),
        Binding("c", "check", "Run checks"),
    ]

    def __init__(self, session: Devbox, task: str, start: str, run_checks: Callable[[CompareScreen], None]) -> None:
        super().__init__()
        self.session, self.task_name, self.start = session, task, start
        self.run_checks = run_checks  # the app starts the checks as a run of its own
        self.comparison: ops.Comparison | None = None
        self.chosen = 0
        self.checking = False

    def compose(self) -> ComposeResult:
        with Vertical(id="compare"):
            yield Label(f"Compare {self.task_name}", id="dialog-title")
            yield Plain("loading…", id="compare-summary")
            yield Horizontal(id="compare-cards")
            yield Plain("←/→ choose · enter pick (merge, remove the rest) · c checks · esc close",
                        id="compare-keys")  # fmt: skip

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exit_on_error=False, group="compare", exclusive=True)
    def load(self) -> None:
        try:
            cmp = ops.compare(self.session, self.task_name)
        except DevboxError as exc:
            self.app.call_from_thread(self._failed, exc.one_line())
            return
        self.app.call_from_thread(self._show, cmp)

    def _failed(self, text: str) -> None:
        self.query_one("#compare-summary", Plain).update(text)

    def _show(self, cmp: ops.Comparison) -> None:
        first = self.comparison is None
        self.comparison = cmp
        branches = [c.branch for c in cmp.candidates]
        if first and self.start in branches:
            self.chosen = branches.index(self.start)
        self.chosen = min(self.chosen, len(branches) - 1)
        check = shlex.join(cmp.check_command) if cmp.check_command else "none (review.check_command)"
        copies = "1 copy" if len(branches) == 1 else f"{len(branches)} copies"
        self.query_one("#compare-summary", Plain).update(f"{copies} from {cmp.base} · check: {check}")
        box = self.query_one("#compare-cards", Horizontal)
        cards = list(box.query(Card))
        if len(cards) != len(branches):
            box.remove_children()
            cards = [Card(id=f"card-{i}") for i in range(len(branches))]
            box.mount_all(cards)
        self._fit(len(cards))
        for card, c in zip(cards, cmp.candidates, strict=True):
            card.border_title = c.branch
            card.update(card_text(c, bool(cmp.check_command), self.checking))
        self._mark()

    def _fit(self, n: int) -> None:
        """Share the width (a fraction of a scrolling box would be the whole box each)."""
        if n:
            width = max(CARD_MIN, self.query_one("#compare-cards").size.width // n)
            for card in self.query(Card):
                card.styles.width = width

    def on_resize(self) -> None:
        self._fit(len(self.query(Card)))

    def _mark(self) -> None:
        for i, card in enumerate(self.query(Card)):
            card.set_class(i == self.chosen, "chosen")
            if i == self.chosen:
                card.scroll_visible(animate=False)

    def action_move(self, step: int) -> None:
        if self.comparison and self.comparison.candidates:
            self.chosen = (self.chosen + step) % len(self.comparison.candidates)
            self._mark()

    def action_pick(self) -> None:
        if self.comparison and self.comparison.candidates:
            self.dismiss(self.comparison.candidates[self.chosen].branch)

    def action_check(self) -> None:
        if self.comparison is None or self.checking:
            return
        if not self.comparison.check_command:
            self.notify('no check is configured: set review.check_command in devbox.toml, e.g. ["make", "test"]',
                        severity="warning", timeout=6)  # fmt: skip
            return
        self.checking = True
        self._show(self.comparison)
        self.run_checks(self)

    def checks_done(self) -> None:
        self.checking = False
        self.load()

    def action_close(self) -> None:
        self.dismiss(None)
