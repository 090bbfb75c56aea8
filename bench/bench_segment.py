"""Cutting TSO super-packets into segments (vpn/segment.py), beside one AES-GCM call.

    .venv/bin/python bench/bench_segment.py [--rounds N]

A TSO TUN read is up to 64 KB of one TCP flow: here 45 segments of 1448 bytes (an
MSS with TCP timestamps), IPv4 and IPv6, as the kernel hands them over. Prints µs
per super-packet and per segment for

- the whole split (``Segmenter.split``: headers, sequence numbers, both checksums,
  the segments' bytes) with each way of summing the payloads;
- the payload sums alone, for each approach tried: ``sum(struct.unpack(...))`` of
  16-bit words, one ``int.from_bytes(chunk) % 0xFFFF`` per segment, the same with
  three folds first (``pure_sums``, the fallback), one vectorised numpy sum over
  the super-packet (``numpy_sums``, with the ``fast`` extra);
- completing the partial checksum of one 1400-byte UDP packet (``TUN_F_CSUM``);

each beside one AES-256-GCM encryption of 1400 bytes (``cryptography``'s AESGCM)
measured in the same run: these machines differ from run to run by up to 2.5×, so
only the ratios mean anything. Every timing is the best of ``--rounds`` interleaved
rounds.
"""

from __future__ import annotations

import argparse
import os
import struct
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trio_sudp.testing.packets import tcp_segment
from trio_sudp.vpn.coalesce import coalesce
from trio_sudp.vpn.segment import VNET_HEADER, Segmenter, numpy_sums, pure_sums

SEGMENTS = 45
MSS = 1448
# 12 bytes of TCP options: NOP, NOP, timestamps (the kernel's usual data segment).
TIMESTAMPS = b"\x01\x01\x08\x0a" + bytes(8)


def super_packet(src: str, dst: str) -> bytes:
    """A GSO read of SEGMENTS segments of MSS bytes (vnet header first)."""
    data = os.urandom(SEGMENTS * MSS)
    segments = [
        tcp_segment(src, dst, data[i : i + MSS], seq=i, ident=i // MSS, options=TIMESTAMPS)
        for i in range(0, len(data), MSS)
    ]
    (write,) = coalesce(segments)
    read = b"".join(bytes(part) for part in write)
    assert Segmenter().split(read) == segments
    return read


def partial_udp() -> bytes:
    """A 1400-byte UDP read with only the pseudo-header sum in its checksum field."""
    payload = os.urandom(1400 - 28)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 1400, 0, 0, 64, 17, 0, bytes(4), bytes(4))
    udp = struct.pack("!HHHH", 1000, 2000, 1380, 0x1234) + payload
    return VNET_HEADER.pack(1, 0, 0, 0, 20, 6) + header + udp


def struct_sums(data: bytes, start: int, size: int, count: int) -> list[int]:
    return [
        sum(struct.unpack_from(f"!{size // 2}H", data, a))
        for a in range(start, start + size * count, size)
    ]


def plain_from_bytes_sums(data: bytes, start: int, size: int, count: int) -> list[int]:
    return [
        int.from_bytes(data[a : a + size]) % 0xFFFF
        for a in range(start, start + size * count, size)
    ]


def best_of(count: int, fn: Callable[[], object]) -> float:
    """Seconds per call: the best of a few timed loops of ``count`` calls."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(count):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (best kept)")
    args = parser.parse_args()
    try:
        import numpy  # noqa: F401
    except ImportError:
        have_numpy = False
    else:
        have_numpy = True
    aead, nonce, plaintext = AESGCM(os.urandom(32)), os.urandom(12), os.urandom(1400)
    v4 = super_packet("10.0.0.2", "10.0.0.1")
    v6 = super_packet("fd00::2", "fd00::1")
    start = 10 + 20 + 32  # payload of the IPv4 super-packet
    udp = partial_udp()
    pure, fast = Segmenter(pure_sums).split, Segmenter(numpy_sums).split
    cases: list[tuple[str, int, int, Callable[[], object]]] = [
        ("AES-256-GCM encrypt, 1400 bytes (reference)", 1, 20000,
         lambda: aead.encrypt(nonce, plaintext, None)),
        ("split IPv4, pure sums", SEGMENTS, 300, lambda: pure(v4)),
        ("split IPv6, pure sums", SEGMENTS, 300, lambda: pure(v6)),
    ]  # fmt: skip
    if have_numpy:
        cases += [
            ("split IPv4, numpy sums", SEGMENTS, 1000, lambda: fast(v4)),
            ("split IPv6, numpy sums", SEGMENTS, 1000, lambda: fast(v6)),
        ]  # fmt: skip
    cases += [
        ("sums: sum(struct.unpack) per segment", SEGMENTS, 100,
         lambda: struct_sums(v4, start, MSS, SEGMENTS)),
        ("sums: int.from_bytes % 0xFFFF per segment", SEGMENTS, 300,
         lambda: plain_from_bytes_sums(v4, start, MSS, SEGMENTS)),
        ("sums: pure_sums (3 folds, then %)", SEGMENTS, 300,
         lambda: pure_sums(v4, start, MSS, SEGMENTS)),
    ]  # fmt: skip
    if have_numpy:
        cases.append(
            ("sums: numpy_sums (one vectorised sum)", SEGMENTS, 2000,
             lambda: numpy_sums(v4, start, MSS, SEGMENTS))
        )  # fmt: skip
    cases.append(
        ("complete a partial UDP checksum, 1400 bytes", 1, 20000,
         lambda: pure(udp))
    )  # fmt: skip
    best = {name: float("inf") for name, *_ in cases}
    for _ in range(args.rounds):
        for name, _segments, count, fn in cases:
            best[name] = min(best[name], best_of(count, fn))
    reference = best[cases[0][0]]
    print(f"{SEGMENTS} segments of {MSS} bytes per super-packet; numpy: {have_numpy}")
    print(f"{'':46s} {'µs/super-packet':>16s} {'µs/segment':>11s} {'× AES-GCM':>10s}")
    for name, segments, _count, _fn in cases:
        total = best[name] * 1e6
        per = total / segments
        row = f"{name:46s} {total if segments > 1 else float('nan'):16.1f} {per:11.2f}"
        print(f"{row} {per / (reference * 1e6):10.2f}")


if __name__ == "__main__":
    main()
