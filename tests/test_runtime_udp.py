"""The library API over real UDP sockets on 127.0.0.1 (no root needed)."""

from __future__ import annotations

import pytest
import trio

import trio_sudp
from runtime_helpers import loopback_pair
from trio_sudp import SessionState, Version


@pytest.mark.parametrize("version", [Version.V2, Version.V3])
async def test_client_and_server_over_loopback(version: Version) -> None:
    with trio.fail_after(10):
        async with loopback_pair(version) as (server, client):
            assert client.state is SessionState.ESTABLISHED
            for i in range(50):
                payload = b"%d" % i * 40
                await client.send(payload)
                assert await server.receive() == (5, payload)
                await server.send(5, payload[::-1])
                assert await client.receive() == payload[::-1]
            big = bytes(trio_sudp.max_payload(version))
            await client.send(big)
            assert await server.receive() == (5, big)
            stats = server.statistics()[5]
            assert stats.endpoint[1] == client.local_address[1]
            assert stats.rx_packets >= 51
