"""The libvirt adapter against libvirt's own test driver (``test:///default``: real
libvirt, an in-process hypervisor whose state lives while a connection holds it): listing
many domains, owner tags, the fallback teardown's limits, lifecycle events."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devbox.core import libvirt as lv
from devbox.core.errors import ExitCode, NotAvailable

URI = "test:///default"


@pytest.fixture
def conn() -> Iterator[Any]:
    import libvirt

    c = libvirt.open(URI)
    yield c
    c.close()


def define(conn: Any, name: str, repo: str, *, start: bool = True) -> None:
    xml = (
        f"<domain type='test'><name>{name}</name><description>devbox:{repo}</description>"
        "<memory unit='MiB'>1024</memory><vcpu>2</vcpu><os><type>hvm</type></os>"
        "<devices><interface type='network'><source network='default'/></interface></devices></domain>"
    )
    dom = conn.defineXML(xml)
    if start:
        dom.create()


def test_lists_only_this_checkouts_domains_among_many(conn: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    for i in range(120):
        define(conn, f"devbox-{tag}-{i:03d}", f"/repo/{tag}/{i % 3}", start=i % 2 == 0)
    conn.defineXML(f"<domain type='test'><name>plain-{tag}</name><memory>1024</memory><os><type>hvm</type></os>"
                   "</domain>")  # fmt: skip
    started = time.monotonic()
    mine = lv.list_vms(URI, f"/repo/{tag}/1")
    elapsed = time.monotonic() - started
    assert len(mine) == 40 and all(v.repo == f"/repo/{tag}/1" for v in mine)
    assert [v.name for v in mine] == sorted(v.name for v in mine)
    assert {v.state for v in mine} == {"running", "shut off"}
    running = next(v for v in mine if v.running)
    assert running.vcpus == 2 and running.memory_mib == 1024 and running.mac.startswith("52:54:00")
    assert all(v.ip == "" for v in mine if not v.running)
    assert f"plain-{tag}" not in {v.name for v in lv.list_vms(URI)}  # untagged domains are not devbox's
    assert elapsed < 5  # a sanity bound, not a benchmark: 120 domains in one connection


def test_teardown_removes_only_what_devbox_named(conn: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    pool = conn.storagePoolLookupByName("default-pool")
    define(conn, f"devbox-{tag}", "/repo/a")
    for vol in (f"devbox-{tag}-root-k.qcow2", f"devbox-{tag}-base-k.qcow2", f"devbox-{tag}x-root.qcow2", f"{tag}.img"):
        pool.createXML(f"<volume><name>{vol}</name><capacity>1024</capacity></volume>", 0)
    with pytest.raises(lv.LibvirtFailed) as refused:
        lv.teardown(URI, tag, "/repo/b", "default-pool")  # another checkout's VM of that name
    assert refused.value.exit_code == ExitCode.VM_FAILED and "not this checkout's VM" in refused.value.message
    gone = lv.teardown(URI, tag, "/repo/a", "default-pool")
    assert gone.domain == f"devbox-{tag}"
    assert sorted(gone.volumes) == [f"devbox-{tag}-base-k.qcow2", f"devbox-{tag}-root-k.qcow2"]
    left = pool.listVolumes()
    assert f"devbox-{tag}x-root.qcow2" in left and f"{tag}.img" in left  # not ours: kept
    assert f"devbox-{tag}" not in [d.name() for d in conn.listAllDomains()]


def test_lifecycle_events_reach_the_watcher(conn: Any) -> None:
    tag = uuid.uuid4().hex[:6]
    seen: list[tuple[str, str]] = []
    stop = threading.Event()
    ready = threading.Event()
    watcher = threading.Thread(target=lv.watch, args=(URI, lambda d, e: seen.append((d, e)), stop, ready), daemon=True)
    watcher.start()
    assert ready.wait(10)  # subscribed: the domain's events cannot be missed
    # the watcher holds its own connection: the test driver's state is per connection group,
    # so the domain is made through a connection the watcher shares (same URI, same process)
    define(conn, f"devbox-{tag}", "/repo/a")
    deadline = time.monotonic() + 10
    while (f"devbox-{tag}", "started") not in seen and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    watcher.join(5)
    assert (f"devbox-{tag}", "started") in seen


def test_unreachable_libvirtd_is_one_line_with_a_fix() -> None:
    with pytest.raises(NotAvailable) as err:
        lv.list_vms("qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    assert "libvirtd is not reachable" in err.value.message and "systemctl" in err.value.remedy
