"""The VPN server: a TUN device, an SUDP server, and the routing between them (SPEC §5).

Packets the kernel writes to the TUN go to the client owning their destination
(longest-prefix match); packets from a client go to the TUN, or straight to another
client without a round trip through the kernel, but only if their inner source is
one of that client's own addresses (tunelo accepts any; we drop and count).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import trio

from ..protocol.clock import WallClock
from ..protocol.errors import LocalProtocolError
from ..protocol.peers import LocalIdentity
from ..runtime.peer import PeerRunner
from ..runtime.server import SUDPServer, open_server
from ..runtime.transport import DatagramNetwork, format_address
from ..tun import open_tun
from ..tun.base import PacketDevice
from ..tun.netconfig import InterfaceConfig, NetBackend, Route, configure_interface
from .device import DeviceIO, io_drops
from .mtu import default_tunnel_mtu
from .routing import LOCAL, RouteDrop, RouteTable
from .spec import ClientEntry, IPNetwork, ServerSpec

__all__ = ["VpnServer", "run_server", "server_mtu"]

log = logging.getLogger("trio_sudp")

DeviceOpener = Callable[..., PacketDevice]


def server_mtu(spec: ServerSpec) -> int:
    """The configured tunnel MTU, or the smallest default among the clients' versions."""
    if spec.mtu is not None:
        return spec.mtu
    return min((default_tunnel_mtu(entry.peer.version) for entry in spec.peers), default=1400)


def _prefixes(entry: ClientEntry) -> list[IPNetwork]:
    out: list[IPNetwork] = []
    for item in (*entry.addresses, *entry.routes):
        if isinstance(item, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
            out.append(ipaddress.ip_network(item.ip))
        else:
            out.append(ipaddress.ip_network(item))
    return out


class VpnServer:
    """Moves packets between the TUN device and the clients' sessions."""

    def __init__(
        self,
        server: SUDPServer,
        io: DeviceIO,
        table: RouteTable,
        *,
        spec: ServerSpec | None = None,
        interface: InterfaceConfig | None = None,
    ) -> None:
        self.server = server
        self.io = io
        self.table = table
        self.spec = spec
        self.interface = interface
        #: Packets from the TUN that could not go anywhere, by reason.
        self.drops: Counter[str] = Counter()
        self._runners = server.runners
        self._kernel_routes: set[IPNetwork] = set() if spec is None else set(_kernel_routes(spec))
        server.on_payload = self.from_peer
        io.handler = self.from_tun
        endpoint = server.endpoint
        io.before_batch = endpoint.begin_batch
        io.after_batch = endpoint.end_batch
        endpoint.before_batch = io.begin_write_batch
        endpoint.after_batch = io.end_write_batch

    def from_peer(self, runner: PeerRunner, packet: bytes) -> None:
        """A client sent ``packet``: deliver it locally, relay it, or drop it."""
        decision = self.table.route_from_peer(runner.vaddr, packet)
        if decision == LOCAL:
            self.io.write(packet)
        elif decision > 0:
            target = self._runners.get(decision)
            if target is None:
                runner.drops["no_route"] += 1
            else:
                self._send(target, packet, trio.current_time())
        else:
            runner.drops[RouteDrop(decision).label] += 1
            if decision == RouteDrop.TOO_BIG:
                reply = self.table.too_big_reply(packet)
                if reply is not None:
                    self._send(runner, reply, trio.current_time())

    def from_tun(self, packet: bytes, now: float) -> None:
        """The kernel routed ``packet`` into the tunnel: send it to its client."""
        decision = self.table.route_from_tun(packet)
        if decision > 0:
            runner = self._runners.get(decision)
            if runner is None:
                self.drops["no_route"] += 1
            else:
                self._send(runner, packet, now)
            return
        self.drops[RouteDrop(decision).label] += 1
        if decision == RouteDrop.TOO_BIG:
            reply = self.table.too_big_reply(packet)
            if reply is not None:
                self.io.write(reply)

    def status(self) -> dict[str, Any]:
        """The server's state for ``trio-sudp show``: interface, peers, counters."""
        spec = self.spec
        entries = {} if spec is None else {e.peer.vaddr: e for e in spec.peers}
        peers = []
        for vaddr, stats in self.server.statistics().items():
            entry = entries.get(vaddr)
            peer = stats.as_json()
            peer["name"] = None if entry is None else entry.name
            peer["addresses"] = [] if entry is None else [str(p) for p in _prefixes(entry)]
            peers.append(peer)
        drops = io_drops(self.drops, self.io.stats, self.server.endpoint_statistics())
        for reason, count in self.server.core.drops.items():
            drops[reason.value] = count
        return {
            "role": "server",
            "interface": self.interface.name if self.interface else None,
            "listen": format_address(self.server.local_address),
            "public_key": self.server.core.local.private_key.public_key.fingerprint(),
            "tunnel": [str(a) for a in self.table.local],
            "mtu": self.table.mtu,
            "device": self.io.status(),
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
        table = RouteTable(local=tuple(spec.addresses), mtu=self.table.mtu)
        for entry in spec.peers:
            table.add_peer(entry.peer.vaddr, _prefixes(entry))
        if old is not None and (
            spec.listen != old.listen
            or spec.private_key.public_key != old.private_key.public_key
            or tuple(spec.addresses) != tuple(old.addresses)
        ):
            log.warning("reload: listen address, key and tunnel addresses need a restart")
        before = {vaddr: runner.session.peer for vaddr, runner in self._runners.items()}
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
        self.table = table
        self.spec = spec
        await self._update_kernel_routes(set(_kernel_routes(spec)))
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
        if iface is None:
            return
        for net in sorted(wanted - self._kernel_routes, key=str):
            await iface.add_route(net)
        for net in sorted(self._kernel_routes - wanted, key=str):
            await iface.netconfig.backend.delete_route(Route(net, interface=iface.name))
        self._kernel_routes = wanted

    @staticmethod
    def _send(runner: PeerRunner, packet: bytes, now: float) -> None:
        try:
            runner.send(packet, now)
        except LocalProtocolError:  # no session with that client right now
            runner.drops["no_session"] += 1


def _kernel_routes(spec: ServerSpec) -> Iterator[IPNetwork]:
    """Client prefixes outside the server's own tunnel networks need a route to the TUN."""
    own = [iface.network for iface in spec.addresses]
    for entry in spec.peers:
        for net in _prefixes(entry):
            if not any(net.version == o.version and net.subnet_of(o) for o in own):  # type: ignore[arg-type]
                yield net


async def run_server(
    spec: ServerSpec,
    *,
    network: DatagramNetwork | None = None,
    clock: WallClock | None = None,
    open_device: DeviceOpener = open_tun,
    backend: NetBackend | None = None,
    task_status: trio.TaskStatus[VpnServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a VPN server until cancelled; everything it added is removed on the way out.

    Raises ``TunError`` (no root, no ``/dev/net/tun``), ``OSError`` (port in use) or
    ``ConfigError`` (overlapping client addresses) before serving anything.
    ``network``, ``clock``, ``open_device`` and ``backend`` replace the real UDP, wall
    clock, TUN and kernel configuration (tests use the in-memory ones).
    """
    mtu = server_mtu(spec)
    table = RouteTable(local=tuple(spec.addresses), mtu=mtu)
    for entry in spec.peers:
        table.add_peer(entry.peer.vaddr, _prefixes(entry))
    with ExitStack() as stack:
        device = open_device(spec.interface or "sudp%d", mtu=mtu)
        stack.callback(device.close)
        async with (
            configure_interface(
                device.name,
                addresses=spec.addresses,
                mtu=mtu,
                routes=list(_kernel_routes(spec)),
                backend=backend,
            ) as iface,
            open_server(
                spec.listen,
                local=LocalIdentity(0, spec.private_key),
                peers=[entry.peer for entry in spec.peers],
                settings=spec.settings,
                network=network,
                clock=clock,
                handshake_rate=spec.handshake_rate,
            ) as server,
        ):
            io = DeviceIO(device)
            vpn = VpnServer(server, io, table, spec=spec, interface=iface)
            async with trio.open_nursery() as nursery:
                await nursery.start(io.run)
                log.info(
                    "serving on %s:%s, tunnel %s on %s (MTU %d), %d clients",
                    *server.local_address[:2],
                    ", ".join(str(a) for a in spec.addresses),
                    device.name,
                    mtu,
                    len(spec.peers),
                )
                task_status.started(vpn)
