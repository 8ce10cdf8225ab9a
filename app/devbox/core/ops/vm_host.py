"""Where this checkout's VM lives: this machine, or a ``[hosts.NAME]`` (``vm up --host``).

One VM per checkout, wherever it is: the place is recorded beside terraform's state
(``.build/terraform/host``) and every later VM command (status, ssh, dir and git transfers,
down, the dashboard) follows it. Moving a VM that exists is refused: terraform would make
the new one and never destroy the old (its provider's ``uri`` is not part of any
resource), so ``vm down`` comes first, which forgets the place.
"""

from __future__ import annotations

from devbox.core import hosts, terraform
from devbox.core.errors import ConfigError, Refused
from devbox.core.events import Reporter
from devbox.core.host_config import LOCAL
from devbox.core.session import Devbox


def place(session: Devbox, runner: terraform.Runner, host: str | None, report: Reporter) -> None:
    """Record ``host`` as the VM's place (refused while a VM exists elsewhere); say where
    the VM is made. The host's key is made readable for terraform's provider."""
    s = session.settings
    current = session.vm_host
    now = current.name if current else LOCAL
    wanted = now if host is None else host
    if wanted != LOCAL and wanted not in s.hosts:
        known = ", ".join([LOCAL, *sorted(s.hosts)])
        raise ConfigError(f"there is no host {wanted!r} in devbox.toml", f"use one of: {known} (see [hosts.NAME])")
    if wanted != now:
        if runner.has_state():
            raise Refused(
                f"this checkout's VM lives on {now}: devbox keeps one VM per checkout",
                f"remove it first (./vm-down.sh names what is lost), then ./vm-up.sh --host {wanted}",
            )
        record = hosts.vm_record(s)
        if wanted == LOCAL:
            record.unlink(missing_ok=True)
        else:
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(wanted + "\n")
    spec = s.hosts.get(wanted)
    if spec is None:
        return
    report.log(f"the VM is on host {spec.name} ({spec.libvirt_uri}); ssh to it goes through {spec.ssh}")
    hosts.terraform_known_hosts(s, spec)
