"""The core never loads textual or rich: proven in a fresh interpreter."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import devbox.core


def test_core_imports_neither_textual_nor_rich() -> None:
    modules = [m.name for m in pkgutil.walk_packages(devbox.core.__path__, "devbox.core.")]
    assert len(modules) >= 18 and "devbox.core.ops.overview" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_headless_cli_without_tty_does_not_load_rich() -> None:
    code = "import sys, devbox.cli, devbox.render as r; r.make_renderer(); print('rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_no_ops_submodule_shadows_an_operation() -> None:
    """``ops`` binds operations lazily; importing a submodule binds its name on the package,
    so a submodule named like an operation would replace it (``ops.status`` a module)."""
    import importlib
    import pkgutil

    from devbox.core import ops

    submodules = {m.name for m in pkgutil.iter_modules(ops.__path__)}
    assert not submodules & set(ops._WHERE)
    for name in submodules:
        importlib.import_module(f"devbox.core.ops.{name}")
    assert all(callable(getattr(ops, name)) for name in ops.__all__)


def quiet_python(code: str) -> str:
    """What ``code`` prints, run with every warning an error; it must print nothing else."""
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr == ""
    return out.stdout.strip()


def test_start_work_does_not_load_vm_mode() -> None:
    """The ops index promises it (review of issue 14: results.py imported builder and libvirt);
    nor what a new environment does not use (issue 19: each was milliseconds of its CPU
    before the container's create): the review module, the agents' state, a thread pool,
    and podman-py's unused rich.progress and character-set detector."""
    code = (
        "import sys, devbox.cli\n"
        "from devbox.core import ops\n"
        "from devbox.core.podman_client import import_podman_py\n"
        "ops.start_work, ops.list_worktrees, ops.list_containers, ops.add_worktree\n"
        "import_podman_py()\n"
        "print(sorted(m for m in ('devbox.core.builder', 'devbox.core.libvirt', 'devbox.core.terraform', "
        "'devbox.core.git_merge', 'devbox.core.agent_state', 'concurrent.futures', 'rich.progress', "
        "'charset_normalizer') if m in sys.modules))\n"
    )
    assert quiet_python(code) == "[]"


def test_podman_py_without_a_detector_reads_utf8_and_leaves_the_detector_importable() -> None:
    """requests without a character-set detector reads an undeclared reply as UTF-8, and the
    blocked module is importable again once podman-py is loaded."""
    code = (
        "import sys\n"
        "from devbox.core.podman_client import import_podman_py\n"
        "import_podman_py()\n"
        "import requests\n"
        "r = requests.Response(); r._content = 'caf\\u00e9'.encode(); r.headers['Content-Type'] = 'text/plain'\n"
        "import charset_normalizer\n"
        "print(r.apparent_encoding, r.text, 'charset_normalizer' in sys.modules)\n"
    )
    assert quiet_python(code) == "utf-8 caf\u00e9 True"


def test_the_command_holds_the_gc_while_it_starts_and_gives_it_back() -> None:
    """Off at the start (a cycle made meanwhile stays); back after GC_BACK: the cycle is
    collected, and what was alive then is frozen."""
    code = (
        "import gc, weakref\n"
        "from devbox import entry\n"
        "entry.GC_BACK = 0.2\n"
        "back = entry.hold_gc()\n"
        "class Node: pass\n"
        "a = Node(); a.me = a; ref = weakref.ref(a); del a\n"
        "held = not gc.isenabled() and ref() is not None\n"
        "back.join(10)\n"
        "print(held, gc.isenabled(), gc.get_freeze_count() > 0, ref() is None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True", "True"]


def test_a_command_line_builds_only_its_commands_parser() -> None:
    """``cli.OWN``/``cli.ELSEWHERE`` name every top-level command where it is registered;
    a command line imports and builds only its own (the full parser for help or a typo)."""
    import argparse

    from devbox import cli

    def top(parser: argparse.ArgumentParser) -> list[str]:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return list(sub.choices)

    assert top(cli.build_parser()) == [*cli.OWN, *(w for names in cli.ELSEWHERE.values() for w in names)]
    for names in (cli.OWN, *cli.ELSEWHERE.values()):
        assert top(cli.build_parser(["--repo", "x", "-v", names[-1], "--help"])) == list(names)
    assert len(top(cli.build_parser(["-h", "vm"]))) == len(top(cli.build_parser()))
    assert len(top(cli.build_parser(["no-such-command"]))) == len(top(cli.build_parser()))
    code = "import sys; from devbox import cli; cli.build_parser(['start-work', 'b']); print(sorted(m for m in "
    code += "sys.modules if m.startswith('devbox.cli_') and m != 'devbox.cli_common'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
