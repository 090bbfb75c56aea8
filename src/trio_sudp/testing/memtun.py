"""An in-memory packet device pair, for testing the VPN glue without root.

``memory_tun_pair()`` returns two :class:`MemoryTun` ends: what one writes, the
other reads, in order. Give one end to the code under test as its
:class:`~trio_sudp.tun.base.PacketDevice` and play the kernel with the other. Each
end's receive queue is bounded; a write into a full queue raises
``BlockingIOError`` (or drops and counts, with ``drop_when_full``). Nothing reads a
clock, so it works under ``autojump_clock``.
"""

from __future__ import annotations

from collections import deque

import attrs
import trio

__all__ = ["MemoryTun", "MemoryTunStatistics", "memory_tun_pair"]

DEFAULT_CAPACITY = 256


@attrs.frozen
class MemoryTunStatistics:
    """Counters of one end."""

    queued: int
    """Packets waiting to be read from this end."""
    written: int
    """Packets this end delivered to its peer."""
    dropped: int
    """Packets this end wrote that were dropped (peer full with ``drop_when_full``, or closed)."""


class MemoryTun:
    """One end of an in-memory packet device pair (see :func:`memory_tun_pair`)."""

    def __init__(
        self, name: str, capacity: int = DEFAULT_CAPACITY, *, drop_when_full: bool = False
    ):
        """Create an unconnected end; :func:`memory_tun_pair` connects two."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._name = name
        self._capacity = capacity
        self._drop_when_full = drop_when_full
        self._inbox: deque[bytes] = deque()
        self._peer: MemoryTun | None = None
        self._closed = False
        self._readable = trio.lowlevel.ParkingLot()
        # Writers waiting for room in *this* end's inbox (they belong to the peer).
        self._room = trio.lowlevel.ParkingLot()
        self._written = 0
        self._dropped = 0

    @property
    def name(self) -> str:
        """The name given at creation (``mem0``, ``mem1`` by default)."""
        return self._name

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called on this end."""
        return self._closed

    def statistics(self) -> MemoryTunStatistics:
        """Current counters of this end."""
        return MemoryTunStatistics(len(self._inbox), self._written, self._dropped)

    def read_nowait(self) -> bytes:
        """Return the oldest packet the peer wrote; ``BlockingIOError`` when none."""
        if self._closed:
            raise trio.ClosedResourceError("the memory TUN was closed")
        try:
            packet = self._inbox.popleft()
        except IndexError:
            raise BlockingIOError("no packet ready") from None
        if self._room:
            self._room.unpark_all()
        return packet

    def write_nowait(self, packet: bytes) -> None:
        """Queue ``packet`` for the peer; ``BlockingIOError`` if its queue is full.

        With ``drop_when_full`` a full queue drops the packet instead. A packet
        written to a closed peer is dropped, as a network would.
        """
        if self._closed:
            raise trio.ClosedResourceError("the memory TUN was closed")
        peer = self._peer
        if peer is None or peer._closed:
            self._dropped += 1
            return
        if len(peer._inbox) >= peer._capacity:
            if self._drop_when_full:
                self._dropped += 1
                return
            raise BlockingIOError("the peer's queue is full")
        peer._inbox.append(packet)
        self._written += 1
        if peer._readable:
            peer._readable.unpark_all()

    async def wait_readable(self) -> None:
        """Sleep until a packet is queued for this end; ``ClosedResourceError`` on close."""
        if not self._inbox and not self._closed:
            await self._readable.park()
        else:
            await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("the memory TUN was closed")

    async def wait_writable(self) -> None:
        """Sleep until the peer's queue has room; ``ClosedResourceError`` on close."""
        peer = self._peer
        if (
            not self._closed
            and peer is not None
            and not peer._closed
            and len(peer._inbox) >= peer._capacity
        ):
            await peer._room.park()
        else:
            await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("the memory TUN was closed")

    async def send(self, packet: bytes) -> None:
        """Write ``packet``, waiting for room: a convenience for test code."""
        while True:
            try:
                self.write_nowait(packet)
            except BlockingIOError:
                await self.wait_writable()
            else:
                await trio.lowlevel.checkpoint()
                return

    async def receive(self) -> bytes:
        """Read the next packet, waiting for one: a convenience for test code."""
        while True:
            try:
                packet = self.read_nowait()
            except BlockingIOError:
                await self.wait_readable()
            else:
                await trio.lowlevel.checkpoint()
                return packet

    def close(self) -> None:
        """Close this end, waking its waiters with ``ClosedResourceError``. Idempotent.

        Queued packets are discarded; the peer's later writes are dropped.
        """
        if self._closed:
            return
        self._closed = True
        self._inbox.clear()
        self._readable.unpark_all()
        self._room.unpark_all()  # the peer's writers: room will never come
        if self._peer is not None:
            self._peer._room.unpark_all()  # this end's own writers

    def __repr__(self) -> str:
        return f"<MemoryTun {self._name} queued={len(self._inbox)}>"


def memory_tun_pair(
    capacity: int = DEFAULT_CAPACITY,
    *,
    names: tuple[str, str] = ("mem0", "mem1"),
    drop_when_full: bool = False,
) -> tuple[MemoryTun, MemoryTun]:
    """Two connected :class:`MemoryTun` ends, each with a queue of ``capacity`` packets."""
    a = MemoryTun(names[0], capacity, drop_when_full=drop_when_full)
    b = MemoryTun(names[1], capacity, drop_when_full=drop_when_full)
    a._peer = b
    b._peer = a
    return a, b
