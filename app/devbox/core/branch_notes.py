"""What devbox remembers about a branch, in the repository's own git config: the branch it
was started from (for ``devbox diff`` and ``merge``) and the task it is one copy of.

Apart from ``git_merge``, whose records a new environment does not need: recording a base
is on ``start-work``'s path, and importing ``git_merge`` cost it ~5 ms.
"""

from __future__ import annotations

from pathlib import Path

from devbox.core.git import _git, config_set

BASE_KEY = "devboxbase"  # git config branch.<name>.devboxbase: the branch it was started from
TASK_KEY = "devboxtask"  # branch.<name>.devboxtask: the task it is one copy of (agent start --count)


def record_base(repo: Path, branch: str, base: str) -> None:
    """Remember the branch ``branch`` was started from (repository config, local)."""
    config_set(repo, f"branch.{branch}.{BASE_KEY}", base)


def recorded_base(repo: Path, branch: str) -> str:
    res = _git(repo, "config", "--local", "--get", f"branch.{branch}.{BASE_KEY}", check=False)
    return res.stdout.strip() if res.ok else ""


def recorded_bases(repo: Path) -> dict[str, str]:
    """Every recorded base at once (one git call): branch -> base."""
    return per_branch(repo, BASE_KEY)


def record_task(repo: Path, branch: str, task: str) -> None:
    """Remember that ``branch`` is one copy of ``task`` (``agent start TASK --count N``)."""
    config_set(repo, f"branch.{branch}.{TASK_KEY}", task)


def recorded_tasks(repo: Path) -> dict[str, str]:
    """branch -> the task it is a copy of, for every such branch (one git call)."""
    return per_branch(repo, TASK_KEY)


def per_branch(repo: Path, key: str) -> dict[str, str]:
    """branch -> value of ``branch.<name>.<key>``, for every branch that has one (one git call)."""
    res = _git(repo, "config", "--local", "--get-regexp", rf"^branch\..*\.{key}$", check=False)
    found: dict[str, str] = {}
    for line in res.stdout.splitlines():
        name, _, value = line.partition(" ")
        branch = name.removeprefix("branch.").removesuffix(f".{key}")
        if branch and value:
            found[branch] = value
    return found
