"""The VPN server: a TUN device, an SUDP server, and the routing between them (SPEC §5).

Inbound, a client's packet goes to the server's TUN, or straight to another client
without a round trip through the kernel, but only if its inner source is one of that
client's own addresses (tunelo accepts any; we drop and count). Outbound, a packet
the kernel writes to the TUN goes to the client owning its destination
(longest-prefix match). Both decisions are the route table's (``routing.py``);
:class:`ServerRouter` carries them out.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, ExitStack, nullcontext
from typing import Any

import trio

from ..protocol.budget import DEFAULT_HANDSHAKE_BURST
from ..protocol.clock import WallClock
from ..protocol.constants import SERVER_VADDR
from ..protocol.errors import NotConnected, PayloadTooLarge
from ..protocol.peers import LocalIdentity
from ..runtime.common import collapse_exception_groups
from ..runtime.peer import PeerRunner
from ..runtime.receive import ServerPath
from ..runtime.send import UDPSender
from ..runtime.server import SUDPServer, bind_server, make_core
from ..runtime.transport import DatagramNetwork, UDPStats, format_address
from ..tun import DeviceOpener, open_tun
from ..tun.netconfig import InterfaceConfig, NetBackend, Route, configure_interface
from .device import DeviceIO, io_drops
from .routing import LOCAL, RouteDrop, RouteTable
from .spec import IPNetwork, ServerSpec
from .tunnel import Tunnel

__all__ = ["DEFAULT_INTERFACE", "ServerRouter", "VpnServer", "WhileUp", "run_server"]

log = logging.getLogger("trio_sudp")

#: The TUN device name when the configuration gives none (the kernel numbers it).
DEFAULT_INTERFACE = "sudp%d"

#: What a daemon holds open while the tunnel is up, given the interface name.
WhileUp = Callable[[str], AbstractAsyncContextManager[object]]


def send_or_count(runner: PeerRunner, packet: bytes, now: float) -> None:
    """Send ``packet`` to ``runner``'s peer; without a session (or too big), count it."""
    try:
        runner.send(packet, now)
    except NotConnected:  # no session with that peer right now
        runner.drops["no_session"] += 1
    except PayloadTooLarge:
        runner.drops["too_big"] += 1


class ServerRouter:
    """The server's two per-packet decisions: a client's packet, and the kernel's packet."""

    def __init__(
        self, table: RouteTable, runners: Mapping[int, PeerRunner], device: DeviceIO
    ) -> None:
        #: The route table in use (a reload replaces it).
        self.table = table
        self._runners = runners
        self._device = device
        #: Packets from the TUN that could not go anywhere, by reason.
        self.drops: Counter[str] = Counter()

    def from_peer(self, runner: PeerRunner, packet: bytes) -> None:
        """A client sent ``packet``: deliver it locally, relay it, or drop it."""
        decision = self.table.route_from_peer(runner.vaddr, packet)
        if decision == LOCAL:
            self._device.write(packet)
        elif decision > 0:
            target = self._runners.get(decision)
            if target is None:
                runner.drops["no_route"] += 1
            else:
                send_or_count(target, packet, trio.current_time())
        else:
            runner.drops[RouteDrop(decision).label] += 1
            if decision == RouteDrop.TOO_BIG:
                reply = self.table.too_big_reply(packet)
                if reply is not None:
                    send_or_count(runner, reply, trio.current_time())

    def from_tun(self, packet: bytes, now: float) -> None:
        """The kernel routed ``packet`` into the tunnel: send it to its client."""
        decision = self.table.route_from_tun(packet)
        if decision > 0:
            runner = self._runners.get(decision)
            if runner is None:
                self.drops["no_route"] += 1
            else:
                send_or_count(runner, packet, now)
            return
        self.drops[RouteDrop(decision).label] += 1
        if decision == RouteDrop.TOO_BIG:
            reply = self.table.too_big_reply(packet)
            if reply is not None:
                self._device.write(reply)


class VpnServer:
    """A running VPN server: its SUDP server, router and tunnel, for ``show`` and reload."""

    def __init__(
        self,
        server: SUDPServer,
        router: ServerRouter,
        tunnel: Tunnel,
        spec: ServerSpec,
        interface: InterfaceConfig,
    ) -> None:
        self.server = server
        self.router = router
        self.tunnel = tunnel
        self.spec = spec
        self.interface = interface
        self._kernel_routes = set(kernel_routes(spec))

    def status(self) -> dict[str, Any]:
        """The server's state for ``trio-sudp show``: interface, peers, counters."""
        entries = {e.peer.vaddr: e for e in self.spec.peers}
        peers = []
        for vaddr, stats in self.server.statistics().items():
            entry = entries.get(vaddr)
            peer = stats.as_json()
            peer["name"] = None if entry is None else entry.name
            peer["addresses"] = [] if entry is None else [str(p) for p in entry.prefixes]
            peers.append(peer)
        device = self.tunnel.device
        drops = io_drops(self.router.drops, device.stats, self.server.endpoint_statistics())
        for reason, count in self.server.core.drops.items():
            drops[reason.value] = count
        table = self.router.table
        return {
            "role": "server",
            "interface": self.interface.name,
            "listen": format_address(self.server.local_address),
            "public_key": self.server.core.local.private_key.public_key.fingerprint(),
            "tunnel": [str(a) for a in table.local],
            "mtu": table.mtu,
            "device": device.status(),
            "udp": self.server.socket_status(),
            "budget": self.server.budget_status(),
            "drops": drops,
            "peers": peers,
        }

    async def reload(self, spec: ServerSpec) -> dict[str, Any]:
        """Apply added, removed and changed clients; unchanged clients keep their session.

        The new table is built (and checked) before anything changes, so a bad
        configuration changes nothing. Listen address, key, tunnel addresses and MTU
        need a restart.
        """
        old = self.spec
        table = spec.route_table()
        if (
            spec.listen != old.listen
            or spec.private_key.public_key != old.private_key.public_key
            or tuple(spec.addresses) != tuple(old.addresses)
            or spec.tunnel_mtu != old.tunnel_mtu
        ):
            log.warning("reload: listen address, key, tunnel addresses and MTU need a restart")
        runners = self.server.runners
        before = {vaddr: runner.session.peer for vaddr, runner in runners.items()}
        after = {entry.peer.vaddr: entry.peer for entry in spec.peers}
        added = sorted(after.keys() - before.keys())
        removed = sorted(before.keys() - after.keys())
        changed = sorted(v for v in after.keys() & before.keys() if after[v] != before[v])
        for vaddr in removed:
            self.server.remove_peer(vaddr)
        for vaddr in changed:
            self.server.replace_peer(after[vaddr])
        for vaddr in added:
            self.server.add_peer(after[vaddr])
        self.router.table = table
        self.spec = spec
        await self._update_kernel_routes(set(kernel_routes(spec)))
        log.info(
            "reloaded: %d added, %d removed, %d changed, %d unchanged",
            len(added),
            len(removed),
            len(changed),
            len(after) - len(added) - len(changed),
        )
        return {"added": added, "removed": removed, "changed": changed}

    async def _update_kernel_routes(self, wanted: set[IPNetwork]) -> None:
        iface = self.interface
        for net in sorted(wanted - self._kernel_routes, key=str):
            await iface.add_route(net)
        for net in sorted(self._kernel_routes - wanted, key=str):
            await iface.netconfig.backend.delete_route(Route(net, interface=iface.name))
        self._kernel_routes = wanted


def kernel_routes(spec: ServerSpec) -> Iterator[IPNetwork]:
    """Client prefixes outside the server's own tunnel networks need a route to the TUN."""
    own = [iface.network for iface in spec.addresses]
    for entry in spec.peers:
        for net in entry.prefixes:
            if not any(net.version == o.version and net.subnet_of(o) for o in own):  # type: ignore[arg-type]
                yield net


async def run_server(
    spec: ServerSpec,
    *,
    network: DatagramNetwork | None = None,
    clock: WallClock | None = None,
    open_device: DeviceOpener = open_tun,
    backend: NetBackend | None = None,
    interface: str | None = None,
    while_up: WhileUp | None = None,
    task_status: trio.TaskStatus[VpnServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a VPN server until cancelled; everything it added is removed on the way out.

    Raises ``TunError`` (no root, no ``/dev/net/tun``), ``OSError`` (port in use) or
    ``ConfigError`` (overlapping client addresses) before serving anything.
    ``network``, ``clock``, ``open_device`` and ``backend`` replace the real UDP, wall
    clock, TUN and kernel configuration (tests use the in-memory ones).
    ``interface`` is the device name to create instead of the spec's. ``while_up``
    is entered with the device's name once the interface is configured and the
    tunnel runs, before the server counts as started, and left before the interface
    is removed (the daemon's forwarding, NAT and hooks).
    """
    mtu = spec.tunnel_mtu
    table = spec.route_table()
    core = make_core(
        LocalIdentity(SERVER_VADDR, spec.private_key),
        [entry.peer for entry in spec.peers],
        settings=spec.settings,
        clock=clock,
        handshake_rate=spec.handshake_rate,
        handshake_burst=DEFAULT_HANDSHAKE_BURST,
    )
    with ExitStack() as stack:
        device = open_device(interface or spec.interface or DEFAULT_INTERFACE, mtu=mtu)
        stack.callback(device.close)
        lanes = bind_server(network, spec.listen)
        stack.callback(lanes.close)
        async with (
            configure_interface(
                device.name,
                addresses=spec.addresses,
                mtu=mtu,
                routes=list(kernel_routes(spec)),
                backend=backend,
            ) as iface,
            collapse_exception_groups(),
            trio.open_nursery() as nursery,
        ):
            stats = UDPStats()
            sender = UDPSender(lanes.known, stats)
            io = DeviceIO(device)
            server = SUDPServer(core, sender, lanes, nursery)
            router = ServerRouter(table, server.runners, io)
            tunnel = Tunnel(
                lanes.transports,
                stats,
                sender,
                io,
                inbound=ServerPath(core, server.runners, router.from_peer),
                outbound=router.from_tun,
                strangers=lanes.strangers,
            )
            try:
                await nursery.start(tunnel.run)
                nursery.start_soon(server.watch)
                async with nullcontext() if while_up is None else while_up(device.name):
                    log.info(
                        "serving on %s, tunnel %s on %s (MTU %d), %d clients",
                        format_address(server.local_address),
                        ", ".join(str(a) for a in spec.addresses),
                        device.name,
                        mtu,
                        len(spec.peers),
                    )
                    task_status.started(VpnServer(server, router, tunnel, spec, iface))
                    await trio.sleep_forever()
            finally:
                server.close()
