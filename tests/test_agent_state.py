"""Agent state from hook events (issue 15): the real hook script writes the lines, the core
folds them; the state directory is untrusted input (symlinks, huge lines, garbage, FIFOs)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from devbox.core import agent_state

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "bootc" / "agent-hook.sh"


def hook(state_dir: Path, payload: dict[str, object] | str) -> subprocess.CompletedProcess[bytes]:
    """Run the image's hook as Claude Code does: the event's JSON on stdin."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return subprocess.run(["sh", str(HOOK)], input=data.encode(), capture_output=True, timeout=10,
                          env={**os.environ, "DEVBOX_AGENT_STATE": str(state_dir)})  # fmt: skip


def test_hook_events_fold_into_states(tmp_path: Path) -> None:
    d = tmp_path / "state"
    d.mkdir()
    assert agent_state.read(d).problem == "no event yet"
    common = {"session_id": "s1", "transcript_path": "/x", "cwd": "/w"}
    steps: list[tuple[dict[str, object], str]] = [
        ({"hook_event_name": "SessionStart", "source": "startup"}, "working"),  # the prompt is on its way
        ({"hook_event_name": "UserPromptSubmit", "prompt": "fix the login\ntimeout"}, "working"),
        ({"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"}}, "working"),
        (
            {
                "hook_event_name": "Notification",
                "notification_type": "permission_prompt",
                "message": "Claude needs your permission to use Bash",
            },
            "needs you",
        ),
        ({"hook_event_name": "Notification", "notification_type": "idle_prompt", "message": "waiting"}, "needs you"),
        ({"hook_event_name": "PostToolUse", "tool_name": "Bash"}, "working"),
        ({"hook_event_name": "Stop", "stop_hook_active": False}, "done"),
        ({"hook_event_name": "SessionEnd", "reason": "exit"}, "exited"),
    ]
    for payload, want in steps:
        res = hook(d, {**common, **payload})
        assert res.returncode == 0 and res.stdout == b"" and res.stderr == b""  # never a decision, never noise
        got = agent_state.read(d)
        assert got.state == want, (payload, got)
        if want == "needs you" and payload.get("notification_type") == "permission_prompt":
            assert got.message == "Claude needs your permission to use Bash"
    assert agent_state.read(d).events == len(steps) and agent_state.read(d).skipped == 0


def test_the_hook_never_fails_the_agent(tmp_path: Path) -> None:
    gone = tmp_path / "deleted"
    res = hook(gone, {"hook_event_name": "Stop"})  # the host directory was deleted
    assert res.returncode == 0 and res.stdout == b"" and res.stderr == b""
    d = tmp_path / "state"
    d.mkdir()
    for junk in ("not json", "", "{" * 100_000):
        assert hook(d, junk).returncode == 0
    assert agent_state.read(d).events == 0


def test_the_state_directory_is_untrusted(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text('{"ts": 1, "payload": {"hook_event_name": "Stop"}}\n')
    d = tmp_path / "state"
    d.mkdir()
    (d / "events.jsonl").symlink_to(secret)  # a symlink to a host file: not followed
    got = agent_state.read(d)
    assert got.state == "unknown" and got.events == 0 and got.problem == "events.jsonl is a symlink (not followed)"
    (d / "events.jsonl").unlink()
    os.mkfifo(d / "events.jsonl")  # a FIFO: never blocks, never read
    assert agent_state.read(d).state == "unknown"
    (d / "events.jsonl").unlink()
    linked = tmp_path / "linked-dir"
    linked.symlink_to(d)  # the directory itself a symlink: not followed either
    assert agent_state.read(linked).problem == "the state directory is a symlink (not followed)"
    with (d / "events.jsonl").open("wb") as fh:
        fh.write(b'{"ts": 5, "payload": {"hook_event_name": "UserPromptSubmit", "prompt": "go"}}\n')
        fh.write(b"\x00\xff\xfe garbage \x1b[31m\n")
        fh.write(b'{"ts": 6, "payload": {"hook_event_name": "Notification", "notification_type": '
                 b'"permission_prompt", "message": "\\u001b[2Jrm -rf /?\\u0007"}}\n')  # fmt: skip
        fh.write(b"x" * (100 << 20))  # a 100 MB line: only the tail is read, the line skipped
        fh.write(b"\n")
        fh.write(b'{"ts": 7, "payload": {"hook_event_name": "Notification", "notification_type": '
                 b'"permission_prompt", "message": "\\u001b[2Jrm -rf /?\\u0007"}}\n')  # fmt: skip
    got = agent_state.read(d)
    assert got.state == "needs you" and got.since == 7
    assert got.message == "[2Jrm -rf /?" and all(c.isprintable() for c in got.message)  # no escapes shown
    assert got.skipped == 0 and got.events == 1  # the tail holds only the last event; the cut line dropped


def test_garbage_in_the_state_file_says_why_the_state_is_unknown(tmp_path: Path) -> None:
    """A file of nothing devbox understands reads unknown with the reason, not a bare '?'."""
    d = tmp_path / "state"
    d.mkdir()
    with (d / "events.jsonl").open("wb") as fh:
        for _ in range(50):
            fh.write(os.urandom(1 << 20).replace(b"{", b"(") + b"\n" + b"not json\n" * 1000)
    got = agent_state.read(d)
    assert got.state == "unknown" and got.events == 0 and got.skipped > 0
    assert got.problem.startswith("the last MiB of events.jsonl hold no event devbox understands"), got.problem
    (d / "events.jsonl").write_bytes(b'{"ts": 1, "payload": {"no": "event name"}}\n')
    assert "hold no event devbox understands (1 line(s) skipped)" in agent_state.read(d).problem
    (d / "events.jsonl").write_bytes(b"")
    assert agent_state.read(d).problem == "no event yet"


def test_a_session_start_rings_no_bell_and_the_real_done_does() -> None:
    """SessionStart used to fold to done: every agent start alerted, and the 5 s de-duplication
    then swallowed the turn's real done."""
    from devbox.core import notify
    from devbox.core.ops.views import AgentRow

    w = notify.Watcher()
    w.update([])  # primed before the agent existed
    lines: list[bytes] = []
    alerts = []
    for ts, payload in enumerate(({"hook_event_name": "SessionStart", "source": "startup"},
                                  {"hook_event_name": "UserPromptSubmit", "prompt": "go"},
                                  {"hook_event_name": "Stop"}), start=1):  # fmt: skip
        lines.append(json.dumps({"ts": ts, "payload": payload}).encode())
        state = agent_state.fold(b"\n".join(lines))
        alerts.append([m.after for m in w.alerts(w.update([AgentRow("b1", "c1", "running", state)]))])
    assert alerts == [[], [], ["done"]]  # once, when the turn finished


def test_notifications_once_per_move_and_never_for_the_row_on_screen() -> None:
    from devbox.core import notify
    from devbox.core.ops.views import AgentRow

    def rows(state: str, message: str = "") -> list[AgentRow]:
        return [AgentRow("b1", "c1", "running", agent_state.AgentState(state, message=message))]  # type: ignore[arg-type]

    w = notify.Watcher()
    assert w.update(rows("working")) == []  # the first look is the starting point
    moves = w.update(rows("needs you", "may I?"))
    assert [(m.before, m.after) for m in moves] == [("working", "needs you")]
    assert len(w.alerts(moves)) == 1 and w.alerts(moves) == []  # the same alert again at once: not sent
    assert w.alerts(w.update(rows("done")), looking_at="b1") == []  # the agent you are looking at
    seq = notify.terminal_sequence(moves[0], in_tmux=True)
    assert seq.startswith("\a\x1bPtmux;") and "\x1b\x1b]9;devbox: b1 needs you: may I?" in seq
    plain = notify.terminal_sequence(notify.Transition("b1", "x", "done", "evil\x1b]0;title\x07;"), in_tmux=False)
    assert plain.count("\x1b]") == 2 and "]0;title" not in plain  # the message cannot smuggle escapes
    # its host (or podman) down, then back: the agent was done all along, not a new move
    assert w.alerts(w.update(rows("unknown"))) == []
    assert w.update(rows("done")) == []


def test_devbox_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    host = tmp_path / "host-file"
    host.write_text("mine\n")
    d = tmp_path / "state"
    d.mkdir()
    (d / "events.jsonl").symlink_to(host)
    assert agent_state.append(d, {"hook_event_name": "DevboxAgentExit"}, 1.0) is False
    assert host.read_text() == "mine\n"
    (d / "events.jsonl").unlink()
    assert agent_state.append(d, {"hook_event_name": "DevboxAgentExit", "status": "stopped"}, 2.0) is True
    assert agent_state.read(d).state == "exited"


def test_a_hook_clock_before_its_container_started_is_not_shown_as_an_age() -> None:
    """The agent writes the hook's timestamps: one from before its container started (its
    state tmpfs is new at every start) or from the future shows no age, not '20794d'."""
    import time

    from devbox.core.containers import Container
    from devbox.core.ops.fleet import _believable_time

    started = time.time() - 100
    c = Container("n", "id", "running", "b", "/w", "img", started_at=started, pid=1)
    for ts in (1.0, time.time() + 3600):
        assert _believable_time(agent_state.AgentState("done", ts), c).since is None
    fine = time.time() - 10
    assert _believable_time(agent_state.AgentState("done", fine), c).since == fine
