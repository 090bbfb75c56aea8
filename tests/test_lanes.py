"""The server's lanes: known clients' endpoints on their own socket, strangers on another.

Real sockets on loopback (Linux): the kernel runs the reuseport program, so these
tests show where the kernel puts each datagram, not what the program says.
"""

from __future__ import annotations

import socket
import struct
import sys
from contextlib import nullcontext

import pytest
import trio
import trio.testing

import trio_sudp
from runtime_helpers import loopback_pair, needs_ipv6, wait_for
from trio_sudp import Version
from trio_sudp.runtime.batches import STRANGERS_REST, UDP_READ_BATCH, read_in_batches
from trio_sudp.runtime.lanes import MAX_STEERED, ServerLanes, bind_lanes, build_lane_program
from trio_sudp.runtime.udp import UDPNetwork, UDPTransport
from trio_sudp.testing import FakeNetwork

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT programs are Linux's"
)


def drain(transport: object) -> list[bytes]:
    """Everything queued on a lane now."""
    assert isinstance(transport, UDPTransport)
    out = []
    while True:
        try:
            out.append(transport.recv_nowait()[0])
        except BlockingIOError:
            return out


def lanes_on(host: str) -> ServerLanes:
    lanes = bind_lanes(UDPNetwork(gro=False), (host, 0))
    assert lanes.strangers is not None and lanes.steering
    return lanes


def sender(family: socket.AddressFamily, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


@pytest.mark.parametrize(
    ("bind", "family", "source"),
    [
        ("127.0.0.1", socket.AF_INET, "127.0.0.1"),
        pytest.param("::1", socket.AF_INET6, "::1", marks=needs_ipv6),
        # A dual-stack socket: IPv4 clients have ::ffff: endpoints, IPv4 headers.
        pytest.param("::", socket.AF_INET, "127.0.0.1", marks=needs_ipv6),
    ],
)
async def test_the_kernel_puts_steered_endpoints_on_the_known_lane(
    bind: str, family: socket.AddressFamily, source: str
) -> None:
    lanes = lanes_on(bind)
    port = lanes.known.local_address[1]
    target = ("127.0.0.1" if family == socket.AF_INET else "::1", port)
    with lanes_closing(lanes), sender(family, source) as known, sender(family, source) as other:
        # As the server sees the known client: the address its socket reports.
        known.sendto(b"hello", target)
        await wait_for(lambda: lanes.strangers is not None and readable(lanes.strangers), 5)
        _, seen = lanes.strangers.recv_nowait()  # not steered yet: a stranger
        assert lanes.steer([seen]) == 1
        for i in range(20):
            known.sendto(b"k%d" % i, target)
            other.sendto(b"o%d" % i, target)
        await wait_for(lambda: readable(lanes.known), 5)
        await trio.sleep(0.05)
        assert sorted(drain(lanes.known)) == sorted(b"k%d" % i for i in range(20))
        assert sorted(drain(lanes.strangers)) == sorted(b"o%d" % i for i in range(20))
        # Steering elsewhere: the old endpoint is a stranger again.
        assert lanes.steer([]) == 0
        known.sendto(b"again", target)
        await wait_for(lambda: readable(lanes.strangers), 5)
        assert drain(lanes.strangers) == [b"again"]
        assert drain(lanes.known) == []


class lanes_closing:
    def __init__(self, lanes: ServerLanes) -> None:
        self.lanes = lanes

    def __enter__(self) -> ServerLanes:
        return self.lanes

    def __exit__(self, *exc: object) -> None:
        self.lanes.close()


def readable(transport: object) -> bool:
    assert isinstance(transport, UDPTransport)
    sock = socket.socket(fileno=socket.dup(transport.fileno()))
    try:
        sock.setblocking(False)
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    finally:
        sock.close()
    return True


def test_a_port_in_use_is_refused_as_before() -> None:
    lanes = lanes_on("127.0.0.1")
    with lanes_closing(lanes):
        address = lanes.known.local_address
        with pytest.raises(OSError, match=r"cannot bind UDP socket to 127\.0\.0\.1:\d+: .*in use"):
            bind_lanes(None, address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        plain.bind(("127.0.0.1", 0))
        with pytest.raises(OSError, match="in use"):
            bind_lanes(None, plain.getsockname())


def test_the_largest_program_is_taken_by_the_kernel() -> None:
    endpoints = [(f"2001:db8::{i:x}", 1000 + i, 0, 0) for i in range(MAX_STEERED + 50)]
    program, steered = build_lane_program(endpoints)
    assert steered == MAX_STEERED
    assert len(program.instructions) <= 4096
    lanes = lanes_on("127.0.0.1")
    with lanes_closing(lanes):
        assert lanes.steer(endpoints) == MAX_STEERED
        assert lanes.steering


def test_other_networks_have_one_lane() -> None:
    lanes = bind_lanes(FakeNetwork(), ("10.0.0.1", 7000))
    assert lanes.transports == (lanes.known,)
    assert not lanes.steering
    assert lanes.steer([("10.0.0.2", 1)]) == 0
    single = bind_lanes(None, ("127.0.0.1", 0), steer=False)
    with lanes_closing(single):
        assert single.strangers is None


@pytest.mark.parametrize("version", [Version.V2, Version.V3])
async def test_an_established_client_is_steered_and_strangers_counted(version: Version) -> None:
    with trio.fail_after(20):
        async with loopback_pair(version) as (server, client):
            await client.send(b"ping")
            assert await server.receive() == (5, b"ping")
            await wait_for(lambda: server.socket_status()["steered"] == 1, 5)
            status = server.socket_status()
            assert (status["lanes"], status["steering"]) == (2, True)
            strangers = status["rx_strangers"]
            assert isinstance(strangers, int) and strangers >= 1  # its first handshake
            for i in range(50):
                await client.send(b"%d" % i)
            for i in range(50):
                assert await server.receive() == (5, b"%d" % i)
            assert server.socket_status()["rx_strangers"] == strangers
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                stranger.connect(server.local_address)
                # Data for the client from elsewhere: past the prefilter, not openable.
                forged = struct.pack(">BBHHHIQ", int(version), 4, 60, 5, 0, 1, 2) + bytes(60)
                for _ in range(30):
                    stranger.send(forged)
                await wait_for(lambda: server.socket_status()["rx_strangers"] >= strangers + 30, 5)
            await client.send(b"still here")
            assert await server.receive() == (5, b"still here")
            server.remove_peer(5)
            await wait_for(lambda: server.socket_status()["steered"] == 0, 5)


async def test_a_server_on_the_fake_network_reads_one_socket() -> None:
    net = FakeNetwork()
    async with trio_sudp.open_server(
        ("10.0.0.1", 7000),
        local=trio_sudp.LocalIdentity(0, trio_sudp.PrivateKey.generate()),
        peers=[],
        network=net,
    ) as server:
        status = server.socket_status()
        assert (status["lanes"], status["steering"], status["steered"]) == (1, False, 0)


def handshake_shaped(version: Version) -> bytes:
    """A ClientHandshake for client 5 the prefilter passes: only the door refuses it."""
    body = {Version.V2: 133, Version.V3: 153}[version]
    return struct.pack(">BBHHHIQ", int(version), 1, body, 5, 0, 1, 2) + bytes(body)


@pytest.mark.parametrize("version", [Version.V2, Version.V3])
async def test_a_host_flooding_the_door_is_banned_in_the_kernel(version: Version) -> None:
    with trio.fail_after(20):
        async with loopback_pair(version) as (server, client):
            await client.send(b"ping")
            assert await server.receive() == (5, b"ping")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flooder:
                flooder.bind(("127.0.0.2", 0))
                flooder.connect(server.local_address)
                for _ in range(3000):
                    flooder.send(handshake_shaped(version))
                await wait_for(lambda: server.socket_status()["banned"] == 1, 5)
                assert server.core.bans.banned == {"127.0.0.2"}
                before = server.socket_status()
                for _ in range(500):
                    flooder.send(handshake_shaped(version))
                await wait_for(
                    lambda: (
                        server.socket_status()["strangers_kernel_drops"]
                        >= before["strangers_kernel_drops"] + 500
                    ),
                    5,
                )
                assert server.socket_status()["rx_strangers"] == before["rx_strangers"]
            await client.send(b"unharmed")
            assert await server.receive() == (5, b"unharmed")


async def test_the_strangers_reader_rests_after_each_full_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A flood that always fills the batch gets UDP_READ_BATCH / STRANGERS_REST a second."""
    batches: list[float] = []

    def drain(now: float) -> int:
        batches.append(now)
        return UDP_READ_BATCH

    with trio.move_on_after(1.0):
        await read_in_batches(
            drain,
            trio.sleep_forever,
            limit=UDP_READ_BATCH,
            boundary=nullcontext,
            rest=STRANGERS_REST,
        )
    assert len(batches) == pytest.approx(1.0 / STRANGERS_REST, abs=1)
