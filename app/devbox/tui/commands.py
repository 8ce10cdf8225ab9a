"""Every dashboard action, declared once: its id (also the ``[keys]`` name in devbox.toml),
default key, title, what it does, the CLI line it equals, whether it changes anything,
whether the footer shows it, and when it applies to the selection. The bindings, the
footer, the command palette, ``check_action``, ``--read-only`` and the README's key table
(a test compares them) all come from here; the handler is the app's ``action_<id>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.binding import Binding

if TYPE_CHECKING:
    from devbox.tui.app import DevboxApp

#: when a command applies: True, or None (shown dimmed: not for this selection)
Applies = Callable[["DevboxApp"], "bool | None"]


def _running_container(app: DevboxApp) -> bool | None:
    _, c = app.selection()
    return True if c is not None and c.running else None


def _container(app: DevboxApp) -> bool | None:
    return True if app.selection()[1] is not None else None


def _allow_egress(app: DevboxApp) -> bool | None:
    _, c = app.selection()
    return True if c is not None and c.egress == "allow" else None


def _linked_worktree(app: DevboxApp) -> bool | None:
    row, _ = app.selection()
    return True if row is not None and not row.worktree.is_main else None


def _attachable(app: DevboxApp) -> bool | None:
    row, c = app.selection()
    ok = (c is not None and c.running) or (row is not None and row.worktree.branch and not row.state.missing)
    return True if ok else None


def _not_fleet(app: DevboxApp) -> bool:
    return app.view != "fleet"  # False hides the key: it is the view on show


def _not_resources(app: DevboxApp) -> bool:
    return app.view != "resources"


def _fleet(app: DevboxApp) -> bool | None:
    return app.view == "fleet" and not app.modal_open()


def _agent_row(app: DevboxApp) -> bool | None:
    if app.view != "fleet" or app.modal_open():  # Enter in a dialog is the dialog's
        return False
    row = app.fleet.selected()
    return True if row is not None and row.container_state in ("running", "vm") else None


def _host_row(app: DevboxApp) -> bool | None:
    if app.view != "fleet":
        return None
    row = app.fleet.selected()
    return True if row is not None and row.host else None


@dataclass(frozen=True)
class Command:
    id: str
    key: str
    title: str
    does: str
    cli: str = ""
    mutates: bool = False
    footer: bool = False
    applies: Applies | None = None  # None: always

    def binding(self, key: str | None = None) -> Binding:
        return Binding(key or self.key, self.id, self.title, id=self.id, show=self.footer)


COMMANDS: tuple[Command, ...] = (
    Command("fleet", "F", "Fleet", "the fleet view (where devbox-tui starts): one row per environment with its "
            "agent's state, most urgent first", "`./devbox agents`", footer=True, applies=_not_fleet),
    Command("resources", "R", "Resources", "the resources view: worktrees, containers, VMs, the image, disk and "
            "VM chain", "`./devbox status`", footer=True, applies=_not_resources),
    Command("attach_agent", "enter", "Attach agent", "attach to the selected agent's terminal (fleet view); "
            "tmux's detach key (`ctrl+b d`) comes back; inside your own tmux, `ctrl+b ctrl+b d` (the agent's "
            "status line says so)", "`./devbox agent attach BRANCH`", mutates=True, footer=True,
            applies=_agent_row),
    Command("next_needing", "right_square_bracket", "Next needs-you", "select the next agent that needs you "
            "(wraps)", applies=_fleet, footer=True),
    Command("previous_needing", "left_square_bracket", "Prev needs-you", "select the previous agent that needs "
            "you", applies=_fleet),
    Command("detail_tab", "t", "Preview/Diff/Log", "switch the detail area: Preview (the selected agent's "
            "terminal, captured live), Diff (the selected branch against its base: files, commits, uncommitted "
            "files, predicted conflicts, the file's patch) and Log (the operations); an operation you start shows "
            "its Log", "`./devbox diff BRANCH`", footer=True),
    Command("merge", "M", "Merge", "land the selected branch on its base: a dialog with the strategy (merge, "
            "rebase, squash), the commits and files that land; a predicted conflict, uncommitted work or nothing "
            "to land leaves only Cancel; after the merge, the worktree's teardown dialog",
            "`./devbox merge BRANCH --strategy S --yes`", mutates=True, footer=True, applies=_linked_worktree),
    Command("compare", "C", "Compare", "the Compare view of the selected copy's task (`agent start TASK --count "
            "N`): the copies side by side (agent state, commits, files +/-, uncommitted, conflicts, check); "
            "`←`/`→` choose, `enter` picks one (the merge dialog, then a dialog naming what removing the other copies "
            "loses), `c` runs `review.check_command` in each", "`./devbox compare TASK [--check]`, "
            "`./devbox pick BRANCH`", footer=True, applies=_linked_worktree),
    Command("new", "n", "New", "dialog: branch (checked as you type) and optional base ref, then worktree + container",
            "`./start-work BRANCH --detach [--from REF]`", mutates=True, footer=True),
    Command("attach", "a", "Shell", "a login shell in the selected container (started first if needed); the "
            "dashboard steps aside and comes back when the shell exits", "`./start-work BRANCH`", mutates=True,
            footer=True, applies=_attachable),
    Command("rebuild", "b", "Rebuild", "build the image if stale", "`./devbox image build`", mutates=True,
            footer=True),
    Command("rebuild_force", "B", "Rebuild (no cache)", "build the image without the layer cache",
            "`./devbox image build --force`", mutates=True),
    Command("stop", "s", "Stop", "stop the selected container", "`./devbox container stop BRANCH`", mutates=True,
            footer=True, applies=_running_container),
    Command("remove_container", "x", "Rm container", "remove the selected container and its volumes, after a "
            "dialog that names what is lost", "`./devbox container rm --force BRANCH`", mutates=True, footer=True,
            applies=_container),
    Command("fetch", "h", "Fetch", "the selected environment on another host: its commits into "
            "`refs/remotes/HOST/BRANCH` (then Diff and Merge work on them)", "`./devbox fetch BRANCH`", mutates=True,
            applies=_host_row),
    Command("remove_worktree", "X", "Rm worktree", "remove the selected worktree and its container (branch kept), "
            "after the dialog", "`./devbox worktree remove --force BRANCH`", mutates=True, footer=True,
            applies=_linked_worktree),
    Command("refresh", "r", "Refresh", "refresh now", "`./devbox status`"),
    Command("container_log", "l", "Container log", "follow the selected container's own log",
            "`podman logs -f NAME`", applies=_container),
    Command("net_log", "e", "Net log", "the selected environment's egress: what its proxy answered and refused "
            "(each refusal with its destination), then each request as it comes", "`./devbox net log BRANCH "
            "--follow`", applies=_allow_egress),
    Command("filter_log", "slash", "Filter log", "filter the log"),
    Command("follow_log", "f", "Follow log", "pause / resume following the log"),
    Command("cancel_op", "c", "Cancel", "cancel the shown (or newest) running operation, after a one-line `y/N`",
            "Ctrl-C"),
    Command("log_runs", "L", "Runs", "show another run's log (every run since the dashboard started, newest first)"),
    Command("quit", "q", "Quit", "quit (asks first while an operation runs)", footer=True),
    Command("vm_up", "u", "VM up", "image, disk and VM, each if stale", "`./vm-up.sh`", mutates=True, footer=True),
    Command("vm_down", "U", "VM down", "destroy the VM, after a dialog that names it, its address and what lives "
            "in it", "`./vm-down.sh --yes`", mutates=True),
    Command("disk_rebuild", "d", "Rebuild disk", "rebuild the disk (the image first if stale)",
            "`./devbox disk build --force`", mutates=True),
    Command("vm_ssh", "S", "ssh VM", "a shell in the VM; the dashboard steps aside and comes back", "`./vm-ssh.sh`",
            mutates=True, footer=True),
    Command("dir_push", "p", "Push dir", "dialog with both paths (the selected worktree, a same-named directory in "
            "the VM), then rsync; a push over 100 MB is confirmed with its size first", "`./vm-dir-push.sh`",
            mutates=True),
    Command("dir_pull", "P", "Pull dir", "the other way; a pull into the worktree never writes its `.git`",
            "`./vm-dir-pull.sh [--into-checkout]`", mutates=True),
    Command("git_push", "g", "Push branch", "the selected worktree's branch to the VM", "`./vm-git-push.sh`",
            mutates=True),
    Command("git_pull", "G", "Pull branch", "the selected worktree's branch from the VM", "`./vm-git-pull.sh`",
            mutates=True),
)  # fmt: skip
BY_ID: Mapping[str, Command] = {c.id: c for c in COMMANDS}


def bindings() -> list[Binding]:
    """One binding per command, each with its id (remappable in devbox.toml ``[keys]``)."""
    return [c.binding() for c in COMMANDS]


def keymap(overrides: Mapping[str, str]) -> dict[str, str]:
    """id -> key(s): the defaults with devbox.toml's ``[keys]`` on top."""
    return {**{c.id: c.key for c in COMMANDS}, **overrides}


def unknown_ids(overrides: Mapping[str, str]) -> list[str]:
    return sorted(set(overrides) - set(BY_ID))


def key_clashes(keys: Mapping[str, str]) -> list[str]:
    """ "x is bound to both stop and remove_container" for every key used twice."""
    owners: dict[str, list[str]] = {}
    for binding_id, ks in keys.items():
        for key in ks.split(","):
            owners.setdefault(key.strip(), []).append(binding_id)
    return [f"key {k!r} is bound to {' and '.join(ids)}" for k, ids in owners.items() if len(ids) > 1]


def allowed(app: DevboxApp, action: str, *, read_only: bool) -> bool | None:
    """``check_action`` for every command: False hides it (read-only), None dims it."""
    cmd = BY_ID.get(action)
    if cmd is None:
        return True  # Textual's own actions
    if cmd.mutates and read_only:
        return False
    if app.modal_open():  # a dialog's keys are its own: none acts on the dashboard behind it
        return False
    return True if cmd.applies is None else cmd.applies(app)


def readme_table() -> str:
    """The README's key table, as the README must show it (a test compares them)."""
    shown = {"slash": "/", "right_square_bracket": "]", "left_square_bracket": "["}
    rows = ["| key | id (for `[keys]`) | does | same as |", "|---|---|---|---|"]
    for c in COMMANDS:
        rows.append(f"| `{shown.get(c.key, c.key)}` | `{c.id}` | {c.does} | {c.cli} |")
    rows.append("| `ctrl+p` | | the command palette: every action by name | |")
    return "\n".join(rows)
