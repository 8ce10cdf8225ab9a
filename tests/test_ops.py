"""Operations in-process through ``ops`` (recording sink), status without podman, and the
podman adapter's parsing of libpod records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devbox.core import ops
from devbox.core.errors import ExitCode
from devbox.core.events import Event, LogLine, Step
from devbox.core.podman_records import _container, _ts
from devbox.core.session import Devbox

from conftest import Project


def test_exit_codes_are_distinct_and_every_error_has_one() -> None:
    values = [int(v) for v in ExitCode.__members__.values()]  # __members__ includes aliases
    assert len(values) == len(set(values))
    from devbox.core import errors

    kinds = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.DevboxError)]
    assert all(isinstance(k.exit_code, ExitCode) for k in kinds)


def plain_repo(tmp: Path) -> Path:
    from test_worktrees import repo

    return repo(tmp)


def test_status_json_with_podman_down_is_valid_and_says_why(tmp_path: Path) -> None:
    root = plain_repo(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_")}
    env |= {"DEVBOX_REPO": str(root), "DEVBOX_PODMAN_URL": f"unix://{tmp_path}/dead.sock"}
    res = subprocess.run(
        [sys.executable, "-m", "devbox.cli", "status", "--json"], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["schema"] == 3 and data["repo"] == str(root.resolve())
    assert data["containers"] == [] and data["image"] is None
    err = data["errors"]["containers"]
    assert "does not exist" in err["message"] and "podman system service" in err["remedy"]
    assert err["exit_code"] == ExitCode.PODMAN_UNREACHABLE
    assert [w["branch"] for w in data["worktrees"]] == ["main"]
    assert len(data["sources"]["digest"]) == 64
    assert data["vms"] == [] and "vms" not in data["errors"]  # no VM made here: VM mode stays quiet
    assert data["agents"] == [] and "does not exist" in data["errors"]["agents"]["message"]  # via podman
    plain = subprocess.run([sys.executable, "-m", "devbox.cli", "status"], env=env, capture_output=True, text=True)
    assert plain.returncode == 0 and "main" in plain.stdout and "does not exist" in plain.stdout
    # a closed pipe is a quiet exit, not "internal error: BrokenPipeError"
    r, w = os.pipe()
    os.close(r)  # `| true`: the reader is gone before devbox writes
    piped = subprocess.run(
        [sys.executable, "-m", "devbox.cli", "status", "--json"], env=env, stdout=w, stderr=subprocess.PIPE, text=True
    )
    os.close(w)
    assert piped.stderr == "" and piped.returncode == 141


def test_libpod_records_parse_both_shapes() -> None:
    listed = {
        "Id": "abc",
        "Names": ["devbox-x"],
        "State": "running",
        "Labels": {"devbox.branch": "b"},
        "StartedAt": 1700000000,
    }
    rec = _container(listed)
    assert (rec.name, rec.id, rec.state, rec.labels["devbox.branch"], rec.started_at) == (
        "devbox-x",
        "abc",
        "running",
        "b",
        1700000000.0,
    )
    inspected = {
        "Id": "abc",
        "Name": "devbox-x",
        "State": {"Status": "Exited", "Running": False, "StartedAt": "2026-11-27T23:33:39.587096048Z"},
        "Config": {"Labels": None},
    }
    rec = _container(inspected)
    assert (rec.state, dict(rec.labels), rec.started_at) == ("exited", {}, None)
    running = {
        **inspected,
        "State": {"Status": "running", "Running": True, "StartedAt": "2026-11-27T23:33:39.587096048+01:00"},
    }
    assert _container(running).started_at == pytest.approx(_ts("2026-11-27T22:33:39.587096Z"))
    assert _ts("0001-01-01T00:00:00Z") is None and _ts("garbage") is None and _ts(None) is None


@pytest.mark.podman
def test_start_work_in_process_reports_ordered_events(project: Project) -> None:
    events: list[Event] = []
    with Devbox.open(project.root, env=project.env) as session:
        res = ops.start_work(session, "evented", sink=events.append)
        try:
            assert res.action == "created" and res.container.running
            steps = [(e.subject.kind, e.state) for e in events if isinstance(e, Step)]
            assert steps == [
                ("worktree", "start"),
                ("worktree", "done"),
                ("image", "start"),
                ("image", "done"),
                ("container", "start"),
                ("container", "done"),
            ]
            assert all(e.op == "start-work" for e in events)
            container_steps = [e for e in events if isinstance(e, Step) and e.subject.kind == "container"]
            assert {e.subject.name for e in container_steps} == {res.container.name}
            build_lines = [e for e in events if isinstance(e, LogLine) and e.source == "podman"]
            assert any("devbox-fixture: first line" in e.text for e in build_lines)
            assert all(e.subject.kind == "image" for e in build_lines)
            fail = [e for e in events if isinstance(e, Step) and e.state == "fail"]
            assert not fail
            again: list[Event] = []
            assert ops.start_work(session, "evented", sink=again.append).action == "running"
            assert [(e.subject.kind, e.state) for e in again if isinstance(e, Step)] == [
                ("worktree", "skip"),
                ("image", "skip"),
                ("container", "skip"),
            ]
            st = ops.status(session)
            assert st.problems() == {}
            assert [c.branch for c in st.containers.value or ()] == ["evented"]
        finally:
            ops.remove_container(session, "evented", force=True)


def test_a_no_op_start_work_works_out_each_state_once(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14 item 4: `git worktree list` and the image status (tree scan and inspects)
    run once per start-work, not three times and twice. Counted by spies that call the
    real functions."""
    from devbox.core import git, image

    with Devbox.open(project.root, env=project.env) as session:
        ops.start_work(session, "once")
        calls = {"worktrees": 0, "image": 0}
        real_list, real_status = git.list_worktrees, image.status

        def list_spy(*a: object, **k: object) -> object:
            calls["worktrees"] += 1
            return real_list(*a, **k)  # type: ignore[arg-type]

        def status_spy(*a: object, **k: object) -> object:
            calls["image"] += 1
            return real_status(*a, **k)  # type: ignore[arg-type]

        monkeypatch.setattr(git, "list_worktrees", list_spy)
        monkeypatch.setattr(image, "status", status_spy)
        again = ops.start_work(session, "once")
    assert again.action == "running" and calls == {"worktrees": 1, "image": 1}, calls
