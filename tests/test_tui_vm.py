"""The dashboard's VM pane and keys with Pilot: VMs listed from libvirt (``test:///default``,
libvirt's own test driver, whose domains live as long as a connection in this process holds
them), VM down confirmed and naming what is lost, VM up and rebuild disk running their
operations, and the transfer keys against a real sshd."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from devbox.core.session import Devbox
from devbox.tui.app import make_app
from devbox.tui.dialogs import ConfirmTeardown, TransferPaths
from devbox.tui.logpane import LogPane
from devbox.tui.panes import VmsTable, WorktreesTable
from sshd import HOME, vm_project_over_ssh
from tui_wait import showing, until

from conftest import Project, make_project

pytestmark = pytest.mark.podman
TEST_URI = "test:///default"


def define(conn: object, name: str, repo: Path) -> None:
    xml = (
        f"<domain type='test'><name>{name}</name><description>devbox:{repo}</description>"
        "<memory unit='MiB'>2048</memory><vcpu>2</vcpu><os><type>hvm</type></os>"
        "<cpu mode='host-passthrough'/><devices><interface type='network'><source network='default'/>"
        "</interface></devices></domain>"
    )
    dom = conn.defineXML(xml)  # type: ignore[attr-defined]
    dom.create()


def test_vm_pane_lists_this_checkouts_vms_and_vm_down_asks_first(tmp_path: Path) -> None:
    import libvirt

    proj = make_project(tmp_path)
    conn = libvirt.open(TEST_URI)  # keeps the test driver's state alive for the app's connections
    name = f"t{uuid.uuid4().hex[:8]}"
    domain = f"devbox-{name}"
    define(conn, domain, proj.root)
    define(conn, f"devbox-other-{name}", tmp_path / "someone-else")  # another checkout's VM: not listed
    env = {**proj.env, "DEVBOX_LIBVIRT_URI": TEST_URI, "DEVBOX_VM_NAME": name, "DEVBOX_VM_POOL": "default-pool"}
    session = Devbox.open(proj.root, env=env)

    async def go() -> None:
        app = make_app(session, view="resources")
        async with app.run_test(size=(150, 44)) as pilot:
            table = app.query_one(VmsTable)
            await until(pilot, lambda: table.row_count == 1)
            row = [str(cell) for cell in table.get_row(domain)]
            assert row[1] == "running" and row[3] == "2/2G" and row[6] == "host-passthrough"
            assert "VM stale (terraform state lost" in str(app.query_one("#artifacts", Static).render())

            await pilot.press("U")
            await until(pilot, lambda: showing(app, ConfirmTeardown))
            loss = str(app.screen.query_one("#dialog-loss", Static).render())
            assert f"VM {domain} (running" in loss and "everything written inside it" in loss
            await pilot.click("#cancel")
            await until(pilot, lambda: not isinstance(app.screen, ConfirmTeardown))
            assert conn.lookupByName(domain).isActive()  # nothing without a yes
            assert not [r for r in app.query_one(LogPane).runs if r.name.startswith("vm-down")]

            await pilot.press("U")
            await until(pilot, lambda: showing(app, ConfirmTeardown))
            await pilot.click("#confirm")
            await until(pilot, lambda: table.row_count == 0, 30)
            assert domain not in conn.listDefinedDomains() and f"devbox-other-{name}" in [
                d.name() for d in conn.listAllDomains()]  # fmt: skip
            assert "$ ./vm-down.sh --yes" in app.query_one(LogPane).ring

    try:
        asyncio.run(go())
    finally:
        session.close()
        conn.close()


def test_vm_up_and_rebuild_disk_keys_run_their_operations(project: Project) -> None:
    env = {**project.env, "DEVBOX_IMAGE_BUILDER": "localhost/devbox-no-such-builder:1"}
    session = Devbox.open(project.root, env=env)

    async def go() -> None:
        app = make_app(session, watch=False, view="resources")
        async with app.run_test(size=(150, 44)) as pilot:
            pane = app.query_one(LogPane)
            await pilot.press("d")
            await until(pilot, lambda: "$ ./devbox disk build --force" in pane.ring)
            # the image is built for real, then the missing builder stops it with its fix
            await until(pilot, lambda: any("could not be pulled" in line for line in pane.ring), 300)
            await pilot.press("u")
            await until(pilot, lambda: "$ ./vm-up.sh" in pane.ring)
            # a run of its own, with its own lines; this project has no terraform/ module, which
            # vm up now finds before it builds anything (issue 14 item 16)
            await until(pilot, lambda: any("no terraform module" in line for line in pane.ring), 120)
            assert "$ ./devbox disk build --force" not in pane.ring
            assert not any("could not be pulled" in line for line in pane.ring)
            assert pane.runs[1].name == "disk-build" and not pane.runs[1].running

    try:
        asyncio.run(go())
    finally:
        session.close()


def test_transfer_keys_push_a_worktree_and_its_branch(tmp_path: Path) -> None:
    with vm_project_over_ssh(tmp_path) as (proj, _):
        session = Devbox.open(proj.root, env=proj.env)
        (proj.root / "notes.txt").write_text("pushed from the dashboard\n")

        async def go() -> None:
            app = make_app(session, view="resources")
            async with app.run_test(size=(150, 44)) as pilot:
                wts = app.query_one(WorktreesTable)
                wts.focus()
                await until(pilot, lambda: wts.row_count >= 1)
                await pilot.press("p")
                await until(pilot, lambda: showing(app, TransferPaths))
                assert app.screen.query_one("#local", Input).value == str(proj.root)
                remote = app.screen.query_one("#remote", Input)
                assert remote.value == proj.root.name  # a same-named directory in the VM
                remote.value = f"devbox-tui-{proj.root.name}"
                await pilot.click("#go")
                target = HOME / remote.value
                await until(pilot, lambda: (target / "notes.txt").exists(), 60)
                # rsync writes file by file: the push is over only when its operation is
                await until(pilot, lambda: not app.query_one(LogPane).running(), 60)
                assert (target / "notes.txt").read_text() == "pushed from the dashboard\n"
                subprocess.run(["rm", "-rf", str(target)], check=True)

                # over 100 MB: the size is shown and confirmed first (issue 14 item 13)
                with (proj.root / "big.bin").open("wb") as fh:
                    fh.truncate(101 * 1000 * 1000)
                await pilot.press("p")
                await until(pilot, lambda: showing(app, TransferPaths))
                await pilot.click("#go")
                await until(pilot, lambda: showing(app, ConfirmTeardown), 60)
                assert "Push 96M into the VM?" in str(app.screen.query_one("#dialog-title").render())
                await pilot.press("escape")
                await until(pilot, lambda: not isinstance(app.screen, ConfirmTeardown))
                assert not (HOME / proj.root.name / "big.bin").exists()  # nothing sent without a yes
                (proj.root / "big.bin").unlink()

                await pilot.press("g")  # the selected worktree's branch (main)
                repo = HOME / "repos" / proj.root.name
                await until(pilot, lambda: (repo / ".git").is_dir(), 60)
                await until(pilot, lambda: any("commit(s)" in line for line in app.query_one(LogPane).ring), 60)
                head = subprocess.run(
                    ["git", "-C", str(repo), "rev-parse", "main"], capture_output=True, text=True
                ).stdout.strip()
                local = subprocess.run(
                    ["git", "-C", str(proj.root), "rev-parse", "main"], capture_output=True, text=True
                ).stdout.strip()
                assert head == local

        try:
            asyncio.run(go())
        finally:
            session.close()
