"""An in-memory network-configuration backend: the VPN's interface setup without root.

Pass ``MemoryNetBackend()`` as ``backend=`` to the VPN's ``run_server`` /
``run_client`` (or to ``configure_interface``) together with an in-memory TUN, and
inspect what would have been configured: addresses, MTU, routes. Everything the VPN
adds must be gone again when it exits.
"""

from __future__ import annotations

import errno
import ipaddress

import trio

from ..tun.errors import NetConfigError
from ..tun.netconfig import Gateway, Route

__all__ = ["MemoryNetBackend"]

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class MemoryNetBackend:
    """Keeps addresses, MTUs and routes in memory; every call is a Trio checkpoint."""

    def __init__(self, default_gateway: str = "192.0.2.254", interface: str = "eth0") -> None:
        gateway = ipaddress.ip_address(default_gateway)
        self.gateway = Gateway(gateway, interface)
        self.addresses: set[tuple[str, IPInterface, IPAddress | None]] = set()
        self.routes: set[Route] = {Route("0.0.0.0/0", gateway, interface)}
        self.initial_routes = frozenset(self.routes)
        self.mtu: dict[str, int] = {}
        self.up: set[str] = set()

    @property
    def clean(self) -> bool:
        """Whether everything added was removed again."""
        return not self.addresses and self.routes == self.initial_routes

    async def set_mtu(self, interface: str, mtu: int) -> None:
        await trio.lowlevel.checkpoint()
        self.mtu[interface] = mtu

    async def set_up(self, interface: str) -> None:
        await trio.lowlevel.checkpoint()
        self.up.add(interface)

    async def add_address(
        self, interface: str, address: IPInterface, peer: IPAddress | None
    ) -> None:
        await trio.lowlevel.checkpoint()
        self.addresses.add((interface, address, peer))

    async def delete_address(
        self, interface: str, address: IPInterface, peer: IPAddress | None
    ) -> None:
        await trio.lowlevel.checkpoint()
        self.addresses.discard((interface, address, peer))

    async def add_route(self, route: Route) -> None:
        await trio.lowlevel.checkpoint()
        if route in self.routes:
            raise NetConfigError(f"route {route} exists", errno.EEXIST)
        self.routes.add(route)

    async def delete_route(self, route: Route) -> None:
        await trio.lowlevel.checkpoint()
        self.routes.discard(route)

    async def route_to(self, destination: IPAddress) -> Gateway:
        await trio.lowlevel.checkpoint()
        return self.gateway

    async def default_routes(self, version: int) -> list[Route]:
        await trio.lowlevel.checkpoint()
        return [r for r in self.routes if r.is_default and r.destination.version == version]
