"""Image build and change detection against real podman."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from devbox.core import image, ops
from devbox.core.errors import BuildFailed
from devbox.core.events import Event, LogLine, Step
from devbox.core.session import Devbox

from conftest import BASE_IMAGE, Project

pytestmark = pytest.mark.podman


def _build(project: Project, **kw: bool) -> tuple[image.ImageStatus, list[tuple[float, Event]]]:
    events: list[tuple[float, Event]] = []
    with Devbox.open(project.root, env=project.env) as session:
        st = ops.build_image(session, sink=lambda e: events.append((time.monotonic(), e)), **kw)
    return st, events


def podman_image_exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref]).returncode == 0


def _status(project: Project) -> dict[str, object]:
    res = project.devbox("image", "status", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def test_first_build_streams_labels_then_second_is_noop(project: Project) -> None:
    st, events = _build(project)
    finished = time.monotonic()
    first = next(t for t, e in events if isinstance(e, LogLine) and e.text == "devbox-fixture: first line")
    last = next(t for t, e in events if isinstance(e, LogLine) and e.text == "devbox-fixture: last line")
    # the RUN step sleeps 2 s between its lines: they reached the sink as they happened
    assert last - first > 1.5
    assert finished - first > 1.5
    assert st.verdict.fresh and st.info is not None
    assert st.info.labels[image.LABEL_SOURCES] == st.sources.digest
    labels = subprocess.run(
        ["podman", "image", "inspect", "--format", '{{index .Labels "devbox.sources"}}', project.image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert labels == st.sources.digest

    again, events2 = _build(project)
    assert again.info is not None and again.info.id == st.info.id
    assert not any(isinstance(e, LogLine) for _, e in events2)
    assert [e.state for _, e in events2 if isinstance(e, Step)] == ["skip"]


def test_touch_keeps_fresh_and_old_mtime_content_change_is_stale(project: Project) -> None:
    _build(project)
    later = time.time() + 3600
    for path in project.bootc.rglob("*"):
        os.utime(path, (later, later), follow_symlinks=False)
    assert _status(project)["fresh"] is True

    cf = project.bootc / "Containerfile"
    before = cf.stat()
    cf.write_text(cf.read_text().replace("last line", "LAST line"))
    os.utime(cf, ns=(before.st_atime_ns, before.st_mtime_ns))  # content changed, mtime set back
    assert cf.stat().st_mtime_ns == before.st_mtime_ns
    status = _status(project)
    assert status["fresh"] is False
    assert status["reasons"] == ["bootc/Containerfile changed"]
    old = project.image_id()
    res = project.devbox("image", "build")
    assert res.returncode == 0, res.stderr
    assert "bootc/Containerfile changed" in res.stdout
    assert _status(project)["fresh"] is True
    assert old and podman_image_exists(old) is False  # unused previous build cleaned up


def test_missing_image_reason_and_force_rebuilds(project: Project) -> None:
    status = _status(project)
    assert status == {**status, "fresh": False, "reasons": ["image missing"], "id": None}
    first, _ = _build(project)
    forced, events = _build(project, force=True)
    assert first.info and forced.info and forced.info.id != first.info.id
    assert any(isinstance(e, LogLine) and "first line" in e.text for _, e in events)


def test_failing_step_keeps_old_image_and_shows_tail(project: Project) -> None:
    first, _ = _build(project)
    assert first.info
    cf = project.bootc / "Containerfile"
    cf.write_text(cf.read_text().replace("CMD [", 'RUN echo "about to fail" && exit 7\nCMD ['))
    res = project.devbox("image", "build")
    assert res.returncode == 6
    assert "Traceback" not in res.stdout + res.stderr
    assert "about to fail" in res.stdout + res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("devbox: podman build failed") and "fix:" in last
    assert project.image_id() == first.info.id

    with pytest.raises(BuildFailed) as err:
        _build(project)
    assert any("about to fail" in line for line in err.value.detail)


def test_interrupt_stops_build_exit_130_old_image_kept(project: Project) -> None:
    first, _ = _build(project)
    assert first.info
    cf = project.bootc / "Containerfile"
    cf.write_text(cf.read_text().replace("CMD [", 'RUN echo "long step" && sleep 60\nCMD ['))
    proc = subprocess.Popen(
        [sys.executable, "-m", "devbox.cli", "image", "build"],
        cwd=project.root,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until the long step is running
        if "long step" in line and "RUN" not in line:
            break
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert time.monotonic() - started < 30  # the 60 s step did not run to its end
    assert "Traceback" not in out + err
    assert "interrupted" in err
    assert project.image_id() == first.info.id
    leftovers = subprocess.run(
        ["podman", "ps", "--all", "--external", "--format", "{{.Names}} {{.Status}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "working-container" not in leftovers


def test_sources_digest_ignores_clock_but_not_mode(tmp_path: Path) -> None:
    from devbox.core.freshness import scan

    src = tmp_path / "src"
    src.mkdir()
    cache = tmp_path / "cache.json"
    (src / "a").write_text("x")
    one = scan(src, cache)
    later = time.time() + 7200
    os.utime(src / "a", (later, later))  # the clock moves, the content does not
    assert scan(src, cache).digest == one.digest
    assert scan(src).digest == one.digest  # cold, without the stat cache, too
    (src / "a").chmod(0o755)
    moded = scan(src, cache)
    assert moded.digest != one.digest
    (src / "a").write_text("y")
    os.utime(src / "a", (later, later))  # a content change with the mtime put back
    assert scan(src, cache).digest not in (one.digest, moded.digest)


def test_terminal_output_uses_rich(project: Project) -> None:
    import re

    from conftest import run_in_pty

    def plain(text: str) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)

    rc, out = run_in_pty([sys.executable, "-m", "devbox.cli", "image", "build"], project.env, project.root)
    assert rc == 0, out
    assert "\x1b[32m✓" in out  # Rich's green step mark (plain output says " ok image:")
    assert "✓ image:" in plain(out)
    assert "devbox-fixture: first line" in plain(out)  # the live log tail
    rc, out = run_in_pty([sys.executable, "-m", "devbox.cli", "image", "build"], project.env, project.root)
    assert rc == 0 and "· image:" in plain(out) and "is up to date" in plain(out)


def test_a_1mb_line_is_cut_on_screen_and_whole_in_the_log_file(project: Project) -> None:
    """Issue 14 item 3: piped, the CLI cuts a huge line and names the operation's log file,
    which holds the whole line (its own bytes); a failure's one line names the file too."""
    cf = project.bootc / "Containerfile"
    cf.write_text(cf.read_text().replace(
        "CMD [", "RUN head -c 1048576 /dev/zero | tr '\\0' x && printf '\\n\\377 not utf-8\\n'\nCMD [")
    )  # fmt: skip
    res = project.devbox("image", "build")
    assert res.returncode == 0, res.stderr
    marker = next(ln for ln in res.stdout.splitlines() if "more characters" in ln)
    path = Path(marker.split("the whole line is in ")[1].rstrip(")"))
    assert path.parent == project.root / ".build" / "logs" and path.name.endswith("-image-build.log")
    lines = path.read_bytes().split(b"\n")
    assert b"x" * 1048576 in lines and b"\xff not utf-8" in lines
    assert lines[0].startswith(b"$ devbox image build")
    cf.write_text(cf.read_text().replace("CMD [", "RUN exit 3\nCMD ["))
    failed = project.devbox("image", "build")
    last = failed.stderr.strip().splitlines()[-1]
    assert failed.returncode == 6 and "[log: " in last, last
    assert "podman build failed" in Path(last.split("[log: ")[1].rstrip("]")).read_text(errors="replace")


def test_the_logs_directory_is_bounded(tmp_path: Path) -> None:
    from devbox.core import oplog

    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(oplog.KEEP_FILES + 5):
        f = logs / f"old-{i:03d}.log"
        f.write_text("x")
        os.utime(f, (1_000_000 + i, 1_000_000 + i))
    made = oplog.OpLog(logs, "image-build", "devbox image build")
    made.close()
    left = sorted(p.name for p in logs.iterdir())
    assert len(left) == oplog.KEEP_FILES and made.path.name in left and "old-000.log" not in left
    assert "old-204.log" in left  # the oldest went first
    big = logs / "big.log"
    big.write_bytes(b"x" * 2000)
    removed = oplog.prune(logs, keep_files=1000, keep_bytes=1500)
    assert big not in removed and len(left) - 1 <= len(removed)  # bytes bound: the newest kept


@pytest.mark.parametrize(
    "line",
    [
        'Error: building at STEP "COPY link.txt /x": checking on sources under "{ctx}": copier: stat: "/link.txt": '
        "no such file or directory",
        'Error: building at STEP "COPY link.txt /x": error during bulk transfer for copier: reading "{ctx}/link.txt": '
        "copier: get: lstat: no such file",
        'Error: building at STEP "COPY link.txt /x": reading "{ctx}/link.txt": error encoding request for copier '
        "subprocess: write |1: broken pipe",
    ],
)
def test_a_symlink_out_of_the_context_is_named_in_each_of_podmans_wordings(tmp_path: Path, line: str) -> None:
    """podman 4.3 words a COPY of a symlink leaving the context three ways (the first two
    found as a CI failure in forward order only, the third in one CI run): all become the
    same one line, from a failed build's output as podman prints it."""
    from devbox.core import proc
    from devbox.core.podman_build import _build_error

    ctx = tmp_path / "bootc"
    ctx.mkdir()
    (tmp_path / "outside.txt").write_text("secret")
    (ctx / "link.txt").symlink_to(tmp_path / "outside.txt")
    err = _build_error(proc.Finished(125, False, ("STEP 9/13: COPY link.txt /x", line.format(ctx=ctx))), ctx)
    assert "link.txt is a symlink to" in err.message and "outside the build context" in err.message


def test_the_first_image_questions_go_to_podmans_cli_with_podman_pys_answers(project: Project) -> None:
    """Before podman-py is loaded, image lookups ask ``podman --url`` (core/podman_cli.py):
    the same records podman-py gives (present, missing, several at once), podman-py never
    imported for them, and a service that does not answer still gets podman-py's one line."""
    from devbox.core import podman_cli
    from devbox.core.errors import PodmanUnreachable
    from devbox.core.podman import Podman

    st, _ = _build(project)
    assert st.info is not None
    url = os.environ["DEVBOX_PODMAN_URL"]
    refs = [project.image, "localhost/devbox-no-such-image:1", BASE_IMAGE]
    by_cli = podman_cli.images(url, refs)
    by_py = Podman(url)
    assert by_py.client is not None  # loaded: podman-py answers from here on
    assert by_cli == by_py.images(refs)
    assert by_cli[project.image] is not None and by_cli[project.image].id == st.info.id
    assert by_cli["localhost/devbox-no-such-image:1"] is None
    assert podman_cli.images(url, ["localhost/devbox-no-such-image:1"]) == {"localhost/devbox-no-such-image:1": None}
    with Devbox.open(project.root, env=project.env) as session:  # its container, both ways
        made = ops.start_work(session, "quick")
    assert podman_cli.container(url, made.container.name) == by_py.container(made.container.name)
    assert podman_cli.container(url, "devbox-no-such-container") is None

    code = (
        "import sys; from devbox.core.podman import Podman; "
        f"p = Podman({url!r}); p.check(); r = p.images([{project.image!r}]); p.container('devbox-none'); "
        "print(r[next(iter(r))].id, 'podman' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == [st.info.id, "False"], out.stderr

    # what a command says it asks next is asked with its first question: one podman process,
    # until the CLI is handed out for a build (which may change any image)
    code = textwrap.dedent(f"""
        import sys
        from devbox.core import podman_cli
        from devbox.core.podman import Podman
        asked, real = [], podman_cli.images
        podman_cli.images = lambda url, refs: asked.append(list(refs)) or real(url, refs)
        p = Podman({url!r})
        p.expect([{BASE_IMAGE!r}])
        a, b = p.image({project.image!r}), p.image({BASE_IMAGE!r})
        one = asked == [[{project.image!r}, {BASE_IMAGE!r}]]
        p.cli()  # (with an explicit URL it asks the service for its storage: podman-py)
        c = p.image({BASE_IMAGE!r})
        print(one, a.id != b.id, b == c, len(asked) == 2 or "podman" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "True", "True", "True"], out.stdout + out.stderr

    with pytest.raises(PodmanUnreachable, match="does not exist"):
        Podman("unix:///nonexistent/podman.sock").images(refs)


EARLY = """
import json, sys
from pathlib import Path
from devbox.core import early_images, podman_cli, proc
root, url, stage, refs = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
ran, real = [], proc.run
proc.run = lambda argv, **kw: ran.append(list(argv)) or real(argv, **kw)
early_images.launch(["start-work", "b", "--repo", str(root)])
early = early_images._early
if stage == "discard":
    early_images.discard()
    print(json.dumps({"stopped": early.child.poll() is not None}))
    sys.exit()
try:
    got = podman_cli.images(url, refs)
except podman_cli.NoAnswer:
    got = None
early_images.discard()
print(json.dumps({"early": early.argv if early else None, "stopped": early is None or early.child.poll() is not None,
                  "ran": ran, "ids": None if got is None else {r: (v.id if v else None) for r, v in got.items()}}))
"""


def test_start_works_first_podman_question_is_asked_before_the_cli_loads(project: Project) -> None:
    """The entry point asks the question the last start-work asked first (core/early_images.py);
    its answer is used only for exactly that question, and a question nobody wants is stopped."""
    from devbox.core import early_images

    st, _ = _build(project)
    assert st.info is not None
    url = os.environ["DEVBOX_PODMAN_URL"]
    build = project.root / ".build"
    (build / early_images.RECORD).unlink(missing_ok=True)

    def stage(name: str, *refs: str) -> dict[str, object]:
        out = subprocess.run([sys.executable, "-c", EARLY, str(project.root), url, name, *refs],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    refs = [project.image, BASE_IMAGE]
    first = stage("ask", *refs)  # no record yet: asked by the command itself, and recorded
    asked = json.loads((build / early_images.RECORD).read_text())["start-work"]
    assert first["early"] is None and first["ran"] == [asked] and asked[-2:] == refs
    assert first["ids"] == {project.image: st.info.id, BASE_IMAGE: first["ids"][BASE_IMAGE]}

    second = stage("ask", *refs)  # asked at the start: its answer is taken, no podman run after
    assert second["early"] == asked and second["ran"] == [] and second["ids"] == first["ids"]

    other = stage("ask", project.image)  # another question: asked anew, the early one stopped
    assert other["stopped"] is True and len(other["ran"]) == 1
    assert other["ids"] == {project.image: st.info.id}
    assert json.loads((build / early_images.RECORD).read_text())["start-work"] == other["ran"][0]  # the last run's

    assert stage("discard") == {"stopped": True}
    assert not list(build.glob(".early-images-*"))  # its output files are gone with it

    # a service that takes the connection and never answers: the early question's timeout
    # is the answer (no second podman run waits another 3 s), and its podman is stopped
    hung_path = Path(tempfile.mkdtemp(prefix="dbx-")) / "hung.sock"  # short: a socket path has ~100 bytes
    hung = socket.socket(socket.AF_UNIX)
    hung.bind(str(hung_path))
    hung.listen(8)
    try:
        url = f"unix://{hung_path}"
        assert stage("ask", *refs)["ids"] is None  # recorded for this socket
        late = stage("ask", *refs)
        assert late["ids"] is None and late["ran"] == [] and late["stopped"] is True
    finally:
        hung.close()
        shutil.rmtree(hung_path.parent)
