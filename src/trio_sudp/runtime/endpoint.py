"""The UDP task: one datagram transport, demultiplexed to peer sessions.

It follows the per-packet budget of DESIGN.md: receive with the non-blocking call
until ``BlockingIOError``, hand each datagram synchronously to its session (the
sessions are plain objects, not tasks: a per-packet channel hop or ``await`` would
cost more than the crypto), checkpoint once per batch, and only then sleep in
``wait_readable``. Sending tries the non-blocking call first; when the socket buffer
is full, datagrams wait in a bounded backlog drained by a writer task, and a full
backlog drops (counted) rather than blocking anyone.

Batches. Where the transport offers ``SegmentSender`` (UDP GSO/GRO on Linux), the
per-datagram system calls are amortised:

- Between :meth:`Endpoint.begin_batch` and :meth:`Endpoint.end_batch` (the TUN task
  brackets each of its read batches with them, and the UDP task its own), sends are
  collected; ``end_batch`` sends runs of consecutive datagrams to one address, of one
  size (the last of a run may be shorter), with one ``send_segments_nowait`` each, and
  everything else one by one. The order of datagrams is kept, also into the backlog.
- A coalesced receive is split back into its datagrams, which go to
  :attr:`Endpoint.receive_many` (one call for the run, which the sessions process
  more cheaply) or else one by one to the receiver.
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Callable
from typing import Protocol, cast

import attrs
import trio

from .batches import read_in_batches
from .transport import (
    MAX_SEGMENT_BYTES,
    MAX_SEGMENTS,
    Address,
    DatagramTransport,
    SegmentReceiver,
    SegmentSender,
    split_segments,
)

__all__ = ["Endpoint", "EndpointStats", "Receiver", "ReceiverMany"]

log = logging.getLogger("trio_sudp")

#: Datagrams handled per wakeup before yielding to other tasks.
RECEIVE_BATCH = 128
#: Datagrams waiting for a writable socket before new ones are dropped.
BACKLOG_LIMIT = 2048
#: Fewest datagrams of a coalesced receive handed to ``receive_many`` at once: below,
#: one call per datagram is cheaper (``Session.receive_many`` has a fixed cost).
RECEIVE_MANY_MIN = 4


class Receiver(Protocol):
    """Where the endpoint hands each datagram: the runtime's demultiplexer."""

    def __call__(self, datagram: bytes, address: Address, now: float) -> None: ...


class ReceiverMany(Protocol):
    """Where the endpoint hands the datagrams of one coalesced receive (one source)."""

    def __call__(self, datagrams: list[bytes], address: Address, now: float) -> None: ...


@attrs.define
class EndpointStats:
    """Counters of the UDP task."""

    rx_datagrams: int = 0
    tx_datagrams: int = 0
    #: Datagrams dropped because the socket and the backlog were full.
    tx_backlog_drops: int = 0
    #: Datagrams the operating system refused to send (unreachable, too long, ...).
    tx_errors: int = 0
    #: Datagrams whose handling raised an unexpected exception (a bug; logged).
    internal_errors: int = 0
    #: System calls that sent several datagrams (GSO) / received several (GRO).
    tx_segment_sends: int = 0
    rx_segment_receives: int = 0


class Endpoint:
    """Owns a transport: receives in batches, sends without blocking."""

    def __init__(
        self,
        transport: DatagramTransport,
        receiver: Receiver | None = None,
        *,
        receive_many: ReceiverMany | None = None,
    ) -> None:
        self.transport = transport
        #: Called for every datagram received; set before :meth:`run`.
        self.receiver = receiver
        #: Called, when set, with the datagrams of one coalesced receive (at least
        #: ``RECEIVE_MANY_MIN``) instead of calling :attr:`receiver` for each.
        self.receive_many = receive_many
        self.stats = EndpointStats()
        self._backlog: collections.deque[tuple[bytes, Address]] = collections.deque()
        self._writer_wakeup = trio.Event()
        #: Called before / after each batch of received datagrams, in the same
        #: synchronous run (the VPN collects the TUN writes of a batch between them).
        self.before_batch: Callable[[], None] | None = None
        self.after_batch: Callable[[], None] | None = None
        self._segments: SegmentSender | None = (
            cast("SegmentSender", transport) if hasattr(transport, "send_segments_nowait") else None
        )
        # Between begin_batch and end_batch: the datagrams sent, and where to.
        self._batching = False
        self._batch: list[bytes] = []
        self._batch_to: list[Address] = []

    @property
    def local_address(self) -> Address:
        return self.transport.local_address

    # ----------------------------------------------------------------- sending

    def send(self, datagram: bytes, address: Address) -> None:
        """Send now if the socket takes it; otherwise queue it (bounded) for the writer.

        Within a batch (see :meth:`begin_batch`) it is only collected.
        """
        if self._batching:
            self._batch.append(datagram)
            self._batch_to.append(address)
            return
        if not self._backlog:
            try:
                self.transport.send_nowait(datagram, address)
            except BlockingIOError:
                pass
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                self.stats.tx_errors += 1
                log.debug("send to %r failed: %s", address, exc)
                return
            else:
                self.stats.tx_datagrams += 1
                return
        self._queue(datagram, address)

    def _queue(self, datagram: bytes, address: Address) -> None:
        if len(self._backlog) >= BACKLOG_LIMIT:
            self.stats.tx_backlog_drops += 1
            return
        self._backlog.append((datagram, address))
        self._writer_wakeup.set()

    def begin_batch(self) -> None:
        """Collect what :meth:`send` is given until :meth:`end_batch` (same synchronous run).

        Does nothing unless the transport can send several datagrams per call.
        """
        if self._segments is not None:
            self._batching = True

    def end_batch(self) -> None:
        """Send what was collected since :meth:`begin_batch`, in order."""
        if not self._batching:
            return
        self._batching = False
        datagrams = self._batch
        if not datagrams:
            return
        addresses = self._batch_to
        self._batch = []
        self._batch_to = []
        if self._backlog:  # the socket is full: keep the order
            for item in zip(datagrams, addresses, strict=True):
                self._queue(*item)
            return
        try:
            sent = self._send_runs(datagrams, addresses)
        except trio.ClosedResourceError:
            return
        if sent < len(datagrams):
            for item in zip(datagrams[sent:], addresses[sent:], strict=True):
                self._queue(*item)

    def _send_runs(self, datagrams: list[bytes], addresses: list[Address]) -> int:
        """Send ``datagrams[i]`` to ``addresses[i]`` in order, runs with one call each.

        Return how many were dealt with (sent or lost to an error) before the socket
        buffer filled up (``len(datagrams)`` if it did not). ``trio.ClosedResourceError``
        passes through.
        """
        send_one = self.transport.send_nowait
        segments = self._segments
        stats = self.stats
        limit = 0 if segments is None else segments.max_segment_size
        count = len(datagrams)
        i = 0
        while i < count:
            datagram = datagrams[i]
            address = addresses[i]
            size = len(datagram)
            end = i + 1
            if 0 < size <= limit:
                # The run: the same size to the same address, then maybe one shorter.
                last = min(count, i + MAX_SEGMENTS, i + MAX_SEGMENT_BYTES // size)
                while end < last and addresses[end] == address:
                    other = len(datagrams[end])
                    if other != size:
                        if 0 < other < size:
                            end += 1
                        break
                    end += 1
            if end - i > 1:
                assert segments is not None
                try:
                    segments.send_segments_nowait(datagrams[i:end], address)
                except BlockingIOError:
                    return i
                except trio.ClosedResourceError:
                    raise
                except OSError:
                    # Refused as a batch (the transport may have turned GSO off):
                    # one by one, so that each datagram meets its own fate.
                    limit = segments.max_segment_size
                    for j in range(i, end):
                        if not self._send_one(datagrams[j], addresses[j]):
                            return j
                    i = end
                    continue
                stats.tx_datagrams += end - i
                stats.tx_segment_sends += 1
                i = end
                continue
            try:
                send_one(datagram, address)
            except BlockingIOError:
                return i
            except trio.ClosedResourceError:
                raise
            except OSError as exc:
                stats.tx_errors += 1
                log.debug("send to %r failed: %s", address, exc)
            else:
                stats.tx_datagrams += 1
            i = end
        return count

    def _send_one(self, datagram: bytes, address: Address) -> bool:
        """Send one datagram; ``False`` if the socket buffer is full (nothing sent)."""
        try:
            self.transport.send_nowait(datagram, address)
        except BlockingIOError:
            return False
        except trio.ClosedResourceError:
            raise
        except OSError as exc:
            self.stats.tx_errors += 1
            log.debug("send to %r failed: %s", address, exc)
        else:
            self.stats.tx_datagrams += 1
        return True

    # ----------------------------------------------------------------- tasks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the reader and the writer until cancelled or the transport is closed."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            task_status.started()
            assert self.receiver is not None, "set Endpoint.receiver before running it"
            gro = getattr(self.transport, "gro", False)
            await read_in_batches(
                self._drain_segments if gro else self._drain_datagrams,
                self.transport.wait_readable,
                limit=RECEIVE_BATCH,
                begin=self._begin_receive,
                end=self._end_receive,
            )
            nursery.cancel_scope.cancel()

    def _begin_receive(self) -> None:
        if self.before_batch is not None:
            self.before_batch()
        self.begin_batch()

    def _end_receive(self) -> None:
        self.end_batch()
        if self.after_batch is not None:
            self.after_batch()

    def _drain_datagrams(self, now: float) -> int:
        """One batch of receives from a transport without GRO; how many datagrams."""
        recv = self.transport.recv_nowait
        receiver = cast("Receiver", self.receiver)
        count = 0
        while count < RECEIVE_BATCH:
            try:
                datagram, address = recv()
            except BlockingIOError:
                break
            except (ConnectionRefusedError, ConnectionResetError):
                continue
            count += 1
            try:
                receiver(datagram, address, now)
            except trio.ClosedResourceError:
                raise
            except Exception:
                # A bug must not let one datagram stop the tunnel: log and go on.
                self.stats.internal_errors += 1
                log.exception("internal error handling a datagram from %r", address)
        self.stats.rx_datagrams += count
        return count

    def _drain_segments(self, now: float) -> int:
        """:meth:`_drain_datagrams` for receives that may carry several datagrams (GRO)."""
        recv = cast("SegmentReceiver", self.transport).recv_segments_nowait
        receiver = cast("Receiver", self.receiver)
        receive_many = self.receive_many
        count = 0
        coalesced = 0
        while count < RECEIVE_BATCH:
            try:
                buffer, segment_size, address = recv()
            except BlockingIOError:
                break
            except (ConnectionRefusedError, ConnectionResetError):
                continue
            try:
                if not segment_size:
                    count += 1
                    receiver(buffer, address, now)
                    continue
                datagrams = split_segments(buffer, segment_size)
                count += len(datagrams)
                coalesced += 1
                if receive_many is not None and len(datagrams) >= RECEIVE_MANY_MIN:
                    receive_many(datagrams, address, now)
                else:
                    for datagram in datagrams:
                        receiver(datagram, address, now)
            except trio.ClosedResourceError:
                raise
            except Exception:
                self.stats.internal_errors += 1
                log.exception("internal error handling a datagram from %r", address)
        self.stats.rx_datagrams += count
        self.stats.rx_segment_receives += coalesced
        return count

    async def _writer(self) -> None:
        backlog = self._backlog
        transport = self.transport
        while True:
            await self._writer_wakeup.wait()
            self._writer_wakeup = trio.Event()
            while backlog:
                # Up to one full run at a time, through the same path as a batch.
                items = list(itertools.islice(backlog, MAX_SEGMENTS))
                datagrams = [datagram for datagram, _ in items]
                addresses = [address for _, address in items]
                try:
                    sent = self._send_runs(datagrams, addresses)
                except trio.ClosedResourceError:
                    return
                for _ in range(sent):
                    backlog.popleft()
                if sent < len(items):
                    try:
                        await transport.wait_writable()
                    except trio.ClosedResourceError:
                        return
