"""The Compare view (issue 16): the copies of one task side by side, picking one (the merge
dialog, then a dialog naming what each other copy would lose) and its SVG snapshot. On a
real git repository with three copies recorded as ``agent start --count`` records them;
no podman (the containers read as unknown): the view must not need it."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from textual.widgets import Button

from devbox.core import branch_notes, config
from devbox.core import git as gitcore
from devbox.core.ops import Section, Status, WorktreeRow
from devbox.core.session import Devbox
from devbox.tui.app import StatusUpdated, make_app
from devbox.tui.compare import Card, CompareScreen
from devbox.tui.dialogs import ConfirmTeardown, MergeDialog
from devbox.tui.fleet import FleetTable
from test_merge import git, make_repo
from tui_wait import showing, until

# the view must not need podman, and its picture must not depend on whether this machine's
# default podman socket answers (it did in CI, not by hand): no podman at all
NO_PODMAN = {"DEVBOX_PODMAN_URL": "unix:///nonexistent/podman.sock"}


def three_copies(tmp: Path) -> tuple[Path, dict[str, Path]]:
    """fan-1 and fan-3 change f1.txt and f2.txt, fan-2 adds a file; fan-3 leaves one uncommitted."""
    repo = make_repo(tmp / "r", random.Random(3))
    (repo / "devbox.toml").write_text('[review]\ncheck_command = ["make", "test"]\n')
    git(repo, "commit", "-qam", "the check")
    wts = {}
    for i in (1, 2, 3):
        branch = f"fan-{i}"
        wt = tmp / "r" / branch
        git(repo, "worktree", "add", "-q", "-b", branch, str(wt))
        branch_notes.record_base(repo, branch, "main")
        branch_notes.record_task(repo, branch, "fan")
        wts[branch] = wt
    for branch in ("fan-1", "fan-3"):
        (wts[branch] / "f1.txt").write_text(f"{branch} rewrote f1\n")
        git(wts[branch], "commit", "-qam", f"{branch}: rewrite f1")
        (wts[branch] / "f2.txt").write_text(f"{branch} rewrote f2\n")
        git(wts[branch], "commit", "-qam", f"{branch}: rewrite f2")
    (wts["fan-2"] / "feature.txt").write_text("".join(f"feature line {i}\n" for i in range(12)))
    git(wts["fan-2"], "add", "-A")
    git(wts["fan-2"], "commit", "-qm", "fan-2: add the feature")
    (wts["fan-3"] / "scratch.txt").write_text("notes\n")
    return repo, wts


def status_of(repo: Path) -> Status:
    rows = tuple(WorktreeRow(w, gitcore.state(w), None) for w in gitcore.list_worktrees(repo))
    return Status(str(repo), Section(), Section(), Section(rows), Section(()), agents=Section(()))


def select(app: object, branch: str) -> None:
    table = app.query_one(FleetTable)  # type: ignore[attr-defined]
    table.move_cursor(row=list(table._shown).index(branch))


def cards(app: object) -> list[str]:
    return [str(c.render()) for c in app.screen.query(Card)]  # type: ignore[attr-defined]


def test_compare_lists_the_copies_picks_one_and_names_what_the_others_lose(tmp_path: Path) -> None:
    repo, wts = three_copies(tmp_path)
    with Devbox(config.load(repo, env=NO_PODMAN)) as session:
        app = make_app(session, watch=False, view="fleet")

        async def go() -> None:
            async with app.run_test(size=(120, 40)) as pilot:
                app.post_message(StatusUpdated(status_of(repo), {}, {}, None))
                await until(pilot, lambda: "fan-2" in app.query_one(FleetTable)._shown)
                select(app, "fan-2")
                await pilot.press("C")
                await until(pilot, lambda: showing(app, CompareScreen) and len(cards(app)) == 3)
                shown = cards(app)
                assert "2 commits, 2 files" in shown[0] and "fan-1: rewrite f2" in shown[0]
                assert "1 commit, 1 file" in shown[1] and "+12 -0" in shown[1] and "add the feature" in shown[1]
                assert "1 uncommitted: scratch.txt" in shown[2]
                assert all("merges cleanly" in c and "check: not run (c)" in c for c in shown)
                assert app.screen.chosen == 1  # opened on the selected copy
                await pilot.press("right")
                assert app.screen.chosen == 2
                await pilot.press("left")
                before = git(repo, "rev-parse", "main").stdout
                await pilot.press("enter")
                await until(pilot, lambda: showing(app, MergeDialog))
                what = str(app.screen.query_one("#merge-what").render())
                assert "fan-2: add the feature" in what and "feature.txt" in what
                assert git(repo, "rev-parse", "main").stdout == before  # nothing moved before the confirm
                await pilot.click("#confirm")
                await until(pilot, lambda: showing(app, ConfirmTeardown), 60)
                losses = str(app.screen.query_one("#dialog-loss").render())
                assert "fan-1: worktree" in losses and "2 commit(s)" in losses
                assert "fan-3:" in losses and "1 uncommitted file(s): scratch.txt" in losses
                assert "fan-2" not in losses.replace("fan-2:", "")  # the picked copy is not offered
                app.screen.query_one("#confirm", Button).press()
                await until(pilot, lambda: not wts["fan-1"].exists() and not wts["fan-3"].exists(), 60)

        asyncio.run(go())
    assert (repo / "feature.txt").is_file()  # fan-2 landed on main
    branches = git(repo, "branch", "--format=%(refname:short)").stdout.split()
    assert "fan-2" in branches and "fan-1" not in branches and "fan-3" not in branches
    assert wts["fan-2"].is_dir()


def test_compare_view_snapshot(snap_compare: object, tmp_path: Path) -> None:
    repo, _ = three_copies(tmp_path)
    session = Devbox(config.load(repo, env=NO_PODMAN))
    app = make_app(session, watch=False, view="fleet")

    async def show(pilot: object) -> None:
        app.sub_title = "/home/dev/demo"  # the tmp path would change every run
        app.post_message(StatusUpdated(status_of(repo), {}, {}, None))
        await until(pilot, lambda: "fan-2" in app.query_one(FleetTable)._shown)
        select(app, "fan-2")
        await pilot.press("C")  # type: ignore[attr-defined]
        await until(pilot, lambda: showing(app, CompareScreen) and len(cards(app)) == 3)
        await pilot.pause(0.3)  # type: ignore[attr-defined]

    try:
        assert snap_compare(app, terminal_size=(80, 24), run_before=show)  # type: ignore[operator]
    finally:
        session.close()
