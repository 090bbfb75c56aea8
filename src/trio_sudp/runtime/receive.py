"""A datagram's way in: the UDP read loop, and where each datagram goes from there.

:class:`UDPReceiver` is the UDP task's reader. Each wakeup it drains every ready
datagram (a coalesced GRO receive is split back into its datagrams), inside the
batch boundary its owner gave it, and hands each datagram synchronously to its
path — the sessions are plain objects, not tasks: a channel hop or an ``await`` per
datagram would cost more than the crypto (DESIGN.md, the per-packet budget).

The two paths:

- :class:`ClientPath`: every datagram goes to the one session; its payloads to the
  client's sink (the receive queue, or the VPN's TUN writer).
- :class:`ServerPath`: :meth:`ServerCore.route` finds the client by the header's
  ``src`` (cheap checks first), its runner's session opens the datagram, and the
  payload goes to the server's sink with the runner that received it. A run of Data
  from one client in one coalesced receive goes to that session at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Protocol, cast

import trio

from ..protocol.constants import HEADER_SIZE, Kind
from ..protocol.server import NO_PEER, ServerCore
from .batches import RECEIVE_MANY_MIN, STRANGERS_REST, UDP_READ_BATCH, read_in_batches
from .peer import PeerRunner
from .transport import Address, DatagramTransport, SegmentReceiver, UDPStats, split_segments

__all__ = ["ClientPath", "DatagramPath", "ServerPath", "UDPReceiver"]

log = logging.getLogger("trio_sudp")

_DATA = int(Kind.DATA)


class DatagramPath(Protocol):
    """Where the UDP reader hands datagrams: one at a time, or a run from one source."""

    def datagram(self, datagram: bytes, address: Address, now: float) -> None: ...

    def datagrams(self, datagrams: list[bytes], address: Address, now: float) -> None: ...


class UDPReceiver:
    """The UDP read loop: drains the socket in batches into a :class:`DatagramPath`."""

    def __init__(
        self,
        transport: DatagramTransport,
        stats: UDPStats,
        path: DatagramPath,
        *,
        boundary: Callable[[], AbstractContextManager[object]],
        strangers: bool = False,
    ) -> None:
        self._transport = transport
        self._stats = stats
        self._path = path
        self._boundary = boundary
        #: Reading a server's strangers' lane: its datagrams are counted as such too,
        #: and a flood on it gets a bounded share of the server's time.
        self._strangers = strangers

    async def run(self) -> None:
        """Read until the transport is closed (or the task is cancelled)."""
        gro = getattr(self._transport, "gro", False)
        await read_in_batches(
            self._drain_coalesced if gro else self._drain,
            self._transport.wait_readable,
            limit=UDP_READ_BATCH,
            boundary=self._boundary,
            rest=STRANGERS_REST if self._strangers else 0.0,
        )

    def _drain(self, now: float) -> int:
        """One batch of receives from a transport without GRO; how many datagrams."""
        recv = self._transport.recv_nowait
        deliver = self._path.datagram
        count = 0
        while count < UDP_READ_BATCH:
            try:
                datagram, address = recv()
            except BlockingIOError:
                break
            except (ConnectionRefusedError, ConnectionResetError):
                continue
            count += 1
            try:
                deliver(datagram, address, now)
            except trio.ClosedResourceError:
                raise
            except Exception:
                self._internal_error(address)
        self._count(count, calls=count, coalesced=0)
        return count

    def _drain_coalesced(self, now: float) -> int:
        """:meth:`_drain` for receives that may carry several datagrams (GRO)."""
        recv = cast("SegmentReceiver", self._transport).recv_segments_nowait
        path = self._path
        count = 0
        coalesced = 0
        calls = 0
        while count < UDP_READ_BATCH:
            try:
                buffer, segment_size, address = recv()
            except BlockingIOError:
                break
            except (ConnectionRefusedError, ConnectionResetError):
                continue
            calls += 1
            try:
                if not segment_size:
                    count += 1
                    path.datagram(buffer, address, now)
                    continue
                datagrams = split_segments(buffer, segment_size)
                count += len(datagrams)
                coalesced += 1
                path.datagrams(datagrams, address, now)
            except trio.ClosedResourceError:
                raise
            except Exception:
                self._internal_error(address)
        self._count(count, calls=calls, coalesced=coalesced)
        return count

    def _count(self, count: int, *, calls: int, coalesced: int) -> None:
        """One batch's datagrams, receive calls and coalesced receives, into the stats."""
        stats = self._stats
        stats.rx_datagrams += count
        stats.rx_segment_receives += coalesced
        stats.rx_calls += calls
        stats.rx_batches += calls > 0
        if self._strangers:
            stats.rx_strangers += count

    def _internal_error(self, address: Address) -> None:
        # A bug must not let one datagram stop the tunnel: log and go on.
        self._stats.internal_errors += 1
        log.exception("internal error handling a datagram from %r", address)


class ClientPath:
    """A client's datagrams: all to its one session, payloads to ``sink``."""

    __slots__ = ("_runner", "_sink")

    def __init__(self, runner: PeerRunner, sink: Callable[[bytes], None]) -> None:
        self._runner = runner
        self._sink = sink

    def datagram(self, datagram: bytes, address: Address, now: float) -> None:
        payload = self._runner.handle(datagram, address, now)
        if payload is not None:
            self._sink(payload)

    def datagrams(self, datagrams: list[bytes], address: Address, now: float) -> None:
        if len(datagrams) < RECEIVE_MANY_MIN:
            for datagram in datagrams:
                self.datagram(datagram, address, now)
            return
        sink = self._sink
        for payload in self._runner.handle_many(datagrams, address, now):
            sink(payload)


class ServerPath:
    """A server's datagrams: each to its client's session, payloads to ``sink``."""

    __slots__ = ("_core", "_runners", "_sink")

    def __init__(
        self,
        core: ServerCore,
        runners: Mapping[int, PeerRunner],
        sink: Callable[[PeerRunner, bytes], None],
    ) -> None:
        self._core = core
        #: Each configured client's runner by vaddr (kept current by the server).
        self._runners = runners
        self._sink = sink

    def datagram(self, datagram: bytes, address: Address, now: float) -> None:
        vaddr = self._core.route(datagram, address, now)
        if vaddr == NO_PEER:
            return
        runner = self._runners[vaddr]
        payload = runner.handle(datagram, address, now)
        if payload is not None:
            self._sink(runner, payload)

    def datagrams(self, datagrams: list[bytes], address: Address, now: float) -> None:
        # The datagrams of one coalesced receive (one source): runs of Data from one
        # configured client go to its session at once (if long enough to be worth
        # it), anything else one by one.
        count = len(datagrams)
        i = 0
        while i < count:
            datagram = datagrams[i]
            if len(datagram) < HEADER_SIZE or datagram[1] != _DATA:
                self.datagram(datagram, address, now)
                i += 1
                continue
            high = datagram[4]
            low = datagram[5]
            end = i + 1
            while end < count:
                other = datagrams[end]
                if len(other) < HEADER_SIZE or other[1] != _DATA or other[5] != low:
                    break
                if other[4] != high:
                    break
                end += 1
            runner = self._runners.get(high << 8 | low) if end - i >= RECEIVE_MANY_MIN else None
            if runner is None:
                for j in range(i, end):
                    self.datagram(datagrams[j], address, now)
            else:
                run = datagrams if end - i == count else datagrams[i:end]
                sink = self._sink
                for payload in runner.handle_many(run, address, now):
                    sink(runner, payload)
            i = end
