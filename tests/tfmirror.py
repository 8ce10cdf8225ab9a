"""The terraform provider for the tests: dmacvicar/libvirt 0.8.3 built from the Go module
proxy (tests/tfprovider) into a filesystem mirror under the clone's ignored ``.cache/`` (the
Terraform registry cannot be reached from these machines), and a CLI config pointing at it."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSION = "0.8.3"
CACHE = ROOT / ".cache"  # the clone's own ignored folder: CI caches nothing elsewhere


def go_env() -> dict[str, str]:
    return {
        **os.environ,
        "GOMODCACHE": str(CACHE / "go" / "mod"),
        "GOCACHE": str(CACHE / "go" / "build"),
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
    }


def provider_mirror() -> Path:
    """A filesystem mirror holding the provider, built once per clone (tests/tfprovider)."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    mirror = CACHE / "terraform-mirror"
    binary = mirror / "registry.terraform.io" / "dmacvicar" / "libvirt" / VERSION / f"linux_{arch}"
    binary = binary / f"terraform-provider-libvirt_v{VERSION}"
    if not binary.exists():
        go = shutil.which("go") or "/usr/local/go/bin/go"
        if not Path(go).exists():
            raise RuntimeError("the Go toolchain is needed to build terraform-provider-libvirt")
        binary.parent.mkdir(parents=True, exist_ok=True)
        src = ROOT / "tests" / "tfprovider"
        tmp = binary.with_suffix(f".tmp{os.getpid()}")  # two sessions may build at once
        res = subprocess.run(
            [go, "build", "-o", str(tmp), "github.com/dmacvicar/terraform-provider-libvirt"],
            cwd=src,
            env=go_env(),
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if res.returncode != 0:
            raise RuntimeError(res.stderr[-3000:])
        tmp.rename(binary)
    return mirror


def cli_config(mirror: Path, path: Path) -> Path:
    """A terraform CLI config installing providers from ``mirror`` only."""
    path.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n')
    return path
