"""A datagram's way out: :class:`UDPSender`, the one writer of the UDP socket.

Sending tries the non-blocking call first (DESIGN.md, the per-packet budget); when
the socket buffer is full, datagrams wait in a bounded :class:`WriteBacklog` drained
by the sender's writer task, and a full backlog drops (counted) rather than blocking
anyone.

Inside :meth:`UDPSender.batch` (the read loops of the UDP and the TUN task enter it
for each of their batches) sends are collected, and at the end of the batch runs of
consecutive datagrams to one address, of one size (the last of a run may be
shorter), go out with one ``send_segments_nowait`` each (UDP GSO), everything else
one by one. The order of datagrams is kept, also into the backlog.
"""

from __future__ import annotations

import logging
from typing import cast

import trio

from .backlog import WriteBacklog
from .batches import UDP_BACKLOG_LIMIT, Boundary
from .transport import (
    MAX_SEGMENT_BYTES,
    MAX_SEGMENTS,
    Address,
    DatagramTransport,
    SegmentSender,
    UDPStats,
)

__all__ = ["UDPSender"]

log = logging.getLogger("trio_sudp")


class UDPSender:
    """Sends datagrams on a transport without blocking: batched, backlogged, counted."""

    def __init__(self, transport: DatagramTransport, stats: UDPStats) -> None:
        self.transport = transport
        self.stats = stats
        self._segments: SegmentSender | None = (
            cast("SegmentSender", transport) if hasattr(transport, "send_segments_nowait") else None
        )
        self._backlog: WriteBacklog[tuple[bytes, Address]] = WriteBacklog(
            self._write_some, transport.wait_writable, limit=UDP_BACKLOG_LIMIT, chunk=MAX_SEGMENTS
        )
        # Between begin_batch and end_batch: the datagrams sent, and where to.
        self._batching = False
        self._batch: list[bytes] = []
        self._batch_to: list[Address] = []
        self._boundary = Boundary(self.begin_batch, self.end_batch)

    def send(self, datagram: bytes, address: Address) -> None:
        """Send now if the socket takes it, else queue it (bounded) for the writer.

        Within a batch it is only collected.
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
                self._send_error(address, exc)
                return
            else:
                stats = self.stats
                stats.tx_datagrams += 1
                stats.tx_calls += 1
                return
        self._queue([(datagram, address)])

    def batch(self) -> Boundary:
        """The batch boundary: ``with sender.batch(): ...`` (in one synchronous run)."""
        return self._boundary

    def begin_batch(self) -> None:
        """Collect what :meth:`send` is given until :meth:`end_batch`.

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
            self._queue(list(zip(datagrams, addresses, strict=True)))
            return
        try:
            sent = self._send_runs(datagrams, addresses)
        except trio.ClosedResourceError:
            return
        if sent < len(datagrams):
            self._queue(list(zip(datagrams[sent:], addresses[sent:], strict=True)))

    async def run_writer(self) -> None:
        """The writer task: drain the backlog as the socket has room, until it closes."""
        await self._backlog.run()

    def _queue(self, items: list[tuple[bytes, Address]]) -> None:
        self.stats.tx_backlog_drops += self._backlog.push_all(items)

    def _write_some(self, items: list[tuple[bytes, Address]]) -> int:
        return self._send_runs([d for d, _ in items], [a for _, a in items])

    def _send_error(self, address: Address, exc: OSError) -> None:
        self.stats.tx_errors += 1
        log.debug("send to %r failed: %s", address, exc)

    def _send_runs(self, datagrams: list[bytes], addresses: list[Address]) -> int:
        """Send ``datagrams[i]`` to ``addresses[i]`` in order, runs with one call each.

        Return how many were dealt with (sent or lost to an error) before the socket
        buffer filled up (``len(datagrams)`` if it did not). ``trio.ClosedResourceError``
        passes through.
        """
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
                stats.tx_calls += 1
                i = end
                continue
            if not self._send_one(datagram, address):
                return i
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
            self._send_error(address, exc)
        else:
            stats = self.stats
            stats.tx_datagrams += 1
            stats.tx_calls += 1
        return True
