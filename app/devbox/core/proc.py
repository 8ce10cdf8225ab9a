"""The one way devbox runs a tool as a child process: argument lists only, never a shell.

- ``run``: a short call with its output captured, cancellable, with a timeout that becomes
  a one-line ``ToolTimeout`` (never "internal error").
- ``stream``: a long call (podman build, bootc-image-builder, terraform apply, rsync) whose
  stdout and stderr are read apart and reported as they appear. Lines end at ``\\n`` *or*
  ``\\r``: a ``\\r``-terminated line is a progress update (a ``Progress`` event, not a log
  line), so a progress bar that redraws one line never floods the log. An optional parser
  turns a tool's own progress lines into numbers. stdout can be captured besides (for
  ``terraform output -json``).
- The environment given is merged onto devbox's own (a value of ``None`` removes a name).
- Children run in their own session: a terminal Ctrl-C reaches devbox once, and devbox
  decides how to stop the child (SIGINT, then SIGTERM, then SIGKILL, or the adapter's own
  ``stop``).

Only this module imports ``subprocess``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from devbox.core.errors import Cancelled, ToolMissing, ToolTimeout

if TYPE_CHECKING:  # (only annotated here: the entry point's early plan imports this module alone)
    from devbox.core.events import Reporter

MAX_LINE = 8 << 20  # a line longer than this is cut into pieces (a tool printing no newline)
SHOWN = 400  # characters of a line kept for error messages ("last lines of the log")

#: parses one line into (done, total, text) when it is a progress line
ProgressParser = Callable[[str], "tuple[float | None, float | None, str] | None"]
Env = Mapping[str, "str | None"]


# NamedTuples, not dataclasses: this module is imported before vm up's plan starts
# (core/plan_launch.py), and importing dataclasses (inspect, ast, dis) is ~9 ms of that wait
class Completed(NamedTuple):
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_error(self) -> str:
        """The last non-empty stderr line (else stdout), for a one-line message."""
        for text in (self.stderr, self.stdout):
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if lines:
                return lines[-1][:SHOWN]
        return f"exit {self.returncode}"


class Finished(NamedTuple):
    returncode: int
    cancelled: bool
    tail: tuple[str, ...]  # the last lines of output (each cut to SHOWN), for error messages
    stdout: str = ""  # the whole stdout, when asked for with capture_stdout
    err_tail: tuple[str, ...] = ()  # the last stderr lines alone: stdout and stderr interleave by arrival

    def last_error(self) -> str:
        """The line a one-line message should quote: the last non-empty stderr line, else output."""
        for lines in (self.err_tail, self.tail):
            for line in reversed(lines):
                if line.strip():
                    return line
        return f"exit {self.returncode}"


def merged_env(env: Env | None) -> dict[str, str] | None:
    if env is None:
        return None
    out = dict(os.environ)
    for key, value in env.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _popen(argv: Sequence[str], tool: str, **kw: object) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(list(argv), **kw)  # type: ignore[call-overload, no-any-return]
    except FileNotFoundError:
        raise ToolMissing(f"{tool} is not installed (no `{argv[0]}`)", f"install {tool}") from None
    except PermissionError:
        raise ToolMissing(f"{argv[0]} is not executable", f"check the {tool} installation") from None


def run(
    argv: Sequence[str],
    *,
    tool: str,
    cwd: Path | None = None,
    env: Env | None = None,
    timeout: float = 60.0,
    cancel: threading.Event | None = None,
    input: bytes | None = None,
    remedy: str = "",
    errors: str = "replace",
) -> Completed:
    """Run a short command and capture its output, decoded (undecodable bytes replaced, or
    with ``errors="surrogateescape"`` kept, as ``os.fsdecode`` keeps a file name's bytes)."""
    proc = _popen(
        argv,
        tool,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=merged_env(env),
        start_new_session=True,
    )
    sent = [input]

    def step(wait: float) -> tuple[bytes, bytes]:
        data, sent[0] = sent[0], None  # communicate() keeps what it has sent
        return proc.communicate(data, timeout=wait)

    out, err = _await(proc, argv, tool, step, timeout=timeout, cancel=cancel, remedy=remedy)
    return Completed(tuple(argv), proc.returncode, out.decode(errors=errors), err.decode(errors="replace"))


T = TypeVar("T")


def _await(
    proc: subprocess.Popen[bytes], argv: Sequence[str], tool: str, step: Callable[[float], T], *,
    timeout: float, cancel: threading.Event | None, remedy: str,
) -> T:  # fmt: skip
    """``step(seconds)`` until it returns: a child waited for with its timeout (its whole
    group stopped, ``ToolTimeout``) and ``cancel`` (stopped, ``Cancelled``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return step(0.1 if cancel is not None else max(0.01, timeout))
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel.is_set():
                _stop_group(proc, grace=2.0)
                raise Cancelled(f"interrupted while running {tool}") from None
            if time.monotonic() > deadline:
                _stop_group(proc, grace=1.0)
                raise ToolTimeout(
                    f"{tool} did not finish within {timeout:g} s ({' '.join(argv[1:3])[:60]})",
                    remedy or f"check that {tool} works (run it by hand), then try again",
                ) from None


def launch(
    argv: Sequence[str], *, tool: str, cwd: Path, env: Env, output: Path, errors: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a short command now and collect it later (``finish``): its stdout goes to
    ``output`` and its stderr to ``errors`` (or ``output`` too), so nothing has to read them
    meanwhile (the entry point's early plan and early image question)."""
    with open(output, "wb") as fh, open(errors or os.devnull, "wb") as eh:
        return _popen(argv, tool, stdin=subprocess.DEVNULL, stdout=fh, stderr=eh if errors else subprocess.STDOUT,
                      cwd=cwd, env=merged_env(env), start_new_session=True)  # fmt: skip


def _read(path: Path | None) -> str:
    try:
        return path.read_bytes().decode(errors="replace") if path is not None else ""
    except OSError:
        return ""


def finish(
    proc: subprocess.Popen[bytes], *, tool: str, output: Path, timeout: float, cancel: threading.Event | None = None,
    remedy: str = "", errors: Path | None = None,
) -> Completed:  # fmt: skip
    """Wait for what ``launch`` started, as ``run`` waits: its ``output`` is the result's
    ``stdout``, its ``errors`` (when ``launch`` had them apart) its ``stderr``."""
    argv = [str(a) for a in proc.args] if isinstance(proc.args, list) else [str(proc.args)]
    code = _await(proc, argv, tool, lambda wait: _exited(proc, wait), timeout=timeout, cancel=cancel, remedy=remedy)
    return Completed(tuple(argv), code, _read(output), _read(errors))


def _exited(proc: subprocess.Popen[bytes], wait: float) -> int:
    """``proc.wait(wait)``, told of the exit at once: Popen's own timed wait polls with sleeps
    that grow to 50 ms, so a plan that ended was noticed ~25 ms late on average (a no-op
    ``vm up`` is ~0.3 s). A pidfd becomes readable when the process exits."""
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:  # already reaped, or a kernel without pidfd (Linux < 5.3)
        return proc.wait(wait)
    try:
        if not select.select([fd], [], [], wait)[0]:
            raise subprocess.TimeoutExpired(proc.args, wait)
    finally:
        os.close(fd)
    return proc.wait()


def feed(
    argv: Sequence[str],
    chunks: Iterable[bytes],
    *,
    tool: str,
    cancel: threading.Event,
    on_chunk: Callable[[int], None] | None = None,
) -> Completed:
    """Run ``argv`` with ``chunks`` written to its stdin (a stream too big for memory, such
    as an image archive); its output captured. ``on_chunk(total_bytes)`` after each write."""
    proc = _popen(argv, tool, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                  env=merged_env({}), start_new_session=True)  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda n=n, f=f: out.__setitem__(n, f.read()), daemon=True)
        for n, f in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    for t in readers:
        t.start()
    sent = 0
    try:
        for chunk in chunks:
            if cancel.is_set():
                _stop_group(proc, grace=5.0)
                raise Cancelled(f"interrupted while feeding {tool}")
            proc.stdin.write(chunk)
            sent += len(chunk)
            if on_chunk is not None:
                on_chunk(sent)
    except BrokenPipeError:
        pass  # it stopped reading: its exit code and stderr say why
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    rc = proc.wait()
    for t in readers:
        t.join()
    return Completed(tuple(argv), rc, out.get("stdout", b"").decode(errors="replace"),
                     out.get("stderr", b"").decode(errors="replace"))  # fmt: skip


def interactive(argv: Sequence[str], *, tool: str, cwd: Path | None = None, env: Env | None = None) -> int:
    """Run a command on this terminal (a shell in a container or a VM); return its exit code."""
    proc = _popen(argv, tool, cwd=cwd, env=merged_env(env))
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # the Ctrl-C belongs to the program on the terminal
            continue


class LineSplitter:
    """Bytes in, (text, final) out: final lines end in ``\\n``, progress lines in ``\\r``.
    ``feed_bytes`` keeps each line's own bytes (the operation's log file writes them)."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[str, bool]]:
        return [(raw.decode(errors="replace"), final) for raw, final in self.feed_bytes(data)]

    def feed_bytes(self, data: bytes) -> list[tuple[bytes, bool]]:
        self.buf += data
        out: list[tuple[bytes, bool]] = []
        start = 0
        buf = self.buf
        i = 0
        n = len(buf)
        while i < n:
            c = buf[i]
            if c == 10:  # \n
                out.append((buf[start:i].rstrip(b"\r"), True))
                start = i + 1
            elif c == 13:  # \r: a progress redraw, unless it is the \r of \r\n
                if i + 1 == n:
                    break  # wait: the next chunk may start with \n
                if buf[i + 1] != 10:
                    out.append((buf[start:i], False))
                    start = i + 1
            i += 1
        self.buf = buf[start:]
        if len(self.buf) > MAX_LINE:
            out.append((self.buf, True))
            self.buf = b""
        return out

    def flush(self) -> list[tuple[str, bool]]:
        return [(raw.decode(errors="replace"), final) for raw, final in self.flush_bytes()]

    def flush_bytes(self) -> list[tuple[bytes, bool]]:
        rest, self.buf = self.buf.rstrip(b"\r"), b""
        return [(rest, True)] if rest else []


Queued = tuple[str, "str | None", bool, bytes]


def _reader(fd: int, name: str, q: queue.Queue[Queued]) -> None:
    splitter = LineSplitter()
    try:
        while chunk := os.read(fd, 65536):
            for raw, final in splitter.feed_bytes(chunk):
                q.put((name, raw.decode(errors="replace"), final, raw))
    except OSError:
        pass
    for raw, final in splitter.flush_bytes():
        q.put((name, raw.decode(errors="replace"), final, raw))
    q.put((name, None, True, b""))


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> bool:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return False
    return True


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGINT the child's session, then SIGTERM, then SIGKILL, until it is gone."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None or not _signal_group(proc, sig):
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def stream(
    argv: Sequence[str],
    report: Reporter,
    cancel: threading.Event,
    *,
    source: str,
    cwd: Path | None = None,
    env: Env | None = None,
    grace: float = 20.0,
    tail_lines: int = 30,
    capture_stdout: bool = False,
    parse: ProgressParser | None = None,
    on_start: Callable[[int], None] | None = None,
    stop: Callable[[subprocess.Popen[bytes]], None] | None = None,
    timeout: float | None = None,
) -> Finished:
    """Run ``argv``, report its lines as they come, honour ``cancel`` and ``timeout``.

    ``stop`` replaces the default way of stopping the child on cancel (e.g. podman build
    first has its RUN step killed so that podman cleans up after itself).
    """
    proc = _popen(
        argv,
        source,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=merged_env(env),
        start_new_session=True,
    )
    if on_start is not None:
        on_start(proc.pid)
    q: queue.Queue[Queued] = queue.Queue()
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=_reader, args=(proc.stdout.fileno(), "stdout", q), daemon=True),
        threading.Thread(target=_reader, args=(proc.stderr.fileno(), "stderr", q), daemon=True),
    ]
    for t in readers:
        t.start()
    tail: deque[str] = deque(maxlen=tail_lines)
    err_tail: deque[str] = deque(maxlen=tail_lines)
    captured: list[str] = []
    open_streams = 2
    stopping: threading.Thread | None = None
    timed_out = False
    deadline = None if timeout is None else time.monotonic() + timeout
    while open_streams:
        try:
            name, text, final, raw = q.get(timeout=0.1)
        except queue.Empty:
            name, text, raw = "", None, b""
        else:
            if text is None:
                open_streams -= 1
                continue
            if not final and not text.strip():
                continue  # a redraw that starts with \r: nothing before it
            parsed = parse(text) if parse is not None else None
            if not final or parsed is not None:
                done, total, what = parsed if parsed is not None else (None, None, text)
                report.progress(what.strip(), done, total)
            if final:
                if capture_stdout and name == "stdout":
                    captured.append(text)
                else:
                    tail.append(text[:SHOWN])
                    if name == "stderr":
                        err_tail.append(text[:SHOWN])
                    report.log(
                        text, source=source, stream="stdout" if name == "stdout" else "stderr",
                        raw=raw if raw != text.encode() else None,  # the tool's own bytes, when they differ
                    )  # fmt: skip
        if stopping is None and (cancel.is_set() or (deadline is not None and time.monotonic() > deadline)):
            timed_out = not cancel.is_set()
            how = stop or (lambda p: _stop_group(p, grace))
            stopping = threading.Thread(target=how, args=(proc,), daemon=True)
            stopping.start()
    rc = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    if timed_out:
        raise ToolTimeout(f"{source} did not finish within {timeout:g} s", f"see the {source} output above")
    return Finished(rc, cancel.is_set(), tuple(tail), "\n".join(captured), tuple(err_tail))


def start(argv: Sequence[str], *, tool: str, tied: bool = False) -> subprocess.Popen[bytes]:
    """A helper process the caller stops itself (``stop``), e.g. an ssh tunnel for one
    operation; its stderr is kept for the caller's error message. ``tied``: its stdin is a
    pipe only this process holds, so the child reads EOF when this process ends, however
    it ends (a closed terminal, SIGKILL), and a child that exits on EOF never outlives it."""
    stdin = subprocess.PIPE if tied else subprocess.DEVNULL
    return _popen(argv, tool, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                  start_new_session=True)  # fmt: skip


def stop(child: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    """Stop what ``start`` started (its whole session), then reap it."""
    _stop_group(child, grace)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(5)
    if child.stdin is not None:
        child.stdin.close()


def spawn_daemon(argv: Sequence[str], *, tool: str, log: Path | None = None) -> int:
    """Start a service that outlives this run on purpose (the caller says so); return its pid.
    It runs in "/", not in the directory devbox was run from: a daemon's working directory is
    where its helpers write (conmon leaves a file named ``oom`` there when a container's
    memory limit kills something) and stays busy for the daemon's life."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        child = _popen(argv, tool, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, cwd="/")
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]
    return child.pid
