"""The server under hostile load, on real sockets and on the fake network.

What a flood costs it and what it must not cost its clients: garbage is dropped by
the kernel's prefilter where the kernel takes one; a socket that loses datagrams
keeps its clients from expiring; drops are logged as one summary a second.
"""

from __future__ import annotations

import logging
import socket
import struct
import sys

import pytest
import trio
import trio.testing

import trio_sudp
from runtime_helpers import SERVER, Setup, client_peer, server_key, wait_for
from trio_sudp import LocalIdentity, Version
from trio_sudp.testing import FakeNetwork, LinkConfig

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="a Linux socket filter"
)


def garbage(src: int, kind: int = 4) -> bytes:
    """A Data-looking datagram from ``src`` that no session can open."""
    return struct.pack(">BBHHHIQ", 3, kind, 60, src, 0, 1, 2) + bytes(60)


@linux_only
async def test_the_kernel_prefilter_drops_garbage_and_follows_the_clients() -> None:
    with trio.fail_after(10):
        async with trio_sudp.open_server(
            "127.0.0.1:0",
            local=LocalIdentity(0, server_key()),
            peers=[client_peer(5, Version.V3)],
        ) as server:
            status = server.socket_status()
            assert status["prefilter"] == "kernel"
            assert status["receive_buffer"] >= 8 * 1024 * 1024
            before = status["kernel_drops"]
            assert isinstance(before, int)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
                attacker.connect(server.local_address)
                for _ in range(200):
                    attacker.send(b"\xff" * 100)  # no version a client speaks
                attacker.send(garbage(900))  # outside the clients' range
                await wait_for(lambda: server.socket_status()["kernel_drops"] == before + 201, 5)
                assert server.core.drops == {}  # nothing of it reached Python
                # A client added while running: its address range is let through.
                server.add_peer(client_peer(900, Version.V3))
                attacker.send(garbage(900))
                await wait_for(lambda: sum(server.core.sessions[900].stats.drops.values()) == 1, 5)


async def test_a_socket_losing_datagrams_keeps_a_quiet_client_from_expiring(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = FakeNetwork(seed=4, default_link=LinkConfig(delay=0.005), queue_size=50)
    setup = Setup(net, Version.V3)
    with trio.fail_after(120):
        async with setup.server([1]) as server:
            async with setup.client(1) as client:
                await client.send(b"hello")
                await server.receive()
            quiet_since = trio.current_time()
            # A flood the socket cannot take, every second for 12 s: it loses datagrams.
            for _ in range(12):
                for _ in range(500):
                    net.inject(garbage(77), src=("198.51.100.9", 9), dst=SERVER)
                await trio.sleep(1.0)
                assert server.statistics()[1].state == "established"
            assert trio.current_time() - quiet_since > 2 * 5.0  # twice the idle expiry
            # The flood stops: the quiet client expires one idle expiry later.
            await wait_for(lambda: server.statistics()[1].state == "idle", 7.0)


async def test_drops_are_logged_as_one_summary_a_second(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    net = FakeNetwork(seed=5, default_link=LinkConfig(delay=0.005), queue_size=10_000)
    setup = Setup(net, Version.V3)
    caplog.set_level(logging.DEBUG, logger="trio_sudp")
    with trio.fail_after(30):
        async with setup.server([1]):
            await trio.sleep(0.1)
            for i in range(3000):
                net.inject(garbage(77 + i % 2), src=("198.51.100.9", 9), dst=SERVER)
                net.inject(b"\x09" * 30, src=("198.51.100.9", 9), dst=SERVER)
            await trio.sleep(2.5)
    summaries = [r.getMessage() for r in caplog.records if "dropped in the last" in r.getMessage()]
    assert summaries == ["dropped in the last 1 s: bad_version 3000, unknown_peer 3000"]
    assert len(caplog.records) < 20  # nothing per datagram
