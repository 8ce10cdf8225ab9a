"""core/proc.py with real child processes: \r progress, split streams, env, cancel, timeouts."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devbox.core import proc, proc_table
from devbox.core.errors import Cancelled, ExitCode, ToolMissing, ToolTimeout
from devbox.core.events import Event, LogLine, Progress, Reporter, Subject


def recorder() -> tuple[list[Event], Reporter]:
    events: list[Event] = []
    return events, Reporter(events.append, "test", Subject("image", "x"))


PROGRESS = r"""
import sys, time
for i in range(5):
    sys.stdout.write(f"\rcopying {i * 25}%")
    sys.stdout.flush()
    time.sleep(0.15)
sys.stdout.write("\rcopying 100%\ndone copying\n")
sys.stderr.write("a warning\n")
sys.stdout.write("crlf line\r\n")
"""


def test_carriage_return_lines_are_progress_not_log() -> None:
    events: list[Event] = []
    stamps: list[float] = []
    t0 = time.monotonic()

    def parse(text: str) -> tuple[float | None, float | None, str] | None:
        if text.startswith("copying ") and text.endswith("%"):
            return float(text[8:-1]), 100.0, text
        return None

    def sink(e: Event) -> None:
        stamps.append(time.monotonic() - t0)
        events.append(e)

    done = proc.stream(
        [sys.executable, "-c", PROGRESS], Reporter(sink, "test"), threading.Event(), source="t", parse=parse
    )
    assert done.returncode == 0
    progress = [e for e in events if isinstance(e, Progress)]
    logs = [e for e in events if isinstance(e, LogLine)]
    assert [p.done for p in progress][:5] == [0.0, 25.0, 50.0, 75.0, 100.0]
    assert progress[2].fraction == 0.5
    # only the final lines are log lines; the \r redraws never are
    texts = [e.text for e in logs]
    assert "copying 0%" not in texts and "copying 25%" not in texts
    assert {"done copying", "crlf line", "a warning"} <= set(texts)
    assert next(e for e in logs if e.text == "a warning").stream == "stderr"
    assert next(e for e in logs if e.text == "done copying").stream == "stdout"
    # progress arrived while the tool ran, not at the end
    first_progress = next(i for i, e in enumerate(events) if isinstance(e, Progress))
    assert stamps[-1] - stamps[first_progress] > 0.4
    assert all(e.op == "test" for e in events)


def test_stdout_captured_apart_from_stderr_and_env_merged(tmp_path: Path) -> None:
    events, report = recorder()
    code = (
        "import os, sys; print('{\"a\": 1}'); print(os.environ['DEVBOX_T_X'], file=sys.stderr);"
        "print(os.environ.get('DEVBOX_T_GONE', 'gone'), file=sys.stderr);"
        "print(os.environ['PATH'] != '', file=sys.stderr)"
    )
    os.environ["DEVBOX_T_GONE"] = "still here"
    try:
        done = proc.stream(
            [sys.executable, "-c", code],
            report,
            threading.Event(),
            source="t",
            capture_stdout=True,
            env={"DEVBOX_T_X": "merged", "DEVBOX_T_GONE": None},
        )
    finally:
        del os.environ["DEVBOX_T_GONE"]
    assert done.stdout == '{"a": 1}'
    assert [e.text for e in events if isinstance(e, LogLine)] == ["merged", "gone", "True"]


def test_run_timeout_and_cancel_are_devbox_errors() -> None:
    with pytest.raises(ToolTimeout) as err:
        proc.run([sys.executable, "-c", "import time; time.sleep(30)"], tool="sleeper", timeout=0.5)
    assert err.value.exit_code == ExitCode.TIMEOUT and "did not finish within 0.5 s" in err.value.message
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        proc.run([sys.executable, "-c", "import time; time.sleep(30)"], tool="sleeper", cancel=cancel)
    assert time.monotonic() - started < 10
    with pytest.raises(ToolMissing):
        proc.run(["/nonexistent/tool"], tool="tool")


def test_stream_cancel_stops_the_child_group() -> None:
    _, report = recorder()
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    code = "import subprocess, time; subprocess.Popen(['sleep', '60']); print('started', flush=True); time.sleep(60)"
    started = time.monotonic()
    done = proc.stream([sys.executable, "-c", code], report, cancel, source="t", grace=2)
    assert done.cancelled and time.monotonic() - started < 15


def test_huge_line_and_bad_bytes() -> None:
    events, report = recorder()
    code = "import sys; sys.stdout.buffer.write(b'x' * 1_500_000 + b'\\n' + b'\\xff\\xfe bad\\n')"
    done = proc.stream([sys.executable, "-c", code], report, threading.Event(), source="t")
    logs = [e.text for e in events if isinstance(e, LogLine)]
    assert sum(len(t) for t in logs if t.startswith("x")) == 1_500_000
    assert logs[-1].endswith(" bad") and "\ufffd" in logs[-1]
    assert all(len(t) <= proc.SHOWN for t in done.tail)  # error messages show capped lines


def test_line_splitter_keeps_crlf_across_chunks() -> None:
    s = proc.LineSplitter()
    assert s.feed(b"a\r") == []  # wait: is it \r\n?
    assert s.feed(b"\nb\rc") == [("a", True), ("b", False)]
    assert s.flush() == [("c", True)]


def test_started_at_is_epoch_seconds() -> None:
    """Issue 14 item 10: a process's start as epoch seconds (not clock ticks since boot)."""
    before = time.time()
    child = subprocess.Popen(["sleep", "5"])
    try:
        started = proc_table.started_at(child.pid)
        assert started is not None and before - 2 <= started <= time.time() + 2
    finally:
        child.kill()
        child.wait()
    assert proc_table.started_at(child.pid) is None


def test_a_daemon_runs_in_the_root_directory_not_where_devbox_was_run(tmp_path: Path) -> None:
    """A service devbox starts (podman.autostart) outlives the run: its working directory is
    where its helpers write (conmon's "oom" file appeared in the user's checkout) and stays
    busy, so it is "/"."""
    out = tmp_path / "cwd.txt"
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        proc.spawn_daemon(["sh", "-c", f"pwd > {out}"], tool="sh")
    finally:
        os.chdir(here)
    deadline = time.monotonic() + 10
    while not (out.exists() and out.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.read_text().strip() == "/"
