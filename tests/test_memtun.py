"""The in-memory packet device pair."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_sudp.testing.memtun import MemoryTun, memory_tun_pair
from trio_sudp.tun.base import PacketDevice


def _device(d: PacketDevice) -> PacketDevice:
    return d  # type-checks that MemoryTun satisfies the protocol


def test_pair_delivers_in_order_both_ways() -> None:
    a, b = memory_tun_pair()
    assert (_device(a).name, _device(b).name) == ("mem0", "mem1")
    for i in range(10):
        a.write_nowait(bytes([i]))
    b.write_nowait(b"back")
    assert [b.read_nowait() for _ in range(10)] == [bytes([i]) for i in range(10)]
    assert a.read_nowait() == b"back"
    with pytest.raises(BlockingIOError):
        a.read_nowait()
    with pytest.raises(BlockingIOError):
        b.read_nowait()
    assert a.statistics().written == 10
    assert b.statistics().written == 1


def test_full_queue_raises_blocking() -> None:
    a, b = memory_tun_pair(capacity=3)
    for i in range(3):
        a.write_nowait(bytes([i]))
    with pytest.raises(BlockingIOError):
        a.write_nowait(b"x")
    assert b.statistics().queued == 3
    assert b.read_nowait() == b"\x00"
    a.write_nowait(b"\x03")  # room again
    assert [b.read_nowait() for _ in range(3)] == [b"\x01", b"\x02", b"\x03"]


def test_full_queue_drops_when_asked() -> None:
    a, b = memory_tun_pair(capacity=2, drop_when_full=True)
    for i in range(5):
        a.write_nowait(bytes([i]))
    assert a.statistics().dropped == 3
    assert a.statistics().written == 2
    assert [b.read_nowait(), b.read_nowait()] == [b"\x00", b"\x01"]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        MemoryTun("x", 0)


async def test_wait_readable_wakes_on_write(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_tun_pair()
    got: list[bytes] = []

    async def reader() -> None:
        await b.wait_readable()
        while True:
            try:
                got.append(b.read_nowait())
            except BlockingIOError:
                return

    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            a.write_nowait(b"one")
            a.write_nowait(b"two")
    assert got == [b"one", b"two"]


async def test_wait_readable_returns_at_once_when_ready() -> None:
    a, b = memory_tun_pair()
    a.write_nowait(b"ready")
    with trio.fail_after(1):
        await b.wait_readable()
    assert b.read_nowait() == b"ready"


async def test_wait_writable_waits_for_room(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_tun_pair(capacity=1)
    a.write_nowait(b"first")
    woke = trio.Event()

    async def writer() -> None:
        await a.wait_writable()
        a.write_nowait(b"second")
        woke.set()

    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            assert not woke.is_set()
            assert b.read_nowait() == b"first"
            await woke.wait()
    assert b.read_nowait() == b"second"


async def test_send_and_receive_helpers(autojump_clock: trio.testing.MockClock) -> None:
    a, b = memory_tun_pair(capacity=2)
    packets = [bytes([i]) * 20 for i in range(50)]
    received: list[bytes] = []

    async def consume() -> None:
        for _ in packets:
            received.append(await b.receive())
            await trio.sleep(0.01)  # a slow reader: the sender must wait for room

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            for packet in packets:
                await a.send(packet)
    assert received == packets
    assert a.statistics().dropped == 0


async def test_close_wakes_waiters(autojump_clock: trio.testing.MockClock) -> None:
    a, _b = memory_tun_pair(capacity=1)
    a.write_nowait(b"fill b")
    outcomes: list[str] = []

    async def wait_read() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await a.wait_readable()
        outcomes.append("reader")

    async def wait_write() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await a.wait_writable()
        outcomes.append("writer")

    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_read)
            nursery.start_soon(wait_write)
            await trio.testing.wait_all_tasks_blocked()
            a.close()
    assert sorted(outcomes) == ["reader", "writer"]
    a.close()  # idempotent
    assert a.closed
    with pytest.raises(trio.ClosedResourceError):
        a.read_nowait()
    with pytest.raises(trio.ClosedResourceError):
        a.write_nowait(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await a.wait_readable()


async def test_writes_to_a_closed_peer_are_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = memory_tun_pair(capacity=1)
    a.write_nowait(b"fill")
    woke = trio.Event()

    async def writer() -> None:
        await a.wait_writable()  # the peer closing means room will never come
        woke.set()

    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            b.close()
    assert woke.is_set()
    a.write_nowait(b"lost")
    assert a.statistics().dropped == 1


async def test_wait_readable_is_cancellable(autojump_clock: trio.testing.MockClock) -> None:
    _, b = memory_tun_pair()
    with trio.move_on_after(5) as scope:
        await b.wait_readable()
    assert scope.cancelled_caught
    assert trio.current_time() == pytest.approx(5)
