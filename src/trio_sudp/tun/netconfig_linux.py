"""The Linux :class:`~trio_sudp.tun.netconfig.NetBackend`: rtnetlink through pyroute2.

pyroute2's ``IPRoute`` runs its own asyncio loop and keeps per-thread state, so
each operation opens one ``IPRoute`` inside a Trio worker thread and closes it
there (≈1 ms; configuration is rare, never per packet).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import trio
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from trio_sudp.tun.errors import NetConfigError
from trio_sudp.tun.netconfig import Gateway, IPAddress, IPInterface, Route

__all__ = ["PyRoute2Backend"]

_MAIN_TABLE = 254
_GONE = frozenset({errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL, errno.ENOENT})
_T = TypeVar("_T")


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _error(action: str, exc: NetlinkError) -> NetConfigError:
    return NetConfigError(f"cannot {action}: {exc.args[1] if len(exc.args) > 1 else exc}", exc.code)


class PyRoute2Backend:
    """Interface and route changes through rtnetlink (pyroute2), run in worker threads."""

    async def _run(self, action: str, fn: Callable[[Any], _T]) -> _T:
        def work() -> _T:
            with IPRoute() as ipr:
                return fn(ipr)

        try:
            return await trio.to_thread.run_sync(work)
        except NetlinkError as exc:
            raise _error(action, exc) from exc

    @staticmethod
    def _index(ipr: Any, interface: str) -> int:
        found: list[int] = ipr.link_lookup(ifname=interface)
        if not found:
            raise NetlinkError(errno.ENODEV, f"no interface named {interface}")
        return found[0]

    async def set_mtu(self, interface: str, mtu: int) -> None:
        """Set the interface MTU."""
        await self._run(
            f"set MTU {mtu} on {interface}",
            lambda ipr: ipr.link("set", index=self._index(ipr, interface), mtu=mtu),
        )

    async def set_up(self, interface: str) -> None:
        """Bring the interface up."""
        await self._run(
            f"bring {interface} up",
            lambda ipr: ipr.link("set", index=self._index(ipr, interface), state="up"),
        )

    @staticmethod
    def _addr_args(address: IPInterface, peer: IPAddress | None) -> dict[str, Any]:
        args: dict[str, Any] = {
            "family": _family(address.version),
            "prefixlen": address.network.prefixlen,
        }
        if peer is None:
            args["address"] = str(address.ip)
        else:  # IFA_LOCAL is our side, IFA_ADDRESS the peer ("ip addr add A peer P/len")
            args["local"] = str(address.ip)
            args["address"] = str(peer)
        return args

    async def add_address(
        self, interface: str, address: IPInterface, peer: IPAddress | None
    ) -> None:
        """Add an address (point-to-point with ``peer`` when given)."""
        args = self._addr_args(address, peer)
        await self._run(
            f"add address {address} to {interface}",
            lambda ipr: ipr.addr("add", index=self._index(ipr, interface), **args),
        )

    async def delete_address(
        self, interface: str, address: IPInterface, peer: IPAddress | None
    ) -> None:
        """Remove an address; an address or interface already gone is not an error."""
        args = self._addr_args(address, peer)
        try:
            await self._run(
                f"delete address {address} from {interface}",
                lambda ipr: ipr.addr("del", index=self._index(ipr, interface), **args),
            )
        except NetConfigError as exc:
            if exc.errno not in _GONE:
                raise

    @classmethod
    def _route_args(cls, ipr: Any, route: Route) -> dict[str, Any]:
        args: dict[str, Any] = {
            "family": _family(route.destination.version),
            "dst": str(route.destination.network_address),
            "dst_len": route.destination.prefixlen,
            "table": _MAIN_TABLE,
        }
        if route.gateway is not None:
            args["gateway"] = str(route.gateway)
        if route.interface is not None:
            args["oif"] = cls._index(ipr, route.interface)
        if route.metric is not None:
            args["priority"] = route.metric
        if route.protocol is not None:
            args["proto"] = route.protocol
        return args

    async def add_route(self, route: Route) -> None:
        """Add a route; :class:`NetConfigError` with ``errno.EEXIST`` if it exists."""
        await self._run(
            f"add route {route}", lambda ipr: ipr.route("add", **self._route_args(ipr, route))
        )

    async def delete_route(self, route: Route) -> None:
        """Remove a route; a route already gone (or its interface) is not an error."""
        try:
            await self._run(
                f"delete route {route}",
                lambda ipr: ipr.route("del", **self._route_args(ipr, route)),
            )
        except NetConfigError as exc:
            if exc.errno not in _GONE:
                raise

    async def route_to(self, destination: IPAddress) -> Gateway:
        """Where the kernel sends packets for ``destination`` now (``ip route get``)."""

        def lookup(ipr: Any) -> Gateway:
            msg = ipr.route("get", dst=str(destination), family=_family(destination.version))[0]
            gateway = msg.get_attr("RTA_GATEWAY")
            oif = msg.get_attr("RTA_OIF")
            name: str = ipr.link("get", index=oif)[0].get_attr("IFLA_IFNAME")
            return Gateway(ipaddress.ip_address(gateway) if gateway else None, name)

        return await self._run(f"find the route to {destination}", lookup)

    async def default_routes(self, version: int) -> list[Route]:
        """The default routes of the main table for IP ``version`` 4 or 6."""

        def dump(ipr: Any) -> list[Route]:
            found = []
            for msg in ipr.get_default_routes(family=_family(version), table=_MAIN_TABLE):
                gateway = msg.get_attr("RTA_GATEWAY")
                oif = msg.get_attr("RTA_OIF")
                if oif is None:
                    raise NetConfigError(
                        "cannot record a multipath default route; refusing to replace it"
                    )
                name = ipr.link("get", index=oif)[0].get_attr("IFLA_IFNAME")
                found.append(
                    Route(
                        "0.0.0.0/0" if version == 4 else "::/0",
                        gateway,
                        name,
                        msg.get_attr("RTA_PRIORITY"),
                        msg["proto"],
                    )
                )
            return found

        return await self._run(f"list the IPv{version} default routes", dump)
