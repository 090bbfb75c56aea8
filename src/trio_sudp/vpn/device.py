"""The TUN task: one tunnel device, read in batches, written without blocking.

Like the UDP task (``runtime/endpoint.py``) it follows the per-packet budget of
DESIGN.md: the non-blocking read is tried until ``BlockingIOError``, every packet of
a wakeup is handed synchronously to the handler, one checkpoint per batch, and
``wait_readable`` only when the device is empty. Writes go straight to the device;
if it would block, packets wait in a bounded backlog drained by a writer task, and
a full backlog drops (counted) instead of stalling the UDP task.

``before_batch`` / ``after_batch`` bracket every batch of reads: the VPN hooks the UDP
task's ``begin_batch`` / ``end_batch`` there, so that the datagrams one batch produces
leave together (UDP GSO: one system call for many).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import attrs
import trio

from ..runtime.backlog import WriteBacklog
from ..runtime.endpoint import EndpointStats
from ..tun.base import PacketDevice

__all__ = ["DeviceIO", "DeviceStats", "io_drops"]

log = logging.getLogger("trio_sudp")

READ_BATCH = 64
BACKLOG_LIMIT = 1024


@attrs.define
class DeviceStats:
    """Counters of the TUN task."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    #: Packets dropped because the device and the backlog were full.
    tx_backlog_drops: int = 0
    #: Packets the kernel refused (not a valid IP packet, ...).
    tx_errors: int = 0
    #: Packets whose handling raised an unexpected exception (a bug; logged).
    internal_errors: int = 0


class DeviceIO:
    """Reads packets from a device into ``handler(packet, now)``; writes packets to it."""

    def __init__(
        self, device: PacketDevice, handler: Callable[[bytes, float], None] | None = None
    ) -> None:
        self.device = device
        #: Called with every packet read, and the time of its batch.
        self.handler = handler
        #: Called before / after each batch of packets read (the VPN collects the
        #: datagrams of a batch and sends them together: ``Endpoint.begin_batch``).
        self.before_batch: Callable[[], None] | None = None
        self.after_batch: Callable[[], None] | None = None
        self.stats = DeviceStats()
        self._backlog = WriteBacklog(
            device.write_nowait,
            device.wait_writable,
            limit=BACKLOG_LIMIT,
            on_written=self._written,
            on_error=self._refused,
        )

    def _written(self, packet: bytes) -> None:
        self.stats.tx_packets += 1
        self.stats.tx_bytes += len(packet)

    def _refused(self, packet: bytes, exc: OSError) -> None:
        self.stats.tx_errors += 1
        log.debug("the kernel refused a packet of %d bytes: %s", len(packet), exc)

    def write(self, packet: bytes) -> None:
        """Write a packet to the device now, or queue it (bounded) for the writer."""
        if not self._backlog:
            try:
                self.device.write_nowait(packet)
            except BlockingIOError:
                pass
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                self._refused(packet, exc)
                return
            else:
                stats = self.stats
                stats.tx_packets += 1
                stats.tx_bytes += len(packet)
                return
        if not self._backlog.push(packet):
            self.stats.tx_backlog_drops += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the reader and the writer until cancelled or the device is closed."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._backlog.run)
            task_status.started()
            await self._reader()
            nursery.cancel_scope.cancel()

    async def _reader(self) -> None:
        device = self.device
        read = device.read_nowait
        handler = self.handler
        assert handler is not None, "set DeviceIO.handler before running it"
        stats = self.stats
        current_time = trio.current_time
        while True:
            now = current_time()
            count = 0
            size = 0
            before, after = self.before_batch, self.after_batch
            if before is not None:
                before()
            try:
                while count < READ_BATCH:
                    try:
                        packet = read()
                    except BlockingIOError:
                        break
                    count += 1
                    size += len(packet)
                    try:
                        handler(packet, now)
                    except trio.ClosedResourceError:
                        raise
                    except Exception:
                        stats.internal_errors += 1
                        log.exception("internal error handling a packet from the tunnel device")
            except trio.ClosedResourceError:
                return
            finally:
                if after is not None:
                    after()
            stats.rx_packets += count
            stats.rx_bytes += size
            try:
                if count == READ_BATCH:
                    await trio.lowlevel.checkpoint()
                else:
                    await device.wait_readable()
            except trio.ClosedResourceError:
                return


def io_drops(drops: Mapping[str, int], device: DeviceStats, udp: EndpointStats) -> dict[str, int]:
    """``drops`` plus the TUN and UDP tasks' non-zero drop counters, by reason name."""
    merged = dict(drops)
    for name, count in (
        ("tun_backlog_full", device.tx_backlog_drops),
        ("tun_write_error", device.tx_errors),
        ("udp_backlog_full", udp.tx_backlog_drops),
        ("udp_send_error", udp.tx_errors),
        ("internal_error", device.internal_errors + udp.internal_errors),
    ):
        if count:
            merged[name] = count
    return merged
