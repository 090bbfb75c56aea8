"""The TUN task: one tunnel device, read in batches, written without blocking.

Like the UDP task (``runtime/endpoint.py``) it follows the per-packet budget of
DESIGN.md: the non-blocking read is tried until ``BlockingIOError``, every packet of
a wakeup is handed synchronously to the handler, one checkpoint per batch, and
``wait_readable`` only when the device is empty. Writes go straight to the device;
if it would block, packets wait in a bounded backlog drained by a writer task, and
a full backlog drops (counted) instead of stalling the UDP task.

``before_batch`` / ``after_batch`` bracket every batch of reads: the VPN hooks the UDP
task's ``begin_batch`` / ``end_batch`` there, so that the datagrams one batch produces
leave together (UDP GSO: one system call for many). The other way round, the UDP task
brackets each batch of received datagrams with :meth:`DeviceIO.begin_write_batch` /
:meth:`DeviceIO.end_write_batch`: on a device opened with a vnet header (Linux
``IFF_VNET_HDR``) the packets of the batch are then written with TCP segments of one
flow merged into GSO packets (``coalesce.py``), one write for up to 64 segments.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, cast

import attrs
import trio

from ..runtime.backlog import WriteBacklog
from ..runtime.batches import read_in_batches
from ..runtime.endpoint import EndpointStats
from ..tun.base import PacketDevice
from .coalesce import Write, coalesce

__all__ = ["DeviceIO", "DeviceStats", "io_drops"]

log = logging.getLogger("trio_sudp")

READ_BATCH = 64
BACKLOG_LIMIT = 1024
#: Packets collected in one write batch at most before they are written anyway.
WRITE_BATCH_LIMIT = 256
#: Errors of a GSO write that mean the kernel will not take them at all.
_GSO_REFUSED = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPROTONOSUPPORT})


class VectoredDevice(Protocol):
    """A device that takes a packet as its parts, vnet header first (``LinuxTun``)."""

    def write_vectored_nowait(self, buffers: Sequence[bytes | memoryview]) -> None: ...


def _write_counts(write: Write) -> tuple[int, int]:
    """Segments and bytes (as separate packets) of one ``coalesce`` write."""
    if len(write) == 2:
        return 1, len(write[1])
    header = write[1]
    segments = len(write) - 2
    # The merged packet's length is in its header: IPv4 total length, IPv6 payload + 40.
    if header[0] >> 4 == 4:
        merged = header[2] << 8 | header[3]
    else:
        merged = (header[4] << 8 | header[5]) + 40
    return segments, merged + (segments - 1) * len(header)


@attrs.define
class DeviceStats:
    """Counters of the TUN task."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    #: Writes that carried several TCP segments as one GSO packet.
    tx_gso_writes: int = 0
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
        self._vectored: VectoredDevice | None = (
            cast("VectoredDevice", device) if getattr(device, "vnet_header", False) else None
        )
        # Whether write batches are merged (off after the kernel refused a GSO write).
        self._merging = self._vectored is not None
        # Between begin_write_batch and end_write_batch: the packets to write.
        self._batch: list[bytes] | None = None
        self._backlog: WriteBacklog[bytes | Write] = WriteBacklog(
            self._write_item,
            device.wait_writable,
            limit=BACKLOG_LIMIT,
            on_written=self._written,
            on_error=self._refused,
        )

    def _write_item(self, item: bytes | Write) -> None:
        if isinstance(item, bytes):
            self.device.write_nowait(item)
        else:
            assert self._vectored is not None
            self._vectored.write_vectored_nowait(item)

    def _written(self, item: bytes | Write) -> None:
        packets, size = (1, len(item)) if isinstance(item, bytes) else _write_counts(item)
        stats = self.stats
        stats.tx_packets += packets
        stats.tx_bytes += size
        if packets > 1:
            stats.tx_gso_writes += 1

    def status(self) -> dict[str, object]:
        """The counters, for ``trio-sudp show``, and whether GSO writes are on."""
        return {"offload": self._merging, **attrs.asdict(self.stats)}

    def _refused(self, item: bytes | Write, exc: OSError) -> None:
        packets, size = (1, len(item)) if isinstance(item, bytes) else _write_counts(item)
        self.stats.tx_errors += packets
        log.debug("the kernel refused %d packet(s), %d bytes: %s", packets, size, exc)
        if packets > 1 and self._merging and exc.errno in _GSO_REFUSED:
            # TCP resends the lost segments; later batches go out one packet per write.
            self._merging = False
            log.warning(
                "%s refused a GSO write (%s): writing one packet per write from now on",
                self.device.name,
                exc.strerror or exc,
            )

    def begin_write_batch(self) -> None:
        """Collect what :meth:`write` is given until :meth:`end_write_batch`.

        Only on a vnet-header device (elsewhere packets are written at once); the
        batch must end in the same synchronous run that began it.
        """
        if self._merging:
            self._batch = []

    def end_write_batch(self) -> None:
        """Write the packets collected since :meth:`begin_write_batch`, merged."""
        batch, self._batch = self._batch, None
        if not batch:
            return
        if len(batch) == 1:
            self.write(batch[0])
            return
        vectored = self._vectored
        assert vectored is not None
        stats = self.stats
        for write in coalesce(batch):
            if self._backlog:
                if not self._backlog.push(write):
                    stats.tx_backlog_drops += _write_counts(write)[0]
                continue
            try:
                vectored.write_vectored_nowait(write)
            except BlockingIOError:
                if not self._backlog.push(write):
                    stats.tx_backlog_drops += _write_counts(write)[0]
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                self._refused(write, exc)
            else:
                self._written(write)

    def write(self, packet: bytes) -> None:
        """Write a packet to the device now, or queue it (bounded) for the writer."""
        batch = self._batch
        if batch is not None:
            batch.append(packet)
            if len(batch) >= WRITE_BATCH_LIMIT:
                self.end_write_batch()
                self._batch = []
            return
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
        assert self.handler is not None, "set DeviceIO.handler before running it"
        await read_in_batches(
            self._drain,
            self.device.wait_readable,
            limit=READ_BATCH,
            begin=self._begin_read,
            end=self._end_read,
        )

    def _begin_read(self) -> None:
        if self.before_batch is not None:
            self.before_batch()

    def _end_read(self) -> None:
        if self.after_batch is not None:
            self.after_batch()

    def _drain(self, now: float) -> int:
        """One batch of reads, each handed to :attr:`handler`; how many packets."""
        read = self.device.read_nowait
        handler = cast("Callable[[bytes, float], None]", self.handler)
        count = 0
        size = 0
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
                self.stats.internal_errors += 1
                log.exception("internal error handling a packet from the tunnel device")
        stats = self.stats
        stats.rx_packets += count
        stats.rx_bytes += size
        return count


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
