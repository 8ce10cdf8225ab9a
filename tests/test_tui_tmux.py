"""The real ``devbox-tui`` on a real terminal (tmux): it starts, shows its panes, attaches
to a container shell and comes back, and ``q`` quits with exit code 0."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devbox.core import ops
from devbox.core.session import Devbox

from conftest import Project

pytestmark = pytest.mark.podman


class Tmux:
    def __init__(self, tmp: Path) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed (.ci/run installs it)")
        self.socket = str(tmp / f"tmux-{uuid.uuid4().hex[:6]}")  # our own server: no clash with another run
        self.exit_file = tmp / "exit-code"

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True)
        assert done.returncode == 0, f"tmux {args[:3]} failed ({done.returncode}): {done.stderr.strip()}"
        return done.stdout

    def start(self, command: str, env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={v!r}" for k, v in env.items() if k.startswith(("DEVBOX_", "CONTAINERS_", "PATH")))
        script = f"unset COLUMNS LINES; export {exports}; {command}; echo $? > {self.exit_file}; sleep 60"
        # the size set before the session exists: resizing after start leaves stale fragments on screen
        self.tmux(
            "-f",
            "/dev/null",
            "start-server",
            ";",
            "set",
            "-g",
            "default-size",
            "160x45",
            ";",
            "new-session",
            "-d",
            "sh",
            "-c",
            script,
        )

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def wait(self, cond: Callable[[str], bool], timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if cond(text):
                return text
            assert time.monotonic() < deadline, text
            time.sleep(0.2)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def exit_code(self, timeout: float = 20.0) -> str:
        """The app's exit code, once it has quit."""
        deadline = time.monotonic() + timeout
        while not self.exit_file.exists():
            assert time.monotonic() < deadline, "the app did not quit"
            time.sleep(0.2)
        return self.exit_file.read_text().strip()

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)
        # kill-server returns before the old server has let go of its socket, and a new
        # server on the same path can then fail to start (seen in CI): the next one gets its own
        self.socket = str(Path(self.socket).with_name(f"tmux-{uuid.uuid4().hex[:6]}"))


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(tmp_path)
    yield t
    t.kill()


def tui_command() -> str:
    return f"{Path(sys.executable).with_name('devbox-tui')}"


def test_real_tui_starts_shows_panes_and_quits(project: Project, tmux: Tmux) -> None:
    tmux.start(f"cd {project.root} && {tui_command()}", project.env)
    text = tmux.wait(lambda s: "Fleet" in s and "Preview" in s and "R Resources" in s)  # where it starts
    tmux.keys("R")
    # the footer follows the view a frame after the panes: wait for both
    text = tmux.wait(lambda s: "Worktrees" in s and "Containers" in s and "VMs" in s and "main" in s and "F Fleet" in s)
    assert "n New" in text and "u VM up" in text and "S ssh VM" in text  # VM mode's keys too
    tmux.keys("q")
    assert tmux.exit_code() == "0"


def test_attach_suspends_runs_a_shell_and_comes_back(project: Project, tmux: Tmux) -> None:
    with Devbox.open(project.root, env=project.env) as session:
        res = ops.start_work(session, "attach-me")
        wt = res.worktree.path
        try:
            tmux.start(f"cd {project.root} && {tui_command()}", project.env)
            tmux.wait(lambda s: "Fleet" in s)
            tmux.keys("R")
            tmux.wait(lambda s: "attach-me" in s and "running" in s and "Worktrees" in s)
            tmux.keys("Down")  # the attach-me worktree (after main)
            time.sleep(0.3)
            tmux.keys("a")
            tmux.wait(lambda s: "devbox-fixture$" in s, 60)  # the container shell's prompt
            tmux.keys("touch made-from-the-dashboard; exit", "Enter")
            tmux.wait(lambda s: "Worktrees" in s and "Containers" in s, 30)  # back in the dashboard
            assert (wt / "made-from-the-dashboard").exists()
            tmux.keys("r")  # still answering keys
            tmux.wait(lambda s: "dirty" in s, 30)  # the new file shows in the worktree's state
            tmux.keys("q")
            assert tmux.exit_code() == "0"
        finally:
            ops.remove_container(session, "attach-me", force=True)


def test_vm_ssh_on_a_terminal_and_from_the_dashboard(tmp_path: Path, tmux: Tmux) -> None:
    """``devbox vm ssh`` with a real terminal (a login shell on the sshd that stands in for
    the VM, the exit code passed back), then ``S`` in the dashboard: it steps aside for the
    same shell and comes back."""
    from sshd import vm_project_over_ssh

    with vm_project_over_ssh(tmp_path) as (proj, _):
        env = {**proj.env, "DEVBOX_REPO": str(proj.root)}
        devbox = Path(sys.executable).with_name("devbox")
        tmux.start(f"cd {proj.root} && {devbox} vm ssh", env)
        tmux.wait(lambda s: "#" in s or "$" in s, 30)  # the remote shell's prompt
        tmux.keys(f"echo remote-$((40+2)) > {tmp_path}/from-ssh; exit 3", "Enter")
        assert tmux.exit_code() == "3"
        assert (tmp_path / "from-ssh").read_text() == "remote-42\n"

        tmux.kill()
        tmux.exit_file.unlink()
        tmux.start(f"cd {proj.root} && {tui_command()}", env)
        tmux.wait(lambda s: "Fleet" in s)
        tmux.keys("R")
        tmux.wait(lambda s: "Worktrees" in s and "VMs" in s)
        tmux.keys("S")
        tmux.wait(lambda s: "Worktrees" not in s, 30)  # the dashboard stepped aside
        tmux.keys(f"echo dashboard-$((40+2)) > {tmp_path}/from-tui; exit", "Enter")
        tmux.wait(lambda s: "Worktrees" in s and "VMs" in s, 30)  # and came back
        assert (tmp_path / "from-tui").read_text() == "dashboard-42\n"
        tmux.keys("q")
        assert tmux.exit_code() == "0"


def test_attach_to_an_agent_answer_it_and_detach(project: Project, tmux: Tmux) -> None:
    """The fleet of the real devbox-tui: an agent that asks shows "needs you"; `]` selects
    it, Enter attaches (the dashboard steps aside for the agent's tmux), typing answers it,
    tmux's detach key comes back, and the row moves on from needs you."""
    with (project.root / "devbox.toml").open("a") as fh:
        fh.write('[agents.claude]\ncommand = ["claude"]\nenv = []\n')
    started = project.devbox("agent", "start", "asker", "--prompt", "work 1; ask Bash rm -rf build; work 600")
    assert started.returncode == 0, started.stderr
    with Devbox.open(project.root, env=project.env) as session:
        try:
            tmux.start(f"cd {project.root} && {tui_command()}", project.env)
            tmux.wait(lambda s: "needs you" in s and "asker" in s, 60)
            tmux.keys("]")
            tmux.wait(lambda s: "Preview: asker: needs you" in s, 10)
            tmux.keys("Enter")
            tmux.wait(lambda s: "Allow Bash rm -rf build? [y/n]" in s and "Fleet" not in s, 30)  # the agent
            tmux.keys("y", "Enter")
            tmux.wait(lambda s: 'answered "y"' in s, 20)
            tmux.keys("C-b", "d")  # tmux's detach key: back to the dashboard
            text = tmux.wait(lambda s: "Fleet" in s and "asker" in s and "working" in s, 30)
            assert "needs you" not in text.split("Preview")[0]
            tmux.keys("q")
            assert tmux.exit_code() == "0"
        finally:
            ops.remove_container(session, "asker", force=True)
