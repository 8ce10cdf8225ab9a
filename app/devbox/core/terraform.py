"""The terraform adapter: init, plan -detailed-exitcode, apply of the saved plan (streamed
as ``-json`` events), destroy and output, against the module in ``terraform/`` with all
state under ``.build/terraform/``.

python-terraform (the card's choice) builds the argument lists: its ``generate_cmd_string``
turns keyword options into flags well. It does not run anything here: its ``cmd`` cannot
stream (``synchronous=False`` leaks a bogus flag), its ``destroy`` passes ``-force``
(removed in Terraform 0.15), and every process of devbox goes through ``core/proc.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from devbox.core import plan_launch, proc
from devbox.core.config import Settings
from devbox.core.errors import Cancelled, ConfigError, DevboxError, NotAvailable, ToolMissing, ToolTimeout, VmFailed
from devbox.core.events import Reporter
from devbox.core.filesystem import read_json, write_json

# The module's contract: what devbox passes and reads (tests/test_terraform_module.py
# checks these against terraform/variables.tf and terraform/outputs.tf).
VARIABLES = frozenset(
    {
        "libvirt_uri", "name", "repo", "disk_path", "disk_key", "pool", "network", "user", "ssh_public_key",
        "memory_mib", "vcpus", "disk_size_bytes", "domain_type", "cpu_mode", "wait_for_lease", "qemu_agent",
        "network_filter",
    }
)  # fmt: skip
OUTPUTS = frozenset({"name", "ip", "mac", "disk_key"})
# The libvirt provider deadlocks now and then when two volume streams run at once over its
# one libvirt connection (uploading the base disk and the cloud-init ISO in apply; reading
# the ISO back while refreshing the rest in plan and destroy): seen here in 4 of ~14 CI
# runs, blocked in a futex; upstream dmacvicar/terraform-provider-libvirt#594, whose
# workaround is -parallelism=1. One resource at a time costs little for four resources.
PARALLELISM = 1
# destroying one VM takes seconds: a destroy still running after this is a hung provider,
# stopped and run once more (it starts from the state the first left); after two hangs vm
# down falls back to libvirt. An apply uploads the disk and waits for the VM's address:
# one still running after 30 minutes is stopped (the next vm up finishes from its state).
DESTROY_TIMEOUT = 120.0
APPLY_TIMEOUT = 1800.0
PLAN_TIMEOUT = 120.0
PLAN_REMEDY = "check libvirtd answers (virsh -c URI list), then run again"
T = TypeVar("T")
INSTALL_REMEDY = "install terraform 1.5 or newer (https://developer.hashicorp.com/terraform/install)"


class TerraformFailed(VmFailed):
    pass


@dataclass(frozen=True)
class Plan:
    changes: bool  # plan -detailed-exitcode said 2
    path: Path
    reasons: tuple[str, ...]
    var_file: Path  # the variables it planned with


def _argv(command: str, *args: str, **options: Any) -> list[str]:
    from python_terraform import Terraform  # argument building only (see the module docstring)

    exe = shutil.which("terraform")
    if exe is None:
        raise NotAvailable("terraform is not installed (no `terraform` on PATH)", INSTALL_REMEDY)
    return list(Terraform(terraform_bin_path=exe).generate_cmd_string(command, *args, **options))


class Runner:
    """terraform for one checkout: module ``terraform/``, state and plans in ``.build/terraform/``."""

    def __init__(self, settings: Settings) -> None:
        self.module = settings.terraform_dir
        self.dir = settings.build_path("terraform")
        self.state = self.dir / "terraform.tfstate"
        self.vars = self.dir / "vars.tfvars.json"
        self.plan_file = self.dir / "plan.tfplan"
        # present while an apply runs, removed when terraform ends on its own: found by the
        # next run when devbox (and maybe terraform) was stopped mid-apply
        self.applying = self.dir / "applying.json"

    def env(self) -> dict[str, str | None]:
        return {
            "TF_DATA_DIR": str(self.dir / ".terraform"),
            "TF_IN_AUTOMATION": "1",
            "CHECKPOINT_DISABLE": "1",  # the update check would wait for a network
            "TF_INPUT": "0",
        }

    def _run(self, argv: list[str], *, timeout: float = 600.0) -> proc.Completed:
        try:
            return proc.run(argv, tool="terraform", cwd=self.module, env=self.env(), timeout=timeout)
        except ToolMissing:
            raise NotAvailable("terraform is not installed (no `terraform` on PATH)", INSTALL_REMEDY) from None

    def check_ready(self) -> None:
        """What ``vm up`` needs before it builds anything: the module and terraform itself."""
        if not (self.module / "main.tf").is_file():
            raise ConfigError(
                f"there is no terraform module at {self.module} (no main.tf)",
                "restore terraform/ from git, or point paths.terraform in devbox.toml at the module",
            )
        if shutil.which("terraform") is None:
            raise NotAvailable("terraform is not installed (no `terraform` on PATH)", INSTALL_REMEDY)

    def module_digest(self) -> str:
        h = hashlib.sha256()
        for p in sorted(self.module.glob("*.tf*")):
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
        return h.hexdigest()

    def init(self, report: Reporter) -> None:
        """``terraform init`` once per module version (offline when the CLI config has a mirror)."""
        if not (self.module / "main.tf").is_file():
            raise ConfigError(
                f"there is no terraform module at {self.module} (no main.tf)",
                "restore terraform/ from git, or point paths.terraform in devbox.toml at the module",
            )
        if self.initialized():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        digest = self.module_digest()
        report.log("terraform init")
        res = self._run(_argv("init", input=False, no_color=_flag()))
        if not res.ok:
            if "dmacvicar/libvirt" in res.stderr:
                raise NotAvailable(
                    "terraform cannot install the libvirt provider (dmacvicar/libvirt = 0.8.3)",
                    "reach registry.terraform.io, or point TF_CLI_CONFIG_FILE at a filesystem_mirror holding it",
                )
            raise TerraformFailed(f"terraform init failed: {res.last_error()}", "see `terraform init` in terraform/")
        (self.dir / "init.sha").write_text(digest)

    def initialized(self) -> bool:
        """``terraform init`` ran for this version of the module."""
        stamp = self.dir / "init.sha"
        try:
            return stamp.read_text() == self.module_digest() and (self.dir / ".terraform").is_dir()
        except OSError:
            return False

    def plan(
        self, variables: Mapping[str, Any], report: Reporter, cancel: threading.Event, *,
        var_file: Path | None = None, out: Path | None = None,
    ) -> Plan:  # fmt: skip
        """``plan -detailed-exitcode -out``: 0 nothing to do, 2 changes (with the reasons).
        ``var_file`` and ``out``: other files than the ones apply uses (core/early_plan.py)."""
        unknown = set(variables) - VARIABLES
        if unknown:
            raise DevboxError(f"unknown terraform variables: {sorted(unknown)}", "this is a devbox bug: report it")
        var_file = var_file or self.vars
        out = out or self.plan_file
        write_json(var_file, dict(variables))
        argv = self.plan_argv(var_file, out)
        # one VM plans in under a second: a plan still running after PLAN_TIMEOUT is a hung
        # provider; a plan changes nothing, so it is run once more
        done = _once_more_if_hung("plan", PLAN_TIMEOUT, report, lambda: proc.run(
            argv, tool="terraform", cwd=self.module, env=self.env(), timeout=PLAN_TIMEOUT, cancel=cancel,
            remedy=PLAN_REMEDY,
        ))  # fmt: skip
        if done.returncode in (0, 2):  # the next vm up starts this command before its imports
            plan_launch.record(self.dir, self.plan_argv(Path(plan_launch.VARS), Path(plan_launch.PLAN)),
                               str(self.module), self.env(), self.state, self.applying)  # fmt: skip
        return self.plan_result(done, var_file, out)

    def plan_argv(self, var_file: Path, out: Path) -> list[str]:
        return _argv(
            "plan",
            detailed_exitcode=_flag(),
            input=False,
            no_color=_flag(),
            lock_timeout="60s",
            state=str(self.state),
            out=str(out),
            var_file=str(var_file),
            parallelism=PARALLELISM,  # its refresh reads the cloud-init ISO back: the same deadlock
        )

    def plan_result(self, done: proc.Completed, var_file: Path, out: Path) -> Plan:
        """What a finished ``plan -detailed-exitcode`` answered."""
        if done.returncode == 0:
            return Plan(False, out, (), var_file)
        if done.returncode != 2:
            raise TerraformFailed(f"terraform plan failed: {done.last_error()}", "see the terraform message above")
        return Plan(True, out, self._reasons(out), var_file)

    def _reasons(self, plan_file: Path) -> tuple[str, ...]:
        """Why the plan changes things, from ``terraform show -json`` of the saved plan."""
        res = self._run(_argv("show", str(plan_file), json=_flag(), no_color=_flag()))
        try:
            data = json.loads(res.stdout)
        except ValueError:
            return ("terraform plans changes",)
        reasons: list[str] = []
        recorded = read_json(self.dir / "applied.json") or {}
        if isinstance(recorded, dict) and recorded.get("module") not in (None, self.module_digest()):
            reasons.append(f"{self.module.name}/ changed")
        for rc in data.get("resource_changes") or []:
            actions = (rc.get("change") or {}).get("actions") or []
            if actions == ["no-op"] or actions == ["read"]:
                continue
            before = (rc.get("change") or {}).get("before") or {}
            after = (rc.get("change") or {}).get("after") or {}
            if (
                rc.get("type") == "libvirt_volume"
                and rc.get("name") == "base"
                and before
                and before.get("name") != after.get("name")
            ):
                reasons.append("disk key changed (a new disk)")
            elif not before:
                reasons.append(f"{rc.get('address')} to create")
            elif "delete" in actions and "create" in actions:
                reasons.append(f"{rc.get('address')} to replace")
            else:
                reasons.append(f"{rc.get('address')} to {'/'.join(actions)}")
        return tuple(dict.fromkeys(reasons)) or ("terraform plans changes",)

    def apply(self, plan: Plan, report: Reporter, cancel: threading.Event) -> None:
        """Apply the saved plan, its ``-json`` messages as events."""
        argv = _argv("apply", str(plan.path), json=_flag(), input=False, lock_timeout="60s", state=str(self.state),
                     parallelism=PARALLELISM)  # fmt: skip
        write_json(self.applying, {"pid": os.getpid(), "started": time.time()})
        try:
            self._stream(argv, report, cancel, "apply", timeout=APPLY_TIMEOUT)
        except Cancelled:
            raise  # stopped: what it made may not be in the state (the marker stays)
        except BaseException:
            self.applying.unlink(missing_ok=True)  # terraform ended on its own: its state is whole
            raise
        self.applying.unlink(missing_ok=True)
        # what this VM was made with: `vm status` compares the settings against it
        applied = read_json(plan.var_file)
        if plan.var_file != self.vars:
            write_json(self.vars, applied)  # an early plan's (core/early_plan.py): the next plan starts from it
        write_json(self.dir / "applied.json", {"module": self.module_digest(), "variables": applied})

    def interrupted(self) -> bool:
        """An apply was stopped (Ctrl-C, a closed terminal, a kill) before terraform ended."""
        return self.applying.exists()

    def recorded(self) -> tuple[frozenset[str], frozenset[str]]:
        """The domain IDs (UUIDs) and volume names terraform's state records."""
        data = read_json(self.state)
        domains: set[str] = set()
        volumes: set[str] = set()
        for res in (data or {}).get("resources") or () if isinstance(data, dict) else ():
            for inst in res.get("instances") or ():
                attrs = inst.get("attributes") or {}
                if res.get("type") == "libvirt_domain":
                    domains.add(str(attrs.get("id", "")))
                elif res.get("type") in ("libvirt_volume", "libvirt_cloudinit_disk"):
                    volumes.add(str(attrs.get("name", "")))
        return frozenset(domains), frozenset(volumes)

    def destroy(self, variables: Mapping[str, Any], report: Reporter, cancel: threading.Event) -> None:
        write_json(self.vars, dict(variables))
        argv = _argv(
            "destroy",
            json=_flag(),
            auto_approve=_flag(),
            input=False,
            state=str(self.state),
            var_file=str(self.vars),
            parallelism=PARALLELISM,
        )
        _once_more_if_hung("destroy", DESTROY_TIMEOUT, report,
                           lambda: self._stream(argv, report, cancel, "destroy", timeout=DESTROY_TIMEOUT))  # fmt: skip
        for stale in (self.plan_file, self.dir / "applied.json"):
            if stale.exists():
                stale.unlink()

    def _stream(
        self, argv: list[str], report: Reporter, cancel: threading.Event, what: str, timeout: float | None = None
    ) -> None:
        errors: list[str] = []

        def sink_json(event: Any) -> None:
            text = getattr(event, "text", None)
            if text is None or not text.startswith("{"):
                report.emit(event)
                return
            try:
                msg = json.loads(text)
            except ValueError:
                report.emit(event)
                return
            kind = msg.get("type")
            if kind == "diagnostic" and (msg.get("diagnostic") or {}).get("severity") == "error":
                errors.append(str(msg.get("@message", "")))
            if kind in ("version", "outputs"):
                return
            report.log(str(msg.get("@message", "")), source="terraform", stream="stdout")

        done = proc.stream(
            argv,
            Reporter(sink_json, report.op, report.subject),
            cancel,
            source="terraform",
            cwd=self.module,
            env=self.env(),
            grace=60.0,  # terraform finishes the resource it is on when interrupted
            timeout=timeout,
        )
        if done.cancelled:
            raise Cancelled(f"terraform {what} interrupted", "run it again: terraform picks up from its state")
        if done.returncode != 0:
            first = errors[0] if errors else done.last_error()
            raise TerraformFailed(f"terraform {what} failed: {first[:300]}", "see the terraform messages above")

    def output(self) -> dict[str, Any]:
        """The module's outputs, read from the state file (what ``terraform output -json``
        prints, without a terraform process: the no-op ``vm up`` pays for ``plan`` only)."""
        data = read_json(self.state)
        if not isinstance(data, dict):
            return {}
        outputs = data.get("outputs") or {}
        return {k: v.get("value") for k, v in outputs.items() if k in OUTPUTS and isinstance(v, dict)}

    def serial(self) -> int | None:
        """The state's serial: terraform raises it at every write of the state (an apply)."""
        data = read_json(self.state)
        serial = data.get("serial") if isinstance(data, dict) else None
        return serial if isinstance(serial, int) else None

    def has_state(self) -> bool:
        data = read_json(self.state)
        return isinstance(data, dict) and bool(data.get("resources"))


def _once_more_if_hung(what: str, timeout: float, report: Reporter, run: Callable[[], T]) -> T:
    """``run()``; stopped by its timeout (a hung provider), run once more, then given up."""
    try:
        return run()
    except ToolTimeout:
        report.log(f"terraform {what} hung for {timeout:.0f} s (stopped): running it once more",
                   source="terraform", stream="stderr")  # fmt: skip
        return run()


def _flag() -> Any:
    from python_terraform import IsFlagged

    return IsFlagged


def version() -> tuple[bool, str]:
    """``terraform version``'s first line (for host checks); False with the error when it fails."""
    exe = shutil.which("terraform")
    if exe is None:
        return False, "not on PATH"
    res = proc.run([exe, "version"], tool="terraform", env={"CHECKPOINT_DISABLE": "1"}, timeout=30)
    return (True, (res.stdout.splitlines() or ["?"])[0]) if res.ok else (False, res.last_error())


def clear(settings: Settings) -> None:
    """Forget the state (after a fallback teardown through libvirt)."""
    d = settings.build_path("terraform")
    for name in (
        "terraform.tfstate",
        "terraform.tfstate.backup",
        "plan.tfplan",
        "applied.json",
        "applying.json",
        "upgraded.json",
    ):
        p = d / name
        if p.exists():
            os.unlink(p)
