"""The Trio runtime's cost: echo throughput, memory per idle peer, handshakes per second.

    .venv/bin/python bench/bench_runtime.py [--quick] [--only echo,overhead,memory,handshakes]

Four measurements, each printed as a table (results in bench/RESULTS.md):

echo
    1400-byte packets echoed over 127.0.0.1 through the library API, beside a plain
    Trio UDP echo (one ``await`` per ``recvfrom`` and per ``sendto``) of the same
    packets, measured in the same run, as a ratio (target >= 0.75x). The echo server
    runs in its own process pinned to CPU 1, the client in this process pinned to
    CPU 0, so that each side has a core (these machines have two). The client keeps
    ``--window`` packets in flight and echoes each reply back (a closed loop); rounds
    of every configuration are interleaved and the best round of each is kept.
    Both sides of a configuration use the same API: plain Trio sockets on both
    ends, or the library on both ends (``async for`` + ``send_nowait``; and the
    payload hook of the VPN's receive path, which adds no task switch at all).

overhead
    One-way cost per 1400-byte packet inside one process on one core, split into the
    kernel's share (non-blocking ``sendto`` + ``recvfrom``), the protocol core's share
    (``Session.send`` + ``Session.receive``) and what is left: the runtime's own cost
    (UDP task, demux, ``PeerRunner.handle``, delivery, the send path).

memory
    10,000 configured peers on the FakeNetwork under ``MockClock`` with
    ``TrioWallClock``. Clients are played by a load generator that injects
    pre-signed ClientHandshake + EpochAck datagrams from 10,000 distinct hosts, so
    the process holds nothing but the server; then every peer is connected and idle.
    Measured with tracemalloc (Python heap, exact, with the top allocation sites per
    peer) and with RSS in a separate process (also counts OpenSSL's own memory for
    keys and AES-GCM contexts). A second part simulates keepalives (every 0.5 s)
    and rekeys (every 30 s) for fewer peers over several virtual minutes to show the
    steady state; a third measures what a real ``open_client`` costs.

handshakes
    One server, one core: pre-signed handshakes from 10,000 distinct fake hosts
    (so the per-source rate limit does not interfere) are injected in chunks; the
    server's CPU time from injection until every peer is promoted (EpochAck
    processed) gives handshakes per CPU-second. The load generator's signing is
    done before the clock starts. The bare crypto of one server-side handshake
    (verify + ECDH keygen + exchange + sign + verify) is timed in the same run.
    ``--profile`` prints the server path's cProfile.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import trio_sudp
from trio_sudp import LocalIdentity, Peer, PrivateKey, PublicKey, SessionSettings, Version
from trio_sudp.protocol import ClientSession, ControlFlag, EphemeralKey, Kind, ServerCore
from trio_sudp.protocol.constants import timestamp_unit_us
from trio_sudp.protocol.crypto import make_header_tagger
from trio_sudp.protocol.server import DEFAULT_HANDSHAKE_BURST
from trio_sudp.protocol.wire import encode_control, encode_handshake
from trio_sudp.runtime import PeerRunner, ServerPath, UDPReceiver, UDPSender, UDPStats
from trio_sudp.runtime.server import bind_server, make_core
from trio_sudp.testing import FakeNetwork, LinkConfig, TrioWallClock

PAYLOAD = bytes(i % 251 for i in range(1400))
VERSIONS = (Version.V2, Version.V3)
SOCKET_BUFFER = 4 * 1024 * 1024
SERVER_HOST = "10.0.0.1"
SERVER_FAKE = (SERVER_HOST, 7000)


# --------------------------------------------------------------------------- helpers


def shared_for(version: Version, vaddr: int = 1) -> bytes | None:
    return b"bench-shared-%05d" % vaddr if version == Version.V3 else None


def fake_host(vaddr: int) -> str:
    return f"10.{1 + vaddr // 62500}.{vaddr // 250 % 250}.{vaddr % 250 + 1}"


def pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of another process (Linux), else ``None``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        print("  " + "  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))
    sys.stdout.flush()


def mbit(pps: float) -> float:
    return pps * len(PAYLOAD) * 8 / 1e6


def machine_info() -> str:
    import cryptography

    return (
        f"nproc {os.cpu_count()}, Python {platform.python_version()}, trio {trio.__version__}, "
        f"cryptography {cryptography.__version__}, "
        f"{platform.machine()} {platform.system()} {platform.release()}"
    )


@contextlib.contextmanager
def gc_frozen() -> Iterator[None]:
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# --------------------------------------------------------------------------- echo


def _echo_server_process(
    mode: str, version: int, server_pem: bytes, client_pem: bytes, conn: Any, cpu: int | None
) -> None:
    pin(cpu)
    trio.run(_echo_server, mode, Version(version), server_pem, client_pem, conn)


async def _echo_server(
    mode: str, version: Version, server_pem: bytes, client_pem: bytes, conn: Any
) -> None:
    if mode == "plain":
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        await sock.bind(("127.0.0.1", 0))
        conn.send(sock.getsockname()[1])
        recvfrom, sendto = sock.recvfrom, sock.sendto
        while True:
            data, address = await recvfrom(4096)
            await sendto(data, address)
    server_key = PrivateKey.from_pem(server_pem)
    client_key = PrivateKey.from_pem(client_pem)
    peer = Peer(1, client_key.public_key, version, shared_for(version))
    if mode == "library":
        async with trio_sudp.open_server(
            "127.0.0.1:0", local=LocalIdentity(0, server_key), peers=[peer], handshake_rate=None
        ) as server:
            conn.send(server.local_address[1])
            async for vaddr, payload in server:
                server.send_nowait(vaddr, payload)
            return
    # "hook": echo from the UDP task itself, as the VPN's receive path does
    current_time = trio.current_time

    def echo(runner: PeerRunner, payload: bytes) -> None:
        runner.send(payload, current_time())

    async with hooked_server(server_key, [peer], echo) as server:
        conn.send(server.local_address[1])
        await trio.sleep_forever()


@asynccontextmanager
async def hooked_server(
    key: PrivateKey, peers: list[Peer], sink: Callable[[PeerRunner, bytes], None]
) -> AsyncIterator[trio_sudp.SUDPServer]:
    """A server on 127.0.0.1 built as the VPN builds one: payloads go to ``sink`` in the
    UDP task, inside the receive loop's send batch (no receive queue)."""
    core = make_core(
        LocalIdentity(0, key),
        peers,
        settings=None,
        clock=None,
        handshake_rate=None,
        handshake_burst=DEFAULT_HANDSHAKE_BURST,
    )
    lanes = bind_server(None, "127.0.0.1:0")
    try:
        async with trio.open_nursery() as nursery:
            stats = UDPStats()
            sender = UDPSender(lanes.known, stats)
            server = trio_sudp.SUDPServer(core, sender, lanes, nursery)
            path = ServerPath(core, server.runners, sink)
            nursery.start_soon(sender.run_writer)
            for transport in lanes.transports:
                receiver = UDPReceiver(transport, stats, path, boundary=sender.batch)
                nursery.start_soon(receiver.run)
            nursery.start_soon(server.watch)
            yield server
            server.close()
            nursery.cancel_scope.cancel()
    finally:
        lanes.close()


@dataclass
class EchoResult:
    pps: float
    client_cpu: float
    server_cpu: float | None


class _Count:
    __slots__ = ("done", "n", "sent")

    def __init__(self) -> None:
        self.n = 0
        self.sent = 0
        #: Set when every packet sent so far arrived (a new one per burst).
        self.done = trio.Event()

    def arrived(self) -> None:
        self.n += 1
        if self.n >= self.sent:
            self.done.set()


async def _best_burst_us(
    state: _Count, send_burst: Callable[[int], Awaitable[None]], count: int, burst: int
) -> float:
    """µs per packet of the best of 5 rounds of ``count`` packets sent ``burst`` at a time.

    Each burst waits until ``state`` saw every packet arrive (at most 1 s: a loss
    must not stall the next burst).
    """
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(count // burst):
            state.done = trio.Event()
            state.sent += burst
            await send_burst(burst)
            with trio.move_on_after(1.0):
                await state.done.wait()
            state.n = state.sent
        best = min(best, time.perf_counter() - start)
    return best / (count // burst * burst) * 1e6


async def _measure(
    count: _Count, server_pid: int, warmup: float, duration: float, refill: Callable[[], None]
) -> EchoResult:
    """Sample the counters after ``warmup`` and after ``duration``; refill a stalled window."""
    loop_start = trio.current_time()
    last = -1
    while trio.current_time() - loop_start < warmup:
        await trio.sleep(0.05)
        if count.n == last:
            refill()
        last = count.n
    n0, t0, c0, s0 = count.n, time.perf_counter(), time.process_time(), proc_cpu(server_pid)
    end = trio.current_time() + duration
    while trio.current_time() < end:
        await trio.sleep(0.05)
        if count.n == last:
            refill()  # a datagram was lost: put the window back
        last = count.n
    n1, t1, c1, s1 = count.n, time.perf_counter(), time.process_time(), proc_cpu(server_pid)
    wall = t1 - t0
    server_cpu = None if s0 is None or s1 is None else (s1 - s0) / wall
    return EchoResult((n1 - n0) / wall, (c1 - c0) / wall, server_cpu)


async def _echo_client(
    mode: str,
    version: Version,
    port: int,
    server_pid: int,
    keys: tuple[PrivateKey, PrivateKey],
    window: int,
    warmup: float,
    duration: float,
) -> EchoResult:
    count = _Count()
    if mode == "plain":
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        await sock.bind(("127.0.0.1", 0))
        destination = ("127.0.0.1", port)
        with sock:

            def refill() -> None:
                for _ in range(window):
                    with contextlib.suppress(BlockingIOError):
                        sock._sock.sendto(PAYLOAD, destination)  # type: ignore[attr-defined]

            async with trio.open_nursery() as nursery:

                async def loop() -> None:
                    recvfrom, sendto = sock.recvfrom, sock.sendto
                    for _ in range(window):
                        await sendto(PAYLOAD, destination)
                    while True:
                        data, _ = await recvfrom(4096)
                        count.n += 1
                        await sendto(data, destination)

                nursery.start_soon(loop)
                result = await _measure(count, server_pid, warmup, duration, refill)
                nursery.cancel_scope.cancel()
        return result
    server_key, client_key = keys
    async with trio_sudp.open_client(
        ("127.0.0.1", port),
        local=LocalIdentity(1, client_key),
        server=Peer(0, server_key.public_key, version, shared_for(version)),
    ) as client:

        def refill() -> None:
            for _ in range(window):
                with contextlib.suppress(trio_sudp.NotConnected):
                    client.send_nowait(PAYLOAD)

        async with trio.open_nursery() as nursery:

            async def loop() -> None:
                send = client.send_nowait
                refill()
                async for payload in client:
                    count.n += 1
                    send(payload)

            nursery.start_soon(loop)
            result = await _measure(count, server_pid, warmup, duration, refill)
            nursery.cancel_scope.cancel()
    return result


def bench_echo(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    can_pin = hasattr(os, "sched_setaffinity")
    placements = args.placement.split(",")
    if not can_pin or (os.cpu_count() or 1) < 2:
        placements = ["unpinned"]
    for placement in placements:
        out[placement] = _bench_echo(args, placement)
    return out


PLACEMENTS = {
    # placement: (client CPU, server CPU, description)
    "split": (0, 1, "server process on CPU 1, client on CPU 0"),
    "shared": (0, 0, "server and client processes sharing CPU 0"),
    "unpinned": (None, None, "processes not pinned"),
}


def _bench_echo(args: argparse.Namespace, placement: str) -> dict[str, Any]:
    server_key, client_key = PrivateKey.generate(), PrivateKey.generate()
    ctx = multiprocessing.get_context("spawn")
    client_cpu, server_cpu, where = PLACEMENTS[placement]
    configs = [("plain", Version.V3)] + [
        (mode, v) for v in VERSIONS for mode in ("library", "hook")
    ]
    servers: dict[tuple[str, Version], tuple[Any, int]] = {}
    results: dict[tuple[str, Version], list[EchoResult]] = {c: [] for c in configs}
    pin(client_cpu)
    try:
        for mode, version in configs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_echo_server_process,
                args=(
                    mode,
                    int(version),
                    server_key.to_pem(),
                    client_key.to_pem(),
                    child,
                    server_cpu,
                ),
                daemon=True,
            )
            proc.start()
            servers[(mode, version)] = (proc, parent.recv())
        for _ in range(args.rounds):
            for mode, version in configs:
                proc, port = servers[(mode, version)]
                result = trio.run(
                    _echo_client,
                    mode,
                    version,
                    port,
                    proc.pid,
                    (server_key, client_key),
                    args.window,
                    args.warmup,
                    args.duration,
                )
                results[(mode, version)].append(result)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.join()
    best = {c: max(rs, key=lambda r: r.pps) for c, rs in results.items()}
    median = {c: statistics.median(r.pps for r in rs) for c, rs in results.items()}
    plain, plain_median = best[("plain", Version.V3)], median[("plain", Version.V3)]
    rows = []
    names = {
        "plain": "plain Trio (await recvfrom/sendto)",
        "library": "library, async for + send_nowait",
        "hook": "library, payload hook (VPN path)",
    }
    for (mode, version), r in best.items():
        spread = [x.pps for x in results[(mode, version)]]
        rows.append(
            [
                names[mode],
                "-" if mode == "plain" else f"v{int(version)}",
                f"{r.pps:,.0f}",
                f"{mbit(r.pps):,.0f}",
                f"{r.pps / plain.pps:.2f}x",
                f"{median[(mode, version)]:,.0f}",
                f"{median[(mode, version)] / plain_median:.2f}x",
                f"{min(spread):,.0f}-{max(spread):,.0f}",
                f"{r.client_cpu:.0%}",
                "?" if r.server_cpu is None else f"{r.server_cpu:.0%}",
            ]
        )
    table(
        f"Echo over 127.0.0.1: {len(PAYLOAD)}-byte payloads, window {args.window}, "
        f"{args.rounds} rounds x {args.duration:g} s; {where}",
        [
            "echo",
            "ver",
            "best packets/s",
            "Mbit/s",
            "vs plain",
            "median packets/s",
            "vs plain",
            "all rounds",
            "client CPU",
            "server CPU",
        ],
        rows,
    )
    print(
        "  Mbit/s: payload bits echoed per second, each direction. CPU: of the best round\n"
        "  (as the guest kernel accounts it)."
    )
    return {f"{m}-v{int(v)}": (r.pps, median[(m, v)]) for (m, v), r in best.items()}


# --------------------------------------------------------------------------- overhead


def _bare_protocol_us(version: Version, count: int) -> float:
    """µs per packet of ``Session.send`` + ``Session.receive`` (the protocol core's share)."""
    server_key, client_key = PrivateKey.generate(), PrivateKey.generate()
    shared = shared_for(version)
    core = ServerCore(
        LocalIdentity(0, server_key),
        [Peer(1, client_key.public_key, version, shared)],
        handshake_rate=None,
    )
    client = ClientSession(
        local=LocalIdentity(1, client_key),
        server=Peer(0, server_key.public_key, version, shared),
        server_address=("192.0.2.1", 7000),
    )
    address = ("198.51.100.7", 40000)
    now = time.monotonic()
    client.connect(now)
    for _ in range(4):  # handshake, ServerHandshake, EpochAck
        for datagram, _ in client.take_datagrams():
            session = core.sessions[core.route(datagram, address, now)]
            session.receive(datagram, address, now)
            for reply, _ in session.take_datagrams():
                client.receive(reply, ("192.0.2.1", 7000), now)
    server = core.sessions[1]
    assert server.epochs.current is not None
    best = float("inf")
    for _ in range(5):
        datagrams = [client.send(PAYLOAD, now) for _ in range(count)]
        start = time.perf_counter()
        for datagram in datagrams:
            client.send(PAYLOAD, now)
            server.receive(datagram, address, now)
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


def _bare_socket_us(count: int) -> float:
    """µs per packet of a non-blocking ``sendto`` + ``recvfrom`` over loopback."""
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    destination = b.getsockname()
    datagram = bytes(len(PAYLOAD) + 64)
    sendto, recvfrom = a.sendto, b.recvfrom
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(count // 64):
            for _ in range(64):
                sendto(datagram, destination)
            for _ in range(64):
                recvfrom(4096)
        best = min(best, time.perf_counter() - start)
    a.close()
    b.close()
    return best / (count // 64 * 64) * 1e6


async def _plain_oneway_us(count: int) -> float:
    """µs per packet, ``await sendto`` to ``await recvfrom`` with trio.socket, one process."""
    a = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        await s.bind(("127.0.0.1", 0))
    destination = b.getsockname()
    datagram = bytes(len(PAYLOAD) + 64)
    state = _Count()
    async with trio.open_nursery() as nursery:

        async def receive() -> None:
            recvfrom = b.recvfrom
            while True:
                await recvfrom(4096)
                state.arrived()

        sendto = a.sendto

        async def send_burst(burst: int) -> None:
            for _ in range(burst):
                await sendto(datagram, destination)

        nursery.start_soon(receive)
        result = await _best_burst_us(state, send_burst, count, 64)
        nursery.cancel_scope.cancel()
    a.close()
    b.close()
    return result


async def _library_oneway_us(version: Version, count: int, consumer: str) -> float:
    """µs per packet, client ``send_nowait`` to server delivery, both in this process."""
    server_key, client_key = PrivateKey.generate(), PrivateKey.generate()
    shared = shared_for(version)
    state = _Count()
    peers = [Peer(1, client_key.public_key, version, shared)]
    if consumer == "hook":
        opened = hooked_server(server_key, peers, lambda runner, payload: state.arrived())
    else:
        opened = trio_sudp.open_server(
            "127.0.0.1:0", local=LocalIdentity(0, server_key), peers=peers, handshake_rate=None
        )
    async with (
        opened as server,
        trio_sudp.open_client(
            ("127.0.0.1", server.local_address[1]),
            local=LocalIdentity(1, client_key),
            server=Peer(0, server_key.public_key, version, shared),
        ) as client,
        trio.open_nursery() as nursery,
    ):
        if consumer != "hook":

            async def consume() -> None:
                async for _ in server:
                    state.arrived()

            nursery.start_soon(consume)
        send = client.send_nowait

        async def send_burst(burst: int) -> None:
            for _ in range(burst):
                send(PAYLOAD)

        result = await _best_burst_us(state, send_burst, count, 64)
        nursery.cancel_scope.cancel()
    return result


def bench_overhead(args: argparse.Namespace) -> dict[str, Any]:
    count = args.packets
    rows = []
    out: dict[str, Any] = {}
    kernel = _bare_socket_us(count)
    plain = trio.run(_plain_oneway_us, count)
    rows.append(["-", "plain Trio", f"{plain:.2f}", f"{kernel:.2f}", "-", f"{plain - kernel:.2f}"])
    out["plain"] = plain - kernel
    for version in VERSIONS:
        protocol = _bare_protocol_us(version, count)
        for consumer in ("hook", "async-for"):
            total = trio.run(_library_oneway_us, version, count, consumer)
            runtime = total - kernel - protocol
            out[f"v{int(version)}-{consumer}"] = runtime
            rows.append(
                [
                    f"v{int(version)}",
                    consumer,
                    f"{total:.2f}",
                    f"{kernel:.2f}",
                    f"{protocol:.2f}",
                    f"{runtime:.2f}",
                ]
            )
    table(
        f"One-way cost per {len(PAYLOAD)}-byte packet, client send_nowait -> server delivery, "
        "one process, one core (µs, best of 5)",
        [
            "ver",
            "delivery",
            "library total",
            "kernel sendto+recvfrom",
            "protocol send+receive",
            "= runtime (or Trio)",
        ],
        rows,
    )
    print(
        "  library total: client.send_nowait -> UDP task -> PeerRunner.handle -> delivery\n"
        "  (hook: payloads to a sink in the UDP task, as the VPN's receive path does;\n"
        "  async-for: `async for` over the server) in bursts of 64.\n"
        "  plain Trio: `await sock.sendto` -> `await sock.recvfrom`, the same bursts."
    )
    return out


# --------------------------------------------------------------------------- load generator


class Presigner:
    """Plays many clients without their sessions: signs their handshakes in advance.

    A ClientHandshake and its EpochAck do not depend on the server's answer, so
    both can be signed before the server sees either; so can KeepAlives.
    """

    def __init__(self, version: Version, count: int, first: int = 1) -> None:
        self.version = version
        self.unit = timestamp_unit_us(version)
        self.keys = {v: PrivateKey.generate() for v in range(first, first + count)}
        self.taggers = {v: make_header_tagger(version, shared_for(version, v)) for v in self.keys}
        self.epochs = dict.fromkeys(self.keys, 100)
        self._ephemeral = [EphemeralKey.generate() for _ in range(16)]

    def peers(self) -> list[Peer]:
        """The server's configuration: new key objects, as if read from a config file."""
        return [
            Peer(
                v,
                PublicKey.from_point(k.public_key.point),
                self.version,
                shared_for(self.version, v),
            )
            for v, k in self.keys.items()
        ]

    def handshake(self, vaddr: int, wall_us: int) -> tuple[bytes, bytes]:
        """A ClientHandshake for the next epoch and the EpochAck that completes it."""
        epoch = self.epochs[vaddr] = self.epochs[vaddr] + 1
        stamp = wall_us // self.unit
        key, tagger = self.keys[vaddr], self.taggers[vaddr]
        hello = encode_handshake(
            self.version,
            Kind.CLIENT_HANDSHAKE,
            src=vaddr,
            dst=0,
            epoch=epoch,
            time=stamp,
            ephemeral_public=self._ephemeral[vaddr % len(self._ephemeral)].public_bytes,
            tagger=tagger,
            signer=key,
        )
        ack = encode_control(
            self.version,
            src=vaddr,
            dst=0,
            epoch=epoch,
            time=stamp,
            flags=ControlFlag.EPOCH_ACK,
            tagger=tagger,
            signer=key,
        )
        return hello, ack

    def keepalive(self, vaddr: int, wall_us: int) -> bytes:
        return encode_control(
            self.version,
            src=vaddr,
            dst=0,
            epoch=self.epochs[vaddr],
            time=wall_us // self.unit,
            flags=ControlFlag.KEEPALIVE,
            tagger=self.taggers[vaddr],
            signer=self.keys[vaddr],
        )


class Handshakes:
    """Waits until a server has completed a number of handshakes in all (its sessions' counters)."""

    def __init__(self, server: trio_sudp.SUDPServer) -> None:
        self._sessions = server.core.sessions
        self.target = 0

    def expect(self, more: int) -> None:
        self.target += more

    @property
    def count(self) -> int:
        return sum(s.stats.handshakes for s in self._sessions.values())

    async def reached(self) -> None:
        with trio.fail_after(120):  # a dropped handshake is never sent again: fail, not hang
            while self.count < self.target:
                await trio.testing.wait_all_tasks_blocked()
                if self.count < self.target:
                    await trio.sleep(0.001)


def inject_all(net: FakeNetwork, datagrams: list[tuple[bytes, int]]) -> None:
    for datagram, vaddr in datagrams:
        net.inject(datagram, src=(fake_host(vaddr), 40000), dst=SERVER_FAKE)


# --------------------------------------------------------------------------- memory


@dataclass
class MemoryResult:
    peers: int
    config: float = 0.0  # Peer objects (keys, taggers), per peer
    idle: float = 0.0  # configured, never connected, per peer
    connected: float = 0.0  # connected and idle, per peer
    top: list[tuple[str, float]] = field(default_factory=list)
    components: dict[str, float] = field(default_factory=dict)


def component(filename: str) -> str:
    """Which part of the stack allocated: by the allocating frame's file."""
    name = filename.replace("/", ".")
    if "trio_sudp.runtime" in name:
        return "trio_sudp.runtime"
    if "trio_sudp.protocol" in name:
        return "trio_sudp.protocol"
    if ".trio." in name or "trio._core" in name:
        return "trio (tasks, nursery, cancel scopes)"
    return "other (stdlib, cryptography)"


def site(filename: str, lineno: int) -> str:
    return f"{filename.split('site-packages/')[-1].split('src/')[-1]}:{lineno}"


def _measure_now(use_tracemalloc: bool) -> int:
    gc.collect()
    if use_tracemalloc:
        return tracemalloc.get_traced_memory()[0]
    return rss_bytes()


async def _memory_server(
    version: Version, peers: int, use_tracemalloc: bool, presigner: Presigner
) -> MemoryResult:
    result = MemoryResult(peers)
    net = FakeNetwork(queue_size=2 * peers + 16)
    hosts = [fake_host(v) for v in presigner.keys]
    net.set_link(hosts, SERVER_HOST, LinkConfig())  # the network's own state, made first
    clock = TrioWallClock()
    hellos = [
        (datagram, v) for v in presigner.keys for datagram in presigner.handshake(v, clock.now_us())
    ]
    if use_tracemalloc:
        tracemalloc.start()
    m0 = _measure_now(use_tracemalloc)
    snapshot0 = tracemalloc.take_snapshot() if use_tracemalloc else None
    configured = presigner.peers()
    m1 = _measure_now(use_tracemalloc)
    async with trio_sudp.open_server(
        SERVER_FAKE,
        local=LocalIdentity(0, PrivateKey.generate()),
        peers=configured,
        network=net,
        clock=clock,
        handshake_rate=None,  # 10,000 clients at once: beyond the verification budget
    ) as server:
        promotions = Handshakes(server)
        m2 = _measure_now(use_tracemalloc)
        promotions.expect(peers)
        inject_all(net, hellos)
        await promotions.reached()
        await trio.testing.wait_all_tasks_blocked()
        assert all(s.state == "established" for s in server.statistics().values())
        m3 = _measure_now(use_tracemalloc)
        if snapshot0 is not None:
            stats = tracemalloc.take_snapshot().compare_to(snapshot0, "lineno")
            for stat in stats[:14]:
                frame = stat.traceback[0]
                result.top.append((site(frame.filename, frame.lineno), stat.size_diff / peers))
            for stat in stats:
                part = component(stat.traceback[0].filename)
                result.components[part] = result.components.get(part, 0) + stat.size_diff / peers
            tracemalloc.stop()
    del hellos
    result.config = (m1 - m0) / peers
    result.idle = (m2 - m1) / peers
    result.connected = (m3 - m1) / peers
    return result


async def _memory_steady(version: Version, peers: int, seconds: float) -> list[list[str]]:
    """Per-peer server memory over time while idle clients keep alive and rekey."""
    presigner = Presigner(version, peers)
    net = FakeNetwork(queue_size=4 * peers + 16)
    net.set_link([fake_host(v) for v in presigner.keys], SERVER_HOST, LinkConfig())
    clock = TrioWallClock()
    settings = SessionSettings()
    hellos = [(d, v) for v in presigner.keys for d in presigner.handshake(v, clock.now_us())]
    tracemalloc.start()
    m0 = _measure_now(True)
    snapshot0 = tracemalloc.take_snapshot()
    rows: list[list[str]] = []
    async with trio_sudp.open_server(
        SERVER_FAKE,
        local=LocalIdentity(0, PrivateKey.generate()),
        peers=presigner.peers(),
        network=net,
        clock=clock,
        settings=settings,
        handshake_rate=None,
    ) as server:
        promotions = Handshakes(server)
        promotions.expect(peers)
        inject_all(net, hellos)
        await promotions.reached()
        start = trio.current_time()
        report_at = [5.0, 30.0, 60.0, 120.0, 180.0, seconds]
        step = settings.keepalive_interval
        assert settings.rekey_interval is not None
        rekey_every = round(settings.rekey_interval / step)
        ticks = 0
        while True:
            await trio.sleep(step)
            ticks += 1
            elapsed = trio.current_time() - start
            now_us = clock.now_us()
            if ticks % rekey_every == 0:
                promotions.expect(peers)
                inject_all(
                    net, [(d, v) for v in presigner.keys for d in presigner.handshake(v, now_us)]
                )
                await promotions.reached()
            else:
                inject_all(net, [(presigner.keepalive(v, now_us), v) for v in presigner.keys])
            await trio.testing.wait_all_tasks_blocked()
            if report_at and elapsed >= report_at[0] - 1e-6:
                while report_at and elapsed >= report_at[0] - 1e-6:
                    report_at.pop(0)
                established = sum(s.state == "established" for s in server.statistics().values())
                used = (_measure_now(True) - m0) / peers
                rows.append([f"{elapsed:.0f} s", f"{established}", f"{used / 1024:.1f}"])
                if not report_at:
                    break
        gc.collect()
        top = tracemalloc.take_snapshot().compare_to(snapshot0, "lineno")[:8]
    tracemalloc.stop()
    for stat in top:
        frame = stat.traceback[0]
        where = site(frame.filename, frame.lineno)
        rows.append([f"  at the end: {where}", "", f"{stat.size_diff / peers / 1024:.1f}"])
    return rows


async def _memory_clients(version: Version, clients: int) -> tuple[float, float]:
    """tracemalloc bytes per real ``open_client`` (FakeTransport excluded), per server peer."""
    net = FakeNetwork(queue_size=4 * clients + 16)
    server_key = PrivateKey.generate()
    keys = {v: PrivateKey.generate() for v in range(1, clients + 1)}
    peers = [Peer(v, k.public_key, version, shared_for(version, v)) for v, k in keys.items()]
    server_peers = {
        v: Peer(0, server_key.public_key, version, shared_for(version, v)) for v in keys
    }
    net.set_link([fake_host(v) for v in keys], SERVER_HOST, LinkConfig())
    tracemalloc.start(25)
    connected = 0
    all_connected = trio.Event()
    stop = trio.Event()
    async with trio_sudp.open_server(
        SERVER_FAKE,
        local=LocalIdentity(0, server_key),
        peers=peers,
        network=net,
        clock=TrioWallClock(),
        handshake_rate=None,
    ) as server:
        before = tracemalloc.take_snapshot()

        async def one(vaddr: int) -> None:
            nonlocal connected
            async with trio_sudp.open_client(
                SERVER_FAKE,
                local=LocalIdentity(vaddr, keys[vaddr]),
                server=server_peers[vaddr],
                network=net,
                bind=(fake_host(vaddr), 0),
                clock=TrioWallClock(),
            ):
                connected += 1
                if connected == clients:
                    all_connected.set()
                await stop.wait()

        async with trio.open_nursery() as nursery:
            for vaddr in keys:
                nursery.start_soon(one, vaddr)
            await all_connected.wait()
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            with_clients = tracemalloc.take_snapshot()
            stop.set()
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        without = tracemalloc.take_snapshot()
        del server
    tracemalloc.stop()
    not_fake = [tracemalloc.Filter(False, "*/testing/fakenet.py", all_frames=True)]
    clients_bytes = sum(
        s.size_diff
        for s in with_clients.filter_traces(not_fake).compare_to(
            without.filter_traces(not_fake), "filename"
        )
    )
    server_bytes = sum(s.size_diff for s in without.compare_to(before, "filename"))
    return clients_bytes / clients, server_bytes / clients


def _memory_child(kind: str, version: int, peers: int, seconds: float, conn: Any) -> None:
    v = Version(version)
    clock = trio.testing.MockClock(autojump_threshold=0)
    if kind in ("tracemalloc", "rss"):
        presigner = Presigner(v, peers)
        conn.send(trio.run(_memory_server, v, peers, kind == "tracemalloc", presigner, clock=clock))
    elif kind == "aesgcm":
        conn.send(_openssl_bytes_per_object(lambda: AESGCM(os.urandom(32))))
    elif kind == "steady":
        conn.send(trio.run(_memory_steady, v, peers, seconds, clock=clock))
    else:
        conn.send(trio.run(_memory_clients, v, peers, clock=clock))


def _in_child(kind: str, version: Version, peers: int, seconds: float = 0.0) -> Any:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_memory_child, args=(kind, int(version), peers, seconds, child))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def _openssl_bytes_per_object(make: Callable[[], object], count: int = 20000) -> float:
    """RSS not seen by tracemalloc, per object (OpenSSL's own allocations)."""
    gc.collect()
    tracemalloc.start()
    r0, t0 = rss_bytes(), tracemalloc.get_traced_memory()[0]
    keep = [make() for _ in range(count)]
    r1, t1 = rss_bytes(), tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del keep
    return ((r1 - r0) - (t1 - t0)) / count


def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
    peers = args.peers
    out: dict[str, Any] = {}
    rows = []
    tops: dict[Version, tuple[list[tuple[str, float]], dict[str, float]]] = {}
    for version in VERSIONS:
        traced: MemoryResult = _in_child("tracemalloc", version, peers)
        rss: MemoryResult = _in_child("rss", version, peers)
        tops[version] = (traced.top, traced.components)
        out[f"v{int(version)}"] = {
            "tracemalloc": traced.config + traced.connected,
            "rss": rss.config + rss.connected,
        }
        for what, t, r in [
            ("Peer objects (the configuration: keys, tagger)", traced.config, rss.config),
            ("+ session and runner, never connected", traced.idle, rss.idle),
            ("+ session and runner, connected and idle", traced.connected, rss.connected),
            (
                "= connected idle peer, all in (target <= 20 KB)",
                traced.config + traced.connected,
                rss.config + rss.connected,
            ),
        ]:
            rows.append([f"v{int(version)}", what, f"{t / 1024:.2f}", f"{r / 1024:.2f}"])
    table(
        f"Server memory per peer, {peers:,} peers on the FakeNetwork (KB = 1024 bytes)",
        ["ver", "state", "tracemalloc KB", "RSS KB"],
        rows,
    )
    print(
        "  'connected' includes the session's own objects, its key, the rate limiter's bucket,\n"
        "  and the peer's nursery with its expiry-timer task (RSS also counts OpenSSL)."
    )
    for version, (top, parts) in tops.items():
        table(
            f"Where a connected v{int(version)} peer's Python memory goes "
            "(tracemalloc, since before the Peer objects; bytes per peer)",
            ["allocated by", "bytes"],
            [[part, f"{size:,.0f}"] for part, size in sorted(parts.items(), key=lambda x: -x[1])],
        )
        table("  ... top allocation sites", ["site", "bytes"], [[w, f"{n:,.0f}"] for w, n in top])
    aes = _in_child("aesgcm", Version.V3, 0)
    table(
        "Memory outside the Python heap (RSS minus tracemalloc), per object",
        ["object", "bytes"],
        [["AESGCM (one per epoch key)", f"{aes:,.0f}"]],
    )
    if args.steady_peers:
        rows = _in_child("steady", Version.V3, args.steady_peers, args.steady_seconds)
        table(
            f"Steady state: {args.steady_peers} idle v3 peers keeping alive every 0.5 s and "
            "rekeying every 30 s (virtual time; server tracemalloc KB per peer)",
            ["after (virtual time)", "established", "KB per peer"],
            rows,
        )
        out["steady"] = rows
    client_bytes, server_bytes = _in_child("clients", Version.V3, args.client_peers)
    table(
        f"A real open_client, {args.client_peers:,} v3 clients connected to one server in one "
        "process (tracemalloc, FakeTransport excluded)",
        ["side", "KB each"],
        [
            ["client (open_client, connected)", f"{client_bytes / 1024:.2f}"],
            ["server peer (same run)", f"{server_bytes / 1024:.2f}"],
        ],
    )
    out["client"] = client_bytes
    return out


# --------------------------------------------------------------------------- handshakes


def _crypto_only_us(count: int = 300) -> float:
    """The bare crypto of one server-side handshake, as ``cryptography`` calls."""
    curve = ec.SECP256R1()
    client = ec.generate_private_key(curve)
    server = ec.generate_private_key(curve)
    client_public = client.public_key()
    message = bytes(150)
    signature = client.sign(message, ec.ECDSA(hashes.SHA256()))
    peer_point = ec.generate_private_key(curve).public_key()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(count):
            client_public.verify(signature, message, ec.ECDSA(hashes.SHA256()))  # hello
            ephemeral = ec.generate_private_key(curve)
            ephemeral.exchange(ec.ECDH(), peer_point)
            server.sign(message, ec.ECDSA(hashes.SHA256()))  # ServerHandshake
            client_public.verify(signature, message, ec.ECDSA(hashes.SHA256()))  # EpochAck
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


def _protocol_handshakes_us(version: Version, count: int) -> tuple[float, float]:
    """µs per server-side handshake, then per KeepAlive, in the sans-IO core alone."""
    presigner = Presigner(version, count)
    core = ServerCore(
        LocalIdentity(0, PrivateKey.generate()), presigner.peers(), handshake_rate=None
    )

    def feed(datagrams: list[tuple[bytes, int]]) -> float:
        gc.collect()
        start = time.process_time()
        for datagram, vaddr in datagrams:
            address = (fake_host(vaddr), 40000)
            now = time.monotonic()
            session = core.sessions[core.route(datagram, address, now)]
            session.receive(datagram, address, now)
            session.take_datagrams()
            session.take_events()
        return (time.process_time() - start) / count * 1e6

    wall_us = time.time_ns() // 1000
    handshake = feed([(d, v) for v in presigner.keys for d in presigner.handshake(v, wall_us)])
    assert sum(s.stats.handshakes for s in core.sessions.values()) == count
    wall_us = time.time_ns() // 1000
    keepalive = feed([(presigner.keepalive(v, wall_us), v) for v in presigner.keys])
    return handshake, keepalive


async def _handshakes(
    version: Version, presigner: Presigner, chunk: int, profile: Any
) -> tuple[float, float, float]:
    count = len(presigner.keys)
    net = FakeNetwork(queue_size=2 * chunk + 16)
    net.set_link([fake_host(v) for v in presigner.keys], SERVER_HOST, LinkConfig())
    cpu = wall = 0.0
    async with trio_sudp.open_server(
        SERVER_FAKE,
        local=LocalIdentity(0, PrivateKey.generate()),
        peers=presigner.peers(),
        network=net,
        settings=SessionSettings(idle_expiry=600.0),
        # The capacity of one core, not the verification budget's limits (by default
        # 1000 verifications a second from strangers: 500 new clients a second).
        handshake_rate=None,
    ) as server:
        promotions = Handshakes(server)
        vaddrs = list(presigner.keys)
        for first in range(0, count, chunk):
            part = vaddrs[first : first + chunk]
            wall_us = time.time_ns() // 1000
            datagrams = [(d, v) for v in part for d in presigner.handshake(v, wall_us)]
            gc.collect()
            promotions.expect(len(part))
            inject_all(net, datagrams)
            w0, c0 = time.perf_counter(), time.process_time()
            if profile is not None:
                profile.enable()
            await promotions.reached()
            await trio.testing.wait_all_tasks_blocked()
            if profile is not None:
                profile.disable()
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
        assert promotions.count == count
        assert sum(s.handshakes for s in server.statistics().values()) == count
        # Then one KeepAlive from every peer: the server's fixed load per idle peer.
        keepalive_cpu = 0.0
        for first in range(0, count, chunk):
            part = vaddrs[first : first + chunk]
            wall_us = time.time_ns() // 1000
            datagrams = [(presigner.keepalive(v, wall_us), v) for v in part]
            gc.collect()
            sent = server.endpoint_statistics().tx_datagrams
            inject_all(net, datagrams)
            c0 = time.process_time()
            await trio.testing.wait_all_tasks_blocked()
            keepalive_cpu += time.process_time() - c0
            assert server.endpoint_statistics().tx_datagrams - sent == len(part)  # the acks
    return count / cpu, count / wall, keepalive_cpu / count * 1e6


def bench_handshakes(args: argparse.Namespace) -> dict[str, Any]:
    crypto = _crypto_only_us()
    rows = []
    keepalives: list[list[str]] = []
    out: dict[str, Any] = {"crypto_us": crypto}
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile()
    # Rounds interleave the versions; each figure is the best of its rounds (least disturbed).
    best: dict[Version, list[float]] = {}
    for _ in range(args.handshake_rounds):
        crypto = min(crypto, _crypto_only_us())
        for version in VERSIONS:
            presigner = Presigner(version, args.handshakes)
            measured = trio.run(_handshakes, version, presigner, 1000, profile)
            core = _protocol_handshakes_us(version, args.handshakes)
            # handshakes/CPU-s and /wall-s: higher is better; µs: lower is better
            values = [*measured[:2], -measured[2], -core[0], -core[1]]
            old = best.get(version)
            best[version] = (
                values if old is None else [max(a, b) for a, b in zip(old, values, strict=True)]
            )
    out["crypto_us"] = crypto
    for version in VERSIONS:
        per_cpu, per_wall, keepalive, core_us, core_keepalive = best[version]
        keepalive, core_us, core_keepalive = -keepalive, -core_us, -core_keepalive
        keepalives.append(
            [
                f"v{int(version)}",
                f"{keepalive:.0f}",
                f"{core_keepalive:.0f}",
                f"{keepalive - core_keepalive:.0f}",
                f"{1e6 / keepalive / 2:,.0f}",
            ]
        )
        out[f"v{int(version)}"] = per_cpu
        rows.append(
            [
                f"v{int(version)}",
                f"{per_cpu:,.0f}",
                f"{per_wall:,.0f}",
                f"{1e6 / per_cpu:.0f}",
                f"{core_us:.0f}",
                f"{1e6 / per_cpu - core_us:.0f}",
                f"{crypto:.0f}",
                f"{1e6 / crypto:,.0f}",
                f"{per_cpu / (1e6 / crypto):.0%}",
            ]
        )
    table(
        f"Handshakes one server completes on one core ({args.handshakes:,} clients from "
        f"distinct hosts, pre-signed; best of {args.handshake_rounds} rounds; "
        "target >= 2,500/s)",
        [
            "ver",
            "per CPU-second",
            "per wall-second",
            "µs each",
            "protocol core µs",
            "runtime µs",
            "crypto-only µs",
            "crypto-only /s",
            "of crypto bound",
        ],
        rows,
    )
    print(
        "  protocol core: the same datagrams through ServerCore.route + Session.receive\n"
        "  with no Trio; runtime: the rest (UDP task, demux, the peer's nursery and expiry task)."
    )
    table(
        "KeepAlives the same server answers (verify + signed KeepAliveAck), µs each",
        ["ver", "library", "protocol core", "runtime", "idle peers per core at 2/s"],
        keepalives,
    )
    if profile is not None:
        import pstats

        print("\ncProfile of the server path (both versions), by own time:")
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="echo,overhead,memory,handshakes")
    parser.add_argument("--quick", action="store_true", help="short runs, fewer peers")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--placement", default="split,shared", help="split, shared or both")
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--peers", type=int, default=10000)
    parser.add_argument("--steady-peers", type=int, default=200)
    parser.add_argument("--steady-seconds", type=float, default=300.0)
    parser.add_argument("--client-peers", type=int, default=2000)
    parser.add_argument("--handshakes", type=int, default=10000)
    parser.add_argument("--handshake-rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.packets = 2, 1.0, 5000
        args.peers, args.steady_peers, args.steady_seconds = 2000, 50, 130.0
        args.client_peers, args.handshakes, args.handshake_rounds = 500, 2000, 1
    print(f"bench_runtime: {machine_info()}")
    wanted = args.only.split(",")
    for name, fn in [
        ("echo", bench_echo),
        ("overhead", bench_overhead),
        ("memory", bench_memory),
        ("handshakes", bench_handshakes),
    ]:
        if name in wanted:
            with gc_frozen():
                fn(args)


if __name__ == "__main__":
    main()
