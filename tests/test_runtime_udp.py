"""The library API over real UDP sockets on 127.0.0.1 (no root needed)."""

from __future__ import annotations

import pytest
import trio

import trio_sudp
from trio_sudp import LocalIdentity, Peer, PrivateKey, SessionState, Version


@pytest.mark.parametrize("version", [Version.V2, Version.V3])
async def test_client_and_server_over_loopback(version: Version) -> None:
    server_key, client_key = PrivateKey.generate(), PrivateKey.generate()
    shared = b"loopback-shared" if version == Version.V3 else None
    with trio.fail_after(10):
        async with trio_sudp.open_server(
            "127.0.0.1:0",
            local=LocalIdentity(0, server_key),
            peers=[Peer(5, client_key.public_key, version, shared)],
        ) as server:
            host, port = server.local_address[:2]
            async with trio_sudp.open_client(
                f"{host}:{port}",
                local=LocalIdentity(5, client_key),
                server=Peer(0, server_key.public_key, version, shared),
            ) as client:
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
