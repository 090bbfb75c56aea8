"""Batched UDP I/O: GSO sends and GRO receives on real loopback sockets, and fallbacks.

Datagram boundaries must survive exactly: every test checks the contents and sizes
of what arrives, not only counts.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import socket
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import trio
import trio.testing

import trio_sudp
import trio_sudp.runtime.udp as udp_module
from runtime_helpers import loopback_pair, needs_ipv6
from trio_sudp import LocalIdentity, Peer, PrivateKey, Version
from trio_sudp.runtime.batches import RECEIVE_MANY_MIN, UDP_BACKLOG_LIMIT
from trio_sudp.runtime.peer import PeerRunner
from trio_sudp.runtime.receive import ClientPath, ServerPath, UDPReceiver
from trio_sudp.runtime.send import UDPSender
from trio_sudp.runtime.transport import (
    MAX_SEGMENT_BYTES,
    MAX_SEGMENTS,
    RECV_SIZE,
    Address,
    UDPStats,
    split_segments,
)
from trio_sudp.runtime.udp import UDPNetwork, UDPTransport
from trio_sudp.testing import FakeNetwork
from trio_sudp.testing.memtun import memory_tun_pair
from trio_sudp.vpn.device import DeviceIO

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="UDP GSO/GRO")


HOSTS = ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)]


def datagram(tag: int, size: int) -> bytes:
    """``size`` bytes that say which datagram they are, at every offset."""
    pattern = tag.to_bytes(4, "big") + bytes([tag % 251])
    return (pattern * (size // len(pattern) + 1))[:size]


async def receive_each(transport: UDPTransport, count: int) -> list[tuple[bytes, Address]]:
    received: list[tuple[bytes, Address]] = []
    with trio.fail_after(5):
        while len(received) < count:
            try:
                received.append(transport.recv_nowait())
            except BlockingIOError:
                await transport.wait_readable()
    return received


async def receive_buffers(transport: UDPTransport, count: int) -> list[tuple[bytes, int, Address]]:
    """Raw ``recv_segments_nowait`` results until ``count`` datagrams came."""
    received: list[tuple[bytes, int, Address]] = []
    total = 0
    with trio.fail_after(5):
        while total < count:
            try:
                item = transport.recv_segments_nowait()
            except BlockingIOError:
                await transport.wait_readable()
                continue
            received.append(item)
            buffer, size, _ = item
            total += len(split_segments(buffer, size)) if size else 1
    return received


def bind_pair(host: str, **kwargs: Any) -> tuple[UDPTransport, UDPTransport]:
    network = UDPNetwork(**kwargs)
    return network.bind((host, 0)), network.bind((host, 0))


# ------------------------------------------------------------------ the transport


def test_split_segments_is_exact() -> None:
    buffer = b"".join(datagram(i, 100) for i in range(5)) + datagram(5, 37)
    assert split_segments(buffer, 100) == [*(datagram(i, 100) for i in range(5)), datagram(5, 37)]
    assert split_segments(b"a" * 300, 100) == [b"a" * 100] * 3
    # A segment longer than a single receive takes is cut as recvfrom would cut it.
    big = b"b" * (RECV_SIZE + 10)
    assert split_segments(big * 2, len(big)) == [big[:RECV_SIZE]] * 2


@linux_only
@pytest.mark.parametrize("host", HOSTS)
async def test_gso_send_arrives_as_separate_datagrams(host: str) -> None:
    sender, receiver = bind_pair(host, gro=False)
    try:
        assert sender.max_segment_size > 0
        assert not receiver.gro
        batch = [datagram(i, 1200) for i in range(MAX_SEGMENTS - 1)]
        batch = [*batch[: MAX_SEGMENT_BYTES // 1200 - 1], datagram(99, 77)]
        sender.send_segments_nowait(batch, receiver.local_address)
        received = await receive_each(receiver, len(batch))
        assert [data for data, _ in received] == batch
        assert {source for _, source in received} == {sender.local_address}
        with pytest.raises(BlockingIOError):
            receiver.recv_nowait()
    finally:
        sender.close()
        receiver.close()


@linux_only
@pytest.mark.parametrize("host", HOSTS)
async def test_gro_receives_coalesced_and_splits_exactly(host: str) -> None:
    sender, receiver = bind_pair(host)
    try:
        assert receiver.gro
        first = [datagram(i, 1000) for i in range(20)] + [datagram(20, 999)]
        second = [datagram(100 + i, 64) for i in range(10)]  # no short one at the end
        sender.send_segments_nowait(first, receiver.local_address)
        sender.send_segments_nowait(second, receiver.local_address)
        sender.send_nowait(b"alone", receiver.local_address)
        sender.send_nowait(b"", receiver.local_address)
        buffers = await receive_buffers(receiver, len(first) + len(second) + 2)
        datagrams = []
        for buffer, size, source in buffers:
            assert source == sender.local_address
            datagrams.extend(split_segments(buffer, size) if size else [buffer])
        assert datagrams == [*first, *second, b"alone", b""]
        # The GSO sends came back coalesced (the kernel did not split them).
        assert [(len(b), s) for b, s, _ in buffers[:2]] == [(20 * 1000 + 999, 1000), (640, 64)]
        assert [(b, s) for b, s, _ in buffers[2:]] == [(b"alone", 0), (b"", 0)]
    finally:
        sender.close()
        receiver.close()


@linux_only
@pytest.mark.parametrize("host", HOSTS)
async def test_recv_nowait_on_a_gro_socket_returns_one_datagram_at_a_time(host: str) -> None:
    sender, receiver = bind_pair(host)
    try:
        batch = [datagram(i, 500) for i in range(7)] + [datagram(7, 3)]
        sender.send_segments_nowait(batch, receiver.local_address)
        sender.send_nowait(b"after", receiver.local_address)
        # recv_nowait and recv_segments_nowait may be mixed: the order holds.
        first = receiver.recv_nowait()
        assert first == (batch[0], sender.local_address)
        second = receiver.recv_segments_nowait()
        assert second == (batch[1], 0, sender.local_address)
        rest = await receive_each(receiver, len(batch) - 1)
        assert [data for data, _ in rest] == [*batch[2:], b"after"]
    finally:
        sender.close()
        receiver.close()


@linux_only
async def test_oversized_datagram_on_a_gro_socket_is_cut_to_recv_size() -> None:
    sender, receiver = bind_pair("127.0.0.1")
    try:
        sender.send_nowait(b"x" * (RECV_SIZE + 100), receiver.local_address)
        [(data, _)] = await receive_each(receiver, 1)
        assert data == b"x" * RECV_SIZE
    finally:
        sender.close()
        receiver.close()


@linux_only
@needs_ipv6
async def test_dual_stack_socket_sends_gso_to_ipv4() -> None:
    network = UDPNetwork()
    sender = network.bind(("::", 0))
    receiver = network.bind(("127.0.0.1", 0))
    try:
        port = receiver.local_address[1]
        batch = [datagram(i, 800) for i in range(9)] + [datagram(9, 1)]
        sender.send_segments_nowait(batch, ("::ffff:127.0.0.1", port, 0, 0))
        buffers = await receive_buffers(receiver, len(batch))
        got = [d for b, s, _ in buffers for d in (split_segments(b, s) if s else [b])]
        assert got == batch
    finally:
        sender.close()
        receiver.close()


# ------------------------------------------------------------------ fallbacks


class RefusingSocket(socket.socket):
    """A UDP socket whose GSO/GRO options or GSO sends fail as an old kernel's would."""

    refuse_options = False
    sendmsg_errno: int | None = None
    sendmsg_calls = 0

    def getsockopt(self, *args: Any) -> Any:
        if self.refuse_options and args[:2] == (17, 103):
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")
        return super().getsockopt(*args)

    def setsockopt(self, *args: Any) -> None:
        if self.refuse_options and args[:2] == (17, 104):
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")
        super().setsockopt(*args)

    def sendmsg(self, *args: Any) -> int:
        type(self).sendmsg_calls += 1
        if self.sendmsg_errno is not None and args[1]:
            raise OSError(self.sendmsg_errno, "refused")
        return super().sendmsg(*args)


def refusing_transport(
    host: str, *, refuse_options: bool = False, sendmsg_errno: int | None = None
) -> UDPTransport:
    class Sock(RefusingSocket):
        pass

    Sock.refuse_options = refuse_options
    Sock.sendmsg_errno = sendmsg_errno
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = Sock(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return UDPTransport(sock)


async def run_sender_batch(
    sender: UDPSender, batch: Sequence[tuple[bytes, Address]], receivers: list[UDPTransport]
) -> list[list[bytes]]:
    with sender.batch():
        for data, address in batch:
            sender.send(data, address)
    out = []
    for receiver in receivers:
        expected = sum(1 for _, a in batch if a == receiver.local_address)
        got = await receive_each(receiver, expected)
        out.append([data for data, _ in got])
    return out


@linux_only
async def test_no_gso_or_gro_when_the_kernel_refuses_the_options() -> None:
    transport = refusing_transport("127.0.0.1", refuse_options=True)
    _, receiver = bind_pair("127.0.0.1", gro=False)
    try:
        assert transport.max_segment_size == 0
        assert not transport.gro
        out = UDPSender(transport, UDPStats())
        batch = [(datagram(i, 300), receiver.local_address) for i in range(10)]
        [got] = await run_sender_batch(out, batch, [receiver])
        assert got == [d for d, _ in batch]
        assert out.stats.tx_datagrams == 10
        assert out.stats.tx_segment_sends == 0
    finally:
        transport.close()
        receiver.close()


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP])
async def test_gso_refused_by_the_kernel_turns_it_off_for_good(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    transport = refusing_transport("127.0.0.1", sendmsg_errno=code)
    _, receiver = bind_pair("127.0.0.1", gro=False)
    transport._gso_limit = 0xFFFF  # as on Linux, also where the platform has no GSO
    try:
        out = UDPSender(transport, UDPStats())
        caplog.set_level("DEBUG", logger="trio_sudp")
        batch = [(datagram(i, 300), receiver.local_address) for i in range(10)]
        [got] = await run_sender_batch(out, batch, [receiver])
        assert got == [d for d, _ in batch]
        assert transport.max_segment_size == 0
        calls = type(transport._sock).sendmsg_calls
        [got] = await run_sender_batch(out, batch, [receiver])
        assert got == [d for d, _ in batch]
        assert type(transport._sock).sendmsg_calls == calls  # not tried again
        assert out.stats.tx_datagrams == 20
        assert out.stats.tx_segment_sends == 0
        assert out.stats.tx_errors == 0
        assert sum("UDP GSO refused" in r.getMessage() for r in caplog.records) == 1
    finally:
        transport.close()
        receiver.close()


async def test_gso_refused_for_a_size_keeps_smaller_sizes() -> None:
    transport = refusing_transport("127.0.0.1", sendmsg_errno=errno.EINVAL)
    _, receiver = bind_pair("127.0.0.1", gro=False)
    transport._gso_limit = 0xFFFF
    try:
        out = UDPSender(transport, UDPStats())
        batch = [(datagram(i, 1400), receiver.local_address) for i in range(4)]
        [got] = await run_sender_batch(out, batch, [receiver])
        assert got == [d for d, _ in batch]
        assert transport.max_segment_size == 1399
        # Refused again at 700 bytes: the limit falls again; below 512 GSO is given up.
        batch = [(datagram(i, 700), receiver.local_address) for i in range(4)]
        [got] = await run_sender_batch(out, batch, [receiver])
        assert got == [d for d, _ in batch]
        assert transport.max_segment_size == 699
        batch = [(datagram(i, 100), receiver.local_address) for i in range(4)]
        [got] = await run_sender_batch(out, batch, [receiver])
        assert got == [d for d, _ in batch]
        assert transport.max_segment_size == 0
        assert out.stats.tx_datagrams == 12
    finally:
        transport.close()
        receiver.close()


def test_not_linux_means_no_gso_and_no_gro(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udp_module, "_LINUX", False)
    transport = UDPNetwork().bind(("127.0.0.1", 0))
    try:
        assert transport.max_segment_size == 0
        assert not transport.gro
    finally:
        transport.close()


def test_gso_and_gro_can_be_turned_off() -> None:
    transport = UDPNetwork(gso=False, gro=False).bind(("127.0.0.1", 0))
    try:
        assert transport.max_segment_size == 0
        assert not transport.gro
    finally:
        transport.close()


# ------------------------------------------------------------------ the sender and the reader


@linux_only
@pytest.mark.parametrize("host", HOSTS)
async def test_sender_batch_mixed_sizes_and_addresses(host: str) -> None:
    network = UDPNetwork(gro=False)
    sender = network.bind((host, 0))
    a, b = network.bind((host, 0)), network.bind((host, 0))
    try:
        A, B = a.local_address, b.local_address
        sizes_a = [1400] * 50 + [1000] + [1400] * 3 + [60] * 5 + [2000] + [1]
        batch: list[tuple[bytes, Address]] = []
        tag = 0
        for size in sizes_a:
            batch.append((datagram(tag, size), A))
            tag += 1
            if tag % 17 == 0:  # interleave the other address now and then
                batch.append((datagram(tag, size), B))
                batch.append((datagram(tag + 1, size), B))
                tag += 2
        out = UDPSender(sender, UDPStats())
        got_a, got_b = await run_sender_batch(out, batch, [a, b])
        assert got_a == [d for d, addr in batch if addr == A]
        assert got_b == [d for d, addr in batch if addr == B]
        stats = out.stats
        assert stats.tx_datagrams == len(batch)
        assert 0 < stats.tx_segment_sends < len(batch) // 4
        # Every system call counted: the GSO runs and the datagrams sent alone.
        assert stats.tx_segment_sends <= stats.tx_calls < len(batch) // 4
        assert stats.tx_errors == stats.tx_backlog_drops == 0
    finally:
        for t in (sender, a, b):
            t.close()


async def test_outside_a_batch_each_send_goes_at_once() -> None:
    sender, receiver = bind_pair("127.0.0.1", gro=False)
    try:
        out = UDPSender(sender, UDPStats())
        out.send(b"one", receiver.local_address)
        assert await receive_each(receiver, 1) == [(b"one", sender.local_address)]
        out.end_batch()  # without begin_batch: nothing to do
        assert out.stats.tx_datagrams == 1
    finally:
        sender.close()
        receiver.close()


class RecordingTransport:
    """A transport that records every call and refuses with EAGAIN when told to."""

    def __init__(self) -> None:
        self.local_address: Address = ("10.9.9.9", 1)
        self.max_segment_size = 0xFFFF
        self.calls: list[tuple[str, list[bytes], Address]] = []
        self.full_after: int | None = None  # calls that succeed before EAGAIN
        self.woken = trio.Event()
        self.closed = False

    def _call(self, kind: str, datagrams: list[bytes], address: Address) -> None:
        if self.full_after is not None:
            if self.full_after <= 0:
                raise BlockingIOError(errno.EAGAIN, "full")
            self.full_after -= 1
        self.calls.append((kind, datagrams, address))

    def send_nowait(self, data: bytes, address: Address) -> None:
        self._call("one", [data], address)

    def send_segments_nowait(self, datagrams: Sequence[bytes], address: Address) -> None:
        size = len(datagrams[0])
        assert 1 < len(datagrams) <= MAX_SEGMENTS
        assert sum(map(len, datagrams)) <= MAX_SEGMENT_BYTES
        assert all(len(d) == size for d in datagrams[:-1])
        assert 0 < len(datagrams[-1]) <= size
        self._call("gso", list(datagrams), address)

    def recv_nowait(self) -> tuple[bytes, Address]:
        raise BlockingIOError

    async def wait_readable(self) -> None:
        await trio.sleep_forever()

    async def wait_writable(self) -> None:
        await self.woken.wait()

    def close(self) -> None:
        self.closed = True

    def sent(self) -> list[tuple[bytes, Address]]:
        return [(d, address) for _, datagrams, address in self.calls for d in datagrams]


def mixed_batch(count: int) -> list[tuple[bytes, Address]]:
    out = []
    for i in range(count):
        address = ("10.0.0.1", 1) if i % 23 < 20 else ("10.0.0.2", 2)
        out.append((datagram(i, 1300 if i % 31 else 500), address))
    return out


async def test_eagain_sends_the_rest_through_the_backlog_in_order() -> None:
    transport = RecordingTransport()
    out = UDPSender(transport, UDPStats())  # type: ignore[arg-type]
    batch = mixed_batch(200)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(out.run_writer)
        transport.full_after = 3
        out.begin_batch()
        for data, address in batch:
            out.send(data, address)
        out.end_batch()
        assert len(transport.calls) == 3
        # While the backlog holds datagrams, new ones queue behind them.
        out.send(b"later", ("10.0.0.1", 1))
        out.begin_batch()
        out.send(b"batched later", ("10.0.0.1", 1))
        out.end_batch()
        await trio.testing.wait_all_tasks_blocked()
        transport.full_after = None
        transport.woken.set()
        await trio.testing.wait_all_tasks_blocked()
        assert not out._backlog
        nursery.cancel_scope.cancel()
    expected = [*batch, (b"later", ("10.0.0.1", 1)), (b"batched later", ("10.0.0.1", 1))]
    assert transport.sent() == expected
    # The writer also sends runs with one call each.
    assert sum(kind == "gso" for kind, _, _ in transport.calls[3:]) > 0
    assert out.stats.tx_datagrams == len(expected)
    assert out.stats.tx_calls == len(transport.calls)  # every call that sent something


async def test_batch_into_a_full_backlog_drops_and_counts() -> None:
    transport = RecordingTransport()
    transport.full_after = 0
    out = UDPSender(transport, UDPStats())  # type: ignore[arg-type]
    out.begin_batch()
    for i in range(UDP_BACKLOG_LIMIT + 10):
        out.send(datagram(i, 100), ("10.0.0.1", 1))
    out.end_batch()
    assert len(out._backlog) == UDP_BACKLOG_LIMIT
    assert out.stats.tx_backlog_drops == 10
    assert [d for d, _ in out._backlog][:3] == [datagram(i, 100) for i in range(3)]


async def test_fake_transport_batches_and_checks_the_rules() -> None:
    net = FakeNetwork()
    sender, receiver = net.bind(("10.0.0.1", 1)), net.bind(("10.0.0.2", 2))
    out = UDPSender(sender, UDPStats())
    batch = [(datagram(i, 200), receiver.local_address) for i in range(5)]
    out.begin_batch()
    for data, address in batch:
        out.send(data, address)
    out.end_batch()
    assert out.stats.tx_segment_sends == 1
    assert [receiver.recv_nowait()[0] for _ in range(5)] == [d for d, _ in batch]
    with pytest.raises(ValueError, match="UDP GSO could not send"):
        sender.send_segments_nowait([b"ab", b"abc"], receiver.local_address)
    with pytest.raises(ValueError, match="UDP GSO could not send"):
        sender.send_segments_nowait([b"ab", b""], receiver.local_address)


class RecordingPath:
    """A datagram path that records what the reader hands it."""

    def __init__(self, total: int) -> None:
        self.singles: list[tuple[bytes, Address]] = []
        self.runs: list[tuple[list[bytes], Address]] = []
        self.total = total
        self.done = trio.Event()

    def _check(self) -> None:
        if len(self.singles) + sum(len(ds) for ds, _ in self.runs) == self.total:
            self.done.set()

    def datagram(self, datagram: bytes, address: Address, now: float) -> None:
        self.singles.append((datagram, address))
        self._check()

    def datagrams(self, datagrams: list[bytes], address: Address, now: float) -> None:
        self.runs.append((datagrams, address))
        self._check()


@linux_only
@pytest.mark.parametrize("host", HOSTS)
async def test_reader_splits_gro_buffers(host: str) -> None:
    sender, transport = bind_pair(host)
    first = [datagram(i, 1200) for i in range(40)] + [datagram(40, 17)]
    second = [datagram(50 + i, 333) for i in range(3)]
    third = [datagram(60 + i, 333) for i in range(RECEIVE_MANY_MIN)]
    path = RecordingPath(len(first) + len(second) + len(third) + 1)
    stats = UDPStats()
    reader = UDPReceiver(transport, stats, path, boundary=contextlib.nullcontext)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.run)
            sender.send_segments_nowait(first, transport.local_address)
            sender.send_nowait(b"single", transport.local_address)
            sender.send_segments_nowait(second, transport.local_address)
            sender.send_segments_nowait(third, transport.local_address)
            with trio.fail_after(5):
                await path.done.wait()
            nursery.cancel_scope.cancel()
    finally:
        sender.close()
        transport.close()
    source = sender.local_address
    assert path.runs == [(first, source), (second, source), (third, source)]
    assert path.singles == [(b"single", source)]
    assert stats.rx_segment_receives == 3
    assert stats.rx_datagrams == path.total
    assert stats.rx_calls == 4  # datagrams per receive call: rx_datagrams / rx_calls
    assert 1 <= stats.rx_batches <= 4


@pytest.mark.parametrize("count", [1, RECEIVE_MANY_MIN - 1, RECEIVE_MANY_MIN, 9])
def test_client_path_gives_runs_to_the_session_at_once_when_long_enough(count: int) -> None:
    calls: list[tuple[str, int]] = []

    class Runner:
        def handle(self, datagram: bytes, address: Address, now: float) -> bytes:
            calls.append(("one", 1))
            return datagram.upper()

        def handle_many(self, datagrams: list[bytes], address: Address, now: float) -> list[bytes]:
            calls.append(("many", len(datagrams)))
            return [d.upper() for d in datagrams]

    delivered: list[bytes] = []
    path = ClientPath(Runner(), delivered.append)  # type: ignore[arg-type]
    run = [b"d%d" % i for i in range(count)]
    path.datagrams(run, ("10.0.0.1", 7000), 0.0)
    assert delivered == [d.upper() for d in run]
    if count >= RECEIVE_MANY_MIN:
        assert calls == [("many", count)]
    else:
        assert calls == [("one", 1)] * count


async def test_device_io_reads_each_batch_inside_its_boundary() -> None:
    mine, kernel = memory_tun_pair()
    io = DeviceIO(mine)
    log: list[str] = []

    @contextlib.contextmanager
    def boundary() -> Iterator[None]:
        log.append("[")
        yield
        log.append("]")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(
                io.run_reader, lambda packet, now: log.append(packet.decode()), boundary=boundary
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        for i in range(3):
            kernel.write_nowait(b"p%d" % i)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert log[-5:] == ["[", "p0", "p1", "p2", "]"]
    assert log.count("[") == log.count("]")


# ------------------------------------------------------------------ the library, end to end


@linux_only
@pytest.mark.parametrize("version", [Version.V2, Version.V3])
async def test_batched_payloads_cross_a_real_socket_intact(version: Version) -> None:
    payloads = [datagram(i, 1300) for i in range(150)] + [datagram(999, 40)]
    with trio.fail_after(10):
        async with loopback_pair(version) as (server, client):
            # As the VPN sends a TUN batch: collected, then out in GSO runs.
            for start in range(0, len(payloads), 50):
                with client.sender.batch():
                    for payload in payloads[start : start + 50]:
                        client.send_nowait(payload)
            got = [await server.receive() for _ in payloads]
            assert got == [(5, p) for p in payloads]
            with server.sender.batch():
                for payload in payloads:
                    server.send_nowait(5, payload[::-1])
            back = [await client.receive() for _ in payloads]
            assert back == [p[::-1] for p in payloads]
            assert client.endpoint_statistics().tx_segment_sends > 0
            assert server.endpoint_statistics().tx_segment_sends > 0
            assert server.endpoint_statistics().rx_segment_receives > 0
            assert client.endpoint_statistics().rx_segment_receives > 0
            stats = server.statistics()[5]
            assert stats.drops == {}
            assert client.statistics().drops == {}


@pytest.mark.parametrize("version", [Version.V2, Version.V3])
async def test_server_receive_many_splits_runs_by_client(
    version: Version, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coalesced buffer holding two clients' data: each client's payloads, in order."""
    runs: list[tuple[int, int]] = []
    handle_many = PeerRunner.handle_many

    def spy(
        runner: PeerRunner, datagrams: list[bytes], address: Address, now: float
    ) -> list[bytes]:
        runs.append((runner.vaddr, len(datagrams)))
        return handle_many(runner, datagrams, address, now)

    monkeypatch.setattr(PeerRunner, "handle_many", spy)
    net = FakeNetwork()
    server_key = PrivateKey.generate()
    keys = {v: PrivateKey.generate() for v in (5, 6)}
    shared = {v: (b"s%d" % v if version == Version.V3 else None) for v in keys}
    with trio.fail_after(10):
        async with trio_sudp.open_server(
            "10.0.0.1:7000",
            local=LocalIdentity(0, server_key),
            peers=[Peer(v, k.public_key, version, shared[v]) for v, k in keys.items()],
            network=net,
        ) as server:
            clients = {}
            async with trio.open_nursery() as nursery:
                for v, k in keys.items():
                    clients[v] = await nursery.start(
                        functools.partial(
                            trio_sudp.serve_client,
                            "10.0.0.1:7000",
                            local=LocalIdentity(v, k),
                            server=Peer(0, server_key.public_key, version, shared[v]),
                            network=net,
                            bind=(f"10.0.0.{v}", 0),
                        )
                    )
                now = trio.current_time()
                order = [5] * 5 + [6] * 4 + [5, 6] + [5] * 4 + [6] * 3
                datagrams = []
                for i, v in enumerate(order):
                    session = clients[v].runner.session
                    datagrams.append(session.send(b"payload %d" % i, now))
                before = {v: s.rx_packets for v, s in server.statistics().items()}
                delivered: list[tuple[int, bytes]] = []
                path = ServerPath(
                    server.core,
                    server.runners,
                    lambda runner, p: delivered.append((runner.vaddr, p)),
                )
                # Each run goes to its client's session; the source address is client
                # 5's for all, as if both sat behind one address.
                source = clients[5].local_address
                path.datagrams(datagrams[:2], source, now)
                path.datagrams(datagrams[2:11], source, now)
                path.datagrams(datagrams[11:], clients[6].local_address, now)
                assert delivered == [(v, b"payload %d" % i) for i, v in enumerate(order)]
                # Runs long enough went to the session at once, the rest one by one.
                assert runs == [(6, 4), (5, 4)]
                stats = server.statistics()
                assert stats[5].rx_packets - before[5] == order.count(5)
                assert stats[6].rx_packets - before[6] == order.count(6)
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize("gro", [False, pytest.param(True, marks=linux_only)])
async def test_icmp_reported_errors_are_skipped_and_others_raised(gro: bool) -> None:
    """ECONNREFUSED/ECONNRESET (an ICMP error some systems report on receive) is skipped."""
    sender, receiver = bind_pair("127.0.0.1", gro=gro)
    try:
        assert receiver.gro is gro
        name = "_recvmsg" if gro else "_recvfrom"
        real = getattr(receiver, name)
        errors: list[OSError] = [ConnectionRefusedError(), ConnectionResetError()]

        def flaky(*args: Any) -> Any:
            if errors:
                raise errors.pop(0)
            return real(*args)

        setattr(receiver, name, flaky)
        sender.send_nowait(b"after the errors", receiver.local_address)
        with trio.fail_after(5):
            await receiver.wait_readable()
        buffer, _, source = receiver.recv_segments_nowait()
        assert (buffer, source) == (b"after the errors", sender.local_address)
        assert not errors
        errors.append(OSError(errno.EBADMSG, "not transient"))
        with pytest.raises(OSError, match="not transient"):
            receiver.recv_segments_nowait()
    finally:
        sender.close()
        receiver.close()
