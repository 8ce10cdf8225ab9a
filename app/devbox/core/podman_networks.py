"""Networks, through podman-py: the internal network an environment whose egress is
``allow`` gets (core/ops/egress.py), its subnets, and its removal. Apart from ``podman.py``
to keep that adapter readable; ``Podman`` inherits these (they use its ``client`` and ``api``)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any


class ContainerNetworks:
    """The network half of the podman adapter."""

    @property
    def client(self) -> Any:  # podman-py's PodmanClient (imported by podman.py only)
        raise NotImplementedError  # Podman.client

    def api(self, doing: str) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError  # Podman.api

    def create_network(self, name: str, *, internal: bool, labels: Mapping[str, str]) -> tuple[str, ...]:
        """A bridge network (``internal``: no route out, no gateway on the host, no DNS);
        its subnets, as podman chose them."""
        with self.api(f"creating network {name}"):
            net = self.client.networks.create(name, internal=internal, dns_enabled=False, labels=dict(labels))
            return _subnets(net.attrs)

    def network_subnets(self, name: str) -> tuple[str, ...] | None:
        """The network's subnets; None when there is no such network."""
        with self.api(f"inspecting network {name}"):
            try:
                return _subnets(self.client.networks.get(name).attrs)
            except Exception as exc:
                if type(exc).__name__.endswith("NotFound"):
                    return None
                raise

    def networks(self, labels: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
        """Networks carrying ``labels``: name -> subnets."""
        filters = {"label": [f"{k}={v}" if v else k for k, v in labels.items()]}
        with self.api("listing networks"):
            found = self.client.networks.list(filters=filters)
            return {str(n.attrs.get("name", n.name)): _subnets(n.attrs) for n in found}

    def remove_network(self, name: str) -> bool:
        """Remove a network no container uses; False when it did not exist."""
        with self.api(f"removing network {name}"):
            try:
                self.client.networks.remove(name, force=False)
            except Exception as exc:
                if type(exc).__name__.endswith("NotFound"):
                    return False
                raise
            return True


def _subnets(attrs: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(s["subnet"]) for s in attrs.get("subnets") or () if isinstance(s, dict) and s.get("subnet"))
