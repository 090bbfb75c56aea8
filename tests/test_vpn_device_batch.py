"""The TUN task's write batches: GSO writes on a vnet-header device, backlog, counters."""

from __future__ import annotations

import contextlib
import errno
import functools
from collections.abc import Iterator, Sequence

import pytest
import trio
import trio.testing

from trio_sudp.runtime.batches import TUN_WRITE_BATCH
from trio_sudp.testing.packets import tcp_segment, udp4
from trio_sudp.vpn.coalesce import PLAIN_HEADER
from trio_sudp.vpn.device import DeviceIO


class FakeVnetDevice:
    """Records writes; can be made to block or to refuse them."""

    name = "fake0"

    def __init__(self, *, vnet_header: bool = True) -> None:
        self.vnet_header = vnet_header
        self.writes: list[tuple[str, bytes]] = []
        self.blocked = False
        self.refuse = False
        self.room = trio.Event()

    def _check(self) -> None:
        if self.blocked:
            raise BlockingIOError
        if self.refuse:
            raise OSError(errno.EINVAL, "Invalid argument")

    def write_nowait(self, packet: bytes) -> None:
        self._check()
        self.writes.append(("plain", packet))

    def write_vectored_nowait(self, buffers: Sequence[bytes | memoryview]) -> None:
        self._check()
        kind = "plain" if bytes(buffers[0]) == PLAIN_HEADER else "gso"
        self.writes.append((kind, b"".join(bytes(b) for b in buffers[1:])))

    def read_nowait(self) -> bytes:
        raise BlockingIOError

    async def wait_readable(self) -> None:
        await trio.sleep_forever()

    async def wait_writable(self) -> None:
        await self.room.wait()

    def close(self) -> None:
        pass


def bulk(count: int, size: int = 1000) -> list[bytes]:
    return [
        tcp_segment("10.0.0.2", "10.0.0.1", bytes(size), seq=i * size, ident=i)
        for i in range(count)
    ]


def test_a_batch_is_written_merged_and_counted_as_its_packets() -> None:
    device = FakeVnetDevice()
    io = DeviceIO(device)
    packets = [*bulk(5), udp4("10.0.0.2", "10.0.0.1", 1, 2, b"x")]
    io.begin_write_batch()
    for packet in packets:
        io.write(packet)
    assert device.writes == []  # held until the batch ends
    io.end_write_batch()
    assert [kind for kind, _ in device.writes] == ["gso", "plain"]
    assert len(device.writes[0][1]) == 40 + 5 * 1000
    assert io.stats.tx_packets == 6
    assert io.stats.tx_writes == 2
    assert io.stats.tx_bytes == sum(map(len, packets))
    assert io.stats.tx_gso_writes == 1
    assert io.status()["offload"] is True
    v6 = [tcp_segment("fd00::2", "fd00::1", bytes(900), seq=i * 900) for i in range(3)]
    io.begin_write_batch()
    for packet in v6:
        io.write(packet)
    io.end_write_batch()
    assert device.writes[-1][0] == "gso"
    assert io.stats.tx_packets == 6 + 3
    assert io.stats.tx_bytes == sum(map(len, packets)) + sum(map(len, v6))


def test_without_a_vnet_header_packets_are_written_at_once() -> None:
    device = FakeVnetDevice(vnet_header=False)
    io = DeviceIO(device)
    io.begin_write_batch()
    for packet in bulk(3):
        io.write(packet)
    assert [kind for kind, _ in device.writes] == ["plain"] * 3
    io.end_write_batch()
    assert len(device.writes) == 3
    assert io.status()["offload"] is False


def test_a_batch_of_one_and_writes_outside_a_batch_are_plain() -> None:
    device = FakeVnetDevice()
    io = DeviceIO(device)
    (packet,) = bulk(1)
    io.begin_write_batch()
    io.write(packet)
    io.end_write_batch()
    io.write(packet)
    io.end_write_batch()  # no batch: nothing happens
    assert device.writes == [("plain", packet), ("plain", packet)]


def test_a_long_batch_is_written_in_parts() -> None:
    device = FakeVnetDevice()
    io = DeviceIO(device)
    io.begin_write_batch()
    for packet in bulk(TUN_WRITE_BATCH + 3, size=100):
        io.write(packet)
    assert device.writes  # the first TUN_WRITE_BATCH went out already
    written = sum(len(data) - 40 for _, data in device.writes)
    assert written == TUN_WRITE_BATCH * 100
    io.end_write_batch()
    assert io.stats.tx_packets == TUN_WRITE_BATCH + 3


def test_a_refused_gso_write_turns_merging_off(caplog: pytest.LogCaptureFixture) -> None:
    device = FakeVnetDevice()
    device.refuse = True
    io = DeviceIO(device)
    io.begin_write_batch()
    for packet in bulk(4):
        io.write(packet)
    io.end_write_batch()
    assert io.stats.tx_errors == 4
    assert io.stats.tx_packets == 0
    assert "fake0 refused a GSO write (Invalid argument)" in caplog.text
    assert io.status()["offload"] is False
    device.refuse = False
    io.begin_write_batch()
    for packet in bulk(4):
        io.write(packet)
    io.end_write_batch()
    assert [kind for kind, _ in device.writes] == ["plain"] * 4
    assert io.stats.tx_packets == 4


def test_a_refused_plain_packet_leaves_merging_on() -> None:
    device = FakeVnetDevice()
    io = DeviceIO(device)
    device.refuse = True
    io.write(bulk(1)[0])
    device.refuse = False
    assert io.stats.tx_errors == 1
    io.begin_write_batch()
    for packet in bulk(3):
        io.write(packet)
    io.end_write_batch()
    assert [kind for kind, _ in device.writes] == ["gso"]


async def test_a_full_device_queues_merged_writes_in_order() -> None:
    device = FakeVnetDevice()
    device.blocked = True
    io = DeviceIO(device)
    first, second = bulk(4), [udp4("10.0.0.2", "10.0.0.1", 1, 2, b"late")]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(io.run_writer)
        io.begin_write_batch()
        for packet in first:
            io.write(packet)
        io.end_write_batch()
        io.write(second[0])  # behind the queued GSO write, not before it
        assert device.writes == []
        device.blocked = False
        device.room.set()
        with trio.fail_after(5):
            while io.stats.tx_packets < 5:
                await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [kind for kind, _ in device.writes] == ["gso", "plain"]
    assert device.writes[1][1] == second[0]
    assert io.stats.tx_gso_writes == 1
    assert io.stats.tx_backlog_drops == 0


class FakeTsoDevice(FakeVnetDevice):
    """Hands over reads that are several packets each, as a TSO TUN's super-packets are."""

    tso = True

    def __init__(self, reads: list[list[bytes]]) -> None:
        super().__init__()
        self.reads = reads

    def read_packets_nowait(self) -> list[bytes]:
        if not self.reads:
            raise BlockingIOError
        return self.reads.pop(0)

    def read_nowait(self) -> bytes:
        raise AssertionError("a TSO device is read a super-packet at a time")


async def test_a_tso_device_is_read_a_super_packet_at_a_time() -> None:
    reads = [bulk(45, size=1448), bulk(3), [udp4("10.0.0.2", "10.0.0.1", 1, 2, b"x")]]
    expected = [p for packets in reads for p in packets]
    device = FakeTsoDevice([list(r) for r in reads])
    io = DeviceIO(device)
    got: list[bytes] = []
    batches: list[int] = []

    @contextlib.contextmanager
    def boundary() -> Iterator[None]:
        yield
        batches.append(len(got))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(io.run_reader, lambda p, now: got.append(p), boundary=boundary)
        )
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert got == expected
    assert batches[0] == len(expected)  # one batch: a read's packets are never split
    assert io.stats.rx_packets == len(expected)
    assert io.stats.rx_bytes == sum(map(len, expected))
    assert (io.stats.rx_reads, io.stats.rx_batches) == (3, 1)
