"""The headless face: ``devbox <command>``. Parses arguments, calls the core, renders.

Exit codes come from devbox.core.errors.ExitCode and nowhere else; no traceback reaches a
user (an unexpected exception prints one line and points at ``DEVBOX_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from devbox import __version__
from devbox.core import config
from devbox.core.errors import Cancelled, ConfigError, DevboxError, ExitCode
from devbox.core.podman import Podman
from devbox.render import PlainRenderer, Renderer, make_renderer


def find_repo(start: Path, env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """The main repository: $DEVBOX_REPO, else the nearest parent holding devbox.toml.

    From inside a linked worktree this answers the main repository, where settings,
    .build/ and the image live.
    """
    if env.get("DEVBOX_REPO"):
        repo = Path(env["DEVBOX_REPO"]).expanduser()
        if not repo.is_dir():
            raise ConfigError(f"DEVBOX_REPO={repo} is not a directory", "point it at the project checkout")
        return _main_worktree(repo)
    for d in (start, *start.parents):
        if (d / config.CONFIG_NAME).is_file():
            return _main_worktree(d)
    raise ConfigError(
        f"no {config.CONFIG_NAME} in {start} or any parent",
        "run devbox inside the project checkout, or set DEVBOX_REPO",
    )


def _main_worktree(path: Path) -> Path:
    dotgit = path / ".git"
    if dotgit.is_file():  # a linked worktree: .git says "gitdir: <main>/.git/worktrees/<name>"
        text = dotgit.read_text().strip()
        if text.startswith("gitdir:"):
            gitdir = (path / text.split(":", 1)[1].strip()).resolve()
            commondir = gitdir / "commondir"
            if commondir.is_file():
                common = (gitdir / commondir.read_text().strip()).resolve()
                return common.parent
    return path.resolve()


class Context:
    """What every command gets: settings, podman, a renderer and a cancel event."""

    def __init__(self, args: argparse.Namespace, renderer: Renderer) -> None:
        self.args = args
        self.renderer = renderer
        self.cancel = threading.Event()
        repo = Path(args.repo).expanduser() if args.repo else find_repo(Path.cwd())
        self.settings = config.load(_main_worktree(repo) if args.repo else repo)
        self.podman = Podman(self.settings.podman_url)

    def sink(self, event: Any) -> None:
        self.renderer(event)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


# commands -----------------------------------------------------------------------------
def cmd_image_build(ctx: Context) -> int:
    from devbox.core import image

    image.build(ctx.settings, ctx.podman, ctx.sink, ctx.cancel, force=ctx.args.force)
    return ExitCode.OK


def cmd_image_status(ctx: Context) -> int:
    from devbox.core import image

    st = image.status(ctx.settings, ctx.podman)
    if ctx.args.json:
        _print_json(st.to_json())
    else:
        ident = st.info.short_id if st.info else "(none)"
        state = "fresh" if st.verdict.fresh else "stale"
        print(f"{st.name} {ident}: {state}" + ("" if st.verdict.fresh else f" ({st.verdict.reason})"))
    return ExitCode.OK


def cmd_vm_up(ctx: Context) -> int:
    from devbox.core.errors import NotAvailable

    raise NotAvailable(
        "VM mode is not part of this release yet",
        "use container mode: ./start-work BRANCH",
    )


# parser -------------------------------------------------------------------------------
Handler = Callable[[Context], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="devbox", description="Isolated dev environments from one bootc image.")
    parser.add_argument("--version", action="version", version=f"devbox {__version__}")
    parser.add_argument("--repo", help="project checkout (default: $DEVBOX_REPO or the nearest devbox.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show every log line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    img = sub.add_parser("image", help="the bootc image").add_subparsers(dest="image_cmd", required=True)
    p = img.add_parser("build", help="build the image if bootc/ changed")
    p.add_argument("--force", action="store_true", help="build even when the image is fresh")
    p.set_defaults(handler=cmd_image_build)
    p = img.add_parser("status", help="is the image fresh, and if not, why")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_image_status)

    vm = sub.add_parser("vm", help="VM mode").add_subparsers(dest="vm_cmd", required=True)
    vm.add_parser("up", help="build the disk and boot the VM").set_defaults(handler=cmd_vm_up)
    return parser


def _install_sigint(cancel: threading.Event) -> None:
    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():  # a second Ctrl-C: stop waiting for a clean stop
            raise KeyboardInterrupt
        cancel.set()

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    renderer: Renderer = make_renderer(verbose=args.verbose)
    try:
        ctx = Context(args, renderer)
        _install_sigint(ctx.cancel)
        handler: Handler = args.handler
        code = handler(ctx)
        if ctx.cancel.is_set():
            raise Cancelled()
        return code
    except DevboxError as exc:
        renderer.error(exc)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        renderer.error(Cancelled())
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug: one line, no traceback (unless asked)
        if os.environ.get("DEVBOX_DEBUG"):
            raise
        PlainRenderer().error(
            DevboxError(f"internal error: {type(exc).__name__}: {exc}", "rerun with DEVBOX_DEBUG=1 and report it")
        )
        return int(ExitCode.FAILURE)
    finally:
        renderer.close()


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
