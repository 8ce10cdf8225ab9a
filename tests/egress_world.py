"""The "outside" the egress tests reach (issue 28): a podman network this module makes and
removes, with two web servers (HTTP on 80, TLS on 443), a DNS server (dnsmasq, never
forwarding) answering ``allowed.test``, ``denied.test``, ``api.test``, ``host.test`` (this
machine's own address on that network, where a service of the test listens) and
``meta.test`` (169.254.169.254). No other address is ever a target. Shared by the egress
tests of containers (tests/test_egress.py) and of the TCG guest (tests/test_vm_agents.py).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import threading
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import SESSION
from rootfs import add_binaries, import_base, make_rootfs


def make_index(root: Path) -> None:
    """A PEP 503 simple index with one package, tinypkg 1.0, as a wheel made here by hand."""
    wheel = root / "packages" / "tinypkg-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    files = {
        "tinypkg/__init__.py": "ANSWER = 'installed through the egress proxy'\n",
        "tinypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: devbox-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{name},," + "\n" for name in files) + "tinypkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in {**files, "tinypkg-1.0.dist-info/RECORD": record}.items():
            zf.writestr(name, text)
    (root / "simple" / "tinypkg").mkdir(parents=True)
    link = f'<a href="/packages/{wheel.name}">{wheel.name}</a>'
    (root / "simple" / "tinypkg" / "index.html").write_text(f"<html><body>{link}</body></html>\n")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


def must(*args: str) -> str:
    res = podman(*args)
    assert res.returncode == 0, f"podman {' '.join(args)}: {res.stderr}"
    return res.stdout.strip()


@dataclass(frozen=True)
class World:
    network: str
    allowed: str  # addresses of the servers
    denied: str
    api: str
    index: str  # a Python package index (index.test): a wheel of tinypkg under /simple/
    dns: str
    gateway: str  # this machine, on the world's network
    host_port: int  # a service of the test listening on this machine


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"the host's own service\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def world(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("world")
    root = tmp / "rootfs"
    make_rootfs(root)
    add_binaries(root, ("/usr/bin/openssl", "/usr/sbin/dnsmasq"))
    image = f"localhost/devbox-test-world-{SESSION}:1"
    import_base("podman", root, image)
    certs = tmp / "certs"
    certs.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test",
                    "-addext", "subjectAltName=DNS:allowed.test,DNS:denied.test,DNS:api.test",
                    "-keyout", str(certs / "key.pem"), "-out", str(certs / "cert.pem")],
                   check=True, capture_output=True)  # fmt: skip
    certs.chmod(0o755)
    for f in certs.iterdir():
        f.chmod(0o644)
    net = f"devbox-test-world-{uuid.uuid4().hex[:8]}"
    must("network", "create", net)
    info = json.loads(must("network", "inspect", net))[0]
    subnet = ipaddress.ip_network(info["subnets"][0]["subnet"])
    gateway = str(info["subnets"][0].get("gateway") or next(subnet.hosts()))
    at = {name: str(subnet.network_address + n) for name, n in (("allowed", 10), ("denied", 11), ("api", 12),
                                                                 ("index", 13), ("dns", 53))}  # fmt: skip
    names: list[str] = []
    server = None
    try:
        for name in ("allowed", "denied", "api"):
            (tmp / name).mkdir()
            (tmp / name / "index.html").write_text(f"hello from {name}.test\n")
            serve = ("httpd -p 80 -h /srv && exec openssl s_server -quiet -accept 443 -cert /certs/cert.pem "
                     "-key /certs/key.pem -www")  # fmt: skip
            names.append(f"{net}-{name}")
            must("run", "-d", "--name", names[-1], "--network", net, "--ip", at[name], "-v", f"{tmp / name}:/srv:ro",
                 "-v", f"{certs}:/certs:ro", image, "sh", "-c", serve)  # fmt: skip
        make_index(tmp / "index")
        names.append(f"{net}-index")
        must("run", "-d", "--name", names[-1], "--network", net, "--ip", at["index"], "-v",
             f"{tmp / 'index'}:/srv:ro", image, "httpd", "-f", "-p", "80", "-h", "/srv")  # fmt: skip
        answers = [f"--address=/{n}.test/{at[n]}" for n in ("allowed", "denied", "api", "index")]
        answers += [f"--address=/host.test/{gateway}", "--address=/meta.test/169.254.169.254"]
        names.append(f"{net}-dns")
        must("run", "-d", "--name", names[-1], "--network", net, "--ip", at["dns"], image, "dnsmasq", "-k",
             "--no-resolv", "--no-hosts", "--user=root", "--pid-file=", *answers)  # fmt: skip
        # on this machine's address in the world only (the bridge has it once a container is on it)
        server = ThreadingHTTPServer((gateway, 0), _Hello)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield World(net, at["allowed"], at["denied"], at["api"], at["index"], at["dns"], gateway,
                    server.server_address[1])  # fmt: skip
    finally:
        if server is not None:
            server.shutdown()
        for name in names:
            podman("rm", "-f", "-t", "0", name)
        podman("network", "rm", "-f", net)
        podman("rmi", "-f", image)
