"""The VM module (terraform/) with the real terraform and the real libvirt provider 0.8.3,
built here from the Go module proxy into a filesystem mirror (the Terraform registry cannot
be reached from these machines)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tfmirror import VERSION

from conftest import ROOT


def terraform(workdir: Path, cli_config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # CHECKPOINT_DISABLE: terraform's update check would wait for a network these machines lack
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


def virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, timeout=120)


def test_runner_contract_matches_the_module() -> None:
    """The variables devbox passes and the outputs it reads are exactly the module's."""
    import re

    from devbox.core import terraform as tf

    text = {p.name: p.read_text() for p in (ROOT / "terraform").glob("*.tf")}
    declared = set(re.findall(r'^variable "([^"]+)"', text["variables.tf"], re.MULTILINE))
    outputs = set(re.findall(r'^output "([^"]+)"', text["outputs.tf"], re.MULTILINE))
    assert declared == tf.VARIABLES and outputs == tf.OUTPUTS


def test_runner_applies_for_real_then_plans_nothing_then_destroys(
    provider_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """core/terraform.py against real libvirtd (TCG: these machines' KVM cannot run stock
    guests) with a blank disk: plan 2 with reasons, apply streamed as events, the tagged
    domain, outputs, plan 0, a new disk key plans a replacement, destroy leaves nothing."""
    import threading
    import uuid

    from devbox.core import config, early_plan, plan_launch
    from devbox.core import terraform as tf
    from devbox.core.events import Event, LogLine, Reporter

    if shutil.which("virsh") is None or virsh("version").returncode != 0:
        pytest.fail("libvirtd is not reachable at qemu:///system (.ci/run installs and starts it)")
    proj = tmp_path / "proj"
    (proj / "bootc").mkdir(parents=True)
    shutil.copytree(ROOT / "terraform", proj / "terraform", ignore=shutil.ignore_patterns(".terraform*"))
    (proj / "devbox.toml").write_text("")
    cli = tmp_path / "terraformrc"
    cli.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{provider_mirror}"\n  }}\n}}\n')
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(cli))
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "64M"], check=True, capture_output=True)
    disk.chmod(0o644)
    tmp_path.chmod(0o755)
    name = f"t{uuid.uuid4().hex[:8]}"
    variables: dict[str, object] = {
        "name": name,
        "repo": str(proj),
        "disk_path": str(disk),
        "disk_key": uuid.uuid4().hex,
        "user": "dev",
        "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG4rT3vTt99Ox5kndS4HmgTrKBT8SKzhK4rhGkEVGlCI t",
        "memory_mib": 128,
        "vcpus": 1,
        "disk_size_bytes": 134217728,
        "domain_type": "qemu",
        "cpu_mode": "",  # host-passthrough under TCG is refused by libvirt: a variable the tests set
        "wait_for_lease": False,
        "qemu_agent": False,
    }
    runner = tf.Runner(config.load(proj, env={}))
    events: list[Event] = []
    report = Reporter(events.append, "vm-up")
    cancel = threading.Event()
    runner.init(report)
    try:
        plan = runner.plan(variables, report, cancel)
        assert plan.changes and "libvirt_domain.vm to create" in plan.reasons
        runner.apply(plan, report, cancel)
        lines = [e.text for e in events if isinstance(e, LogLine) and e.source == "terraform"]
        assert any("Creation complete" in line for line in lines)  # -json messages, streamed
        xml = virsh("dumpxml", f"devbox-{name}").stdout
        assert f"<description>devbox:{proj}</description>" in xml and "type='qemu'" in xml
        out = runner.output()
        assert out["name"] == f"devbox-{name}" and out["disk_key"] == variables["disk_key"]
        serial = runner.serial()
        assert serial is not None
        assert not runner.plan(variables, report, cancel).changes  # nothing to do
        assert runner.serial() == serial  # a plan never writes the state (core/early_plan.py counts on it)
        # an early plan's answer (core/early_plan.py) is used while the state is the one it
        # planned against, and thrown away when an apply (another vm up) came between
        early = early_plan.EarlyPlan(runner, variables, "in this test")
        used = early.answer(runner, variables)
        early.stop()
        assert used is not None and not used.changes
        # the one the entry point starts from the recorded command (core/plan_launch.py): used
        # while it is the command vm up would run now, else thrown away
        launched = plan_launch.start(["vm", "up", "--repo", str(proj)])
        assert launched is not None
        early = early_plan.EarlyPlan(runner, {}, "in this test", launched)
        used = early.answer(runner, variables)
        early.stop()
        assert used is not None and not used.changes
        record = proj / ".build" / "terraform" / plan_launch.RECORD
        changed = json.loads(record.read_text())
        changed["argv"].append("-refresh=false")
        record.write_text(json.dumps(changed))
        launched = plan_launch.start(["vm", "up", "--repo", str(proj)])
        assert launched is not None and "-refresh=false" in launched.argv
        other = early_plan.EarlyPlan(runner, {}, "in this test", launched)
        assert other.answer(runner, variables) is None and "another command" in other.unused  # (said with -v)
        assert launched.child.poll() is not None  # its terraform stopped
        early = early_plan.EarlyPlan(runner, variables, "in this test")
        early.thread.join()
        bigger = {**variables, "memory_mib": int(variables["memory_mib"]) + 32}
        runner.apply(runner.plan(bigger, report, cancel), report, cancel)
        assert runner.serial() != serial
        assert early.answer(runner, variables) is None and early.unused == "the state changed while it planned"
        assert not list((proj / ".build" / "terraform").glob("early-*"))
        variables["disk_key"] = uuid.uuid4().hex  # a new disk: the VM is replaced, and says why
        again = runner.plan(variables, report, cancel)
        assert again.changes and "disk key changed (a new disk)" in again.reasons
        assert (proj / ".build" / "terraform" / "terraform.tfstate").exists()
        assert not list((proj / "terraform").glob("*.tfstate"))  # state lives under .build/
    finally:
        runner.destroy(variables, report, cancel)
    assert virsh("dominfo", f"devbox-{name}").returncode != 0
    assert f"devbox-{name}-" not in virsh("vol-list", "default").stdout
    assert runner.output() == {} or not runner.has_state()
