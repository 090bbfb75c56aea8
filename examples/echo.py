"""The README's library example: an SUDP echo server and a client over real UDP.

python examples/echo.py
"""

import trio

import trio_sudp
from trio_sudp import LocalIdentity, Peer, PrivateKey, Version

SHARED_KEY = b"a v3 shared key!"  # v3 only: up to 64 bytes, the same on both sides


async def echo(server: trio_sudp.SUDPServer) -> None:
    async for vaddr, payload in server:  # (client's virtual address, payload)
        await server.send(vaddr, payload.upper())


async def main() -> None:
    server_key, client_key = PrivateKey.generate(), PrivateKey.generate()
    async with (
        trio_sudp.open_server(
            "127.0.0.1:0",  # port 0: any free port
            local=LocalIdentity(0, server_key),  # the server is virtual address 0
            peers=[Peer(1, client_key.public_key, Version.V3, SHARED_KEY)],
        ) as server,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(echo, server)
        host, port = server.local_address[:2]
        async with trio_sudp.open_client(
            f"{host}:{port}",
            local=LocalIdentity(1, client_key),
            server=Peer(0, server_key.public_key, Version.V3, SHARED_KEY),
        ) as client:
            await client.send(b"hello over sudp")
            print(await client.receive())  # b'HELLO OVER SUDP'
            stats = client.statistics()
            print(f"epoch {stats.current_epoch}, {stats.tx_packets} packets sent")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
