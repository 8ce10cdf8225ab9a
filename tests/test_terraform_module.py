"""The VM module (terraform/) with the real terraform and the real libvirt provider 0.8.3,
built here from the Go module proxy into a filesystem mirror (the Terraform registry cannot
be reached from these machines)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

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


@pytest.fixture(scope="session")
def provider_mirror() -> Path:
    """A filesystem mirror holding the provider, built once per clone (tests/tfprovider)."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    mirror = CACHE / "terraform-mirror"
    binary = mirror / "registry.terraform.io" / "dmacvicar" / "libvirt" / VERSION / f"linux_{arch}"
    binary = binary / f"terraform-provider-libvirt_v{VERSION}"
    if not binary.exists():
        go = shutil.which("go") or "/usr/local/go/bin/go"
        if not Path(go).exists():
            pytest.fail("the Go toolchain is needed to build terraform-provider-libvirt")
        binary.parent.mkdir(parents=True, exist_ok=True)
        src = ROOT / "tests" / "tfprovider"
        tmp = binary.with_suffix(".tmp")
        res = subprocess.run(
            [go, "build", "-o", str(tmp), "github.com/dmacvicar/terraform-provider-libvirt"],
            cwd=src,
            env=go_env(),
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        tmp.rename(binary)
    return mirror


def terraform(workdir: Path, cli_config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(cli_config), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    return subprocess.run(
        ["terraform", f"-chdir={workdir}", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_module_inits_from_the_mirror_and_validates(provider_mirror: Path, tmp_path: Path) -> None:
    module = tmp_path / "module"
    shutil.copytree(ROOT / "terraform", module, ignore=shutil.ignore_patterns(".terraform*"))
    cli = tmp_path / "terraformrc"
    cli.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{provider_mirror}"\n  }}\n}}\n')
    init = terraform(module, cli, "init", "-input=false", "-no-color")
    assert init.returncode == 0, init.stdout + init.stderr
    assert f"Installed dmacvicar/libvirt v{VERSION}" in init.stdout
    valid = terraform(module, cli, "validate", "-json")
    report = json.loads(valid.stdout)
    assert report["valid"] is True, report
    fmt = subprocess.run(["terraform", "fmt", "-check", "-recursive", str(ROOT / "terraform")], capture_output=True)
    assert fmt.returncode == 0


def test_offline_without_a_mirror_says_so(tmp_path: Path) -> None:
    module = tmp_path / "module"
    shutil.copytree(ROOT / "terraform", module, ignore=shutil.ignore_patterns(".terraform*"))
    cli = tmp_path / "terraformrc"
    cli.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{tmp_path / "empty"}"\n  }}\n}}\n')
    init = terraform(module, cli, "init", "-input=false", "-no-color")
    assert init.returncode != 0 and "dmacvicar/libvirt" in init.stderr
