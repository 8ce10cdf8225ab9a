"""devbox-tui with Pilot against real git and podman: every binding runs its operation and
the panes show the result; teardown asks first and removes exactly what was confirmed."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Log, Static

from devbox.core import ops
from devbox.core.session import Devbox
from devbox.tui.app import DevboxApp, make_app
from devbox.tui.commands import key_clashes
from devbox.tui.dialogs import AskLine, ConfirmTeardown, NewWorktree, RunPicker
from devbox.tui.fleet import FleetTable
from devbox.tui.logpane import CAP, LogPane
from devbox.tui.panes import ContainersTable, WorktreesTable
from tui_wait import showing, until

from conftest import BASE_IMAGE, Project, git

pytestmark = pytest.mark.podman


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True)


def shown(pane: LogPane) -> list[str]:
    return list(pane.shown.ring) if pane.shown is not None else []


def keys_of(table: WorktreesTable | ContainersTable) -> list[str]:
    return [str(k.value) for k in table.rows]


def session_for(project: Project) -> Devbox:
    return Devbox.open(project.root, env=project.env)


async def select(pilot: Pilot[None], table: WorktreesTable | ContainersTable, key: str) -> None:
    table.focus()
    await until(pilot, lambda: key in keys_of(table))
    table.move_cursor(row=table.get_row_index(key))
    await pilot.pause(0.05)


def test_panes_keys_and_teardown(project: Project) -> None:
    session = session_for(project)
    ops.start_work(session, "keep")
    ops.start_work(session, "victim")
    victim_wt = project.root.parent / "proj.worktrees" / "victim"
    (victim_wt / "draft.txt").write_text("unsaved work")

    async def go() -> None:
        app = make_app(session, view="resources")
        async with app.run_test(size=(160, 45)) as pilot:
            wts, conts = app.query_one(WorktreesTable), app.query_one(ContainersTable)
            await until(pilot, lambda: len(keys_of(conts)) == 2 and len(keys_of(wts)) == 3)
            assert app.query_one("#vms", DataTable).row_count == 0  # no VM for this project
            assert "image" in str(app.query_one("#artifacts", Static).render())

            # new: the branch is checked as you type; Enter creates worktree + container
            await pilot.press("n")
            await until(pilot, lambda: showing(app, NewWorktree))
            await pilot.press(*"bad..name")
            assert "contains '..'" in str(app.screen.query_one("#branch-error", Static).render())
            assert app.screen.query_one("#create", Button).disabled
            for _ in range(9):
                await pilot.press("backspace")
            await pilot.press(*"fresh", "enter")
            await until(pilot, lambda: any("-fresh-" in k for k in keys_of(conts)), 120)
            assert (project.root.parent / "proj.worktrees" / "fresh").is_dir()
            assert "$ ./start-work fresh --detach" in "\n".join(app.query_one(LogPane).ring)

            # stop: on the containers pane
            victim = next(k for k in keys_of(conts) if "-victim-" in k)
            await select(pilot, conts, victim)
            await pilot.press("s")
            await until(pilot, lambda: podman("inspect", "-f", "{{.State.Status}}", victim).stdout.strip() == "exited")

            # remove container: Escape cancels and changes nothing
            await pilot.press("x")
            await until(pilot, lambda: showing(app, ConfirmTeardown))
            assert app.screen.focused is app.screen.query_one("#cancel", Button)  # the default is Cancel
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, ConfirmTeardown))
            assert not any(r.name.startswith("container-rm") for r in app.query_one(LogPane).runs)  # none started
            assert podman("container", "exists", victim).returncode == 0

            # remove worktree: the dialog names the dirty file and the container; confirmed, it
            # removes exactly that worktree and its container
            await select(pilot, wts, str(victim_wt))
            await pilot.press("X")
            await until(pilot, lambda: showing(app, ConfirmTeardown))
            loss = str(app.screen.query_one("#dialog-loss", Static).render())
            assert "draft.txt" in loss and "home volume" in loss
            await pilot.click("#confirm")
            await until(pilot, lambda: not victim_wt.exists(), 60)
            await until(pilot, lambda: podman("container", "exists", victim).returncode == 1)
            assert "victim" in git(project.root, "branch", "--list")  # the branch is kept
            keep = next(c for c in ops.list_containers(session).containers if c.branch == "keep")
            assert keep.running and (project.root.parent / "proj.worktrees" / "keep").is_dir()

            # rebuild: runs the same op as `./devbox image build`, its log in the pane
            await pilot.press("b")
            await until(pilot, lambda: "is up to date" in "\n".join(app.query_one(LogPane).ring))
            assert "$ ./devbox image build" in "\n".join(app.query_one(LogPane).ring)
            await pilot.press("q")

    try:
        asyncio.run(go())
    finally:
        for branch in ("keep", "fresh"):
            ops.remove_container(session, branch, force=True)
        session.close()


def test_remapped_key_and_read_only(project: Project) -> None:
    (project.root / "devbox.toml").write_text((project.root / "devbox.toml").read_text() + '\n[keys]\nstop = "k"\n')
    session = session_for(project)
    c = ops.start_work(session, "remap").container

    async def go(read_only: bool) -> None:
        app = make_app(session, read_only=read_only, view="resources")
        assert not gc.isenabled()  # off while the first screen is mounted (DevboxApp.__init__)
        async with app.run_test(size=(120, 40)) as pilot:
            conts = app.query_one(ContainersTable)
            await select(pilot, conts, c.name)
            assert gc.isenabled()  # and on again once it is painted: a dashboard runs for days
            if read_only:
                await pilot.press("x", "k", "n")
                assert not isinstance(app.screen, ConfirmTeardown | NewWorktree)
                assert not [r for r in app.query_one(LogPane).runs if r.name != "dashboard"]  # no operation started
                assert app.check_action("remove_container", ()) is False
                assert podman("inspect", "-f", "{{.State.Status}}", c.name).stdout.strip() == "running"
                return
            await pilot.press("s")  # the old key does nothing now
            assert not [r for r in app.query_one(LogPane).runs if r.name != "dashboard"]  # no operation started
            assert podman("inspect", "-f", "{{.State.Status}}", c.name).stdout.strip() == "running"
            await pilot.press("k")
            await until(pilot, lambda: podman("inspect", "-f", "{{.State.Status}}", c.name).stdout.strip() == "exited")

    try:
        asyncio.run(go(read_only=True))
        asyncio.run(go(read_only=False))
    finally:
        ops.remove_container(session, "remap", force=True)
        session.close()
    assert key_clashes({"stop": "k", "remove_container": "k,x"}) == ["key 'k' is bound to stop and remove_container"]


def test_podman_going_away_and_coming_back(project: Project, podman_service: object, tmp_path: Path) -> None:
    from conftest import PodmanService

    assert isinstance(podman_service, PodmanService)
    own = PodmanService(podman_service.exe, tmp_path, f"unix://{tmp_path}/own.sock")  # same storage, own socket
    own.start()
    env = {**project.env, "DEVBOX_PODMAN_URL": own.url}
    session = Devbox.open(project.root, env=env)
    c = ops.start_work(session, "resilient").container

    async def go() -> None:
        app = make_app(session, view="resources")
        async with app.run_test(size=(120, 40)) as pilot:
            conts = app.query_one(ContainersTable)
            problem = app.query_one("#containers-problem", Static)
            await until(pilot, lambda: c.name in keys_of(conts))
            own.stop()
            await until(pilot, lambda: problem.display and "podman" in str(problem.render()), 30)
            assert len(keys_of(app.query_one(WorktreesTable))) == 2  # worktrees still listed
            # issue 33: the fleet's row is not known, not "no agent / no container": it still runs
            fleet = app.query_one(FleetTable)
            await until(pilot, lambda: "resilient" in fleet._shown and fleet._shown["resilient"][2] == "unknown", 30)
            assert "unknown" in fleet._shown["resilient"][1] and "no container" not in fleet._shown["resilient"]
            await pilot.press("r")  # the app keeps answering keys
            own.start()
            await until(pilot, lambda: not problem.display and c.name in keys_of(conts), 30)

    try:
        asyncio.run(go())
    finally:
        if own.proc is None:
            own.start()
        ops.remove_container(session, "resilient", force=True)
        session.close()
        own.stop()


def test_log_flood_keeps_the_app_responsive(project: Project) -> None:
    cf = project.bootc / "Containerfile"
    flood = "RUN seq 1 200000 && head -c 1000000 /dev/zero | tr '\\0' y && echo && printf 'bad \\377\\376 bytes\\n'\n"
    cf.write_text(cf.read_text().replace("CMD [", flood + "CMD ["))
    session = session_for(project)

    async def go() -> None:
        app = make_app(session, watch=False, view="resources")
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(LogPane)
            log = app.query_one("#log", Log)
            await pilot.press("b")
            await until(pilot, lambda: pane.lines_total > 1000, 120)
            toggled_at = pane.lines_total
            await pilot.press("f")  # handled mid-stream
            assert log.auto_scroll is False and toggled_at < 150_000
            await pilot.press("f")
            await until(
                pilot,
                lambda: "built" in "\n".join(list(pane.ring)[-5:]) or "ok image" in "\n".join(list(pane.ring)[-5:]),
                300,
            )
            await pilot.pause(0.3)
            assert log.line_count <= CAP and len(pane.ring) <= CAP
            assert pane.file_path is not None
            text = pane.file_path.read_text(errors="replace")
            assert "\n1\n" in text and "\n200000\n" in text and "y" * 1_000_000 in text and "bad " in text
            assert max(len(line) for line in pane.ring) < 2_400  # the 1 MB line: cut on screen only
            await pilot.press("slash", *"12345", "enter")  # line 12345 left memory long ago
            await until(pilot, lambda: any(line == "12345" for line in log.lines), 30)
            await pilot.press("q")

    try:
        asyncio.run(go())
    finally:
        session.close()


def test_sink_is_thread_safe_and_batched(project: Project) -> None:
    session = session_for(project)

    async def go() -> None:
        app: DevboxApp = make_app(session, watch=False, view="resources")
        async with app.run_test() as pilot:
            pane = app.query_one(LogPane)
            run = pane.start("flood", "flood")

            def writer(n: int) -> None:
                for i in range(n):
                    pane.note(f"\x1b[31mline {i}\x1b[0m")

            threads = [threading.Thread(target=writer, args=(20_000,)) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            await pilot.pause(0.3)
            log = app.query_one("#log", Log)
            assert log.line_count == CAP and run.lines_total == 60_001
            assert not any("\x1b" in line for line in log.lines)  # colour codes never shown raw

    try:
        asyncio.run(go())
    finally:
        session.close()


def test_container_log_force_rebuild_palette_and_confirmed_removal(project: Project) -> None:
    session = session_for(project)
    c = ops.start_work(session, "logged").container
    old_image = ops.image_status(session).id

    async def go() -> None:
        app = make_app(session, view="resources")
        async with app.run_test(size=(140, 40)) as pilot:
            pane = app.query_one(LogPane)
            conts = app.query_one(ContainersTable)
            await select(pilot, conts, c.name)
            await pilot.press("l")  # the container's own log
            await until(pilot, lambda: any("devbox-entrypoint: ready" in line for line in shown(pane)), 30)
            assert f"$ podman logs -f {c.name}" in shown(pane)

            titles = [cmd.title for cmd in app.get_system_commands(app.screen)]
            assert {"devbox: Stop", "devbox: Rm worktree", "devbox: Rebuild (no cache)"} <= set(titles)

            await pilot.press("B")  # rebuild without the layer cache
            await until(pilot, lambda: ops.image_status(session).id not in (None, old_image), 180)
            await until(pilot, lambda: "$ ./devbox image build --force" in shown(pane))

            await select(pilot, conts, c.name)
            await pilot.press("x")
            await until(pilot, lambda: showing(app, ConfirmTeardown))
            loss = str(app.screen.query_one("#dialog-loss", Static).render())
            assert f"running container {c.name}" in loss and f"{c.name}-var" in loss
            await pilot.click("#confirm")
            await until(pilot, lambda: podman("container", "exists", c.name).returncode == 1, 60)
            await until(pilot, lambda: c.name not in keys_of(conts), 30)
            assert f"{c.name}-var" not in podman("volume", "ls", "--format", "{{.Name}}").stdout
            assert (project.root.parent / "proj.worktrees" / "logged").is_dir()  # only the container went

    try:
        asyncio.run(go())
    finally:
        session.close()


def test_operations_run_apart_and_a_build_is_cancelled_from_the_dashboard(project: Project) -> None:
    """Issue 14 item 17: an image build and a container start at once, each in its own log
    file; a second build is refused while one runs; `c` cancels the build (after its
    one-line question) exactly like Ctrl-C in the CLI: the previous image stays tagged and
    no build process is left; the app keeps working. (The RUN step is slow only after a
    moment, so the first build is quick and the forced rebuild is slow.)"""
    slow_after = int(time.time()) + 20  # the first build (a few seconds) must end before it
    cf = project.bootc / "Containerfile"
    step = f'RUN if [ "$(date +%s)" -gt {slow_after} ]; then echo slow-build-step && sleep 67; fi\n'
    cf.write_text(cf.read_text().replace("CMD [", step + "CMD ["))
    session = session_for(project)
    ops.start_work(session, "first")
    old_image = ops.image_status(session).id
    if time.time() > slow_after - 1:
        pytest.fail("the first build took too long for this test's clock")
    time.sleep(max(0.0, slow_after + 1 - time.time()))

    async def go() -> None:
        app = make_app(session, view="resources")
        async with app.run_test(size=(140, 40)) as pilot:
            pane = app.query_one(LogPane)
            conts = app.query_one(ContainersTable)
            await until(pilot, lambda: len(keys_of(conts)) == 1)
            await pilot.press("B")
            await until(pilot, lambda: len(pane.runs) == 1)
            build = pane.runs[0]
            await until(pilot, lambda: any("slow-build-step" in line for line in build.ring), 120)
            await pilot.press("b")  # another build while one runs: refused at once
            await pilot.pause(0.3)
            assert len(pane.runs) == 1
            await pilot.press("q")  # quitting while it runs asks first; "n" keeps both
            await until(pilot, lambda: showing(app, AskLine))
            assert "stop them and quit" in str(app.screen.query_one("#ask-line", Static).render())
            await pilot.press("n")
            await pilot.pause(0.2)
            assert build.running and app.is_running

            await pilot.press("n")  # a container start at the same time
            await until(pilot, lambda: showing(app, NewWorktree))
            await pilot.press(*"second", "enter")
            await until(pilot, lambda: len(pane.runs) == 2)
            start = pane.runs[0]
            await until(pilot, lambda: not start.running, 120)
            assert start.outcome == "done" and build.running
            await until(pilot, lambda: any("-second-" in k for k in keys_of(conts)), 60)

            await pilot.press("c")  # the shown run (the start) is over: the running build is meant
            await until(pilot, lambda: showing(app, AskLine))
            assert "image-build" in str(app.screen.query_one("#ask-line", Static).render())
            await pilot.press("y")
            await until(pilot, lambda: not build.running, 120)
            assert build.outcome == "cancelled" and pane.shown is build

            build_text = build.log.path.read_text(errors="replace")
            start_text = start.log.path.read_text(errors="replace")
            assert build_text.startswith("$ ./devbox image build --force") and "slow-build-step" in build_text
            assert "cancel requested" in build_text and "-second-" not in build_text
            assert start_text.startswith("$ ./start-work second --detach") and "slow-build-step" not in start_text
            assert build.log.path != start.log.path

            await pilot.press("r")  # the app keeps working
            await pilot.press("L")
            await until(pilot, lambda: showing(app, RunPicker))
            await pilot.press("escape")

    try:
        asyncio.run(go())
    finally:
        session.close()
    assert ops.image_status(Devbox.open(project.root, env=project.env)).id == old_image  # still tagged
    left = subprocess.run(["pgrep", "-f", "sleep 67"], capture_output=True, text=True).stdout.split()
    assert not left, "the cancelled build's RUN step is still running"


def test_podman_events_come_as_one_stream_and_cancel_ends_it_at_once(project: Project) -> None:
    """The dashboard's event follow (issue 33, idle CPU): one request the service answers as
    events happen (asking in 2 s windows made it re-read its whole events file each time);
    a container's create arrives, and cancel ends the blocked read within a second."""
    import threading
    import time as clock

    from devbox.core.containers import LABEL_REPO

    session = Devbox.open(project.root, env=project.env)
    cancel = threading.Event()
    got: list[str] = []
    ended = threading.Event()

    def follow() -> None:
        for ev in ops.watch_containers(session, cancel):
            got.append(ev.action)
        ended.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    clock.sleep(1.0)
    name = f"devbox-events-{os.getpid()}"
    made = subprocess.run(["podman", "create", "--name", name, "--label", f"{LABEL_REPO}={project.root}",
                           BASE_IMAGE, "true"], capture_output=True, text=True)  # fmt: skip
    try:
        assert made.returncode == 0, made.stderr
        deadline = clock.monotonic() + 15
        while "create" not in got and clock.monotonic() < deadline:
            clock.sleep(0.1)
        assert "create" in got, got
        clock.sleep(3)  # the read blocks: no window ends it
        assert not ended.is_set()
        t0 = clock.monotonic()
        cancel.set()
        assert ended.wait(2.0) and clock.monotonic() - t0 < 1.0  # the socket shut: within its 0.5 s look
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True)
        session.close()
