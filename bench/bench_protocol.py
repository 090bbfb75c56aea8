"""Protocol core cost per packet and per handshake, beside the bare AES-GCM call.

    .venv/bin/python bench/bench_protocol.py [--packets N] [--handshakes N]

Prints µs per 1400-byte data packet for our encode+encrypt (``Session.send``) and
decode+decrypt (``Session.receive``), each beside the bare ``cryptography`` AES-GCM
call on the same number of bytes, measured in the same run, as a ratio; and µs per
full 3-way handshake (both sides, all crypto included). Target (issue 2): each
direction at most 3x the bare call.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trio_sudp.protocol import (
    ClientSession,
    LocalIdentity,
    Peer,
    PrivateKey,
    ServerCore,
    ServerPeerSession,
    Version,
)

PAYLOAD = bytes(i % 251 for i in range(1400))
SERVER = ("192.0.2.1", 7000)
CLIENT = ("198.51.100.7", 40000)
RUNS = 7


def best_of(count: int, fn: Callable[[], object]) -> float:
    """Best µs per call over ``RUNS`` timed loops of ``count`` calls."""
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        for _ in range(count):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


def connected_pair(version: Version) -> tuple[ClientSession, ServerPeerSession]:
    """A client and a server-side session with a key, on the real wall clock."""
    server_key, client_key = PrivateKey.generate(), PrivateKey.generate()
    shared = b"bench shared key" if version == Version.V3 else None
    core = ServerCore(
        LocalIdentity(0, server_key),
        [Peer(1, client_key.public_key, version, shared)],
        handshake_rate=None,
    )
    client = ClientSession(
        local=LocalIdentity(1, client_key),
        server=Peer(0, server_key.public_key, version, shared),
        server_address=SERVER,
    )
    server = core.sessions[1]
    client.connect(0.0)
    for _ in range(2):
        for datagram, _ in client.take_datagrams():
            server.receive(datagram, CLIENT, 0.0)
        for datagram, _ in server.take_datagrams():
            client.receive(datagram, SERVER, 0.0)
    for datagram, _ in client.take_datagrams():
        server.receive(datagram, CLIENT, 0.0)
    assert server.epochs.current is not None and client.epochs.current is not None
    return client, server


def timed_batches(
    packets: int, make: Callable[[], list[tuple[bytes, ...]]], fn: Callable[..., object]
) -> float:
    """Best µs per call of ``fn(*args)`` over fresh batches of arguments from ``make``.

    Batches are small, like a socket's receive burst, so that the datagrams are in
    cache as they are when just read; building them is not timed.
    """
    best = float("inf")
    for _ in range(RUNS):
        elapsed = 0.0
        done = 0
        while done < packets:
            batch = make()
            start = time.perf_counter()
            for args in batch:
                fn(*args)
            elapsed += time.perf_counter() - start
            done += len(batch)
        best = min(best, elapsed / done)
    return best * 1e6


BATCH = 64


def data_path(version: Version, packets: int) -> list[tuple[str, float, float]]:
    client, server = connected_pair(version)
    send = client.send
    seal_us = best_of(packets, lambda: send(PAYLOAD, 0.0))
    open_us = timed_batches(
        packets,
        lambda: [(send(PAYLOAD, 0.0), CLIENT, 0.0) for _ in range(BATCH)],
        server.receive,
    )
    assert server.receive(send(PAYLOAD, 0.0), CLIENT, 0.0) == PAYLOAD
    assert not server.stats.drops
    # The bare calls on the same bytes: plaintext = inner tag + payload.
    aead = AESGCM(os.urandom(32))
    plain = bytes(4 if version == Version.V2 else 24) + PAYLOAD
    nonce = os.urandom(12)
    bare_seal = best_of(packets, lambda: aead.encrypt(nonce, plain, None))

    def sealed_batch() -> list[tuple[bytes, ...]]:
        out = []
        for _ in range(BATCH):
            n = os.urandom(12)
            out.append((n, aead.encrypt(n, plain, None), None))
        return out

    bare_open = timed_batches(packets, sealed_batch, aead.decrypt)
    return [("encode+encrypt", seal_us, bare_seal), ("decode+decrypt", open_us, bare_open)]


def handshake_cost(version: Version, count: int) -> float:
    """µs per rekey: ClientHandshake, ServerHandshake and EpochAck, both sides' work."""
    client, server = connected_pair(version)
    start = time.perf_counter()
    for i in range(count):
        client.rekey(float(i))
        for datagram, _ in client.take_datagrams():  # ClientHandshake
            server.receive(datagram, CLIENT, float(i))
        for datagram, _ in server.take_datagrams():  # ServerHandshake
            client.receive(datagram, SERVER, float(i))
        for datagram, _ in client.take_datagrams():  # EpochAck
            server.receive(datagram, CLIENT, float(i))
        client.take_events()
        server.take_events()
    elapsed = time.perf_counter() - start
    assert server.epochs.current is not None and client.epochs.current is not None
    assert server.epochs.current.epoch == client.epochs.current.epoch
    assert server.stats.handshakes == count + 1
    return elapsed / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description="SUDP protocol core cost")
    parser.add_argument("--packets", type=int, default=50_000)
    parser.add_argument("--handshakes", type=int, default=500)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, 1400-byte payloads, best of {RUNS} runs")
    print(f"{'':4} {'direction':18} {'ours µs':>8} {'bare µs':>8} {'ratio':>6}")
    for version in (Version.V2, Version.V3):
        for name, ours, bare in data_path(version, args.packets):
            print(f"v{version:<3} {name:18} {ours:8.2f} {bare:8.2f} {ours / bare:6.2f}x")
    for version in (Version.V2, Version.V3):
        cost = handshake_cost(version, args.handshakes)
        print(f"v{version:<3} full 3-way handshake (both sides): {cost:7.1f} µs")


if __name__ == "__main__":
    main()
