"""Where the project is: the checkout that holds devbox.toml (the main one, from inside a
linked worktree). Apart from ``config`` so that the entry point can find the project's
``.build/`` before anything else is imported (core/plan_launch.py): standard library only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from devbox.core.errors import ConfigError

CONFIG_NAME = "devbox.toml"


def find_repo(explicit: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The main repository: ``explicit`` (--repo), else $DEVBOX_REPO, else the nearest
    checkout upward from the current directory that holds devbox.toml.

    From inside a linked worktree this answers the main repository, where settings,
    .build/ and the image live.
    """
    env = os.environ if env is None else env
    if explicit is None and env.get("DEVBOX_REPO"):
        explicit = Path(env["DEVBOX_REPO"]).expanduser()
    if explicit is not None:
        if not explicit.is_dir():
            raise ConfigError(f"project {explicit} is not a directory", "point --repo or DEVBOX_REPO at the checkout")
        return main_worktree(explicit)
    try:
        start = Path.cwd()
    except OSError:
        raise ConfigError("the current directory no longer exists", "cd into the project checkout") from None
    for d in (start, *start.parents):
        # only a checkout's own devbox.toml (beside its .git): one planted in a subdirectory of
        # an agent's worktree is never read as the project's settings
        if (d / CONFIG_NAME).is_file() and (d / ".git").exists():
            return main_worktree(d)
    raise ConfigError(
        f"no {CONFIG_NAME} in {start} or any parent", "run devbox inside the project checkout, or set DEVBOX_REPO"
    )


def main_worktree(path: Path) -> Path:
    """``path`` itself, or the main checkout when ``path`` is a linked worktree."""
    dotgit = path / ".git"
    with contextlib.suppress(OSError):
        if dotgit.is_file():  # a linked worktree: .git says "gitdir: <main>/.git/worktrees/<name>"
            text = dotgit.read_text().strip()
            if text.startswith("gitdir:"):
                gitdir = (path / text.split(":", 1)[1].strip()).resolve()
                commondir = gitdir / "commondir"
                if commondir.is_file():
                    return (gitdir / commondir.read_text().strip()).resolve().parent
    return path.resolve()
