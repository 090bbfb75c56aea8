"""The TUN task: one tunnel device, read in batches, written without blocking.

Like the UDP task (``runtime/receive.py``, ``runtime/send.py``) it follows the
per-packet budget of DESIGN.md: the non-blocking read is tried until
``BlockingIOError``, every packet of a wakeup is handed synchronously to the
handler, one checkpoint per batch, and ``wait_readable`` only when the device is
empty. Writes go straight to the device; if it would block, packets wait in a bounded
backlog drained by a writer task, and a full backlog drops (counted) instead of
stalling the UDP task.

Inside :meth:`DeviceIO.write_batch` (the UDP task enters it for each batch of
received datagrams) the packets written are collected; on a device opened with a
vnet header (Linux ``IFF_VNET_HDR``) they are then written with the TCP segments of
one flow merged into GSO packets (``coalesce.py``), one write for up to 64 segments.

A device deleted under the tunnel (``ip link del``) ends it with :class:`TunError`
"TUN device sudp0 was removed": the reader raises it on its next read; a write that
finds the device gone ends the writer task, which raises it.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, cast

import attrs
import trio

from ..runtime.backlog import WriteBacklog
from ..runtime.batches import (
    TUN_BACKLOG_LIMIT,
    TUN_READ_BATCH,
    TUN_WRITE_BATCH,
    Boundary,
    read_in_batches,
)
from ..runtime.transport import UDPStats
from ..tun.base import PacketDevice
from ..tun.errors import TunError
from .coalesce import Write, coalesce

__all__ = ["DeviceIO", "DeviceStats", "io_drops"]

log = logging.getLogger("trio_sudp")

#: Errors of a read or write that mean the device itself is gone (``ip link del`` under us).
_DEVICE_GONE = frozenset({errno.EBADFD, errno.ENODEV, errno.ENXIO})
#: Errors of a GSO write that mean the kernel will not take them at all.
_GSO_REFUSED = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPROTONOSUPPORT})


class VectoredDevice(Protocol):
    """A device that takes a packet as its parts, vnet header first (``LinuxTun``)."""

    def write_vectored_nowait(self, buffers: Sequence[bytes | memoryview]) -> None: ...


class SegmentingDevice(Protocol):
    """A device whose reads may be TCP super-packets, cut into segments (``LinuxTun``)."""

    def read_packets_nowait(self) -> list[bytes]: ...


def _write_counts(write: bytes | Write) -> tuple[int, int]:
    """Packets and bytes (as separate packets) of one device write."""
    if isinstance(write, bytes):
        return 1, len(write)
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
    #: Reads and writes that moved anything (packets per call: divide), and wakeups of
    #: the read loop that found something to read.
    rx_reads: int = 0
    tx_writes: int = 0
    rx_batches: int = 0


class DeviceIO:
    """Reads packets from a device into a handler; writes packets to it."""

    def __init__(self, device: PacketDevice) -> None:
        self.device = device
        self.stats = DeviceStats()
        self._vectored: VectoredDevice | None = (
            cast("VectoredDevice", device) if getattr(device, "vnet_header", False) else None
        )
        # Whether write batches are merged (off after the kernel refused a GSO write).
        self._merging = self._vectored is not None
        #: One read: its packets (a TSO device cuts a super-packet into its segments).
        self._read: Callable[[], list[bytes]] = (
            cast("SegmentingDevice", device).read_packets_nowait
            if getattr(device, "tso", False)
            else self._read_one
        )
        # Between begin_write_batch and end_write_batch: the packets to write.
        self._batch: list[bytes] | None = None
        self._backlog: WriteBacklog[bytes | Write] = WriteBacklog(
            self._write_some, device.wait_writable, limit=TUN_BACKLOG_LIMIT
        )
        self._boundary = Boundary(self.begin_write_batch, self.end_write_batch)
        # A write that found the device gone sets the errno and ends the writer task.
        self._removed_errno: int | None = None
        self._writer_scope = trio.CancelScope()

    def status(self) -> dict[str, object]:
        """The counters, for ``trio-sudp show``, and whether GSO writes are on."""
        return {"offload": self._merging, **attrs.asdict(self.stats)}

    # ----------------------------------------------------------------- writing

    def write(self, packet: bytes) -> None:
        """Write a packet to the device now, or queue it (bounded) for the writer."""
        batch = self._batch
        if batch is not None:
            batch.append(packet)
            if len(batch) >= TUN_WRITE_BATCH:
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
                stats.tx_writes += 1
                return
        self._queue(packet)

    def write_batch(self) -> Boundary:
        """The write-batch boundary: ``with io.write_batch(): ...`` (one synchronous run)."""
        return self._boundary

    def begin_write_batch(self) -> None:
        """Collect what :meth:`write` is given until :meth:`end_write_batch`.

        Only on a vnet-header device (elsewhere packets are written at once).
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
        writes: list[bytes | Write] = list(coalesce(batch))
        if self._backlog:  # the device is full: keep the order
            for write in writes:
                self._queue(write)
            return
        try:
            done = self._write_some(writes)
        except trio.ClosedResourceError:
            return
        for write in writes[done:]:
            self._queue(write)

    async def run_writer(self) -> None:
        """The writer task: drain the backlog as the device has room, until it closes.

        Raises :class:`TunError` once a write found the device removed.
        """
        with self._writer_scope:
            await self._backlog.run()
        if self._removed_errno is not None:
            raise self._removed_error(self._removed_errno)

    def _removed_error(self, code: int | None) -> TunError:
        return TunError(f"TUN device {self.device.name} was removed", code)

    def _queue(self, write: bytes | Write) -> None:
        if not self._backlog.push(write):
            self.stats.tx_backlog_drops += _write_counts(write)[0]

    def _write_some(self, writes: list[bytes | Write]) -> int:
        """Write ``writes`` in order until the device is full; how many were dealt with."""
        device = self.device
        vectored = self._vectored
        for done, write in enumerate(writes):
            try:
                if isinstance(write, bytes):
                    device.write_nowait(write)
                else:
                    assert vectored is not None
                    vectored.write_vectored_nowait(write)
            except BlockingIOError:
                return done
            except trio.ClosedResourceError:
                raise
            except OSError as exc:
                self._refused(write, exc)
            else:
                self._written(write)
        return len(writes)

    def _written(self, write: bytes | Write) -> None:
        packets, size = _write_counts(write)
        stats = self.stats
        stats.tx_packets += packets
        stats.tx_bytes += size
        stats.tx_writes += 1
        if packets > 1:
            stats.tx_gso_writes += 1

    def _refused(self, write: bytes | Write, exc: OSError) -> None:
        packets, size = _write_counts(write)
        self.stats.tx_errors += packets
        if exc.errno in _DEVICE_GONE:
            self._removed_errno = exc.errno
            self._writer_scope.cancel()
            return
        log.debug("the kernel refused %d packet(s), %d bytes: %s", packets, size, exc)
        if packets > 1 and self._merging and exc.errno in _GSO_REFUSED:
            # TCP resends the lost segments; later batches go out one packet per write.
            self._merging = False
            log.warning(
                "%s refused a GSO write (%s): writing one packet per write from now on",
                self.device.name,
                exc.strerror or exc,
            )

    # ----------------------------------------------------------------- reading

    async def run_reader(
        self,
        on_packet: Callable[[bytes, float], None],
        *,
        boundary: Callable[[], AbstractContextManager[object]],
    ) -> None:
        """Read packets into ``on_packet(packet, now)``, each batch inside ``boundary()``,
        until the device is closed."""

        def drain(now: float) -> int:
            return self._drain(on_packet, now)

        await read_in_batches(
            drain, self.device.wait_readable, limit=TUN_READ_BATCH, boundary=boundary
        )

    def _drain(self, on_packet: Callable[[bytes, float], None], now: float) -> int:
        """One batch of reads, each packet handed to ``on_packet``; how many packets."""
        read = self._read
        count = 0
        size = 0
        reads = 0
        while count < TUN_READ_BATCH:
            try:
                packets = read()
            except BlockingIOError:
                break
            except trio.ClosedResourceError:
                raise
            except OSError as exc:
                if exc.errno in _DEVICE_GONE:
                    raise self._removed_error(exc.errno) from exc
                raise
            reads += 1
            for packet in packets:
                count += 1
                size += len(packet)
                try:
                    on_packet(packet, now)
                except trio.ClosedResourceError:
                    raise
                except Exception:
                    self.stats.internal_errors += 1
                    log.exception("internal error handling a packet from the tunnel device")
        stats = self.stats
        stats.rx_packets += count
        stats.rx_bytes += size
        stats.rx_reads += reads
        stats.rx_batches += reads > 0
        return count

    def _read_one(self) -> list[bytes]:
        return [self.device.read_nowait()]


def io_drops(drops: Mapping[str, int], device: DeviceStats, udp: UDPStats) -> dict[str, int]:
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
