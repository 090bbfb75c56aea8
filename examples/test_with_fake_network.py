"""How to test code that uses trio-sudp: the fake network and fake time.

    pytest examples/test_with_fake_network.py     (needs pytest-trio)

Nothing here opens a socket or sleeps for real: the network is in memory,
deterministic under its seed, and Trio's autojump clock runs minutes of protocol
time (keepalives, rekeys, retries) in milliseconds.
"""

import trio
import trio.testing

import trio_sudp
from trio_sudp import LocalIdentity, Peer, PrivateKey, Version
from trio_sudp.testing import FakeNetwork, LinkConfig, TrioWallClock


async def test_echo_survives_a_lossy_link(autojump_clock: trio.testing.MockClock) -> None:
    net = FakeNetwork(seed=42, default_link=LinkConfig(delay=0.02, loss=0.1))
    server_key, client_key = PrivateKey.generate(), PrivateKey.generate()
    async with (
        trio_sudp.open_server(
            ("10.0.0.1", 7000),
            local=LocalIdentity(0, server_key),
            peers=[Peer(7, client_key.public_key, Version.V2)],
            network=net,
            clock=TrioWallClock(),  # SUDP timestamps follow the fake time too
        ) as server,
        trio_sudp.open_client(
            ("10.0.0.1", 7000),
            local=LocalIdentity(7, client_key),
            server=Peer(0, server_key.public_key, Version.V2),
            network=net,
            bind=("10.0.0.2", 0),  # on the fake network, say where the client lives
            clock=TrioWallClock(),
        ) as client,
    ):
        replies = 0
        for i in range(100):
            await client.send(b"ping %d" % i)
            with trio.move_on_after(1):  # lost datagrams stay lost: SUDP is like UDP
                vaddr, payload = await server.receive()
                assert (vaddr, payload) == (7, b"ping %d" % i)
                replies += 1
        assert replies > 80
        # Ten virtual minutes later the session is still up, rekeyed ~20 times.
        await trio.sleep(600)
        assert client.statistics().handshakes > 15
