"""``trio-sudp demo``: a working tunnel, shown end to end.

As root with ``/dev/net/tun`` and iproute2, it builds two network namespaces joined by
a veth pair, generates keys and configurations with the CLI, starts ``trio-sudp
serve`` in one and ``trio-sudp connect`` in the other, pings across the tunnel,
moves a few megabytes over TCP, prints ``trio-sudp show``, and removes everything.

Otherwise it says why and runs the same VPN code over the in-memory fake network:
a server and a client with fresh keys, an ICMP ping and a transfer through TUN
devices that live in memory.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import time

import trio

from ..protocol import Version
from ..protocol.crypto import PrivateKey
from ..protocol.peers import Peer
from ..protocol.settings import SessionSettings

__all__ = ["main", "memory_demo", "netns_available"]


def netns_available() -> str | None:
    """``None`` when the real demo can run here, else the reason it cannot."""
    if sys.platform != "linux":
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "not running as root"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    return None


async def memory_demo(version: Version = Version.V3, megabytes: int = 2) -> list[str]:
    """The VPN over the fake network and in-memory TUNs; return the report lines."""
    from ..config.model import ClientConfig, PeerConfig, ServerConfig
    from ..testing import FakeNetwork, LinkConfig, MemoryNetBackend, memory_tun_pair
    from ..testing.packets import echo_reply_for, icmp_echo, udp4
    from ..vpn.client import run_client
    from ..vpn.server import run_server

    lines: list[str] = []
    net = FakeNetwork(seed=1, default_link=LinkConfig(delay=0.002))
    server_key, client_key = PrivateKey.generate(), PrivateKey.generate()
    shared = b"demo-shared-key-0001" if version == Version.V3 else None
    lines.append(
        f"keys: server {server_key.public_key.fingerprint()}, "
        f"client {client_key.public_key.fingerprint()}"
    )
    server_spec = ServerConfig(
        listen=("192.0.2.1", 7000),
        private_key=server_key,
        addresses=(ipaddress.ip_interface("10.0.0.1/24"),),
        peers=(
            PeerConfig(
                peer=Peer(1, client_key.public_key, version, shared),
                addresses=(ipaddress.ip_address("10.0.0.2"),),
                name="demo-client",
            ),
        ),
    )
    client_spec = ClientConfig(
        private_key=client_key,
        vaddr=1,
        addresses=(ipaddress.ip_interface("10.0.0.2/24"),),
        endpoint="192.0.2.1:7000",
        server=Peer(0, server_key.public_key, version, shared),
        server_address=ipaddress.ip_address("10.0.0.1"),
        settings=SessionSettings(),
    )
    server_tun, server_kernel = memory_tun_pair(4096, names=("sudp0", "kernel"))
    client_tun, client_kernel = memory_tun_pair(4096, names=("sudp1", "kernel"))

    async def read(end: object) -> bytes:
        while True:
            try:
                return end.read_nowait()  # type: ignore[attr-defined, no-any-return]
            except BlockingIOError:
                await end.wait_readable()  # type: ignore[attr-defined]

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: run_server(
                    server_spec,
                    network=net,
                    open_device=lambda name, mtu: server_tun,
                    backend=MemoryNetBackend(),
                    task_status=task_status,
                )
            )
            started = time.perf_counter()
            client = await nursery.start(
                lambda task_status: run_client(
                    client_spec,
                    network=net,
                    bind=("192.0.2.2", 0),
                    open_device=lambda name, mtu: client_tun,
                    backend=MemoryNetBackend(),
                    task_status=task_status,
                )
            )
            lines.append(
                f"SUDP v{version} tunnel up in {(time.perf_counter() - started) * 1000:.1f} ms "
                f"(epoch {client.client.statistics().current_epoch})"
            )
            for sequence in range(1, 4):
                start = time.perf_counter()
                client_kernel.write_nowait(icmp_echo("10.0.0.2", "10.0.0.1", sequence=sequence))
                request = await read(server_kernel)
                server_kernel.write_nowait(echo_reply_for(request))
                await read(client_kernel)
                elapsed = (time.perf_counter() - start) * 1000
                lines.append(f"ping 10.0.0.1: seq={sequence} time={elapsed:.2f} ms")
            chunk = bytes(1300)
            count = megabytes * 1024 * 1024 // len(chunk)
            received = 0
            start = time.perf_counter()
            packet = udp4("10.0.0.2", "10.0.0.1", 40000, 5001, chunk)
            window = 256
            for first in range(0, count, window):
                batch = min(window, count - first)
                for _ in range(batch):
                    client_kernel.write_nowait(packet)
                for _ in range(batch):
                    received += len(await read(server_kernel)) - 28
            elapsed = time.perf_counter() - start
            lines.append(
                f"transfer: {received / 1e6:.1f} MB client -> server in {elapsed:.2f} s "
                f"({received * 8 / elapsed / 1e6:.0f} Mbit/s through in-memory devices)"
            )
            status = server.status()
            peer = status["peers"][0]
            lines.append(
                f"server sees peer {peer['vaddr']} ({peer['name']}) at {peer['endpoint']}: "
                f"{peer['rx_packets']} packets in, {peer['tx_packets']} out, "
                f"{peer['handshakes']} handshake(s)"
            )
            nursery.cancel_scope.cancel()
    return lines


def main() -> int:
    """Run the best demo this machine allows; return an exit code."""
    reason = netns_available()
    if reason is None:
        from .demo_netns import run_netns_demo

        return run_netns_demo()
    print(f"trio-sudp demo: {reason}, so the real-namespace demo cannot run;")
    print("running the same VPN code over the in-memory fake network instead.\n")
    for version in (Version.V2, Version.V3):
        for line in trio.run(memory_demo, version):
            print(line)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
