"""The VPN client: a TUN device and one SUDP session with the server (SPEC §5)."""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import trio

from ..protocol.clock import WallClock
from ..protocol.errors import LocalProtocolError
from ..protocol.peers import LocalIdentity
from ..runtime.client import SUDPClient, open_client
from ..runtime.common import AddressLike
from ..runtime.peer import PeerRunner
from ..runtime.transport import DatagramNetwork
from ..tun import open_tun
from ..tun.base import PacketDevice
from ..tun.netconfig import NetBackend, configure_interface
from .device import DeviceIO, io_drops
from .mtu import default_tunnel_mtu, too_big_reply
from .spec import ClientSpec, IPNetwork

__all__ = ["VpnClient", "client_mtu", "run_client"]

log = logging.getLogger("trio_sudp")

DeviceOpener = Callable[..., PacketDevice]


def client_mtu(spec: ClientSpec) -> int:
    """The configured tunnel MTU, or the default for the server's version."""
    return spec.mtu if spec.mtu is not None else default_tunnel_mtu(spec.server.version)


class VpnClient:
    """Moves packets between the TUN device and the session with the server."""

    def __init__(
        self, client: SUDPClient, io: DeviceIO, spec: ClientSpec, mtu: int, interface_name: str
    ) -> None:
        self.client = client
        self.io = io
        self.spec = spec
        self.mtu = mtu
        self.interface_name = interface_name
        #: Packets from the TUN that were not sent, by reason.
        self.drops: Counter[str] = Counter()
        self._runner = client.runner
        self._source_v4 = next((a.ip.packed for a in spec.addresses if a.version == 4), None)
        self._source_v6 = next((a.ip.packed for a in spec.addresses if a.version == 6), None)
        client.on_payload = self.from_server
        io.handler = self.from_tun
        endpoint = client.endpoint
        io.before_batch = endpoint.begin_batch
        io.after_batch = endpoint.end_batch
        endpoint.before_batch = io.begin_write_batch
        endpoint.after_batch = io.end_write_batch

    def from_tun(self, packet: bytes, now: float) -> None:
        """The kernel routed ``packet`` into the tunnel: send it to the server."""
        if len(packet) > self.mtu:
            self.drops["too_big"] += 1
            reply = too_big_reply(
                packet, self.mtu, source_v4=self._source_v4, source_v6=self._source_v6
            )
            if reply is not None:
                self.io.write(reply)
            return
        try:
            self._runner.send(packet, now)
        except LocalProtocolError:  # reconnecting: no session key right now
            self.drops["no_session"] += 1

    def from_server(self, runner: PeerRunner, packet: bytes) -> None:
        """The server sent ``packet``: hand it to the kernel."""
        self.io.write(packet)

    def status(self) -> dict[str, Any]:
        """The client's state for ``trio-sudp show``: interface, server session, counters."""
        client = self.client
        peer = client.statistics().as_json()
        peer["name"] = "server"
        peer["endpoint"] = self.spec.endpoint
        drops = io_drops(self.drops, self.io.stats, client.endpoint_statistics())
        return {
            "role": "client",
            "interface": self.interface_name,
            "listen": None,
            "public_key": self.spec.private_key.public_key.fingerprint(),
            "tunnel": [str(a) for a in self.spec.addresses],
            "mtu": self.mtu,
            "device": self.io.status(),
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
    task_status: trio.TaskStatus[VpnClient] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Connect, bring the tunnel up, and run until cancelled; then undo everything.

    Raises ``TunError`` (no root, no ``/dev/net/tun``) or ``HandshakeError`` (no
    answer, key mismatch, clock skew) before the tunnel is up. Once up, the session
    survives packet loss, NAT rebinding and server restarts by itself. ``network``,
    ``clock``, ``bind``, ``open_device`` and ``backend`` replace the real UDP, wall
    clock, local address, TUN and kernel configuration (tests use in-memory ones).
    """
    mtu = client_mtu(spec)
    with ExitStack() as stack:
        device = open_device(spec.interface or "sudp%d", mtu=mtu)
        stack.callback(device.close)
        log.info("connecting to %s (SUDP v%d) ...", spec.endpoint, spec.server.version)
        async with (
            open_client(
                spec.endpoint,
                local=LocalIdentity(spec.vaddr, spec.private_key),
                server=spec.server,
                settings=spec.settings,
                network=network,
                clock=clock,
                bind=bind,
            ) as client,
            configure_interface(
                device.name,
                addresses=spec.addresses,
                mtu=mtu,
                routes=_extra_routes(spec),
                backend=backend,
            ) as iface,
        ):
            if spec.full_tunnel:
                server_ip = str(client.server_address[0]).removeprefix("::ffff:")
                await iface.route_all_traffic(exclude=[server_ip])
            io = DeviceIO(device)
            vpn = VpnClient(client, io, spec, mtu, device.name)
            async with trio.open_nursery() as nursery:
                await nursery.start(io.run)
                stats = client.statistics()
                log.info(
                    "tunnel up: %s %s, server %s at %s (SUDP v%d, epoch %s)%s",
                    device.name,
                    ", ".join(str(a) for a in spec.addresses),
                    spec.server_address or "-",
                    spec.endpoint,
                    spec.server.version,
                    stats.current_epoch,
                    ", all traffic through the tunnel" if spec.full_tunnel else "",
                )
                task_status.started(vpn)
