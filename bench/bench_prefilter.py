"""The server's prefilter: its Python cost per garbage datagram, and a flood with and
without the kernel filter.

    .venv/bin/python bench/bench_prefilter.py [--quick] [--seconds S] [--rounds N]

check
    A socket's queue is filled with garbage datagrams, then drained by a bare
    ``recvfrom`` loop; filled again and drained by the same loop calling
    ``prefilter_reason`` (what a server without the kernel filter does first); and
    again, also counting the reason in a dict: µs per datagram of each, and of
    ``prefilter_reason`` alone over the same datagrams in memory. Two kinds of
    garbage: random bytes (refused at the version byte, as most garbage is) and
    well-formed headers from an unknown src (refused by the last check). Best of
    ``--rounds``, interleaved.

flood
    One flood process (pinned to CPU 0) sends garbage flat out over loopback (GSO
    batches of 64 x 100 bytes where the kernel has GSO), with one valid "probe"
    datagram after every 16 batches, to a plain Python ``recvfrom`` loop in this process
    (pinned to CPU 1), for ``--seconds``, with and without the kernel filter
    attached, rounds interleaved (median kept). Printed: what the flood sent, what the
    loop read, what the kernel dropped (the filter's refusals and queue overflows),
    the overflows alone, the share of probes lost, and how many datagrams per second
    the socket absorbed (sent minus overflowed). On loopback the kernel's receive
    work, the filter included, runs on the *sender's* CPU; on a real NIC it runs in
    the receiving host's softirq, still before any wakeup of the server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import select
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from trio_sudp.protocol.errors import DropReason
from trio_sudp.runtime.prefilter import PrefilterRules, prefilter_reason
from trio_sudp.runtime.udp import UDPNetwork, UDPTransport

RULES = PrefilterRules.for_clients([2, 3], range(1, 101))
HEADER = struct.Struct(">BBHHHIQ")
#: A valid Data datagram (v3, 100 bytes) from client 1: the flood's probe.
PROBE = HEADER.pack(3, 4, 80, 1, 0, 1, 1) + bytes(80)
GSO_SEGMENTS = 64
PROBE_EVERY = 16


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def random_garbage(count: int) -> list[bytes]:
    """100-byte random datagrams; about 1 in 128 has a known version byte."""
    return [os.urandom(100) for _ in range(count)]


def unknown_src_garbage(count: int) -> list[bytes]:
    """Well-formed v3 Data headers from src 5000 (outside 1..100): refused last."""
    return [HEADER.pack(3, 4, 80, 5000, 0, 1, i) + os.urandom(80) for i in range(count)]


# ---------------------------------------------------------------- check


def fill(sender: socket.socket, receiver: UDPTransport, pool: list[bytes], count: int) -> int:
    address = receiver.local_address
    drops = receiver.kernel_drops() or 0
    for i in range(count):
        sender.sendto(pool[i % len(pool)], address)
    return count - ((receiver.kernel_drops() or 0) - drops)


def drain_bare(sock: socket.socket) -> tuple[int, float]:
    recvfrom = sock.recvfrom
    n = 0
    start = time.perf_counter()
    try:
        while True:
            recvfrom(4096)
            n += 1
    except BlockingIOError:
        pass
    return n, time.perf_counter() - start


def drain_checked(sock: socket.socket) -> tuple[int, float]:
    recvfrom = sock.recvfrom
    rules = RULES
    reason_of = prefilter_reason
    n = 0
    start = time.perf_counter()
    try:
        while True:
            data, _ = recvfrom(4096)
            reason_of(data, rules)
            n += 1
    except BlockingIOError:
        pass
    return n, time.perf_counter() - start


def drain_counted(sock: socket.socket) -> tuple[int, float]:
    """As ``drain_checked``, and a dict counts the reason (a ``DropReason`` key is
    hashed by ``Enum.__hash__``, a Python function)."""
    recvfrom = sock.recvfrom
    rules = RULES
    reason_of = prefilter_reason
    counts = dict.fromkeys(DropReason, 0)
    n = 0
    start = time.perf_counter()
    try:
        while True:
            data, _ = recvfrom(4096)
            reason = reason_of(data, rules)
            if reason is not None:
                counts[reason] += 1
            n += 1
    except BlockingIOError:
        pass
    return n, time.perf_counter() - start


def check_alone(pool: list[bytes]) -> float:
    rules = RULES
    reason_of = prefilter_reason
    start = time.perf_counter()
    for data in pool:
        reason_of(data, rules)
    return (time.perf_counter() - start) / len(pool)


def bench_check(args: argparse.Namespace) -> None:
    count = 20_000 if args.quick else 100_000
    receiver = UDPNetwork(gro=False).bind(("127.0.0.1", 0))
    receiver.grow_receive_buffer(256 * 1024 * 1024)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock = socket.socket(fileno=os.dup(receiver.fileno()))
    sock.setblocking(False)
    try:
        print(f"check: {count} datagrams queued, then drained; best of {args.rounds} rounds")
        print(
            f"{'garbage':<13}{'bare recvfrom':>14}{'+ prefilter':>13}{'+ count':>11}"
            f"{'prefilter alone':>17}"
        )
        drains = (("bare", drain_bare), ("checked", drain_checked), ("counted", drain_counted))
        for name, make in (("random", random_garbage), ("unknown src", unknown_src_garbage)):
            pool = make(4096)
            best = dict.fromkeys(["bare", "checked", "counted", "alone"], 1e9)
            for _ in range(args.rounds):
                for key, drain in drains:
                    queued = fill(sender, receiver, pool, count)
                    n, seconds = drain(sock)
                    assert n == queued, (n, queued)
                    best[key] = min(best[key], seconds / n)
                best["alone"] = min(best["alone"], check_alone(pool * (count // len(pool))))
            us = {key: value * 1e6 for key, value in best.items()}
            print(
                f"{name:<13}{us['bare']:>11.3f} µs{us['checked']:>10.3f} µs"
                f"{us['counted']:>8.3f} µs{us['alone']:>14.3f} µs"
            )
        print("(µs per datagram; the '+' columns include the recvfrom; 'alone': over a list)")
    finally:
        sock.close()
        sender.close()
        receiver.close()


# ---------------------------------------------------------------- flood


def flood(address: tuple[str, int], seconds: float, gso: bool, report: Connection) -> None:
    """The flood process: garbage flat out, a probe after every PROBE_EVERY batches."""
    pin(0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pool = random_garbage(GSO_SEGMENTS * 16)
    pool = [d for d in pool if prefilter_reason(d, RULES) is not None]
    batches = [pool[i : i + GSO_SEGMENTS] for i in range(0, len(pool) - GSO_SEGMENTS, 8)]
    cmsg = [(17, 103, struct.pack("=H", 100))]  # SOL_UDP, UDP_SEGMENT
    garbage = probes = 0
    report.send("ready")
    report.recv()
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        for _ in range(PROBE_EVERY):
            i += 1
            try:
                if gso:
                    batch = batches[i % len(batches)]
                    sock.sendmsg([b"".join(batch)], cmsg, 0, address)
                    garbage += len(batch)
                else:
                    sock.sendto(pool[i % len(pool)], address)
                    garbage += 1
            except OSError:
                pass
        sock.sendto(PROBE, address)
        probes += 1
    report.send((garbage, probes, seconds))
    sock.close()


def absorb(sock: socket.socket, stop: Callable[[], bool]) -> tuple[int, int]:
    """The plain loop: blocking ``recvfrom`` until the flood ends; datagrams and probes."""
    recvfrom = sock.recvfrom
    n = probes = 0
    while not stop():
        if not select.select([sock], [], [], 0.2)[0]:
            continue
        try:
            while True:
                data, _ = recvfrom(4096)
                n += 1
                if data == PROBE:
                    probes += 1
        except BlockingIOError:
            pass
    return n, probes


def flood_round(filtered: bool, seconds: float, gso: bool) -> dict[str, float]:
    receiver = UDPNetwork(gro=False).bind(("127.0.0.1", 0))
    sock = socket.socket(fileno=os.dup(receiver.fileno()))
    sock.setblocking(False)
    try:
        if filtered and not receiver.attach_prefilter(RULES):
            raise SystemExit("the kernel refused the socket filter")
        ctx = multiprocessing.get_context("fork")
        here, there = ctx.Pipe()
        process = ctx.Process(target=flood, args=(receiver.local_address, seconds, gso, there))
        process.start()
        assert here.recv() == "ready"
        drops_before = receiver.kernel_drops() or 0
        here.send("go")
        read, probes_read = absorb(sock, here.poll)
        garbage, probes, elapsed = here.recv()
        process.join()
        # What is still queued when the flood stops is read too.
        more, more_probes = absorb(sock, lambda: not select.select([sock], [], [], 0)[0])
        read += more
        probes_read += more_probes
        dropped = (receiver.kernel_drops() or 0) - drops_before
        sent = garbage + probes
        overflowed = dropped - (garbage if filtered else 0)
        return {
            "sent": sent / elapsed,
            "read": read / elapsed,
            "dropped": dropped / elapsed,
            "overflowed": overflowed / elapsed,
            "probes lost": 100 * (probes - probes_read) / probes,
            "absorbed": (sent - overflowed) / elapsed,
        }
    finally:
        sock.close()
        receiver.close()


def bench_flood(args: argparse.Namespace) -> None:
    probe = UDPNetwork().bind(("127.0.0.1", 0))
    gso = bool(probe.max_segment_size) and not args.no_gso
    probe.close()
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(args.rounds):
        for filtered in (False, True):
            results[filtered].append(flood_round(filtered, args.seconds, gso))
    how = f"GSO batches of {GSO_SEGMENTS}" if gso else "one sendto per datagram"
    print(
        f"\nflood: 100-byte random garbage ({how}), one probe per {PROBE_EVERY} sends;"
        f" {args.seconds:g} s x {args.rounds} rounds, median"
    )
    columns = ["sent", "read", "dropped", "overflowed", "absorbed", "probes lost"]
    print(f"{'kernel filter':<15}" + "".join(f"{c:>13}" for c in columns))
    for filtered in (False, True):
        row: dict[str, Any] = {
            c: statistics.median(r[c] for r in results[filtered]) for c in columns
        }
        cells = [f"{row[c] / 1000:>10.0f} k/s" for c in columns[:-1]]
        cells.append(f"{row['probes lost']:>12.1f}%")
        print(f"{'attached' if filtered else 'none':<15}" + "".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description="prefilter cost and flood absorption")
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("--seconds", type=float, default=None, help="flood length per round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--no-gso", action="store_true", help="flood with one sendto each")
    parser.add_argument("--only", choices=["check", "flood"], default=None)
    args = parser.parse_args()
    args.seconds = args.seconds or (1.0 if args.quick else 3.0)
    args.rounds = args.rounds or (2 if args.quick else 3)
    if not sys.platform.startswith("linux"):
        raise SystemExit("Linux only: socket filters and SO_MEMINFO")
    print(f"Python {sys.version.split()[0]} on {os.uname().release}, {os.cpu_count()} CPUs")
    pin(1)
    if args.only in (None, "check"):
        bench_check(args)
    if args.only in (None, "flood"):
        bench_flood(args)


if __name__ == "__main__":
    main()
