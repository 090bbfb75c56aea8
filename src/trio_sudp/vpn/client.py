"""The VPN client: a TUN device and one SUDP session with the server (SPEC §5).

Inbound, every payload from the server is an IP packet for the kernel: the TUN
writer is the client's sink. Outbound, :class:`ClientUplink` sends what the kernel
routed into the tunnel, answering a packet above the tunnel MTU with ICMP.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from contextlib import ExitStack, nullcontext
from typing import Any

import trio

from ..protocol.clock import WallClock
from ..protocol.errors import NotConnected, PayloadTooLarge
from ..protocol.peers import LocalIdentity
from ..runtime.client import SUDPClient, prepare_client
from ..runtime.common import AddressLike, collapse_exception_groups
from ..runtime.peer import PeerRunner
from ..runtime.receive import ClientPath
from ..runtime.send import UDPSender
from ..runtime.transport import DatagramNetwork, UDPStats
from ..tun import DeviceOpener, open_tun
from ..tun.netconfig import NetBackend, configure_interface
from .device import DeviceIO, io_drops
from .mtu import too_big_reply
from .server import DEFAULT_INTERFACE, WhileUp
from .spec import ClientSpec, IPNetwork
from .tunnel import Tunnel

__all__ = ["ClientUplink", "VpnClient", "run_client"]

log = logging.getLogger("trio_sudp")


class ClientUplink:
    """The client's outbound decision: send a packet to the server, or refuse it."""

    def __init__(self, runner: PeerRunner, device: DeviceIO, spec: ClientSpec) -> None:
        self._runner = runner
        self._device = device
        self._mtu = spec.tunnel_mtu
        self._source_v4 = next((a.ip.packed for a in spec.addresses if a.version == 4), None)
        self._source_v6 = next((a.ip.packed for a in spec.addresses if a.version == 6), None)
        #: Packets from the TUN that were not sent, by reason.
        self.drops: Counter[str] = Counter()

    def from_tun(self, packet: bytes, now: float) -> None:
        """The kernel routed ``packet`` into the tunnel: send it to the server."""
        if len(packet) > self._mtu:
            self.drops["too_big"] += 1
            reply = too_big_reply(
                packet, self._mtu, source_v4=self._source_v4, source_v6=self._source_v6
            )
            if reply is not None:
                self._device.write(reply)
            return
        try:
            self._runner.send(packet, now)
        except NotConnected:  # reconnecting: no session key right now
            self.drops["no_session"] += 1
        except PayloadTooLarge:
            self.drops["too_big"] += 1


class VpnClient:
    """A running VPN client: its SUDP client, uplink and tunnel, for ``show``."""

    def __init__(
        self,
        client: SUDPClient,
        uplink: ClientUplink,
        tunnel: Tunnel,
        spec: ClientSpec,
        interface_name: str,
    ) -> None:
        self.client = client
        self.uplink = uplink
        self.tunnel = tunnel
        self.spec = spec
        self.interface_name = interface_name

    def status(self) -> dict[str, Any]:
        """The client's state for ``trio-sudp show``: interface, server session, counters."""
        client = self.client
        peer = client.statistics().as_json()
        peer["name"] = "server"
        peer["endpoint"] = self.spec.endpoint
        device = self.tunnel.device
        drops = io_drops(self.uplink.drops, device.stats, client.endpoint_statistics())
        return {
            "role": "client",
            "interface": self.interface_name,
            "listen": None,
            "public_key": self.spec.private_key.public_key.fingerprint(),
            "tunnel": [str(a) for a in self.spec.addresses],
            "mtu": self.spec.tunnel_mtu,
            "device": device.status(),
            "udp": client.socket_status(),
            "drops": drops,
            "peers": [peer],
        }


def _extra_routes(spec: ClientSpec) -> list[IPNetwork]:
    routes: list[IPNetwork] = list(spec.routes)
    server = spec.server_address
    if server is not None and not any(server in a.network for a in spec.addresses):
        routes.append(ipaddress.ip_network(server))
    return routes


async def run_client(
    spec: ClientSpec,
    *,
    network: DatagramNetwork | None = None,
    clock: WallClock | None = None,
    bind: AddressLike | None = None,
    open_device: DeviceOpener = open_tun,
    backend: NetBackend | None = None,
    interface: str | None = None,
    while_up: WhileUp | None = None,
    task_status: trio.TaskStatus[VpnClient] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Connect, bring the tunnel up, and run until cancelled; then undo everything.

    Raises ``TunError`` (no root, no ``/dev/net/tun``) or ``HandshakeError`` (no
    answer, key mismatch, clock skew) before the tunnel is up. Once up, the session
    survives packet loss, NAT rebinding and server restarts by itself. ``network``,
    ``clock``, ``bind``, ``open_device`` and ``backend`` replace the real UDP, wall
    clock, local address, TUN and kernel configuration (tests use in-memory ones).
    ``interface`` is the device name to create instead of the spec's. ``while_up``
    is entered with the device's name once the interface is up with its addresses
    and routes, before the client counts as started, and left before they are
    removed (the daemon's DNS and hooks).
    """
    mtu = spec.tunnel_mtu
    session, transport = await prepare_client(
        spec.endpoint,
        local=LocalIdentity(spec.vaddr, spec.private_key),
        server=spec.server,
        settings=spec.settings,
        network=network,
        bind=bind,
        clock=clock,
    )
    with ExitStack() as stack:
        stack.callback(transport.close)
        device = open_device(interface or spec.interface or DEFAULT_INTERFACE, mtu=mtu)
        stack.callback(device.close)
        log.info("connecting to %s (SUDP v%d) ...", spec.endpoint, spec.server.version)
        async with collapse_exception_groups(), trio.open_nursery() as nursery:
            stats = UDPStats()
            sender = UDPSender(transport, stats)
            io = DeviceIO(device)
            client = SUDPClient(session, sender, receive_queue=0)
            uplink = ClientUplink(client.runner, io, spec)
            tunnel = Tunnel(
                (transport,),
                stats,
                sender,
                io,
                inbound=ClientPath(client.runner, io.write),
                outbound=uplink.from_tun,
            )
            try:
                await nursery.start(tunnel.run)
                nursery.start_soon(client.watch)
                client.start(nursery)
                await client.wait_connected()
                async with configure_interface(
                    device.name,
                    addresses=spec.addresses,
                    mtu=mtu,
                    routes=_extra_routes(spec),
                    backend=backend,
                ) as iface:
                    if spec.full_tunnel:
                        server_ip = str(client.server_address[0]).removeprefix("::ffff:")
                        await iface.route_all_traffic(exclude=[server_ip])
                    async with nullcontext() if while_up is None else while_up(device.name):
                        log.info(
                            "tunnel up: %s %s, server %s at %s (SUDP v%d, epoch %s)%s",
                            device.name,
                            ", ".join(str(a) for a in spec.addresses),
                            spec.server_address or "-",
                            spec.endpoint,
                            spec.server.version,
                            client.statistics().current_epoch,
                            ", all traffic through the tunnel" if spec.full_tunnel else "",
                        )
                        task_status.started(VpnClient(client, uplink, tunnel, spec, device.name))
                        await trio.sleep_forever()
            finally:
                client.close()
