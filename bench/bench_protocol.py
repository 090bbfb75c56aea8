"""Protocol core cost per packet and per handshake, beside the bare AES-GCM call.

    .venv/bin/python bench/bench_protocol.py [--packets N] [--handshakes N]

Prints µs per 1400-byte data packet for our encode+encrypt (``Session.send``) and
decode+decrypt (``Session.receive``), each beside the bare ``cryptography`` AES-GCM call
on the same bytes measured in the same run, and µs per full 3-way handshake (both sides).
Target (issue 2): each direction ≤ 3x the bare call.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pair import CLIENT_ADDR, Pair  # noqa: E402

from trio_sudp.protocol import Version  # noqa: E402

PAYLOAD = bytes(i % 251 for i in range(1400))


def best_of(runs: int, count: int, fn: Callable[[], object]) -> float:
    """Best µs per call over ``runs`` timed loops of ``count`` calls."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(count):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


def data_path(version: Version, packets: int) -> tuple[float, float, float, float]:
    pair = Pair(version)
    pair.connect()
    client, server = pair.client, pair.server
    now = pair.now
    send = client.send
    seal_us = best_of(5, packets, lambda: send(PAYLOAD, now))
    datagrams = [send(PAYLOAD, now) for _ in range(packets)]
    receive = server.receive
    best = float("inf")
    for _ in range(5):
        datagrams = [send(PAYLOAD, now) for _ in range(packets)]
        start = time.perf_counter()
        for d in datagrams:
            receive(d, CLIENT_ADDR, now)
        best = min(best, time.perf_counter() - start)
    open_us = best / packets * 1e6
    assert receive(send(PAYLOAD, now), CLIENT_ADDR, now) == PAYLOAD
    aead = AESGCM(os.urandom(32))
    nonce = os.urandom(12)
    plain = bytes(24) + PAYLOAD
    sealed = aead.encrypt(nonce, plain, None)
    bare_seal = best_of(5, packets, lambda: aead.encrypt(nonce, plain, None))
    bare_open = best_of(5, packets, lambda: aead.decrypt(nonce, sealed, None))
    return seal_us, bare_seal, open_us, bare_open


def handshake_cost(version: Version, count: int) -> float:
    pair = Pair(version, latency=0.0, handshake_rate=None)
    pair.connect()
    start = time.perf_counter()
    for _ in range(count):
        pair.client.rekey(pair.now)
        for datagram, _ in pair.client.take_datagrams():  # ClientHandshake
            pair.deliver_to_server(datagram, CLIENT_ADDR)
        for datagram, _ in pair.server.take_datagrams():  # ServerHandshake
            pair.deliver_to_client(datagram)
        for datagram, _ in pair.client.take_datagrams():  # EpochAck
            pair.deliver_to_server(datagram, CLIENT_ADDR)
        pair.client.take_events()
        pair.server.take_events()
    elapsed = time.perf_counter() - start
    assert pair.server.epochs.current.epoch == pair.client.epochs.current.epoch  # type: ignore[union-attr]
    return elapsed / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=50_000)
    parser.add_argument("--handshakes", type=int, default=500)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, 1400-byte payloads, best of 5 runs")
    print(f"{'':4} {'direction':18} {'ours µs':>8} {'bare µs':>8} {'ratio':>6}")
    for version in (Version.V2, Version.V3):
        seal, bare_seal, opened, bare_open = data_path(version, args.packets)
        print(f"v{version:<3} {'encode+encrypt':18} {seal:8.2f} {bare_seal:8.2f} {seal / bare_seal:6.2f}x")
        print(f"v{version:<3} {'decode+decrypt':18} {opened:8.2f} {bare_open:8.2f} {opened / bare_open:6.2f}x")
    for version in (Version.V2, Version.V3):
        cost = handshake_cost(version, args.handshakes)
        print(f"v{version:<3} full 3-way handshake, both sides: {cost:8.1f} µs ({1e6 / cost:,.0f}/s)")


if __name__ == "__main__":
    main()
