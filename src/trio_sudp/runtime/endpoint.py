"""The UDP task: one datagram transport, demultiplexed to peer sessions.

It follows the per-packet budget of DESIGN.md: receive with the non-blocking call
until ``BlockingIOError``, hand each datagram synchronously to its session (the
sessions are plain objects, not tasks: a per-packet channel hop or ``await`` would
cost more than the crypto), checkpoint once per batch, and only then sleep in
``wait_readable``. Sending tries the non-blocking call first; when the socket buffer
is full, datagrams wait in a bounded backlog drained by a writer task, and a full
backlog drops (counted) rather than blocking anyone.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Protocol

import attrs
import trio

from .transport import Address, DatagramTransport

__all__ = ["Endpoint", "EndpointStats", "Receiver"]

log = logging.getLogger("trio_sudp")

#: Datagrams handled per wakeup before yielding to other tasks.
RECEIVE_BATCH = 128
#: Datagrams waiting for a writable socket before new ones are dropped.
BACKLOG_LIMIT = 2048


class Receiver(Protocol):
    """Where the endpoint hands each datagram: the runtime's demultiplexer."""

    def __call__(self, datagram: bytes, address: Address, now: float) -> None: ...


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


class Endpoint:
    """Owns a transport: receives in batches, sends without blocking."""

    def __init__(self, transport: DatagramTransport, receiver: Receiver | None = None) -> None:
        self.transport = transport
        #: Called for every datagram received; set before :meth:`run`.
        self.receiver = receiver
        self.stats = EndpointStats()
        self._backlog: collections.deque[tuple[bytes, Address]] = collections.deque()
        self._writer_wakeup = trio.Event()
        #: Called after each batch of received datagrams (e.g. to flush TUN writes).
        self.after_batch: Callable[[], None] | None = None

    @property
    def local_address(self) -> Address:
        return self.transport.local_address

    def send(self, datagram: bytes, address: Address) -> None:
        """Send now if the socket takes it; otherwise queue it (bounded) for the writer."""
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
        if len(self._backlog) >= BACKLOG_LIMIT:
            self.stats.tx_backlog_drops += 1
            return
        self._backlog.append((datagram, address))
        self._writer_wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the reader and the writer until cancelled or the transport is closed."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            task_status.started()
            await self._reader()
            nursery.cancel_scope.cancel()

    async def _reader(self) -> None:
        transport = self.transport
        recv = transport.recv_nowait
        receiver = self.receiver
        assert receiver is not None, "set Endpoint.receiver before running it"
        stats = self.stats
        current_time = trio.current_time
        while True:
            now = current_time()
            count = 0
            try:
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
                        stats.internal_errors += 1
                        log.exception("internal error handling a datagram from %r", address)
            except trio.ClosedResourceError:
                return
            stats.rx_datagrams += count
            if self.after_batch is not None:
                self.after_batch()
            try:
                if count == RECEIVE_BATCH:
                    await trio.lowlevel.checkpoint()
                else:
                    await transport.wait_readable()
            except trio.ClosedResourceError:
                return

    async def _writer(self) -> None:
        backlog = self._backlog
        transport = self.transport
        while True:
            await self._writer_wakeup.wait()
            self._writer_wakeup = trio.Event()
            while backlog:
                datagram, address = backlog[0]
                try:
                    transport.send_nowait(datagram, address)
                except BlockingIOError:
                    try:
                        await transport.wait_writable()
                    except trio.ClosedResourceError:
                        return
                    continue
                except trio.ClosedResourceError:
                    return
                except OSError as exc:
                    self.stats.tx_errors += 1
                    log.debug("send to %r failed: %s", address, exc)
                else:
                    self.stats.tx_datagrams += 1
                backlog.popleft()
