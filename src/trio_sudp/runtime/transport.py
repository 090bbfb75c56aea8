"""The datagram transport the UDP task drives: a real UDP socket or a fake one.

The UDP task follows the per-packet budget of DESIGN.md: it calls the non-blocking
methods first, drains every ready datagram, and awaits ``wait_readable`` /
``wait_writable`` only when they raise ``BlockingIOError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import attrs

from ..protocol.address import Address
from ..protocol.prefilter import PrefilterRules

__all__ = [
    "MAX_SEGMENTS",
    "MAX_SEGMENT_BYTES",
    "RECV_SIZE",
    "Address",
    "DatagramNetwork",
    "DatagramTransport",
    "SegmentReceiver",
    "SegmentSender",
    "ServerSocket",
    "UDPStats",
    "format_address",
    "split_segments",
]

#: Receive buffer size: one byte more than the largest datagram SUDP allows, so that
#: an oversized datagram is seen as such instead of silently truncated.
RECV_SIZE = 4096

#: Most datagrams one ``send_segments_nowait`` call may carry (Linux: ``UDP_MAX_SEGMENTS``).
MAX_SEGMENTS = 64
#: Most bytes one ``send_segments_nowait`` call may carry: what fits in one UDP/IPv4
#: datagram (65535 - 20 - 8), with room left for IP options.
MAX_SEGMENT_BYTES = 65000


class DatagramTransport(Protocol):
    """One bound datagram socket, used without blocking.

    After ``close`` every method but ``close`` raises ``trio.ClosedResourceError``.
    """

    @property
    def local_address(self) -> Address:
        """The address this transport is bound to."""
        ...

    def recv_nowait(self) -> tuple[bytes, Address]:
        """Return one datagram and its source; raise ``BlockingIOError`` when none is ready."""
        ...

    def send_nowait(self, data: bytes, address: Address) -> None:
        """Send one datagram; raise ``BlockingIOError`` if it would block.

        Other ``OSError`` (unreachable, message too long) mean the datagram is lost.
        """
        ...

    async def wait_readable(self) -> None:
        """Sleep until ``recv_nowait`` may succeed (it may still raise ``BlockingIOError``)."""
        ...

    async def wait_writable(self) -> None:
        """Sleep until ``send_nowait`` may succeed."""
        ...

    def close(self) -> None:
        """Close the transport, waking any task blocked in ``wait_*`` with
        ``trio.ClosedResourceError``. Idempotent."""
        ...


class DatagramNetwork(Protocol):
    """Something transports can be bound on: the real network or a fake one."""

    def bind(self, address: Address) -> DatagramTransport:
        """Bind a new transport; raise ``OSError`` (e.g. address in use) on failure."""
        ...


class ServerSocket(Protocol):
    """Optional protection a server's transport may offer (the real UDP socket does).

    Looked up with ``getattr``: the fake network offers only :meth:`kernel_drops`.
    """

    def attach_prefilter(self, rules: PrefilterRules, banned: Iterable[str] = ()) -> bool:
        """Have the kernel drop what ``rules`` refuse and what ``banned`` hosts send;
        whether it took the filter."""
        ...

    @property
    def prefilter_in_kernel(self) -> bool: ...

    @property
    def receive_buffer_size(self) -> int: ...

    def grow_receive_buffer(self) -> int:
        """Ask for a large receive buffer; the size granted."""
        ...

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped for this socket (filtered, queue full)."""
        ...


class SegmentSender(Protocol):
    """Optional batched sending a transport may offer beside ``DatagramTransport``.

    The UDP task looks it up with ``getattr`` (a transport without it works datagram
    by datagram). On Linux, :class:`~trio_sudp.runtime.udp.UDPTransport` sends with
    UDP GSO (``UDP_SEGMENT``): many datagrams per system call, invisible on the wire.
    """

    @property
    def max_segment_size(self) -> int:
        """The largest datagram ``send_segments_nowait`` takes; 0 while it is unusable.

        It may drop (to 0) after a send the kernel refused.
        """
        ...

    def send_segments_nowait(self, datagrams: Sequence[bytes], address: Address) -> None:
        """Send several datagrams to one address in one call.

        At most :data:`MAX_SEGMENTS` datagrams, :data:`MAX_SEGMENT_BYTES` in all, each
        of the first's size (at most ``max_segment_size``) but the last, which may be
        shorter and not empty. All are sent, or none: ``BlockingIOError`` when the
        socket buffer is full; any other ``OSError`` means the transport refused the
        batch (the caller sends the datagrams one by one instead).
        """
        ...


class SegmentReceiver(Protocol):
    """Optional batched receiving: UDP GRO (``UDP_GRO``) on Linux.

    The UDP task uses ``recv_segments_nowait`` instead of ``recv_nowait`` when the
    transport has a true ``gro`` attribute.
    """

    @property
    def gro(self) -> bool:
        """Whether receives may return several datagrams at once."""
        ...

    def recv_segments_nowait(self) -> tuple[bytes, int, Address]:
        """Return ``(buffer, segment_size, source)``: one or more datagrams from one source.

        ``segment_size`` 0: ``buffer`` is one datagram. Otherwise ``buffer`` holds
        datagrams of ``segment_size`` bytes each, the last one possibly shorter (see
        :func:`split_segments`). Raise ``BlockingIOError`` when none is ready.
        """
        ...


def split_segments(buffer: bytes, segment_size: int) -> list[bytes]:
    """The datagrams of a coalesced receive buffer, in order.

    Each is ``segment_size`` bytes (cut to :data:`RECV_SIZE` if longer, as a single
    receive would), the last one whatever remains.
    """
    take = segment_size if segment_size <= RECV_SIZE else RECV_SIZE
    return [buffer[i : i + take] for i in range(0, len(buffer), segment_size)]


def format_address(address: Address) -> str:
    """``"1.2.3.4:5"`` or ``"[::1]:5"`` for logs and error messages."""
    host, port = address[0], address[1]
    if isinstance(host, str) and ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


@attrs.define
class UDPStats:
    """Counters of the UDP task (its receive loop and its sender)."""

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
    #: System calls that sent / received anything (datagrams per call: divide).
    tx_calls: int = 0
    rx_calls: int = 0
    #: Wakeups of the read loop that found something to read.
    rx_batches: int = 0
    #: Datagrams a server read from its strangers' lane (``lanes.py``): not from an
    #: established client's endpoint.
    rx_strangers: int = 0
