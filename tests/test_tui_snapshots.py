"""SVG snapshots of the dashboard (pytest-textual-snapshot): the main screen at 80x24 and
160x45, the teardown dialog and the new-worktree dialog.

The app is built by the same factory as ``devbox-tui``, without its pollers, and shown one
fixed snapshot (fixed paths and relative times), so the pictures do not depend on this
machine. Update after a deliberate change: ``pytest tests/test_tui_snapshots.py
--snapshot-update``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from textual.widgets import Input

from devbox.core import config
from devbox.core.agent_state import AgentState
from devbox.core.containers import Container
from devbox.core.freshness import SourceTree, Verdict
from devbox.core.git import Activity, Worktree, WorktreeState
from devbox.core.image import ImageStatus
from devbox.core.libvirt import Vm
from devbox.core.ops import AgentRow, Section, Status, VmOverview, WorktreeRow
from devbox.core.podman_records import ContainerStats, ImageRecord
from devbox.core.session import Devbox
from devbox.tui.app import DevboxApp, StatusUpdated, make_app
from devbox.tui.dialogs import ConfirmTeardown, NewWorktree

REPO = Path("/home/dev/demo")


def demo_app(tmp: Path, view: str = "resources") -> DevboxApp:
    settings = config.Settings(  # noqa: S604 - `shell` is a setting here, not a subprocess flag
        repo=REPO,
        bootc_dir=REPO / "bootc",
        terraform_dir=REPO / "terraform",
        build_dir=tmp / ".build",  # the log pane's files; never shown
        worktrees_dir=REPO.parent / "demo.worktrees",
        image="localhost/devbox-demo-1a2b3c:latest",
        builder_image="",
        podman_url="unix:///nonexistent.sock",
        podman_autostart=False,
        podman_timeout=1,
        shell="/bin/bash",
        network="",
        libvirt_uri="",
    )
    return make_app(Devbox(settings), watch=False, view=view)


def demo_update() -> StatusUpdated:
    now = time.time()
    wt_root = REPO.parent / "demo.worktrees"
    main = Worktree(REPO, "main", "a" * 40, True)
    login = Worktree(wt_root / "feature" / "login", "feature/login", "b" * 40, False)
    docs = Worktree(wt_root / "docs", "docs", "c" * 40, False)
    gone = Worktree(wt_root / "spike", "spike", "d" * 40, False, prunable=True)
    image_id = "sha256:" + "e" * 64
    c_login = Container(
        "devbox-demo-feature-login-1f2e3d", "1" * 64, "running", "feature/login", str(login.path), image_id, now - 7260
    )
    c_docs = Container(
        "devbox-demo-docs-4a5b6c", "2" * 64, "exited", "docs", str(docs.path), "sha256:" + "f" * 64, None
    )
    rows = (
        WorktreeRow(main, WorktreeState(ahead=0, behind=0), None),
        WorktreeRow(login, WorktreeState(changed=2, untracked=1, files=("app.py", "README.md", "new.txt")), c_login),
        WorktreeRow(docs, WorktreeState(ahead=3, behind=1), c_docs),
        WorktreeRow(gone, WorktreeState(missing=True), None),
    )
    tree = SourceTree(REPO / "bootc", "3f2a9c" + "0" * 58, {})
    image = ImageStatus("localhost/devbox-demo-1a2b3c:latest", ImageRecord(image_id, "", {}), tree, Verdict(True))
    status = Status(str(REPO), Section(tree), Section(image), Section(rows), Section((c_docs, c_login)))
    activity = {
        main.path: Activity(int(now - 5400)),
        login.path: Activity(int(now - 600), 120, 8, 5),
        docs.path: Activity(int(now - 86400 * 2), 14, 0, 2),
    }
    stats = {c_login.name: ContainerStats(c_login.name, 12.5, 300 << 20, 8 << 30)}
    vm = Vm(
        "devbox-demo-1a2b3c", "0" * 32, str(REPO), "running", 4, 8192, 754.0, None, "52:54:00:12:34:56",
        "192.168.122.47", "host-passthrough", "kvm",
    )  # fmt: skip
    overview = VmOverview(Section((vm,)), Verdict(False, ("disk rebuilt since the VM was made",)))
    states = [("feature/login", c_login.name, "needs you", "Claude needs your permission to use Bash"),
              ("docs", c_docs.name, "done", "turn finished: your move"), ("spike-a", "devbox-demo-spike-a-1", "working",
              "running Bash"), ("spike-b", "devbox-demo-spike-b-2", "error", "the turn failed"),
              ("spike-c", "devbox-demo-spike-c-3", "exited", "the agent ended (status 143)"),
              ("spike-d", "devbox-demo-spike-d-4", "no agent", ""),
              ("spike-e", "devbox-demo-spike-e-5", "unknown", "")]  # fmt: skip
    agents = tuple(
        AgentRow(b, name, "running", AgentState(state, now - 65 * (i + 1), message))  # type: ignore[arg-type]
        for i, (b, name, state, message) in enumerate(states)
    )
    status = Status(str(REPO), Section(tree), Section(image), Section(rows), Section((c_docs, c_login)),
                    agents=Section(agents))  # fmt: skip
    return StatusUpdated(status, activity, stats, overview)


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
def test_main_screen(snap_compare: object, tmp_path: Path, size: tuple[int, int]) -> None:
    async def show(pilot: object) -> None:
        app = pilot.app  # type: ignore[attr-defined]
        app.post_message(demo_update())
        await pilot.pause(0.2)  # type: ignore[attr-defined]

    assert snap_compare(demo_app(tmp_path), terminal_size=size, run_before=show)  # type: ignore[operator]


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
def test_fleet_screen(snap_compare: object, tmp_path: Path, size: tuple[int, int]) -> None:
    """Issue 15: one row per environment, agents in every state, most urgent first."""

    async def show(pilot: object) -> None:
        app = pilot.app  # type: ignore[attr-defined]
        app.post_message(demo_update())
        await pilot.pause(0.2)  # type: ignore[attr-defined]

    assert snap_compare(demo_app(tmp_path, "fleet"), terminal_size=size, run_before=show)  # type: ignore[operator]


def test_fleet_keys_jump_mark_seen_and_switch_views(tmp_path: Path) -> None:
    """The fleet is the first view; `]` / `[` jump between agents that need you; looking at
    a done row marks it seen (it sorts after the working ones); `t` switches the detail
    area's tab; R shows the resources (the fleet's keys leave the footer), F comes back."""
    from textual.widgets import Footer, TabbedContent

    from devbox.tui.fleet import FleetTable
    from devbox.tui.panes import WorktreesTable

    app = demo_app(tmp_path, "fleet")

    async def go() -> None:
        update = demo_update()  # posted twice: the agents' states keep their start times
        async with app.run_test(size=(100, 30)) as pilot:
            app.post_message(update)
            await pilot.pause(0.2)
            assert app.view == "fleet"
            table = app.query_one(FleetTable)
            assert table.has_focus
            order = list(table._shown)
            assert order[:3] == ["feature/login", "spike-b", "docs"] and order[-2:] == ["spike-e", "spike-d"]
            await pilot.press("right_square_bracket")
            assert table.selected_key() == "feature/login"  # the one that needs you
            table.move_cursor(row=order.index("docs"))  # look at the done one
            await pilot.pause(0.1)
            app.post_message(update)
            await pilot.pause(0.2)
            assert list(table._shown) == order and table.selected_key() == "docs"  # seen, but not moved under you
            await pilot.press("up")  # the cursor leaves it: now it sorts after the working ones
            app.post_message(update)
            await pilot.pause(0.2)
            assert list(table._shown).index("docs") > list(table._shown).index("spike-a")
            assert table.selected_key() == "spike-b"  # the row the key went to, wherever it sorts now
            await pilot.pause(0.2)
            app.post_message(update)  # the refill above passed rows under the cursor: none counts as seen
            await pilot.pause(0.2)
            assert not table._shown["docs"][1].endswith("*")
            await pilot.press("left_square_bracket")
            assert table.selected_key() == "feature/login"
            detail = app.query_one("#detail", TabbedContent)
            assert detail.active == "preview-tab"
            assert "Preview: feature/login: needs you" in str(app.query_one("#preview-title").render())
            await pilot.press("t")
            assert detail.active == "diff-tab"
            await pilot.press("t")
            assert detail.active == "log-tab"
            await pilot.press("t")
            assert detail.active == "preview-tab"

            def footer_keys() -> str:
                return " ".join(str(w.render()) for w in app.query_one(Footer).query("FooterKey"))

            await pilot.pause(0.1)
            assert "Next needs-you" in footer_keys() and "Resources" in footer_keys()
            await pilot.press("ctrl+p")  # the palette lists the fleet's actions while it is open
            await pilot.pause(0.2)
            titles = [c.title for c in app.get_system_commands(app.screen_stack[0])]
            assert {"devbox: Next needs-you", "devbox: Attach agent", "devbox: Resources"} <= set(titles)
            await pilot.press("escape")
            await pilot.press("R")
            await pilot.pause(0.1)
            assert app.view == "resources" and app.query_one(WorktreesTable).has_focus
            assert "Next needs-you" not in footer_keys() and "Fleet" in footer_keys()
            await pilot.press("right_square_bracket")  # not the fleet's: nothing moves
            assert table.selected_key() == "feature/login"
            await pilot.press("F")
            await pilot.pause(0.1)
            assert app.view == "fleet" and table.has_focus

    asyncio.run(go())


@pytest.mark.parametrize("size", [(100, 30), (60, 20)])
def test_teardown_dialog(snap_compare: object, tmp_path: Path, size: tuple[int, int]) -> None:
    """At 60x20 too: the dialog wraps within the screen, nothing of what would be lost cut."""

    async def show(pilot: object) -> None:
        app = pilot.app  # type: ignore[attr-defined]
        app.post_message(demo_update())
        await pilot.pause(0.2)  # type: ignore[attr-defined]
        app.push_screen(
            ConfirmTeardown(
                "Remove worktree /home/dev/demo.worktrees/feature/login?",
                [
                    "3 uncommitted file(s): app.py, README.md, new.txt",
                    "running container devbox-demo-feature-login-1f2e3d",
                    "home volume devbox-demo-feature-login-1f2e3d-var (/var of the container)",
                ],
                "./devbox worktree remove --force feature/login",
            )
        )
        await pilot.pause(0.2)  # type: ignore[attr-defined]

    assert snap_compare(demo_app(tmp_path), terminal_size=size, run_before=show)  # type: ignore[operator]


def test_new_worktree_dialog(snap_compare: object, tmp_path: Path) -> None:
    async def show(pilot: object) -> None:
        app = pilot.app  # type: ignore[attr-defined]
        app.post_message(demo_update())
        await pilot.pause(0.2)  # type: ignore[attr-defined]
        app.push_screen(NewWorktree())
        await pilot.pause(0.1)  # type: ignore[attr-defined]
        for box in app.screen.query(Input):
            box.cursor_blink = False  # a blinking cursor makes the picture depend on timing
        await pilot.press(*"feature..x")  # type: ignore[attr-defined]
        await pilot.pause(0.1)  # type: ignore[attr-defined]

    assert snap_compare(demo_app(tmp_path), terminal_size=(100, 30), run_before=show)  # type: ignore[operator]


@pytest.mark.parametrize("size", [(80, 24), (160, 45), (120, 36), (200, 60)])
def test_the_vm_row_is_on_screen(tmp_path: Path, size: tuple[int, int]) -> None:
    """Issue 14 item 11: the VMs pane shows its VM (its row sat under the scrollbar)."""
    app = demo_app(tmp_path)

    async def go() -> str:
        async with app.run_test(size=size) as pilot:
            app.post_message(demo_update())
            await pilot.pause(0.2)
            return app.export_screenshot()

    screen = asyncio.run(go())
    assert "devbox-demo-1a2b3c" in screen and "192.168.122.47" in screen


def test_the_readme_key_table_is_the_registry() -> None:
    """Issue 15: every action is declared once (tui/commands.py); the README shows it."""
    from devbox.tui import commands

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert commands.readme_table() in readme
    app_bindings = {b.id: b.key for b in commands.bindings()}
    assert app_bindings == {c.id: c.key for c in commands.COMMANDS} and len(app_bindings) == len(commands.COMMANDS)
    assert all(hasattr(DevboxApp, f"action_{c.id}") for c in commands.COMMANDS)  # each has its handler


def test_table_cells_are_text_not_markup() -> None:
    """A branch (git allows `[`) or an agent's message (untrusted) with markup in it shows as
    written: DataTable parses a str as Rich markup, and "[/]" crashed the dashboard."""
    from textual.app import App, ComposeResult

    from devbox.tui.panes import ReconciledTable

    class Table(ReconciledTable):
        COLUMNS = (("a", "a"), ("b", "b"))

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield Table()

    async def go() -> None:
        app = One()
        async with app.run_test() as pilot:
            table = app.query_one(Table)
            table.reconcile({"fix[/]": ["fix[/]", "[bold]loud[/bold]"]})
            table.reconcile({"fix[/]": ["fix[/]", "[red]x"]})  # an update in place, too
            await pilot.pause()
            assert [str(c) for c in table.get_row("fix[/]")] == ["fix[/]", "[red]x"]

    asyncio.run(go())


def test_untrusted_text_is_shown_as_written(tmp_path: Path) -> None:
    """An agent's message, a problem and a toast with markup in them: shown as written, no
    crash ("[/]" raised MarkupError in a Static and in a toast, "[keys]" vanished)."""
    import dataclasses

    from devbox.core.ops import Problem
    from devbox.tui.fleet import FleetTable

    app = demo_app(tmp_path, "fleet")

    async def go() -> None:
        update = demo_update()
        rows = tuple(
            dataclasses.replace(r, agent=dataclasses.replace(r.agent, message="rm [/] -rf [bold]x"))
            for r in update.status.agents.value or ()
        )
        st = dataclasses.replace(update.status, agents=Section(rows, Problem("bad [/] dir", "fix [keys]", 1)))
        async with app.run_test(size=(160, 45)) as pilot:
            app.post_message(StatusUpdated(st, update.activity, update.stats, update.vm))
            await pilot.pause(0.2)
            app.notify("toast [/] [keys]")
            await pilot.pause(0.2)
            assert "bad [/] dir" in str(app.query_one("#fleet-problem").render())
            assert "fix [keys]" in str(app.query_one("#fleet-problem").render())
            assert "rm [/] -rf [bold]x" in str(app.query_one("#preview-title").render())
            assert "rm [/] -rf [bold]x" in [str(c) for c in app.query_one(FleetTable).get_row("spike-a")]

    asyncio.run(go())


def test_a_refill_does_not_mark_rows_seen(tmp_path: Path) -> None:
    """Three done agents: the one under the cursor is seen and sorts last, which refills the
    table; the rows that pass under the cursor during the refill were not looked at and
    keep their unseen mark (they all lost it, one per refresh, in the real dashboard)."""
    import dataclasses

    from devbox.tui.fleet import FleetTable

    app = demo_app(tmp_path, "fleet")

    async def go() -> None:
        update = demo_update()
        now = time.time() - 30
        done = tuple(
            AgentRow(b, f"devbox-demo-{b}-1", "running", AgentState("done", now, "turn finished: your move"))
            for b in ("d1", "d2", "d3")
        )
        st = dataclasses.replace(update.status, agents=Section(done))
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.query_one(FleetTable)
            for _ in range(3):
                app.post_message(StatusUpdated(st, update.activity, update.stats, update.vm))
                await pilot.pause(0.2)
            assert list(table._shown)[:3] == ["d1", "d2", "d3"] and table.selected_key() == "d1"  # seen, in place
            await pilot.press("down")  # d2 is looked at; d1, left, sorts last: a refill under the cursor
            for _ in range(3):
                app.post_message(StatusUpdated(st, update.activity, update.stats, update.vm))
                await pilot.pause(0.2)
            assert list(table._shown)[:3] == ["d2", "d3", "d1"] and table.selected_key() == "d2"
            assert [table._shown[b][1].endswith("*") for b in ("d2", "d3", "d1")] == [False, True, False]

    asyncio.run(go())


def test_rows_never_move_under_the_cursor_and_seen_marks_survive_a_restart(tmp_path: Path) -> None:
    """Issue 33: a done row, once selected, was marked seen at the next poll and jumped to
    the seen group with the cursor; after M and Escape, Down meant for the next row and M
    opened another branch's merge. The selected row keeps its place until the cursor leaves
    it, each key acts on the row shown selected, and a new dashboard remembers what was seen."""
    import dataclasses

    from devbox.tui.fleet import FleetTable

    now = time.time() - 30
    agents = tuple(
        AgentRow(b, f"devbox-demo-{b}-1", "running", AgentState(state, now, "m"))  # type: ignore[arg-type]
        for b, state in (("ask2", "needs you"), ("slow", "done"), ("quick", "done"), ("busy", "working"))
    )
    update = demo_update()
    st = dataclasses.replace(update.status, agents=Section(agents))

    def poll() -> StatusUpdated:
        return StatusUpdated(st, update.activity, update.stats, update.vm)

    async def first() -> None:
        app = demo_app(tmp_path, "fleet")
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.query_one(FleetTable)
            app.post_message(poll())
            await pilot.pause(0.2)
            assert list(table._shown)[:4] == ["ask2", "quick", "slow", "busy"]
            await pilot.press("down")  # quick, done and unseen
            for _ in range(3):  # polls while the user reads it: it is seen, and stays put
                app.post_message(poll())
                await pilot.pause(0.2)
            assert list(table._shown)[:4] == ["ask2", "quick", "slow", "busy"] and table.selected_key() == "quick"
            assert not table._shown["quick"][1].endswith("*") and table._shown["slow"][1].endswith("*")
            await pilot.press("down")  # the row shown below quick: slow, whatever the next poll does
            assert table.selected_key() == "slow"
            app.post_message(poll())
            await pilot.pause(0.2)
            assert table.selected_key() == "slow" and list(table._shown)[:4] == ["ask2", "slow", "busy", "quick"]
            await pilot.pause(0.3)  # (the marks are written by a worker)

    async def second() -> None:
        app = demo_app(tmp_path, "fleet")  # the same repository's .build: a restart
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.query_one(FleetTable)
            app.post_message(poll())
            await pilot.pause(0.2)
            assert list(table._shown)[:4] == ["ask2", "busy", "quick", "slow"]  # both seen: after the working one
            assert not any(table._shown[b][1].endswith("*") for b in ("quick", "slow"))

    asyncio.run(first())
    asyncio.run(second())


def test_the_fleet_row_shows_its_conflicts(tmp_path: Path) -> None:
    """The conflict radar's badge: a row that would conflict with another branch (or its
    base) says with how many."""
    from devbox.core.ops.radar import Clash, Radar
    from devbox.tui.fleet import FleetTable

    app = demo_app(tmp_path, "fleet")

    async def go() -> None:
        u = demo_update()
        radar = Radar((Clash("feature/login", "docs", ("app.py",)), Clash("docs", "main", ("README.md",), True)), 3)
        async with app.run_test(size=(100, 30)) as pilot:
            app.post_message(StatusUpdated(u.status, u.activity, u.stats, u.vm, radar))
            await pilot.pause(0.2)
            table = app.query_one(FleetTable)
            assert table._shown["feature/login"][3].endswith("⚠ 1") and table._shown["docs"][3].endswith("⚠ 2")
            assert "⚠" not in table._shown["spike-a"][3]

    asyncio.run(go())


def test_the_diff_tab_shows_files_commits_uncommitted_conflicts_and_patches(tmp_path: Path) -> None:
    """The Diff tab on a real repository: the branch's files with +/- (binary summarised),
    its commits, its uncommitted files marked so, the radar's conflicts, and the selected
    file's patch, coloured; moving in the file list shows that file's patch."""
    import random

    from devbox.core import git as gitcore
    from devbox.core.ops.radar import Clash, Radar
    from devbox.core.ops.views import WorktreeRow
    from devbox.tui.diffview import FilesTable, PatchView
    from test_merge import git, make_repo

    repo = make_repo(tmp_path / "r", random.Random(5))
    wt = tmp_path / "r" / "wt"
    git(repo, "worktree", "add", "-q", "-b", "agent", str(wt))
    (wt / "f0.txt").write_text("".join(f"agent line {i}\n" for i in range(20_000)))  # a 20,000-line patch
    (wt / "bin.dat").write_bytes(bytes(range(256)) * 4)
    git(wt, "commit", "-qam", "agent rewrites f0")
    (wt / "f1.txt").write_text("wip\n")
    (wt / "scratch.txt").write_text("new\n")
    with Devbox(config.load(repo, env={})) as session:
        rows = tuple(WorktreeRow(w, gitcore.state(w), None) for w in gitcore.list_worktrees(repo))
        st = Status(str(repo), Section(), Section(), Section(rows), Section(()), agents=Section(()))
        radar = Radar((Clash("agent", "other", ("f0.txt",)), Clash("agent", "main", ("f1.txt",), True)), 2)
        app = make_app(session, watch=False, view="fleet")

        async def go() -> None:
            async with app.run_test(size=(160, 45)) as pilot:
                app.post_message(StatusUpdated(st, {}, {}, None, radar))
                await pilot.pause(0.3)
                await pilot.press("t")  # Preview -> Diff
                files = app.query_one(FilesTable)
                for _ in range(100):
                    if files.row_count >= 4:
                        break
                    await pilot.pause(0.05)
                shown = {k: [str(c) for c in v] for k, v in files._shown.items()}
                assert shown["c:f0.txt"][0] == "M +20000 -30" and shown["c:bin.dat"][0] == "M binary"
                assert shown["u:f1.txt"][0] == "unstaged (uncommitted)"
                assert shown["u:scratch.txt"][0] == "untracked (uncommitted)"
                title = str(app.query_one("#diff-title").render())
                assert "⚠ 2 conflict(s), 2 uncommitted, 1 commit(s), 2 file(s)" in title
                side = str(app.query_one("#diff-commits").render())
                assert "⚠ conflicts with other: f0.txt" in side and "⚠ conflicts with its base main: f1.txt" in side
                assert "agent rewrites f0" in side
                patch = app.query_one(PatchView)
                for _ in range(100):
                    if patch.lines:
                        break
                    await pilot.pause(0.05)
                assert patch.lines == ["bin.dat: a binary file (M binary), not drawn"]  # the first file
                files.focus()
                files.move_cursor(row=list(files._shown).index("c:f0.txt"))
                for _ in range(100):
                    if len(patch.lines) > 20_000:
                        break
                    await pilot.pause(0.05)
                assert "+agent line 19999" in patch.lines
                line = patch.render_line(next(i for i, t in enumerate(patch.lines) if t.startswith("+agent")))
                assert any(seg.style and seg.style.color for seg in line)  # coloured
                files.move_cursor(row=list(files._shown).index("u:f1.txt"))
                for _ in range(100):
                    if "+wip" in patch.lines:
                        break
                    await pilot.pause(0.05)
                assert "+wip" in patch.lines

        asyncio.run(go())


def test_the_merge_dialog_cancel_changes_nothing_confirm_lands_what_it_listed(tmp_path: Path) -> None:
    """M on a worktree row: the dialog lists the commits and files that would land (Cancel
    focused); Escape changes nothing; squash + Merge lands exactly those files on main, as
    one commit, and the worktree's teardown dialog follows. A branch with nothing new
    offers no Merge, only why."""
    import random

    from textual.widgets import Button

    from devbox.core import git as gitcore
    from devbox.core.ops.views import WorktreeRow
    from devbox.tui.dialogs import ConfirmTeardown, MergeDialog
    from devbox.tui.panes import WorktreesTable
    from test_merge import git, make_repo, snapshot
    from tui_wait import showing, until

    repo = make_repo(tmp_path / "r", random.Random(9))
    wt = tmp_path / "r" / "wt"
    git(repo, "worktree", "add", "-q", "-b", "agent", str(wt))
    for i in range(2):
        (wt / f"agent-{i}.txt").write_text(f"{i}\n")
        git(wt, "add", "-A")
        git(wt, "commit", "-qm", f"agent adds {i}")
    idle = tmp_path / "r" / "idle"
    git(repo, "worktree", "add", "-q", "-b", "idle", str(idle))  # no commits of its own
    with Devbox(config.load(repo, env={})) as session:
        rows = tuple(WorktreeRow(w, gitcore.state(w), None) for w in gitcore.list_worktrees(repo))
        st = Status(str(repo), Section(), Section(), Section(rows), Section(()), agents=Section(()))
        app = make_app(session, watch=False, view="resources")

        async def go() -> None:
            async with app.run_test(size=(120, 40)) as pilot:
                app.post_message(StatusUpdated(st, {}, {}, None))
                await pilot.pause(0.3)
                table = app.query_one(WorktreesTable)
                table.move_cursor(row=list(table._shown).index(str(idle)))
                await pilot.press("M")
                await until(pilot, lambda: showing(app, MergeDialog))
                assert "nothing to land: idle has nothing" in str(app.screen.query_one("#merge-blocked").render())
                assert app.screen.query_one("#confirm", Button).disabled
                await pilot.press("escape")
                await until(pilot, lambda: not isinstance(app.screen, MergeDialog))

                table.move_cursor(row=list(table._shown).index(str(wt)))
                before = snapshot(repo, wt)  # (the dashboard's own .build/ made by now)
                await pilot.press("M")
                await until(pilot, lambda: showing(app, MergeDialog))
                what = str(app.screen.query_one("#merge-what").render())
                assert "2 commit(s)" in what and "agent adds 1" in what and "agent-0.txt" in what
                assert app.screen.focused is app.screen.query_one("#cancel", Button)
                await pilot.press("escape")
                await until(pilot, lambda: not isinstance(app.screen, MergeDialog))
                assert snapshot(repo, wt) == before  # cancelled: nothing moved

                # issue 33: the arrows reach the strategy wherever the focus is, the button
                # and the "same as" line say the chosen one, Enter presses the focused button
                await pilot.press("M")
                await until(pilot, lambda: showing(app, MergeDialog))
                dialog = app.screen

                def command() -> str:
                    return str(dialog.query_one("#dialog-command").render())

                assert (
                    "--strategy merge --yes" in command() and str(dialog.query_one("#confirm", Button).label) == "Merge"
                )
                await pilot.press("down", "down")
                assert dialog.strategy == "squash" and "--strategy squash --yes" in command()
                assert str(dialog.query_one("#confirm", Button).label) == "Squash"
                assert dialog.focused is dialog.query_one("#cancel", Button)
                await pilot.press("enter")  # Cancel has the focus: Enter cancels, and says so
                await until(pilot, lambda: not isinstance(app.screen, MergeDialog))
                assert snapshot(repo, wt) == before
                await until(pilot, lambda: any("not landed" in str(n.message) for n in app._notifications))

                await pilot.press("M")
                await until(pilot, lambda: showing(app, MergeDialog))
                dialog = app.screen
                await pilot.press("X", "x", "C")  # the dashboard's keys: none acts behind the dialog
                await pilot.pause(0.3)
                assert app.screen is dialog and len(app.screen_stack) == 2
                await pilot.press("down", "down", "right")  # squash, then the Squash button
                assert app.screen.focused is app.screen.query_one("#confirm", Button)
                await pilot.press("enter")
                await until(pilot, lambda: showing(app, ConfirmTeardown), 60)  # offered after the merge
                assert f"Remove worktree {wt}?" in str(app.screen.query_one("#dialog-title").render())
                await pilot.press("escape")

        asyncio.run(go())
    assert (repo / "agent-0.txt").read_text() == "0\n" and (repo / "agent-1.txt").read_text() == "1\n"
    assert git(repo, "rev-list", "--count", "HEAD^..HEAD").stdout.strip() == "1"  # one squash commit
    assert "agent adds 0" in git(repo, "log", "-1", "--format=%B").stdout
    assert wt.is_dir()  # the teardown was declined


@pytest.mark.parametrize("size", [(100, 34), (60, 20)])
def test_merge_dialog_snapshot(snap_compare: object, tmp_path: Path, size: tuple[int, int]) -> None:
    from devbox.tui.dialogs import MergeDialog

    async def show(pilot: object) -> None:
        app = pilot.app  # type: ignore[attr-defined]
        app.post_message(demo_update())
        await pilot.pause(0.2)  # type: ignore[attr-defined]
        app.push_screen(
            MergeDialog(
                "feature/login",
                "main",
                ["1a2b3c4d fix the login timeout", "5e6f7a8b test it"],
                ["app.py", "tests/test_login.py"],
                ["app.py"],
            )
        )
        await pilot.pause(0.2)  # type: ignore[attr-defined]

    assert snap_compare(demo_app(tmp_path), terminal_size=size, run_before=show)  # type: ignore[operator]


def test_diff_tab_snapshot(snap_compare: object, tmp_path: Path) -> None:
    """The Diff tab on a generated repository (fixed dates: fixed commit ids)."""
    import random

    from devbox.core import git as gitcore
    from devbox.core.ops.views import WorktreeRow
    from devbox.tui.diffview import FilesTable, PatchView
    from test_merge import git, make_repo

    repo = make_repo(tmp_path / "r", random.Random(5))
    wt = tmp_path / "r" / "wt"
    git(repo, "worktree", "add", "-q", "-b", "agent", str(wt))
    (wt / "f0.txt").write_text("".join(f"agent line {i}\n" for i in range(40)))
    git(wt, "commit", "-qam", "agent rewrites f0")
    (wt / "scratch.txt").write_text("new\n")
    session = Devbox(config.load(repo, env={}))
    rows = tuple(WorktreeRow(w, gitcore.state(w), None) for w in gitcore.list_worktrees(repo))
    st = Status(str(repo), Section(), Section(), Section(rows), Section(()), agents=Section(()))
    app = make_app(session, watch=False, view="fleet")

    async def show(pilot: object) -> None:
        app.sub_title = "/home/dev/demo"  # the tmp path would change every run
        app.animation_level = "none"  # the tabs' underline slides: a picture mid-slide differs
        app.post_message(StatusUpdated(st, {}, {}, None))
        await pilot.pause(0.3)  # type: ignore[attr-defined]
        await pilot.press("t")  # type: ignore[attr-defined]
        files = app.query_one(FilesTable)
        for _ in range(200):  # the file list (its columns measured), the commits and the first patch, loaded
            widths = [c.content_width for c in files.columns.values()]
            if (app.query_one(PatchView).lines and "agent rewrites" in str(app.query_one("#diff-commits").render())
                    and widths and widths[0] >= len("untracked (uncommitted)")):  # fmt: skip
                break
            await pilot.pause(0.05)  # type: ignore[attr-defined]
        await pilot.pause(0.5)  # type: ignore[attr-defined]

    try:
        assert snap_compare(app, terminal_size=(160, 45), run_before=show)  # type: ignore[operator]
    finally:
        session.close()


@pytest.mark.parametrize("size", [(60, 20), (80, 24), (160, 45)])
def test_every_fleet_column_fits_the_screen(tmp_path: Path, size: tuple[int, int]) -> None:
    """Issue 33: at 60 columns the fleet's mem column was cut (at 80, its last one). The
    columns shown fit the table at every size from 60x20 up: nothing scrolls off sideways."""
    from devbox.tui.fleet import FleetTable

    app = demo_app(tmp_path, "fleet")

    async def go() -> None:
        async with app.run_test(size=size) as pilot:
            app.post_message(demo_update())
            await pilot.pause(0.3)
            table = app.query_one(FleetTable)
            assert table._shown and table.virtual_size.width <= table.scrollable_content_region.width, (
                [c.label for c in table.columns.values()],
                table.virtual_size,
                table.scrollable_content_region,
            )
            assert "~3" in table._shown["feature/login"][-1] or "dirty 3" in " ".join(table._shown["feature/login"])

    asyncio.run(go())
