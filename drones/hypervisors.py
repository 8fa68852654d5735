"""A client for the one Proxmox VE call L3 needs: reboot a container or VM.

`POST /api2/json/nodes/<node>/<lxc|qemu>/<vmid>/status/reboot` with
`Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET` (API tokens need no
CSRF ticket). The answer is `{"data": "<UPID of the reboot task>"}`.
"""
from __future__ import annotations

from dataclasses import dataclass

import httpx
from django.conf import settings

GUEST_KINDS = ("lxc", "qemu")


class HypervisorError(Exception):
    """The hypervisor refused or could not be reached."""


@dataclass
class ProxmoxClient:
    """Proxmox VE API, authenticated with an API token."""

    base_url: str
    token_id: str
    token_secret: str
    verify_tls: bool = True
    timeout: float | None = None

    @property
    def authorization(self) -> str:
        return f"PVEAPIToken={self.token_id}={self.token_secret}"

    def reboot_guest(self, *, node: str, kind: str, vmid: int) -> str:
        """Reboot an LXC container or QEMU VM; returns the task UPID."""
        if kind not in GUEST_KINDS:
            raise HypervisorError(f"only lxc and qemu guests can be rebooted, not {kind!r}")
        url = f"{self.base_url.rstrip('/')}/api2/json/nodes/{node}/{kind}/{int(vmid)}/status/reboot"
        try:
            response = httpx.post(url, headers={"Authorization": self.authorization}, verify=self.verify_tls,
                                  timeout=self.timeout or settings.SWARM_ESCALATION_HTTP_TIMEOUT)
        except httpx.HTTPError as error:
            raise HypervisorError(f"cannot reach {self.base_url}: {error}") from error
        if response.status_code != 200:
            raise HypervisorError(f"Proxmox answered {response.status_code}: {response.text[:300]}")
        try:
            return str(response.json().get("data") or "")
        except ValueError as error:
            raise HypervisorError("Proxmox answered with something that is not JSON") from error


def client_for(hypervisor) -> ProxmoxClient:
    """The client for a `drones.models.Hypervisor` row."""
    return ProxmoxClient(base_url=hypervisor.url, token_id=hypervisor.token_id,
                         token_secret=hypervisor.token_secret, verify_tls=hypervisor.verify_tls)
