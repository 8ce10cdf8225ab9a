"""Remove the static DHCP entries that earlier test and benchmark runs' VMs left in the
``default`` network, before the VMs of this run need leases (.ci/run runs it first).

terraform-provider-libvirt 0.8.3 turns every ``wait_for_lease`` lease into a static entry
of the network and never removes it; devbox removes its own since ``libvirt.drop_reservations``,
but a machine that ran the tests before that kept one entry per VM ever made, until the
network's 253 addresses were all reserved and new test VMs never got a lease. Only entries
named like the tests' and benchmarks' VMs (``devbox-t*``, ``devbox-bench*``) whose domain no
longer exists are removed: a VM of a run beside this one keeps its entry.
"""

from __future__ import annotations

import sys

from devbox.core import libvirt

URI = "qemu:///system"
PREFIXES = ("devbox-t", "devbox-bench")


def main() -> int:
    stale = sorted({name for name, _, _ in libvirt.stale_reservations(URI, "default") if name.startswith(PREFIXES)})
    dropped = [pair for name in stale for pair in libvirt.drop_reservations(URI, "default", name[7:])]  # "devbox-"
    print(f"removed {len(dropped)} static DHCP entries of {len(stale)} test VMs that no longer exist")
    return 0


if __name__ == "__main__":
    sys.exit(main())
