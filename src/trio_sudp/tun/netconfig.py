"""Interface addresses, MTU and routes, with every change undone on exit.

``configure_interface`` is the usual entry point::

    async with configure_interface(
        tun.name, addresses=["10.0.0.2/24"], peer="10.0.0.1", mtu=1400
    ) as iface:
        await iface.route_all_traffic(exclude=[server_ip])  # "full tunnel"
        ...  # run the VPN

Everything it adds is recorded in a :class:`NetConfig` undo stack and removed in
reverse order when the block exits: normally, by exception, or by cancellation
(Ctrl-C, SIGTERM). Undo runs shielded from cancellation and tolerates state that
is already gone (a route that vanished with its device is not an error).

The platform part is a :class:`NetBackend`: pyroute2 on Linux (run in a worker
thread, since ``IPRoute`` runs its own asyncio loop), ``ifconfig``/``route`` on
macOS.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import attrs
import trio

from trio_sudp.tun.errors import NetConfigError

__all__ = [
    "UNDO_TIMEOUT",
    "Gateway",
    "IPAddress",
    "IPInterface",
    "IPNetwork",
    "InterfaceConfig",
    "NetBackend",
    "NetConfig",
    "Route",
    "configure_interface",
    "default_backend",
    "default_gateway_for",
    "split_default_networks",
]

logger = logging.getLogger("trio_sudp.tun.netconfig")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

#: Seconds undo may take in total before it gives up on the remaining steps.
UNDO_TIMEOUT = 15.0


def _to_network(value: str | IPNetwork | IPAddress) -> IPNetwork:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return ipaddress.ip_network(value)
    return ipaddress.ip_network(value, strict=False)


def _to_address(value: str | IPAddress) -> IPAddress:
    return ipaddress.ip_address(value)


def _to_optional_address(value: str | IPAddress | None) -> IPAddress | None:
    return None if value is None else ipaddress.ip_address(value)


def _to_interface(value: str | IPInterface) -> IPInterface:
    return ipaddress.ip_interface(value)


@attrs.frozen
class Route:
    """A route in the main table: to ``destination`` via ``gateway`` and/or ``interface``.

    Strings are accepted and parsed; a host address as destination means /32 or /128.
    ``protocol`` is Linux's route origin (``rtm_protocol``: 3 boot, 4 static, 16
    dhcp...), kept so that a route put back on undo looks as before; ``None`` lets
    the backend choose.
    """

    destination: IPNetwork = attrs.field(converter=_to_network)
    gateway: IPAddress | None = attrs.field(default=None, converter=_to_optional_address)
    interface: str | None = None
    metric: int | None = None
    protocol: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.gateway is None and self.interface is None:
            raise NetConfigError(f"route to {self.destination} needs a gateway or an interface")
        if self.gateway is not None and self.gateway.version != self.destination.version:
            raise NetConfigError(
                f"route to {self.destination}: gateway {self.gateway} is IPv{self.gateway.version}"
            )

    @property
    def is_default(self) -> bool:
        """Whether this is a default route (``0.0.0.0/0`` or ``::/0``)."""
        return self.destination.prefixlen == 0

    def __str__(self) -> str:
        parts = [str(self.destination)]
        if self.gateway is not None:
            parts.append(f"via {self.gateway}")
        if self.interface is not None:
            parts.append(f"dev {self.interface}")
        if self.metric is not None:
            parts.append(f"metric {self.metric}")
        return " ".join(parts)


@attrs.frozen
class Gateway:
    """Where the kernel currently sends packets for one address: a next hop and an interface.

    ``address`` is ``None`` when the destination is on-link.
    """

    address: IPAddress | None
    interface: str

    def host_route(self, destination: str | IPAddress) -> Route:
        """A /32 or /128 route to ``destination`` through this gateway."""
        return Route(_to_address(destination), self.address, self.interface)


class NetBackend(Protocol):
    """The platform operations :class:`NetConfig` records and undoes."""

    async def set_mtu(self, interface: str, mtu: int) -> None:
        """Set the interface MTU."""
        ...

    async def set_up(self, interface: str) -> None:
        """Bring the interface up."""
        ...

    async def add_address(
        self, interface: str, address: IPInterface, peer: IPAddress | None
    ) -> None:
        """Add an address (point-to-point with ``peer`` when given)."""
        ...

    async def delete_address(
        self, interface: str, address: IPInterface, peer: IPAddress | None
    ) -> None:
        """Remove an address; an address or interface already gone is not an error."""
        ...

    async def add_route(self, route: Route) -> None:
        """Add a route; raise :class:`NetConfigError` with ``errno.EEXIST`` if it exists."""
        ...

    async def delete_route(self, route: Route) -> None:
        """Remove a route; a route already gone is not an error."""
        ...

    async def route_to(self, destination: IPAddress) -> Gateway:
        """Where the kernel sends packets for ``destination`` now; error if unreachable."""
        ...

    async def default_routes(self, version: int) -> list[Route]:
        """The default routes of the main table for IP ``version`` 4 or 6."""
        ...


def default_backend() -> NetBackend:
    """The backend for this platform: pyroute2 on Linux, ``ifconfig``/``route`` on macOS."""
    if sys.platform == "linux":
        from trio_sudp.tun.netconfig_linux import PyRoute2Backend

        return PyRoute2Backend()
    if sys.platform == "darwin":
        from trio_sudp.tun.netconfig_darwin import DarwinBackend

        return DarwinBackend()
    raise NetConfigError(f"configuring interfaces is not supported on {sys.platform}")


def split_default_networks(version: int) -> tuple[IPNetwork, IPNetwork]:
    """The two halves of the address space that together override a default route."""
    if version == 4:
        return ipaddress.IPv4Network("0.0.0.0/1"), ipaddress.IPv4Network("128.0.0.0/1")
    return ipaddress.IPv6Network("::/1"), ipaddress.IPv6Network("8000::/1")


_UndoStep = Callable[[], Awaitable[None]]


class NetConfig:
    """An undo stack of network changes: each change made through it is reverted by :meth:`undo`.

    MTU and link state are not undone: they belong to a device that is deleted
    when the tunnel closes.
    """

    def __init__(self, backend: NetBackend | None = None, *, undo_timeout: float = UNDO_TIMEOUT):
        self._backend = backend if backend is not None else default_backend()
        self._undo: list[tuple[str, _UndoStep]] = []
        self.undo_timeout = undo_timeout

    @property
    def backend(self) -> NetBackend:
        """The platform backend changes go through."""
        return self._backend

    @property
    def changes(self) -> list[str]:
        """What :meth:`undo` would revert, oldest first (for logs and tests)."""
        return [description for description, _ in self._undo]

    async def set_mtu(self, interface: str, mtu: int) -> None:
        """Set the MTU of ``interface``."""
        await self._backend.set_mtu(interface, mtu)

    async def set_up(self, interface: str) -> None:
        """Bring ``interface`` up."""
        await self._backend.set_up(interface)

    async def add_address(
        self,
        interface: str,
        address: str | IPInterface,
        *,
        peer: str | IPAddress | None = None,
    ) -> None:
        """Add ``address`` (with prefix, e.g. ``"10.0.0.2/24"``) to ``interface``, recorded."""
        addr = _to_interface(address)
        peer_addr = _to_optional_address(peer)
        if peer_addr is not None and peer_addr.version != addr.version:
            raise NetConfigError(f"peer {peer_addr} is not of the same family as {addr}")
        await self._backend.add_address(interface, addr, peer_addr)

        async def undo() -> None:
            await self._backend.delete_address(interface, addr, peer_addr)

        shown = f"address {addr}" + (f" peer {peer_addr}" if peer_addr else "")
        self._undo.append((f"{shown} dev {interface}", undo))

    async def add_route(self, route: Route, *, exist_ok: bool = False) -> bool:
        """Add ``route``, recorded; return whether it was added.

        If the route exists already it is not ours to remove: with ``exist_ok`` that
        returns ``False``, otherwise :class:`NetConfigError` is raised.
        """
        try:
            await self._backend.add_route(route)
        except NetConfigError as exc:
            if exist_ok and exc.errno == errno.EEXIST:
                return False
            raise

        async def undo() -> None:
            await self._backend.delete_route(route)

        self._undo.append((f"route {route}", undo))
        return True

    async def default_gateway_for(self, destination: str | IPAddress) -> Gateway:
        """The gateway and interface the kernel uses for ``destination`` now."""
        return await self._backend.route_to(_to_address(destination))

    async def replace_default_route(self, interface: str, version: int = 4) -> None:
        """Send all IPv``version`` traffic through ``interface``, restoring the old default on undo.

        The old default routes are deleted: if the process is killed before undo,
        they stay deleted (see :meth:`route_all_traffic` for the safer way).
        """
        default = ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")
        old = await self._backend.default_routes(version)
        for route in old:
            await self._backend.delete_route(route)

            async def restore(route: Route = route) -> None:
                try:
                    await self._backend.add_route(route)
                except NetConfigError as exc:
                    if exc.errno != errno.EEXIST:
                        raise

            self._undo.append((f"restore route {route}", restore))
        await self.add_route(Route(default, interface=interface))

    async def route_all_traffic(
        self,
        interface: str,
        *,
        exclude: Iterable[str | IPAddress] = (),
        versions: Iterable[int] = (4,),
        replace_default: bool = False,
    ) -> None:
        """Full-tunnel mode: route every destination through ``interface``.

        Each address in ``exclude`` (the VPN server) keeps a host route via the
        gateway it uses now, looked up before anything changes. By default the
        default route is overridden by the two half-space routes (``0.0.0.0/1``
        and ``128.0.0.0/1``), which leaves the original default untouched and
        vanish with the device if the process dies; ``replace_default`` deletes
        and later restores the default route instead.
        """
        host_routes = []
        for destination in exclude:
            gateway = await self.default_gateway_for(destination)
            if gateway.interface == interface:
                raise NetConfigError(f"{destination} is already routed through {interface}")
            host_routes.append(gateway.host_route(destination))
        for route in host_routes:
            await self.add_route(route, exist_ok=True)
        for version in sorted(set(versions)):
            if replace_default:
                await self.replace_default_route(interface, version)
            else:
                for network in split_default_networks(version):
                    await self.add_route(Route(network, interface=interface))

    @trio.lowlevel.enable_ki_protection
    async def undo(self) -> list[NetConfigError]:
        """Revert every recorded change, newest first; return what could not be reverted.

        Runs shielded from cancellation, bounded by ``undo_timeout``. Failures are
        logged and returned, never raised, so that every step gets its chance. A
        second Ctrl-C meanwhile does not stop it: the interrupted step is retried
        (steps are idempotent) and ``KeyboardInterrupt`` is raised once all are done.
        Calling it again does nothing.
        """
        failures: list[NetConfigError] = []
        interrupted: KeyboardInterrupt | None = None
        current = ""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self.undo_timeout
            while self._undo:
                current, step = self._undo.pop()
                for _attempt in range(2):
                    try:
                        await step()
                    except KeyboardInterrupt as exc:
                        interrupted = exc
                        continue
                    except Exception as exc:
                        failures.append(_undo_failure(current, exc))
                    break
                else:
                    failures.append(NetConfigError(f"could not undo {current}: interrupted"))
                current = ""
        if scope.cancelled_caught:
            remaining = [current] if current else []
            remaining += reversed(self.changes)
            self._undo.clear()
            failures += [NetConfigError(f"undo timed out before: {c}") for c in remaining]
        for failure in failures:
            logger.warning("%s", failure)
        if interrupted is not None:
            raise interrupted
        return failures


def _undo_failure(description: str, exc: Exception) -> NetConfigError:
    detail = exc.reason if isinstance(exc, NetConfigError) else repr(exc)
    code = exc.errno if isinstance(exc, NetConfigError | OSError) else None
    return NetConfigError(f"could not undo {description}: {detail}", code)


@attrs.define
class InterfaceConfig:
    """One configured interface, as yielded by :func:`configure_interface`."""

    netconfig: NetConfig
    """The undo stack; further changes made through it are undone too."""
    name: str
    """The interface name."""
    addresses: Sequence[IPInterface]
    """The addresses given to the interface."""

    async def add_route(self, route: str | IPNetwork | Route) -> bool:
        """Add a route through this interface (a network) or a full :class:`Route`."""
        if not isinstance(route, Route):
            route = Route(route, interface=self.name)
        return await self.netconfig.add_route(route)

    async def default_gateway_for(self, destination: str | IPAddress) -> Gateway:
        """The gateway and interface the kernel uses for ``destination`` now."""
        return await self.netconfig.default_gateway_for(destination)

    async def route_all_traffic(
        self,
        *,
        exclude: Iterable[str | IPAddress] = (),
        versions: Iterable[int] | None = None,
        replace_default: bool = False,
    ) -> None:
        """Full-tunnel mode through this interface (see :meth:`NetConfig.route_all_traffic`).

        ``versions`` defaults to the IP versions of the interface's addresses.
        """
        if versions is None:
            versions = {a.version for a in self.addresses} or {4}
        await self.netconfig.route_all_traffic(
            self.name, exclude=exclude, versions=versions, replace_default=replace_default
        )


@asynccontextmanager
async def configure_interface(
    name: str,
    *,
    addresses: Iterable[str | IPInterface] = (),
    peer: str | IPAddress | None = None,
    mtu: int | None = None,
    routes: Iterable[str | IPNetwork | Route] = (),
    up: bool = True,
    backend: NetBackend | None = None,
) -> AsyncIterator[InterfaceConfig]:
    """Configure interface ``name`` for the duration of the block, then undo it all.

    ``addresses`` carry their prefix (``"10.0.0.2/24"``, ``"fd00::2/64"``); ``peer``
    makes the address of its family point-to-point. ``routes`` are networks routed
    through the interface, or full :class:`Route` objects. If setting up fails
    half-way, what was done is undone before the error propagates. An undo failure
    after a clean exit raises :class:`NetConfigError`; after an error it is logged.
    """
    config = NetConfig(backend)
    parsed = [_to_interface(a) for a in addresses]
    peer_addr = _to_optional_address(peer)
    iface = InterfaceConfig(config, name, tuple(parsed))
    try:
        if mtu is not None:
            await config.set_mtu(name, mtu)
        for addr in parsed:
            same_family = peer_addr is not None and peer_addr.version == addr.version
            await config.add_address(name, addr, peer=peer_addr if same_family else None)
        if up:
            await config.set_up(name)
        for route in routes:
            await iface.add_route(route)
        yield iface
    except BaseException:
        await config.undo()
        raise
    failures = await config.undo()
    if failures:
        raise NetConfigError("; ".join(f.reason for f in failures))


async def default_gateway_for(
    destination: str | IPAddress, *, backend: NetBackend | None = None
) -> Gateway:
    """The gateway and interface the kernel uses for ``destination`` now."""
    return await (backend or default_backend()).route_to(_to_address(destination))
