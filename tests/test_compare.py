"""Several agents on one task (issue 16): ``agent start TASK --count 3`` with the stand-in
agent (tests/fake_claude, whose ``run`` step really runs a command in its worktree), the
copies compared with their checks run inside each environment, one picked and merged, the
other two torn down after naming what they lose; real podman, tmux and git."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from devbox.core.errors import ExitCode
from test_agents import agents, podman, wait_for

from conftest import Project, git

pytestmark = pytest.mark.podman

# each copy writes its own branch name into result.txt and commits it, and leaves notes.txt
PROMPT = ('run git branch --show-current > result.txt && git add result.txt && '
          'git commit -qm "result of $(git branch --show-current)" && echo scratch > notes.txt')  # fmt: skip
CHECK = '["sh", "-c", "cat result.txt && grep -q fan-2 result.txt"]'


def configure(project: Project) -> None:
    with (project.root / "devbox.toml").open("a") as fh:
        fh.write(f'[agents.claude]\ncommand = ["claude"]\nenv = []\n[review]\ncheck_command = {CHECK}\n')
    git(project.root, "commit", "-qam", "agents and the check")  # the base's checkout stays clean


def test_three_copies_compared_checked_one_picked_the_others_removed(project: Project) -> None:
    configure(project)
    res = project.devbox("agent", "start", "fan", "--count", "3", "--prompt", PROMPT)
    assert res.returncode == 0, res.stderr
    assert "3 copies of fan from main" in res.stdout
    base = git(project.root, "rev-parse", "main").strip()
    wait_for(lambda: all(agents(project).get(f"fan-{i}", {}).get("state") == "done" for i in (1, 2, 3)), 90, "done")
    for i in (1, 2, 3):  # one base commit, each its own environment
        assert git(project.root, "merge-base", "main", f"fan-{i}").strip() == base
    names = {b: str(r["container"]) for b, r in agents(project).items()}
    assert len({names[f"fan-{i}"] for i in (1, 2, 3)}) == 3

    res = project.devbox("compare", "fan", "--check", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["base"] == "main" and [c["branch"] for c in data["candidates"]] == ["fan-1", "fan-2", "fan-3"]
    for c in data["candidates"]:
        assert [x["subject"] for x in c["commits"]] == [f"result of {c['branch']}"]
        assert (c["files"], c["added"], c["uncommitted"], c["conflicts"]) == (1, 1, ["notes.txt"], [])
        assert c["check"]["status"] == (0 if c["branch"] == "fan-2" else 1)  # ran inside each environment
        assert c["check"]["tail"] == [c["branch"]] and not c["check"]["stale"]
    table = project.devbox("compare", "fan")
    assert table.returncode == 0 and "pick one: devbox pick fan-2" in table.stdout
    assert "passed in" in table.stdout and "failed (exit 1)" in table.stdout

    # an interrupted check stops inside the container too, and keeps no result
    env = {**project.env, "DEVBOX_REVIEW_CHECK_COMMAND": "sh,-c,echo check-started && exec sleep 300"}
    run = subprocess.Popen([*project.devbox_argv(), "compare", "fan", "--check"], cwd=project.root, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    assert run.stdout is not None
    started = 0
    for line in run.stdout:
        started += "check-started" in line
        if started == 3:
            break
    run.send_signal(signal.SIGINT)
    out = run.communicate(timeout=60)[0]
    assert run.returncode == 130, out
    for i in (1, 2, 3):
        ps = podman("exec", names[f"fan-{i}"], "ps", "-o", "pid,args").stdout
        assert "sleep 300" not in ps
    kept = json.loads(project.devbox("compare", "fan", "--json").stdout)
    assert [c["check"]["status"] for c in kept["candidates"]] == [1, 0, 1]

    (project.root.parent / "proj.worktrees" / "fan-2" / "notes.txt").unlink()
    res = project.devbox("pick", "fan-2", "--yes", "--discard-others")
    assert res.returncode == 0, res.stderr
    assert (project.root / "result.txt").read_text() == "fan-2\n"
    lost = res.stdout
    for i in (1, 3):  # each other copy's losses named before it went
        assert f"fan-{i}:" in lost and f"running container {names[f'fan-{i}']}" in lost
    assert lost.count("1 uncommitted file(s): notes.txt") == 2 and lost.count("1 commit(s) of the branch") == 2
    branches = git(project.root, "branch", "--format=%(refname:short)").split()
    assert "fan-2" in branches and "fan-1" not in branches and "fan-3" not in branches
    gone = podman("ps", "-a", "--format", "{{.Names}}").stdout
    assert names["fan-1"] not in gone and names["fan-3"] not in gone and names["fan-2"] in gone
    assert not (project.root.parent / "proj.worktrees" / "fan-1").exists()


def test_count_refuses_before_anything_starts(project: Project) -> None:
    configure(project)
    git(project.root, "branch", "dup-2")
    refs = git(project.root, "for-each-ref").strip()
    res = project.devbox("agent", "start", "dup", "--count", "3", "--prompt", "say hi")
    assert res.returncode == 11 and "branch dup-2 exists already" in res.stderr
    res = project.devbox("agent", "start", "two", "--count", "2", "--agent", "claude", "--agent", "nope")
    assert res.returncode == 9 and "no agent named 'nope'" in res.stderr
    res = project.devbox("agent", "start", "many", "--count", "21", "--prompt", "say hi")
    assert res.returncode == 8 and "between 1 and 20" in res.stderr
    res = project.devbox("agent", "start", "x", "--count", "3", "--agent", "claude", "--agent", "claude")
    assert res.returncode == 8 and "2 agents for 3 copies" in res.stderr
    assert git(project.root, "for-each-ref").strip() == refs  # not one branch made
    made = podman("ps", "-a", "--format", "{{.Names}}").stdout
    assert not any(f"devbox-proj-{t}-" in made for t in ("dup-", "two-", "many-", "x-"))
    res = project.devbox("compare", "nothing")
    assert res.returncode == 9 and "no copies of task 'nothing'" in res.stderr
    res = project.devbox("pick", "main")
    assert res.returncode == 9 and "not a copy of a task" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1  # one line with its fix, no traceback


def test_copies_start_at_once_and_one_failing_stops_none_of_the_others(project: Project) -> None:
    configure(project)
    blocked = project.root.parent / "proj.worktrees" / "wide-2"
    blocked.mkdir(parents=True)
    (blocked / "mine.txt").write_text("not devbox's")
    res = project.devbox("agent", "start", "wide", "--count", "3", "--prompt", "say hi")
    assert res.returncode == ExitCode.REFUSED, res.stderr
    assert res.stderr.strip().splitlines() == [  # the copy that failed, and why (one line)
        f"devbox: wide-2: {blocked} already exists and is not a worktree of 'wide-2' "
        f"(fix: move it away or remove it: {blocked})"
    ]
    assert "claude started on wide-1" in res.stdout and "claude started on wide-3" in res.stdout
    assert "2 copies of wide from main" in res.stdout
    rows = agents(project)
    for b in ("wide-1", "wide-3"):  # each running its agent
        assert rows[b]["container_state"] == "running" and rows[b]["state"] != "no agent", rows[b]
    assert "wide-2" not in rows and (blocked / "mine.txt").read_text() == "not devbox's"  # left as it was
    assert "wide-2" not in git(project.root, "branch", "--format=%(refname:short)").split()
    data = json.loads(project.devbox("compare", "wide", "--json").stdout)  # both recorded as the task's
    assert [c["branch"] for c in data["candidates"]] == ["wide-1", "wide-3"]
