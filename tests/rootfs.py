"""A tiny base image standing in for fedora-bootc (which cannot be pulled here).

busybox-static for the userland, plus this machine's bash, git, setpriv and tmux with the
shared libraries they load and the terminfo database: enough for bootc/entrypoint.sh, a
login shell, git commits and pre-commit hooks inside a container, and agents in tmux; the
stand-in agent is ``claude`` (tests/fake_claude).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

BINARIES = ("/usr/bin/bash", "/usr/bin/git", "/usr/bin/setpriv", "/usr/bin/tmux")
TERMINFO = ("/lib/terminfo", "/usr/share/terminfo")  # tmux needs its terminal's entry
LOCALES = ("/usr/lib/locale/C.utf8",)  # and a UTF-8 locale (Fedora's glibc has C.UTF-8 too)


def _libs(binary: str) -> set[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs: set[str] = set()
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.add(parts[2])
        elif parts and parts[0].startswith("/"):
            libs.add(parts[0])
    return libs


def add_binaries(root: Path, binaries: tuple[str, ...]) -> None:
    """This machine's ``binaries`` and the shared libraries they load, into the rootfs."""
    for lib in set().union(*(_libs(b) for b in binaries)):
        dest = root / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            shutil.copy2(os.path.realpath(lib), dest)
    for binary in binaries:
        shutil.copy2(binary, root / "bin" / Path(binary).name)


# squid (the egress proxy devbox runs from the environment's image, as bootc/Containerfile
# installs it) with the helpers and data it opens at start, and curl to reach through it
PROXY_BINARIES = ("/usr/sbin/squid", "/usr/bin/curl")
PROXY_DATA = ("/usr/lib/squid/unlinkd", "/usr/share/squid/mime.conf", "/usr/share/squid/icons",
              "/usr/share/squid-langpack/templates")  # fmt: skip


def add_proxy(root: Path) -> None:
    add_binaries(root, PROXY_BINARIES)
    for path in PROXY_DATA:
        dest = root / path.lstrip("/")
        if Path(path).is_dir():
            shutil.copytree(path, dest, symlinks=True, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
    (root / "usr/share/squid/errors").symlink_to("../squid-langpack")
    (root / "usr/share/squid-langpack/errorpage.css").write_text("")


def make_rootfs(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet not in ("bash", "setpriv", "busybox"):
            os.symlink("busybox", root / "bin" / applet)
    for d in ("usr", "etc", "var/tmp", "tmp", "home", "run", "proc", "sys", "dev", "etc/skel"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.symlink("../bin", root / "usr" / "bin")  # busybox applets and copied tools in one place
    for lib in set().union(*(_libs(b) for b in BINARIES)):
        dest = root / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dest)
    for binary in BINARIES:
        shutil.copy2(binary, root / "bin" / Path(binary).name)
    for terminfo in (*TERMINFO, *LOCALES):
        if Path(terminfo).is_dir():
            shutil.copytree(terminfo, root / terminfo.lstrip("/"), symlinks=True, dirs_exist_ok=True)
    add_proxy(root)
    from fakeagent import build

    shutil.copy2(build(), root / "bin" / "claude")  # the stand-in agent (tests/fake_claude)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "tmp").chmod(0o1777)
    (root / "var" / "tmp").chmod(0o1777)


def import_base(podman: str, root: Path, tag: str) -> None:
    tarball = root.parent / "rootfs.tar"
    with tarfile.open(tarball, "w") as tf:
        tf.add(root, arcname=".")
    subprocess.run([podman, "import", "--change", "CMD /bin/sh", str(tarball), tag], check=True, capture_output=True)
