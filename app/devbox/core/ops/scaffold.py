"""``devbox init``: set up devbox in any git repository, from the installed devbox's
templates (core/templates.py), and ``devbox init --check``: does the repository's copy of
what devbox relies on (the entrypoint, the agent hooks, the VM module) match them.

No session: there is no devbox.toml yet. Every file is decided before one is written: an
existing file that differs refuses the whole run (naming the files) unless ``force``,
which keeps a ``.orig`` copy of each file it replaces; a file that already has the
template's bytes is left alone, so a second run changes nothing.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from devbox.core import git, templates
from devbox.core.errors import BadName, Cancelled, Refused
from devbox.core.events import Reporter, Sink, Subject, null_sink
from devbox.core.filesystem import write_atomic
from devbox.core.repo_root import CONFIG_NAME
from devbox.core.templates import Template

IGNORED = ".build/"  # the line devbox adds to .gitignore


@dataclass(frozen=True)
class Initialized:
    root: Path
    written: tuple[str, ...]
    replaced: tuple[str, ...]  # each kept as FILE.orig
    unchanged: tuple[str, ...]
    next_command: str


@dataclass(frozen=True)
class TemplateCheck:
    root: Path
    differs: tuple[str, ...]
    missing: tuple[str, ...]
    same: tuple[str, ...]
    note: str = ""  # why some files were not compared

    @property
    def ok(self) -> bool:
        return not (self.differs or self.missing)


def _wanted(with_vm: bool, base: str) -> list[Template]:
    files = [templates.settings_file(base)]
    bootc = templates.tree("bootc")
    if base:  # the shared base has the entrypoint and hooks: the project's layer alone
        bootc = [templates.thin_containerfile(base)]
    files += bootc
    if with_vm:
        files += templates.tree("terraform")
    files += templates.shims(with_vm)
    return files


def init_project(
    start: Path, *, with_vm: bool = False, force: bool = False, base: str = "", sink: Sink = null_sink,
    cancel: threading.Event | None = None,
) -> Initialized:  # fmt: skip
    """Write devbox's files into the git checkout ``start`` is in (see the module)."""
    cancel = cancel or threading.Event()
    if base and (any(c.isspace() for c in base) or base.startswith("-")):
        raise BadName(f"--base {base!r} is not an image reference", "e.g. registry.example.com/team/devbox:43")
    root = git.checkout_root(start)
    report = Reporter(sink, "init", Subject("repo", str(root)))
    files = _wanted(with_vm, base)
    new, differ, same = [], [], []
    for t in files:
        path = root / t.path
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise Refused(f"{t.path} exists and is not a regular file", f"move {path} aside, then run this again")
        if not path.exists():
            new.append(t)
        elif path.read_bytes() == t.data and (os.stat(path).st_mode & 0o777) == t.mode:
            same.append(t)
        else:
            differ.append(t)
    if differ and not force:
        names = ", ".join(t.path for t in differ)
        raise Refused(f"{names}: exist(s) already and differ(s) from what devbox init writes; nothing was written",
                      "pass --force to replace them (yours stay as FILE.orig)")  # fmt: skip
    if cancel.is_set():
        raise Cancelled("interrupted: nothing written")
    report.step("start", f"setting up devbox in {root}")
    for t in differ:
        shutil.copy2(root / t.path, root / f"{t.path}.orig")
    for t in new + differ:
        write_atomic(root / t.path, t.data, t.mode)
        os.chmod(root / t.path, t.mode)  # write_atomic's mode is masked by the umask
    ignored = _ignore_build(root)
    written = tuple(t.path for t in new) + ((".gitignore",) if ignored else ())
    next_command = "./start-work BRANCH" if not with_vm else "./start-work BRANCH (or ./vm-up.sh for the VM)"
    report.step("done", f"{len(written)} file(s) written, {len(differ)} replaced, {len(same)} unchanged; "
                        f"next: {next_command}")  # fmt: skip
    return Initialized(root, written, tuple(t.path for t in differ), tuple(t.path for t in same), next_command)


def _ignore_build(root: Path) -> bool:
    """Add ``.build/`` to .gitignore unless a line already ignores it; True if added."""
    path = root / ".gitignore"
    text = path.read_text(errors="replace") if path.is_file() else ""
    if any(line.strip() in (".build", ".build/", "/.build", "/.build/") for line in text.splitlines()):
        return False
    sep = "" if not text or text.endswith("\n") else "\n"
    write_atomic(path, (text + sep + "# devbox: artifacts, caches, locks and logs\n" + IGNORED + "\n").encode())
    return True


def check_templates(start: Path) -> TemplateCheck:
    """The repository's entrypoint, agent hooks and terraform/ against the installed
    templates (a Containerfile or home directory you changed is yours: not compared)."""
    root = git.checkout_root(start)
    by_path = {t.path: t for t in templates.tree("bootc") + templates.tree("terraform")}
    relied = list(templates.RELIED_ON)
    if (root / "terraform").is_dir():
        relied += [p for p in by_path if p.startswith("terraform/")]
    note = ""
    if not (root / "bootc" / "entrypoint.sh").exists() and (root / CONFIG_NAME).is_file():
        text = (root / "bootc" / "Containerfile").read_text(errors="replace") if (root / "bootc").is_dir() else ""
        if "DEVBOX_BASE" in text:  # a project layer: the base image carries the entrypoint and hooks
            relied = [p for p in relied if not p.startswith("bootc/")]
            note = "bootc/ builds on image.base, which carries the entrypoint and hooks: not compared"
    differs, missing, same = [], [], []
    for p in relied:
        path = root / p
        if not path.is_file():
            missing.append(p)
        elif path.read_bytes() != by_path[p].data:
            differs.append(p)
        else:
            same.append(p)
    return TemplateCheck(root, tuple(differs), tuple(missing), tuple(same), note)
