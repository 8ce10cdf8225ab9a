"""The stand-in for Claude Code (tests/fake_claude, Go), built once per clone into the
ignored ``.cache/`` with the machine's Go toolchain, for the test image's ``claude``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tfmirror import CACHE, go_env

SOURCE = Path(__file__).resolve().parent / "fake_claude"


def build() -> Path:
    out = CACHE / "fake-claude" / "claude"
    stamp = out.with_suffix(".src")
    source = (SOURCE / "main.go").read_bytes()
    if out.exists() and stamp.exists() and stamp.read_bytes() == source:
        return out
    go = shutil.which("go") or "/usr/local/go/bin/go"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([go, "build", "-o", str(out), "."], cwd=SOURCE, env={**go_env(), "CGO_ENABLED": "0"}, check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    stamp.write_bytes(source)
    return out
