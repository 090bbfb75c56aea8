"""The VPN server and client glue over the fake network, in-memory TUNs and netconfig.

No root needed: the kernel's side of each TUN is played by the test. The same code
runs against real devices in tests/test_e2e_netns.py.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from runtime_helpers import client_key, client_peer, server_key, server_peer, wait_for
from trio_sudp import Version
from trio_sudp.config import ClientConfig, PeerConfig, ServerConfig
from trio_sudp.testing import (
    FakeNetwork,
    LinkConfig,
    MemoryNetBackend,
    MemoryTun,
    TrioWallClock,
    memory_tun_pair,
)
from trio_sudp.testing.packets import icmp_echo, ipv4
from trio_sudp.vpn.client import VpnClient, run_client
from trio_sudp.vpn.server import VpnServer, WhileUp, run_server

SERVER_LISTEN = ("10.99.0.1", 7000)


def echo_request(src: str, dst: str) -> bytes:
    return icmp_echo(src, dst)


class Kernel:
    """The test's side of one in-memory TUN."""

    def __init__(self, end: MemoryTun) -> None:
        self.end = end

    def send(self, packet: bytes) -> None:
        self.end.write_nowait(packet)

    async def receive(self) -> bytes:
        while True:
            try:
                return self.end.read_nowait()
            except BlockingIOError:
                await self.end.wait_readable()


@attrs.define
class World:
    net: FakeNetwork
    server: VpnServer
    server_kernel: Kernel
    server_backend: MemoryNetBackend
    clients: dict[int, VpnClient] = attrs.field(factory=dict)
    kernels: dict[int, Kernel] = attrs.field(factory=dict)
    backends: dict[int, MemoryNetBackend] = attrs.field(factory=dict)


@asynccontextmanager
async def world(
    version: Version,
    vaddrs: list[int],
    *,
    server_up: Callable[[ServerConfig], WhileUp] | None = None,
    client_up: Callable[[ClientConfig], WhileUp] | None = None,
    **client_opts: Any,
) -> AsyncIterator[World]:
    """A server and clients ``vaddrs`` on a fake network; ``server_up`` / ``client_up``
    make the ``while_up`` of each from its configuration, as the daemons do."""
    net = FakeNetwork(seed=5, default_link=LinkConfig(delay=0.003))
    clock = TrioWallClock()
    entries = tuple(
        PeerConfig(
            peer=client_peer(v, version), addresses=(ipaddress.ip_address(f"10.0.0.{v + 1}"),)
        )
        for v in vaddrs
    )
    spec = ServerConfig(
        listen=SERVER_LISTEN,
        private_key=server_key(),
        addresses=(ipaddress.ip_interface("10.0.0.1/24"),),
        peers=entries,
    )
    server_dev, server_kernel_end = memory_tun_pair(names=("srv0", "kernel"))
    server_backend = MemoryNetBackend()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: run_server(
                spec,
                network=net,
                clock=clock,
                open_device=lambda name, mtu: server_dev,
                backend=server_backend,
                while_up=None if server_up is None else server_up(spec),
                task_status=task_status,
            )
        )
        w = World(net, server, Kernel(server_kernel_end), server_backend)
        for v in vaddrs:
            dev, kernel_end = memory_tun_pair(names=(f"cli{v}", "kernel"))
            backend = MemoryNetBackend()
            cspec = ClientConfig(
                private_key=client_key(v),
                vaddr=v,
                addresses=(ipaddress.ip_interface(f"10.0.0.{v + 1}/24"),),
                endpoint=f"{SERVER_LISTEN[0]}:{SERVER_LISTEN[1]}",
                server=server_peer(v, version),
                server_address=ipaddress.ip_address("10.0.0.1"),
                **client_opts,
            )
            up = None if client_up is None else client_up(cspec)
            w.clients[v] = await nursery.start(
                lambda task_status, cspec=cspec, dev=dev, backend=backend, v=v, up=up: _client(
                    cspec, net, dev, backend, v, up, task_status
                )
            )
            w.kernels[v] = Kernel(kernel_end)
            w.backends[v] = backend
        yield w
        nursery.cancel_scope.cancel()


async def _client(
    spec: ClientConfig,
    net: FakeNetwork,
    dev: MemoryTun,
    backend: MemoryNetBackend,
    vaddr: int,
    while_up: WhileUp | None,
    task_status: trio.TaskStatus[VpnClient],
) -> None:
    await run_client(
        spec,
        network=net,
        clock=TrioWallClock(),
        bind=(f"10.98.0.{vaddr}", 0),
        open_device=lambda name, mtu: dev,
        backend=backend,
        while_up=while_up,
        task_status=task_status,
    )


@pytest.mark.parametrize("version", [Version.V2, Version.V3])
async def test_ping_through_the_tunnel(
    version: Version, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        async with world(version, [1]) as w:
            request = echo_request("10.0.0.2", "10.0.0.1")
            w.kernels[1].send(request)
            assert await w.server_kernel.receive() == request
            reply = echo_request("10.0.0.1", "10.0.0.2")
            w.server_kernel.send(reply)
            assert await w.kernels[1].receive() == reply
            # What the VPN configured on each side.
            assert w.server_backend.mtu == {"srv0": 1420 if version == Version.V2 else 1400}
            assert ("cli1", ipaddress.ip_interface("10.0.0.2/24"), None) in w.backends[1].addresses
        assert w.server_backend.clean
        assert w.backends[1].clean


async def test_clients_reach_each_other_through_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with world(Version.V3, [1, 2]) as w:
            packet = echo_request("10.0.0.2", "10.0.0.3")
            w.kernels[1].send(packet)
            assert await w.kernels[2].receive() == packet
            back = echo_request("10.0.0.3", "10.0.0.2")
            w.kernels[2].send(back)
            assert await w.kernels[1].receive() == back
            # Relayed without a round trip through the server's kernel.
            assert w.server_kernel.end.statistics().queued == 0


async def test_spoofed_inner_source_is_dropped_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with world(Version.V3, [1, 2]) as w:
            for _ in range(5):
                w.kernels[1].send(echo_request("10.0.0.3", "10.0.0.1"))  # claims client 2's address
                w.kernels[1].send(echo_request("10.0.0.3", "10.0.0.3"))
            await wait_for(
                lambda: w.server.server.runners[1].drops.get("spoofed_source", 0) == 10, limit=5
            )
            assert w.server_kernel.end.statistics().queued == 0
            assert w.kernels[2].end.statistics().queued == 0
            # Honest traffic still flows.
            good = echo_request("10.0.0.2", "10.0.0.1")
            w.kernels[1].send(good)
            assert await w.server_kernel.receive() == good


async def test_packet_too_big_answered_with_icmp(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(30):
        async with world(Version.V3, [1]) as w:
            big = ipv4("10.0.0.2", "10.0.0.1", bytes(1500), proto=17)
            w.kernels[1].send(big)
            reply = await w.kernels[1].receive()
            assert reply[9] == 1  # ICMP
            assert reply[20:22] == b"\x03\x04"  # Destination Unreachable, Fragmentation Needed
            assert struct.unpack(">H", reply[26:28])[0] == 1400  # next-hop MTU
            assert w.clients[1].uplink.drops["too_big"] == 1
            assert w.server_kernel.end.statistics().queued == 0


async def test_unknown_destination_from_the_tun_is_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with world(Version.V3, [1]) as w:
            w.server_kernel.send(echo_request("10.0.0.1", "10.0.0.99"))
            await wait_for(lambda: w.server.router.drops.get("no_route", 0) == 1, limit=5)
